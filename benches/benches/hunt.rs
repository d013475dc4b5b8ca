//! The Parquet store and the hunt library.
//!
//! - `sink`: simulated events appended to a fresh store and flushed (sorting, zstd,
//!   statistics, bloom filters, temp-and-rename), in events per second on one thread.
//! - `hunt_day`: every hunt of `hunts/` over a store of a simulated day. The store is
//!   written once, to `$GATEWATCH_HUNT_STORE` (default `target/hunt-store-<N>`), with
//!   `$GATEWATCH_HUNT_EVENTS` events (default 10,000,000 at 116 events per simulated
//!   second, about one day), and reused by later runs and by `benches/duckdb_hunts.py`.
//!   Under `cargo test` it uses a small store instead.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch_benches::full_run;
use gatewatch_hunt::testdata::write_simulated;
use gatewatch_hunt::{HuntSession, QueryLimits, Store, StoreConfig, Table};
use gatewatch_ingest::schema::EventBuilder;
use gatewatch_ingest::{Format, Provenance};
use gatewatch_simulator::{SimConfig, Simulator};

const BATCH: usize = 8192;

fn bench_sink(c: &mut Criterion) {
    let n = if full_run() { 500_000 } else { 20_000 };
    let mut sim = Simulator::new(SimConfig {
        seed: 11,
        ..SimConfig::default()
    })
    .expect("simulator");
    let mut batches = Vec::new();
    let mut b = EventBuilder::with_capacity(BATCH);
    for i in 0..n {
        b.append(
            Format::Kong,
            &sim.next_event().to_access_event(),
            &Provenance::None,
        );
        if (i + 1) % BATCH == 0 {
            batches.push(b.finish());
        }
    }
    batches.push(b.finish());
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.bench_function("sink", |bench| {
        bench.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                let mut store = Store::open(dir.path(), StoreConfig::default()).expect("open");
                for batch in &batches {
                    store.append(Table::Events, batch.clone()).expect("append");
                }
                store.flush().expect("flush");
                dir
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn day_store() -> (PathBuf, Option<tempfile::TempDir>) {
    if !full_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        write_simulated(&mut store, SimConfig::default(), 20_000, BATCH).expect("write");
        return (dir.path().to_path_buf(), Some(dir));
    }
    let events: u64 = std::env::var("GATEWATCH_HUNT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let path = std::env::var_os("GATEWATCH_HUNT_STORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../target/hunt-store-{events}"))
        });
    let done = path.join(".complete");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&path);
        eprintln!(
            "writing {events} simulated events to {} (once)",
            path.display()
        );
        let t = std::time::Instant::now();
        let mut store = Store::open(&path, StoreConfig::default()).expect("open");
        let cfg = SimConfig {
            seed: 7,
            rate_per_sec: 116.0,
            ..SimConfig::default()
        };
        write_simulated(&mut store, cfg, events, BATCH).expect("write");
        eprintln!("written in {:.0} s", t.elapsed().as_secs_f64());
        std::fs::write(&done, events.to_string()).expect("mark complete");
    }
    (path, None)
}

fn bench_hunts(c: &mut Criterion) {
    let (path, _keep) = day_store();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let limits = QueryLimits {
        max_rows: 100_000_000,
        timeout_secs: 3600,
        ..QueryLimits::default()
    };
    let session = rt
        .block_on(HuntSession::open(&path, limits))
        .expect("session");
    let mut group = c.benchmark_group("hunt_day");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(if full_run() { 20 } else { 1 }));
    group.warm_up_time(Duration::from_secs(1));
    for hunt in gatewatch_hunt::hunts::library() {
        group.bench_function(hunt.name.as_str(), |b| {
            b.iter(|| rt.block_on(session.query(&hunt.sql)).expect("hunt").rows)
        });
    }
    group.finish();
}

criterion_group!(benches, bench_sink, bench_hunts);
criterion_main!(benches);
