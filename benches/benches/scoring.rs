//! The scoring stage, per core: rules, fusion of the model scores, explanations and the
//! incident table (`ScoringStage::process`), on the batches the pipeline hands it.
//!
//! Input is simulated traffic (default mix, every attack scenario on) run through the
//! feature stage, with the model columns the engine appends: an isolation forest and
//! request-content profiles trained on the first half of the traffic score the second
//! half. Preparing all of that happens before timing; only the scoring stage is timed.
//! The stage keeps its state (population statistics, incidents) from pass to pass, and
//! each pass moves the timestamps forward so event time keeps advancing as it does in
//! production. Throughput is events per second on one thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, Float32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch_benches::{
    f32_cols, feature_batches, feature_names, feature_reservoir, full_run, shifted,
};
use gatewatch_models::content::{ContentConfig, ContentProfiles};
use gatewatch_models::stream::{Trainer, TrainerConfig};
use gatewatch_scoring::incidents::IncidentConfig;
use gatewatch_scoring::scorer::ScoringConfig;
use gatewatch_scoring::stage::ScoringStage;

const BATCH: usize = 8192;

/// Models trained on `train` (isolation forest on every feature, behaviour profiles,
/// content profiles), and `test` with the columns the engine appends from them.
fn with_model_scores(train: &[RecordBatch], test: &[RecordBatch]) -> Vec<RecordBatch> {
    let names = feature_names(&train[0]);
    let reservoir = feature_reservoir(train, &names);
    let mut content = ContentProfiles::new(ContentConfig::default());
    for b in train {
        content.train_batch(b).expect("content training");
    }
    // The behaviour profiles cluster the engine's default profile features.
    let trainer = TrainerConfig::with_default_profiles();
    let model = Trainer::new(names.clone(), trainer)
        .expect("trainer")
        .train(&reservoir.snapshot())
        .expect("training");
    test.iter()
        .map(|b| {
            let mut forest = vec![0f32; b.num_rows()];
            model
                .forest()
                .score_columns(&f32_cols(b, &names), &mut forest)
                .expect("forest scores");
            model.forest_calibrator.calibrate_all(&mut forest);
            // The behaviour profile of each row's client window and its calibrated
            // distance, as the engine appends them (the profile as a dictionary key).
            let p = model.profiles().expect("behaviour profiles trained");
            let (profile, profile_name) = p
                .assign_columns(&f32_cols(b, p.profiles.features()), 3)
                .expect("behaviour profiles");
            let c = content.score_batch(b).expect("content scores");
            let risk: Float32Array = c.scores.iter().map(|v| v.map(|v| v * 100.0)).collect();
            let mut fields: Vec<Field> =
                b.schema().fields().iter().map(|f| (**f).clone()).collect();
            let mut cols: Vec<ArrayRef> = b.columns().to_vec();
            for (name, ty, col) in [
                (
                    "score_iforest",
                    DataType::Float32,
                    Arc::new(Float32Array::from(forest)) as ArrayRef,
                ),
                (
                    "score_profile",
                    DataType::Float32,
                    Arc::new(Float32Array::from(profile)) as ArrayRef,
                ),
                (
                    "behaviour_profile",
                    profile_name.data_type().clone(),
                    Arc::new(profile_name),
                ),
                ("score_content", DataType::Float32, Arc::new(risk)),
                (
                    "content_explanation",
                    DataType::Utf8,
                    Arc::new(c.explanations),
                ),
            ] {
                fields.push(Field::new(name, ty, true));
                cols.push(col);
            }
            RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("scored batch")
        })
        .collect()
}

fn bench_scoring(c: &mut Criterion) {
    let n = if full_run() { 240_000 } else { 2 * BATCH };
    let mut batches = feature_batches(n, BATCH);
    let test = batches.split_off(batches.len() / 2);
    let input = with_model_scores(&batches, &test);
    let events: usize = input.iter().map(RecordBatch::num_rows).sum();
    let first = gatewatch_scoring::columns::timestamps_ms(&input[0]).expect("timestamps")[0];
    let last_batch = input.last().expect("a batch");
    let last = *gatewatch_scoring::columns::timestamps_ms(last_batch)
        .expect("timestamps")
        .last()
        .expect("a row");
    // Each pass starts a minute after the previous one ended.
    let span_us = (last - first + 60_000) * 1000;

    let mut stage = ScoringStage::new(ScoringConfig::default(), IncidentConfig::default())
        .expect("default scoring config");
    let warm = stage_pass(&mut stage, &input);
    eprintln!(
        "scoring: {events} events, {} features, {} alert candidates and {} alerts per pass",
        feature_names(&input[0]).len(),
        warm.0,
        warm.1
    );
    let mut group = c.benchmark_group("scoring");
    group.throughput(Throughput::Elements(events as u64));
    group.sample_size(10);
    let mut pass = 1i64;
    group.bench_function("process (rules, models, incidents)", |bch| {
        bch.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let moved = shifted(&input, pass * span_us);
                pass += 1;
                let start = Instant::now();
                std::hint::black_box(stage_pass(&mut stage, &moved));
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

/// One pass over the batches: (alert candidates, alerts).
fn stage_pass(stage: &mut ScoringStage, batches: &[RecordBatch]) -> (usize, usize) {
    let mut totals = (0, 0);
    for b in batches {
        let out = stage.process(b).expect("scoring");
        assert!(
            out.batch
                .column_by_name("risk")
                .is_some_and(|r| r.null_count() == 0)
        );
        totals.0 += out.candidates;
        totals.1 += out.alerts.len();
    }
    totals
}

criterion_group!(benches, bench_scoring);
criterion_main!(benches);
