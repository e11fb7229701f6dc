//! Durable delivery against raw async-nats JetStream on the same server.
//!
//! Throughput: network A streams `n` messages of 128 B into an actor of durable network B,
//! each network on a connection of its own as in separate processes, timed until B has
//! handled the last (A stores its backlog in entries of up to 128 messages). Raw: one
//! client publishes `n` messages of one message each to a stream with asynchronous
//! publishes (at most 1,024 unacknowledged) while a pull consumer on another connection
//! takes and acknowledges them, timed until the last is acknowledged. Latency: a
//! confirmed send to durable B (returns once stored), against a raw JetStream publish
//! and its acknowledgement.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use super::latency::{SIZE, pick, quantiles};
use super::{BenchOptions, BenchReport, Compared, median};
use crate::actor::FnActor;
use crate::distributed_network::{DistributedConfig, DistributedNetwork};
use crate::durable::DurableOptions;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::network::Connector;

/// The payload of the throughput rounds.
const STREAM_SIZE: usize = 128;

/// Unacknowledged raw publishes at most, as a sender with backpressure keeps them.
const RAW_IN_FLIGHT: usize = 1_024;

fn broker(err: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Broker, format!("durable bench: {err}"))
}

fn config(url: &str, network: &str) -> DistributedConfig {
    DistributedConfig {
        network_id: network.into(),
        instance_id: "i1".into(),
        discovery_endpoints: vec![url.into()],
        ..DistributedConfig::default()
    }
}

/// Durable network `name` whose actor `count` counts what it handles.
async fn counting_network(url: &str, name: &str) -> Result<(DistributedNetwork, Arc<AtomicU64>)> {
    let handled = Arc::new(AtomicU64::new(0));
    let mut b = DistributedNetwork::new(config(url, name)).await?;
    b.use_own_connection(true);
    b.set_durable(DurableOptions::default())?;
    let seen = handled.clone();
    b.register_local_actor(
        "count",
        FnActor::new(["in"], Vec::<String>::new(), move |_, _| {
            seen.fetch_add(1, Ordering::Relaxed);
            Ok(Vec::new())
        }),
        None,
    )?;
    b.start().await?;
    Ok((b, handled))
}

/// Deletes the streams of durable network `name`, so rounds start empty.
async fn drop_streams(url: &str, name: &str) -> Result<()> {
    let js = jetstream::new(async_nats::connect(url).await.map_err(broker)?);
    let _ = js.delete_stream(crate::durable::stream_name(name)).await;
    let _ = js
        .delete_stream(crate::durable::dead_stream_name(name))
        .await;
    Ok(())
}

async fn ours_throughput(url: &str, round: usize, n: usize) -> Result<f64> {
    let name = format!("bench_durable_{round}");
    let (mut b, handled) = counting_network(url, &name).await?;
    let mut a = DistributedNetwork::new(config(url, &format!("bench_sender_{round}"))).await?;
    a.use_own_connection(true);
    a.register_local_actor("source", crate::components::Passthrough, None)?;
    a.start().await?;
    a.connect_to(&name).await?;
    let proxy = a.register_remote_actor("count", &name).await?;
    let input = {
        let local = a.get_local_network();
        let mut local = local.write();
        local.add_connection(Connector::new("source", "out", &proxy, "in"))?;
        local.inlet("source", "in")?
    };
    let payload = Message::Bytes(vec![7u8; STREAM_SIZE].into());
    let began = Instant::now();
    for _ in 0..n {
        input.send(payload.clone()).await?;
    }
    while handled.load(Ordering::Relaxed) < n as u64 {
        if began.elapsed() > Duration::from_secs(120) {
            return Err(broker("durable throughput round did not finish in 120 s"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = n as f64 / began.elapsed().as_secs_f64();
    a.shutdown().await?;
    b.shutdown().await?;
    drop_streams(url, &name).await?;
    Ok(rate)
}

async fn raw_throughput(url: &str, round: usize, n: usize) -> Result<f64> {
    let name = format!("BENCH_RAW_{round}");
    let subject = format!("bench.raw.{round}");
    let publisher = jetstream::new(async_nats::connect(url).await.map_err(broker)?);
    let consuming = jetstream::new(async_nats::connect(url).await.map_err(broker)?);
    let stream = publisher
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .map_err(broker)?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: RAW_IN_FLIGHT as i64,
            ..Default::default()
        })
        .await
        .map_err(broker)?;
    let _ = consuming;
    let began = Instant::now();
    let taker = tokio::spawn(async move {
        let mut messages = consumer.messages().await.map_err(broker)?;
        let mut taken = 0;
        while taken < n {
            let message = messages
                .next()
                .await
                .ok_or_else(|| broker("the raw consumer ended"))?
                .map_err(broker)?;
            message.ack().await.map_err(broker)?;
            taken += 1;
        }
        Ok::<(), Error>(())
    });
    let payload = bytes::Bytes::from(vec![7u8; STREAM_SIZE]);
    let mut acks = std::collections::VecDeque::with_capacity(RAW_IN_FLIGHT);
    for _ in 0..n {
        if acks.len() == RAW_IN_FLIGHT {
            let ack: jetstream::context::PublishAckFuture = acks.pop_front().expect("full");
            ack.await.map_err(broker)?;
        }
        acks.push_back(
            publisher
                .publish(subject.clone(), payload.clone())
                .await
                .map_err(broker)?,
        );
    }
    for ack in acks {
        ack.await.map_err(broker)?;
    }
    taker.await.map_err(broker)??;
    let rate = n as f64 / began.elapsed().as_secs_f64();
    let _ = publisher.delete_stream(&name).await;
    Ok(rate)
}

async fn send_latency(url: &str, round_trips: usize) -> Result<[Vec<Duration>; 2]> {
    let name = "bench_durable_sends";
    let (mut b, _) = counting_network(url, name).await?;
    let mut a = DistributedNetwork::new(config(url, "bench_durable_caller")).await?;
    a.start().await?;
    a.connect_to(name).await?;
    let mut ours = Vec::with_capacity(round_trips);
    for i in 0..round_trips + round_trips / 10 {
        let began = Instant::now();
        a.send_to_remote_actor(name, "count", "in", Message::Bytes(vec![1u8; SIZE].into()))
            .await?;
        if i >= round_trips / 10 {
            ours.push(began.elapsed());
        }
    }
    a.shutdown().await?;
    b.shutdown().await?;
    drop_streams(url, name).await?;

    let js = jetstream::new(async_nats::connect(url).await.map_err(broker)?);
    js.create_stream(stream::Config {
        name: "BENCH_RAW_SENDS".into(),
        subjects: vec!["bench.raw.sends".into()],
        ..Default::default()
    })
    .await
    .map_err(broker)?;
    let mut raw = Vec::with_capacity(round_trips);
    for i in 0..round_trips + round_trips / 10 {
        let began = Instant::now();
        js.publish("bench.raw.sends", vec![1u8; SIZE].into())
            .await
            .map_err(broker)?
            .await
            .map_err(broker)?;
        if i >= round_trips / 10 {
            raw.push(began.elapsed());
        }
    }
    let _ = js.delete_stream("BENCH_RAW_SENDS").await;
    Ok([ours, raw])
}

/// Durable streamed throughput and durable send latency, each against raw JetStream.
pub(super) async fn measure(
    url: &str,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let n = options.messages_at(STREAM_SIZE).min(50_000);
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        ours.push(ours_throughput(url, round, n).await?);
        raw.push(raw_throughput(url, round, n).await?);
    }
    report
        .add(
            "durable streamed throughput",
            Some(STREAM_SIZE),
            "msgs_per_s",
            median(ours),
        )
        .against(Compared::RawNats, median(raw), Some((0.9, true)))
        .note(
            "stored in JetStream (a backlog in entries of up to 128 messages) and handled by \
             the durable network's actor, against raw async publishes of one message each \
             (1,024 in flight) and a pull consumer acknowledging each"
                .to_string(),
        );

    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        let [o, r] = send_latency(url, options.round_trips).await?;
        ours.push(quantiles(o));
        raw.push(quantiles(r));
    }
    for (i, metric) in ["p50_us", "p99_us", "p999_us"].into_iter().enumerate() {
        report
            .add("durable send", Some(SIZE), metric, pick(&ours, i))
            .against(Compared::RawNats, pick(&raw, i), None);
    }
    Ok(())
}
