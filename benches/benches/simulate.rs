//! The traffic simulator, per core: making events (the actors' agenda and their requests)
//! and making and rendering them as Kong records, the load `gatewatch simulate --rate
//! 50000 --flat` puts on the machine that also runs the broker and the processor in the
//! end-to-end latency run.
//!
//! The simulator is set up as that command sets it up (default clients, flat 50,000
//! events/s, every scenario) and runs 200,000 events before measuring, so its agenda holds
//! the sessions of a steady state rather than of a cold start.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch_benches::{START_US, full_run};
use gatewatch_ingest::Format;
use gatewatch_simulator::{SimConfig, Simulator, render};

fn warm_simulator() -> Simulator {
    let cfg = SimConfig {
        seed: 3,
        start_us: START_US,
        rate_per_sec: 50_000.0,
        diurnal: false,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(cfg).expect("the bench's simulator configuration is valid");
    let warm = if full_run() { 200_000 } else { 2_000 };
    for _ in 0..warm {
        sim.next_event();
    }
    sim
}

fn bench_simulate(c: &mut Criterion) {
    let n: u64 = if full_run() { 50_000 } else { 500 };
    let mut group = c.benchmark_group("simulate");
    group.throughput(Throughput::Elements(n));

    let mut sim = warm_simulator();
    group.bench_function(format!("events {n}"), |b| {
        b.iter(|| {
            // Sum the times so the events are used.
            let mut sum = 0i64;
            for _ in 0..n {
                sum = sum.wrapping_add(sim.next_event().time_us);
            }
            sum
        })
    });

    let mut sim = warm_simulator();
    let mut out = Vec::with_capacity(2048);
    group.bench_function(format!("kong records {n}"), |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for _ in 0..n {
                out.clear();
                render(sim.next_event(), Format::Kong, &mut out);
                bytes += out.len();
            }
            bytes
        })
    });
    group.finish();
}

criterion_group!(benches, bench_simulate);
criterion_main!(benches);
