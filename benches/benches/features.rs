//! The feature stage, per core: templating + inventory + windows + features.
//!
//! Input is simulated traffic (realistic paths, queries, bodies, user agents, statuses)
//! re-keyed onto 100,000 clients (half identified by `client_id`, half by IP only) and
//! spread over about 200 endpoint templates, in batches of 8192 rows built before timing.
//! The stage is warmed with one pass over the corpus so every client, pair and endpoint
//! is already tracked, and each timed pass shifts the timestamps forward so event time
//! keeps advancing as it does in production. Throughput is events per second on one
//! thread.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch_benches::{START_US, full_run, shifted, simulator};
use gatewatch_features::{FeatureConfig, FeatureStage};
use gatewatch_ingest::{EventBuilder, Format, Provenance};

const BATCH: usize = 8192;
const CLIENTS: u64 = 100_000;
/// Event-time rate of the corpus: 1,000 events per simulated second.
const GAP_US: i64 = 1_000;

fn corpus(n: usize) -> Vec<RecordBatch> {
    let mut sim = simulator();
    let mut batches = Vec::new();
    let mut b = EventBuilder::with_capacity(BATCH);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..n {
        let se = sim.next_event();
        let mut e = se.to_access_event();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let c = x % CLIENTS;
        e.timestamp_us = START_US + i as i64 * GAP_US;
        e.source_ip = Some(Cow::Owned(format!(
            "10.{}.{}.{}",
            c >> 16,
            (c >> 8) & 255,
            c & 255
        )));
        e.client_id = c.is_multiple_of(2).then(|| Cow::Owned(format!("cust-{c}")));
        // A quarter of the requests go to 30 further resources in five groups of six (few
        // enough values per position that the learned templater keeps them literal), as
        // in the throughput test's workload (227 endpoints, method and template, there).
        if (x >> 40).is_multiple_of(4) {
            let k = (x >> 20) % 30;
            e.path = Cow::Owned(format!(
                "/api/v3/g{}/res{}/{}",
                k / 6,
                k % 6,
                (x >> 8) % 100_000
            ));
        }
        b.append(Format::Json, &e, &Provenance::None);
        if b.len() == BATCH {
            batches.push(b.finish());
        }
    }
    if !b.is_empty() {
        batches.push(b.finish());
    }
    batches
}

fn bench_features(c: &mut Criterion) {
    let n = if full_run() { 1_000_000 } else { 20_000 };
    let batches = corpus(n);
    let span_us = n as i64 * GAP_US;
    let mut stage = FeatureStage::new(FeatureConfig::default()).expect("default config");
    for b in &batches {
        stage.process(b).expect("process");
    }
    let s = stage.state_stats();
    let templates = stage.inventory().len();
    eprintln!(
        "features: {n} events, {} clients, {templates} endpoints, {} pairs, {} networks, {} MiB state, {} B/client",
        s.clients,
        s.pairs,
        s.networks,
        s.bytes >> 20,
        s.bytes_per_client
    );
    let mut group = c.benchmark_group("features");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    let mut pass = 1i64;
    group.bench_function(
        format!("process ({} clients, {templates} endpoints)", s.clients),
        |bch| {
            bch.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let input = shifted(&batches, pass * span_us);
                    pass += 1;
                    let start = Instant::now();
                    for b in &input {
                        std::hint::black_box(stage.process(b).expect("process"));
                    }
                    total += start.elapsed();
                }
                total
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench_features);
criterion_main!(benches);
