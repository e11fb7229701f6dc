//! The seed's "Error Handling": what each failure looks like, and the phrases code can
//! match on. (The seed's "Address already in use" comes from the direct-link listener,
//! which arrives with the direct fallback work; here are the broker-era failures.)

mod common;

use reflow_network::ErrorKind;
use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork};
use reflow_network::local_server::ServerOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. Connection refused: no NATS server listens at the URL.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut lonely = DistributedNetwork::new(common::config(
        &format!("nats://127.0.0.1:{nobody}"),
        "lonely",
        "l1",
    ))
    .await?;
    match lonely.start().await {
        Err(e) if e.is(ErrorKind::Broker) || e.is(ErrorKind::Timeout) => {
            println!("1. nothing listening: {e}")
        }
        other => anyhow::bail!("expected a broker error, got {other:?}"),
    }

    // 2. Authentication failure: the server wants a different token.
    let server = common::server_with(ServerOptions {
        token: Some("right".into()),
        ..ServerOptions::default()
    })
    .await?;
    let mut wrong = DistributedNetwork::new(DistributedConfig {
        auth_token: Some("wrong".into()),
        ..common::config(&server.url(), "wrong", "w1")
    })
    .await?;
    match wrong.start().await {
        Err(e) if e.to_string().contains("Authentication failed") => {
            println!("2. wrong token: {e}")
        }
        other => anyhow::bail!("expected Authentication failed, got {other:?}"),
    }

    // 3. A network nobody runs: "Network disconnected".
    let mut client = DistributedNetwork::new(DistributedConfig {
        auth_token: Some("right".into()),
        ..common::config(&server.url(), "client", "c1")
    })
    .await?;
    client.start().await?;
    match client.connect_to_network("nowhere").await {
        Err(e) if e.to_string().contains("Network disconnected") => {
            println!("3. unknown network: {e}")
        }
        other => anyhow::bail!("expected Network disconnected, got {other:?}"),
    }
    client.shutdown().await?;

    // 4. An invalid configuration is refused before anything starts, naming the field.
    let old_style = DistributedConfig {
        discovery_endpoints: vec!["http://discovery.example.com:3000".into()],
        ..DistributedConfig::default()
    };
    match DistributedNetwork::new(old_style).await {
        Err(e) if e.is(ErrorKind::InvalidConfig) => println!("4. invalid config: {e}"),
        other => anyhow::bail!("expected an invalid configuration, got {other:?}"),
    }
    println!("every failure gave a clear error");
    Ok(())
}
