//! The main job end to end: two networks that share only a NATS server, and a pipeline
//! in one of them that runs through an actor of the other as if it were local.
//!
//!     cargo run --example quickstart

mod common;

use reflow_network::Message;
use reflow_network::actor::{FnActor, ProbeActor};
use reflow_network::components::Passthrough;
use reflow_network::distributed_network::DistributedNetwork;
use reflow_network::network::Connector;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = common::server().await?;

    // Network `math` hosts one actor, `double`.
    let mut math = DistributedNetwork::new(common::config(&server.url(), "math", "m1")).await?;
    math.register_local_actor(
        "double",
        FnActor::map("in", "out", |m| {
            Message::Integer(m.as_integer().unwrap_or(0) * 2)
        }),
        None,
    )?;
    math.start().await?;
    println!("network `math` is up, hosting actor `double`");

    // Network `app` wires source -> double@math -> sink.
    let mut app = DistributedNetwork::new(common::config(&server.url(), "app", "a1")).await?;
    app.register_local_actor("source", Passthrough, None)?;
    let (sink, mut seen) = ProbeActor::channel(16);
    app.register_local_actor("sink", sink, None)?;
    app.start().await?;
    app.connect_to_network("math").await?;
    let alias = app.register_remote_actor("double", "math").await?;
    println!("network `app` connected to `math` and registered its actor as `{alias}`");
    let input = {
        let local = app.get_local_network();
        let mut local = local.write();
        local.add_connection(Connector::new("source", "out", &alias, "in"))?;
        local.add_connection(Connector::new(&alias, "out", "sink", "in"))?;
        local.inlet("source", "in")?
    };

    for i in 1..=5 {
        input.send(Message::Integer(i)).await?;
    }
    let results = common::receive(&mut seen, 5).await?;
    let shown: Vec<String> = results.iter().map(|m| m.to_json().to_string()).collect();
    println!(
        "sent 1..5 from `app` through `double@math`; got back {}",
        shown.join(", ")
    );

    // A confirmed send returns once `math` has taken the message.
    app.send_to_remote_actor("math", "double", "in", Message::Integer(100))
        .await?;
    println!("a confirmed send to math.double.in was handled");

    app.shutdown().await?;
    math.shutdown().await?;
    println!("both networks shut down cleanly");
    Ok(())
}
