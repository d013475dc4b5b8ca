//! Behaviour profiles (k-means over client windows), per core: a fit as a retrain makes it
//! (default parameters: k from 2 to 8, four restarts each, fitted on a 10,000-row sample
//! of the 50,000 reservoir rows, the silhouette on 2,000) and the per-row assignment the
//! engine makes for every event, on the eight default profile features.
//!
//! The rows are window-like (five kinds of client, log-normal rates and byte counts,
//! ratios in 0–1, 1 % outliers), generated from a fixed seed so runs compare.
//!
//! `retrain` is a whole retrain as the engine's retrain thread runs it: the isolation
//! forest on every feature and its calibrator, the behaviour profiles and theirs, and the
//! drift against the model scoring now, on 50,848 reservoir rows of feature-stage output
//! (simulated traffic). Wall time: the k-means restarts run on rayon's threads.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch_benches::{BenchRng, feature_batches, feature_names, feature_reservoir, full_run};
use gatewatch_models::stream::{ModelHandle, Trainer, TrainerConfig};
use gatewatch_models::{BehaviourProfiles, ProfileParams};
use ndarray::Array2;

const FEATURES: usize = 8;

/// Rows shaped like the default profile features: rate, 4xx share, distinct endpoints,
/// bytes out, inter-arrival CV, inter-arrival log, authenticated, write method.
fn rows(n: usize) -> Array2<f32> {
    let mut rng = BenchRng(0x9e37_79b9_7f4a_7c15);
    // Per kind of client: rate (/s), 4xx share, endpoints, log bytes, cv, log gap.
    let kinds: [[f32; 6]; 5] = [
        [0.02, 0.02, 3.0, 9.0, 1.2, 4.0],
        [0.2, 0.05, 8.0, 11.0, 0.9, 1.5],
        [1.5, 0.01, 4.0, 13.0, 0.3, -0.5],
        [0.05, 0.3, 2.0, 7.0, 1.5, 3.0],
        [5.0, 0.1, 20.0, 14.0, 0.1, -2.0],
    ];
    Array2::from_shape_fn((n, FEATURES), |(r, f)| {
        let k = &kinds[(r * 7919) % kinds.len()];
        let noise = rng.unit() + rng.unit() - 1.0;
        let outlier = if r % 100 == 0 { 20.0 } else { 1.0 };
        match f {
            0 => k[0] * (1.0 + noise) * outlier,
            1 => (k[1] * (1.0 + noise)).clamp(0.0, 1.0),
            2 => (k[2] * (1.0 + noise) * outlier).round().max(1.0),
            3 => (k[3] + noise).exp(),
            4 => k[4] * (1.0 + 0.5 * noise),
            5 => k[5] + noise,
            6 => f32::from(rng.unit() < 0.6),
            _ => f32::from(rng.unit() < 0.2),
        }
    })
}

fn bench_retrain(c: &mut Criterion) {
    // Two halves: the model scoring now is trained on the first, the retrain on the second.
    let (events, batch) = if full_run() {
        (100_000, 8192)
    } else {
        (4_096, 2_048)
    };
    let batches = feature_batches(events, batch);
    let names = feature_names(&batches[0]);
    let (first, second) = batches.split_at(batches.len() / 2);
    let config = TrainerConfig::with_default_profiles();
    let trainer = Trainer::new(names.clone(), config).expect("trainer");
    let handle = ModelHandle::new(
        trainer
            .train(&feature_reservoir(first, &names).snapshot())
            .expect("first model"),
    );
    let set = feature_reservoir(second, &names).snapshot();
    let mut group = c.benchmark_group("profiles");
    group.sample_size(10);
    group.throughput(Throughput::Elements(set.rows.nrows() as u64));
    group.bench_function(
        format!(
            "retrain ({} rows, {} features)",
            set.rows.nrows(),
            names.len()
        ),
        |b| {
            b.iter(|| {
                trainer
                    .retrain_in_background(set.clone(), handle.clone())
                    .expect("retrain thread")
                    .join()
                    .expect("retrain finished")
                    .expect("retrained")
            })
        },
    );
    group.finish();
}

fn bench_profiles(c: &mut Criterion) {
    let names: Vec<String> = (0..FEATURES).map(|f| format!("f_{f}")).collect();
    let train = rows(50_000);
    let params = ProfileParams::default();
    let model = BehaviourProfiles::fit(train.view(), &names, &params).expect("fit");
    let n = if full_run() { 8_192 } else { 512 };
    let events = rows(n);

    let mut group = c.benchmark_group("profiles");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    group.bench_function("fit (retrain, 50,000 rows)", |b| {
        b.iter(|| BehaviourProfiles::fit(train.view(), &names, &params).expect("fit"))
    });
    group.sample_size(50);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(format!("assign {n} rows"), |b| {
        b.iter(|| {
            let mut far = 0.0f32;
            for r in events.rows() {
                let (_, d) = model.assign(r.as_slice().expect("row")).expect("assign");
                far = far.max(d);
            }
            std::hint::black_box(far)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_profiles, bench_retrain);
criterion_main!(benches);
