//! The seed's "Error Handling": what each failure looks like, and the phrases code can
//! match on, as the seed does with `e.to_string().contains("Address already in use")`.
//! Every failure below is provoked for real and caught; the example exits 0 when each
//! one gave the error it should.

mod common;

use reflow_network::ErrorKind;
use reflow_network::distributed_network::{
    DistributedConfig, DistributedError, DistributedNetwork,
};
use reflow_network::local_server::ServerOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = common::server().await?;

    // 1. Port already in use: something else holds the direct link's bind port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken = squatter.local_addr()?.port();
    let server_config = DistributedConfig {
        bind_address: "127.0.0.1".into(),
        bind_port: taken,
        ..common::config(&server.url(), "main_server", "s1")
    };
    let mut blocked = DistributedNetwork::new(server_config.clone()).await?;
    match blocked.start().await {
        // The message keeps the operating system's words and names the address.
        Err(e)
            if e.to_string().contains("Address already in use")
                && e.to_string().contains(&format!("127.0.0.1:{taken}")) =>
        {
            println!("1. port in use: start() failed: {e}");
            println!(
                "   (the seed's advice applies: port {} is taken, pick another one)",
                server_config.bind_port
            );
        }
        other => anyhow::bail!("expected Address already in use, got {other:?}"),
    }
    drop(squatter);

    // 2. Connection refused, twice over: no peer listens at a direct address, and no
    //    NATS server listens at a URL.
    let mut client = DistributedNetwork::new(common::config(&server.url(), "client", "c1")).await?;
    client.start().await?;
    let nobody = format!("127.0.0.1:{}", common::free_port()?);
    match client.connect_to_network(&nobody).await {
        Err(e) if e.to_string().contains("Connection refused") => {
            println!("2a. no peer at {nobody}: {e}")
        }
        other => anyhow::bail!("expected Connection refused, got {other:?}"),
    }
    let mut lonely = DistributedNetwork::new(common::config(
        &format!("nats://127.0.0.1:{}", common::free_port()?),
        "lonely",
        "l1",
    ))
    .await?;
    match lonely.start().await {
        Err(e) if e.is(ErrorKind::Broker) || e.is(ErrorKind::Timeout) => {
            println!("2b. no NATS server at the URL: {e}")
        }
        other => anyhow::bail!("expected a broker error, got {other:?}"),
    }

    // 3. Authentication failure, at both doors: a peer network holding a different
    //    token refuses the connect handshake, and a NATS server that asks for a token
    //    refuses the wrong one.
    let mut guarded = DistributedNetwork::new(DistributedConfig {
        auth_token: Some("right".into()),
        ..common::config(&server.url(), "guarded", "g1")
    })
    .await?;
    guarded.start().await?;
    let mut intruder = DistributedNetwork::new(DistributedConfig {
        auth_token: Some("wrong".into()),
        ..common::config(&server.url(), "intruder", "i1")
    })
    .await?;
    intruder.start().await?;
    // Matched on the variant, as Reflow's guides do; `connect_to` gives the same
    // failure as the library's error, whose message says which side refused.
    match intruder.connect_to_network("guarded").await {
        Err(DistributedError::AuthenticationFailed) => {
            let why = intruder.connect_to("guarded").await.unwrap_err();
            println!("3a. wrong token for a peer network: {why}")
        }
        other => anyhow::bail!("expected Authentication failed, got {other:?}"),
    }
    intruder.shutdown().await?;
    guarded.shutdown().await?;

    let locked = common::server_with(ServerOptions {
        token: Some("right".into()),
        ..ServerOptions::default()
    })
    .await?;
    let mut wrong = DistributedNetwork::new(DistributedConfig {
        auth_token: Some("wrong".into()),
        ..common::config(&locked.url(), "wrong", "w1")
    })
    .await?;
    match wrong.start().await {
        Err(e) if e.to_string().contains("Authentication failed") => {
            println!("3b. wrong token for the NATS server: {e}")
        }
        other => anyhow::bail!("expected Authentication failed, got {other:?}"),
    }

    // 4. A network nobody runs: "Network disconnected".
    match client.connect_to_network("nowhere").await {
        Err(e) if e.to_string().contains("Network disconnected") => {
            println!("4. unknown network: {e}")
        }
        other => anyhow::bail!("expected Network disconnected, got {other:?}"),
    }
    client.shutdown().await?;

    // 5. An invalid configuration is refused before anything starts, naming the field.
    let old_style = DistributedConfig {
        discovery_endpoints: vec!["http://discovery.example.com:3000".into()],
        ..DistributedConfig::default()
    };
    match DistributedNetwork::new(old_style).await {
        Err(e) if e.is(ErrorKind::InvalidConfig) => println!("5. invalid config: {e}"),
        other => anyhow::bail!("expected an invalid configuration, got {other:?}"),
    }
    println!("every failure gave a clear error");
    Ok(())
}
