//! Isolation forest, per core: fit, batch scoring over Arrow `Float32` columns and
//! single-row scoring, at the production model size (100 trees, ψ = 256) on 24 features.
//!
//! The rows are feature-like (clusters of different scales plus 1 % outliers), generated
//! from a fixed seed so runs compare. The side-by-side figures against scikit-learn and
//! isotree come from `benches/compare_iforest.py`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gatewatch_benches::{BenchRng, full_run};
use gatewatch_models::IsolationForestParams;
use ndarray::Array2;

const FEATURES: usize = 24;

fn rows(n: usize) -> Array2<f32> {
    let mut rng = BenchRng(0x9e37_79b9_7f4a_7c15);
    let centres: Vec<f32> = (0..5 * FEATURES).map(|_| rng.normalish() * 4.0).collect();
    let scales: Vec<f32> = (0..5 * FEATURES).map(|_| 0.3 + 1.7 * rng.unit()).collect();
    Array2::from_shape_fn((n, FEATURES), |(r, f)| {
        if r % 100 == 0 {
            30.0 * rng.unit() - 15.0
        } else {
            let c = (r * 7919) % 5;
            centres[c * FEATURES + f] + rng.normalish() * scales[c * FEATURES + f]
        }
    })
}

fn batch_of(x: &Array2<f32>) -> (RecordBatch, Vec<String>) {
    let names: Vec<String> = (0..FEATURES).map(|f| format!("f_{f}")).collect();
    let fields: Vec<Field> = names
        .iter()
        .map(|n| Field::new(n, DataType::Float32, false))
        .collect();
    let cols: Vec<ArrayRef> = (0..FEATURES)
        .map(|f| Arc::new(Float32Array::from(x.column(f).to_vec())) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("batch");
    (batch, names)
}

fn bench_iforest(c: &mut Criterion) {
    let n = if full_run() { 65_536 } else { 2_048 };
    let x = rows(n);
    let (batch, names) = batch_of(&x);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("iforest");
    for extended in [false, true] {
        let kind = if extended { "extended" } else { "axis" };
        let params = IsolationForestParams::new().extended(extended).seed(1);
        let model = params.fit_array(x.view()).expect("fit");

        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("fit 100 trees ψ=256 ({kind})"), |b| {
            b.iter(|| params.fit_array(x.view()).expect("fit"))
        });

        group.throughput(Throughput::Elements(n as u64));
        // The extended forest's batch takes seconds per iteration: criterion's minimum of
        // ten samples is plenty to rank it against the axis-parallel one.
        group.sample_size(if extended { 10 } else { 100 });
        group.bench_function(format!("score_batch {n} rows ({kind})"), |b| {
            b.iter(|| model.score_batch(&batch, &refs).expect("score"))
        });
        group.sample_size(100);

        group.throughput(Throughput::Elements(1));
        let mut r = 0usize;
        group.bench_function(format!("score_row ({kind})"), |b| {
            b.iter_batched(
                || {
                    r = (r + 1) % n;
                    r
                },
                |r| {
                    model
                        .score_row(x.row(r).as_slice().expect("standard"))
                        .expect("score")
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_iforest);
criterion_main!(benches);
