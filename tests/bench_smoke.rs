//! The benchmark's smoke run, end to end through the CLI: every scenario runs against a
//! real nats-server and reports figures that make sense. No timing is asserted; timings
//! belong to the benchmark itself.

mod common;

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_reflow-bridge");

fn figures<'a>(report: &'a Value, scenario: &str) -> Vec<&'a Value> {
    report["figures"]
        .as_array()
        .expect("figures is a list")
        .iter()
        .filter(|f| f["scenario"] == scenario)
        .collect()
}

fn positive(value: &Value, what: &str) -> f64 {
    let number = value
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"));
    assert!(number > 0.0, "{what} is not positive: {number}");
    number
}

/// The figure of `scenario` with `metric`, whose value is positive.
fn figure<'a>(report: &'a Value, scenario: &str, metric: &str) -> &'a Value {
    let found = figures(report, scenario)
        .into_iter()
        .find(|f| f["metric"] == metric)
        .unwrap_or_else(|| panic!("no {scenario} {metric} in {report}"));
    positive(&found["value"], &format!("{scenario} {metric}"));
    found
}

/// A figure compared with `baseline`: its baseline and ratio are there and positive.
fn compared<'a>(report: &'a Value, scenario: &str, metric: &str, baseline: &str) -> &'a Value {
    let f = figure(report, scenario, metric);
    assert_eq!(f["compared_with"], baseline, "{scenario} {metric}");
    positive(&f["baseline"], &format!("{scenario} {metric} baseline"));
    positive(&f["ratio"], &format!("{scenario} {metric} ratio"));
    f
}

#[test]
fn smoke_run_reports_every_scenario_with_positive_figures_as_json() {
    let out = Command::new(BIN)
        .args(["bench", "--smoke", "--json"])
        .env_remove("NATS_URL")
        .output()
        .expect("run reflow-bridge bench");
    let stdout = common::process::succeeded(&out, "reflow-bridge bench");
    assert_eq!(stdout.lines().count(), 1, "one line of JSON: {stdout}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON on stdout");

    positive(&report["machine"]["cores"], "cores");
    assert!(report["machine"]["os"].is_string());
    assert!(report["machine"].get("cpu_model").is_some());
    for version in ["reflow_network", "nats_server", "async_nats"] {
        let text = report["versions"][version].as_str().unwrap_or_default();
        assert!(!text.is_empty(), "no {version} version in {report}");
    }
    assert_eq!(report["settings"]["sizes"], serde_json::json!([128]));
    assert_eq!(report["settings"]["rounds"], 1);
    assert!(
        report["server_url"]
            .as_str()
            .unwrap()
            .starts_with("nats://")
    );
    assert_eq!(report["skipped"], serde_json::json!([]));
    positive(&report["elapsed_s"], "elapsed_s");

    let streamed = compared(&report, "streamed throughput", "msgs_per_s", "raw_nats");
    assert_eq!(streamed["size"], 128);
    assert_eq!(streamed["target"], ">= 0.9");
    assert!(streamed["met"].is_boolean());
    compared(&report, "streamed throughput", "MB_per_s", "raw_nats");
    compared(&report, "direct link throughput", "msgs_per_s", "nats_path");
    for metric in ["p50_us", "p99_us", "p999_us"] {
        compared(&report, "confirmed round trip", metric, "raw_nats");
    }
    // The slow receiver's figures may well be zero: present, against what was sent.
    for metric in ["repeats", "resent_envelopes"] {
        let slow = figures(&report, "slow receiver")
            .into_iter()
            .find(|f| f["metric"] == metric)
            .unwrap_or_else(|| panic!("no slow receiver {metric} in {report}"));
        assert_eq!(slow["compared_with"], "messages_sent", "{slow}");
        assert_eq!(slow["baseline"], 200.0, "{slow}");
        assert_eq!(slow["target"], "<= 0.01", "{slow}");
    }
    figure(&report, "remote actor call", "p50_us");
    figure(&report, "remote actor call", "p99_us");
    let detection = compared(&report, "failure detection", "detect_ms", "heartbeat");
    assert_eq!(detection["baseline"], 1000.0);
    let discovery = figure(&report, "discovery", "latency_ms");
    assert_eq!(discovery["networks"], 5);
    let found = figure(&report, "discovery", "networks_found");
    assert_eq!(found["value"], 5.0, "discovery found every live network");
    let at_rest = compared(
        &report,
        "memory at rest",
        "heap_KiB_per_network",
        "raw_nats",
    );
    assert_eq!(at_rest["networks"], 3);
    compared(
        &report,
        "memory while streaming",
        "peak_heap_MiB",
        "raw_nats",
    );
    // Churn: nothing missed, nothing invented, against the events a churn should cause.
    for metric in ["missed_events", "phantom_events"] {
        let churn = figures(&report, "churn")
            .into_iter()
            .find(|f| f["metric"] == metric)
            .unwrap_or_else(|| panic!("no churn {metric} in {report}"));
        assert_eq!(churn["compared_with"], "events_expected", "{churn}");
        positive(&churn["baseline"], "churn events expected");
        assert_eq!(churn["value"], 0.0, "{churn}");
    }
    figure(&report, "churn", "networks_per_s");
    let cluster = compared(
        &report,
        "cluster streamed throughput",
        "msgs_per_s",
        "raw_nats",
    );
    assert_eq!(cluster["size"], 128);
    let durable = compared(
        &report,
        "durable streamed throughput",
        "msgs_per_s",
        "raw_nats",
    );
    assert_eq!(durable["target"], ">= 0.9");
    for metric in ["p50_us", "p99_us", "p999_us"] {
        compared(&report, "durable send", metric, "raw_nats");
    }
    for metric in ["p50_us", "p99_us", "p999_us"] {
        compared(&report, "cluster confirmed round trip", metric, "raw_nats");
    }
}

/// This test binary keeps the system allocator, so nothing counts the heap: the memory
/// figures are left out and the report says why, rather than showing zeros.
#[tokio::test(flavor = "multi_thread")]
async fn memory_figures_are_skipped_with_a_reason_where_the_heap_is_not_counted() {
    use reflow_network::bench::{self, BenchOptions, Scenario};
    let options = BenchOptions {
        scenarios: vec![Scenario::Memory],
        ..BenchOptions::smoke()
    };
    let report = bench::run(&options).await.unwrap();
    assert!(report.figures.is_empty(), "{:?}", report.figures);
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert!(
        report.skipped[0].contains("CountingAllocator"),
        "{:?}",
        report.skipped
    );
}

#[test]
fn bad_bench_settings_are_usage_errors() {
    let out = Command::new(BIN)
        .args(["bench", "--sizes", "0,128"])
        .output()
        .expect("run reflow-bridge bench");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--sizes"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_url_measures_against_an_existing_server() {
    let server = reflow_network::local_server::NatsServer::start()
        .await
        .unwrap();
    let url = server.url();
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            Command::new(BIN)
                .args(["--nats-url", &url, "bench", "--smoke", "--json"])
                .args(["--only", "streamed,confirmed,discovery"])
                .output()
                .expect("run reflow-bridge bench")
        }
    })
    .await
    .unwrap();
    let stdout = common::process::succeeded(&out, "reflow-bridge bench");
    let report: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(report["server_url"], url.as_str(), "measured elsewhere");
    assert_eq!(report["settings"]["nats_url"], url.as_str());
    compared(&report, "streamed throughput", "msgs_per_s", "raw_nats");
    compared(&report, "confirmed round trip", "p50_us", "raw_nats");
    let found = figure(&report, "discovery", "networks_found");
    assert_eq!(found["value"], 5.0, "discovery found every live network");
    // The live networks the bench started are gone from the server when it ends.
    let client = async_nats::connect(&url).await.unwrap();
    let kv = async_nats::jetstream::new(client);
    let bucket = kv
        .get_key_value(reflow_network::liveness::BUCKET)
        .await
        .expect("the bench's networks made the liveness bucket");
    let mut keys = bucket.keys().await.unwrap();
    let left = futures::StreamExt::next(&mut keys).await;
    assert!(left.is_none(), "the bench left {left:?} live behind");
}
