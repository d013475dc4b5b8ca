//! Throughput and memory at scale, in release mode only (ignored by default):
//!
//! ```sh
//! cargo test --release -p gatewatch-features --test throughput -- --ignored --nocapture
//! ```
//!
//! The same workload as the criterion bench `benches/benches/features.rs` (simulated
//! traffic re-keyed onto 100,000 clients and ~200 endpoint templates, 8192-row batches,
//! state warmed by one pass), timed with `Instant` over several passes so the figure is
//! available without building the bench crate's heavier dependencies.
//!
//! `GATEWATCH_THROUGHPUT_CLIENTS=1000` runs the same events on fewer clients, whose state
//! then fits in the cache: the difference between the two runs is what the state's memory
//! traffic costs (the bounds checked on the 100,000-client workload are then skipped).
//! The default pair table (1,000,000) holds every client × endpoint pair of the workload
//! (843,801). `GATEWATCH_THROUGHPUT_MAX_PAIRS=500000` runs it with a table too small for
//! them, which then evicts a pair on three events in four: the difference is what that
//! churn costs.

mod common;

use gatewatch_simulator::workload;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use gatewatch_features::{FeatureConfig, FeatureStage};

fn shifted(batches: &[RecordBatch], by_us: i64) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|b| {
            let ts = b
                .column(0)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap();
            let moved: TimestampMicrosecondArray = ts
                .unary::<_, arrow::datatypes::TimestampMicrosecondType>(|t| t + by_us)
                .with_timezone("UTC");
            let mut cols: Vec<ArrayRef> = b.columns().to_vec();
            cols[0] = Arc::new(moved);
            RecordBatch::try_new(b.schema(), cols).unwrap()
        })
        .collect()
}

#[test]
#[ignore = "release-mode measurement; run with --release -- --ignored"]
fn throughput_with_100k_clients() {
    let n = 1_000_000;
    let clients =
        match std::env::var("GATEWATCH_THROUGHPUT_CLIENTS") {
            Ok(v) => v.parse::<u64>().ok().filter(|&c| c > 0).unwrap_or_else(|| {
                panic!("GATEWATCH_THROUGHPUT_CLIENTS={v:?}: not a positive count")
            }),
            Err(_) => workload::CORPUS_CLIENTS,
        };
    let mut cfg = FeatureConfig::default();
    if let Ok(v) = std::env::var("GATEWATCH_THROUGHPUT_MAX_PAIRS") {
        cfg.max_pairs = v.parse().ok().filter(|&p| p > 0).unwrap_or_else(|| {
            panic!("GATEWATCH_THROUGHPUT_MAX_PAIRS={v:?}: not a positive count")
        });
    }
    let batches = workload::rekeyed_corpus_on(n, false, clients);
    let mut stage = FeatureStage::new(cfg).unwrap();
    for b in &batches {
        stage.process(b).unwrap();
    }
    let s = stage.state_stats();
    println!(
        "warm: {} clients, {} endpoints, {} pairs, {} networks, {} MiB state, {} B/client",
        s.clients,
        s.endpoints,
        s.pairs,
        s.networks,
        s.bytes >> 20,
        s.bytes_per_client
    );
    // Wall time, and the CPU time of this thread: the machine is shared, so the CPU time
    // (what the stage costs one core) is the steadier figure when others are busy.
    let mut rates = Vec::new();
    let mut cpu_rates = Vec::new();
    for pass in 1..=5i64 {
        let input = shifted(&batches, pass * n as i64 * workload::CORPUS_GAP_US);
        let cpu0 = thread_cpu_ns();
        let start = Instant::now();
        for b in &input {
            std::hint::black_box(stage.process(b).unwrap());
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        let cpu = thread_cpu_ns()
            .zip(cpu0)
            .map(|(b, a)| n as f64 / ((b - a) as f64 / 1e9));
        match cpu {
            Some(c) => {
                println!("pass {pass}: {rate:.0} events/s wall, {c:.0} events/s of CPU time")
            }
            None => println!("pass {pass}: {rate:.0} events/s wall"),
        }
        rates.push(rate);
        cpu_rates.extend(cpu);
    }
    rates.sort_by(f64::total_cmp);
    cpu_rates.sort_by(f64::total_cmp);
    println!("median: {:.0} events/s wall", rates[2]);
    if cpu_rates.len() == 5 {
        println!("median: {:.0} events/s of CPU time", cpu_rates[2]);
    }
    let s2 = stage.state_stats();
    println!(
        "after: {} MiB state, {} clients, {} evictions",
        s2.bytes >> 20,
        s2.clients,
        s2.evictions
    );
    for (kind, t) in gatewatch_features::TABLE_KINDS.iter().zip(s2.tables) {
        println!(
            "  {kind}: {} of {} tracked, {} evicted for room, {} idle, {} B each",
            t.tracked, t.cap, t.capacity_evictions, t.idle_evictions, t.bytes_per_entity
        );
    }
    // The workload is the one the figures are quoted for, and the state stays within the
    // stage's bounds. (The rates are this machine's and are not asserted.)
    if clients != workload::CORPUS_CLIENTS {
        println!(
            "{clients} clients asked for: the bounds of the 100,000-client workload are not checked"
        );
        return;
    }
    assert!(s.clients >= 99_000, "{} clients tracked", s.clients);
    assert!(s.endpoints >= 200, "{} endpoints", s.endpoints);
    assert!(
        s.bytes_per_client <= 1024,
        "{} bytes per tracked client",
        s.bytes_per_client
    );
    assert!(
        s2.bytes <= s.bytes + s.bytes / 20,
        "state grew from {} to {} bytes over five passes",
        s.bytes,
        s2.bytes
    );
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (Linux); `None`
/// elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
