//! Request-content profiles, per core: training per request and scoring per request,
//! on simulated traffic (default mix, every attack scenario on), one request at a time
//! through the row API and a whole Arrow batch through `score_batch`.
//!
//! In the first three the endpoint template is the route the simulated gateway matched,
//! the raw path when none matched, and the raw path is examined too. The last scores what
//! the engine hands the profiles: batches out of the feature stage, whose learned
//! templates put ids and other values of the path under `{…}` segments, with profiles
//! trained on the batches before them (`train_batch`). That one is the engine's cost.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch_benches::full_run;
use gatewatch_models::content::{ContentConfig, ContentProfiles, ContentRequest};
use gatewatch_simulator::{SimConfig, Simulator};

/// (method, template, query, body, path) of `n` simulated requests.
type Row = (String, String, Option<String>, Option<String>, String);

fn corpus(n: usize, seed: u64) -> Vec<Row> {
    let cfg = SimConfig {
        seed,
        start_us: gatewatch_benches::START_US,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(cfg).expect("default simulator config is valid");
    (0..n)
        .map(|_| {
            let ev = sim.next_event();
            let template = if ev.route.is_empty() {
                ev.path.clone()
            } else {
                ev.route.to_owned()
            };
            let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            (
                ev.method.to_owned(),
                template,
                opt(&ev.query),
                opt(&ev.body),
                ev.path.clone(),
            )
        })
        .collect()
}

fn req(r: &Row) -> ContentRequest<'_> {
    ContentRequest::new(&r.0, &r.1, r.2.as_deref(), r.3.as_deref()).with_path(&r.4)
}

fn batch(rows: &[Row]) -> RecordBatch {
    let col = |f: &dyn Fn(&Row) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let schema = Schema::new(vec![
        Field::new("http_request_method", DataType::Utf8, true),
        Field::new("url_path", DataType::Utf8, true),
        Field::new("url_query", DataType::Utf8, true),
        Field::new("http_request_body_content", DataType::Utf8, true),
        Field::new("endpoint_template", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            col(&|r| Some(r.0.as_str())),
            col(&|r| Some(r.4.as_str())),
            col(&|r| r.2.as_deref()),
            col(&|r| r.3.as_deref()),
            col(&|r| Some(r.1.as_str())),
        ],
    )
    .expect("valid batch")
}

fn bench_content(c: &mut Criterion) {
    let n = if full_run() { 20_000 } else { 1_000 };
    let train = corpus(n, 42);
    let test = corpus(n, 43);
    let mut group = c.benchmark_group("content");
    group.throughput(Throughput::Elements(n as u64));

    group.bench_function("train per request", |b| {
        b.iter(|| {
            let mut p = ContentProfiles::new(ContentConfig::default());
            for r in &train {
                p.observe(&req(r));
            }
            p.templates()
        })
    });

    let mut profiles = ContentProfiles::new(ContentConfig::default());
    for r in &train {
        profiles.observe(&req(r));
    }
    group.bench_function("score per request (row API, with explanation)", |b| {
        b.iter(|| {
            let mut sum = 0f32;
            for r in &test {
                sum += profiles.score(&req(r)).score;
            }
            sum
        })
    });

    let batch = batch(&test);
    group.bench_function("score per request (score_batch)", |b| {
        b.iter(|| {
            let out = profiles.score_batch(&batch).expect("scores");
            assert_eq!(out.scores.len(), n);
            out
        })
    });
    group.finish();

    // The engine's input: feature-stage batches of 8,192 rows, the first half trained on.
    let mut batches =
        gatewatch_benches::feature_batches(if full_run() { 81_920 } else { 2_048 }, 8192.min(n));
    let test = batches.split_off(batches.len() / 2);
    let mut learned = ContentProfiles::new(ContentConfig::default());
    for b in &batches {
        learned
            .train_batch(b)
            .expect("feature batches carry the content columns");
    }
    let rows: usize = test.iter().map(RecordBatch::num_rows).sum();
    // Two builds that score alike print the same digest (every score's bits and every
    // explanation, in order): a change meant only to be faster can be checked by it.
    let mut digest = 0xcbf2_9ce4_8422_2325u64;
    let mut mix = |bytes: &[u8]| {
        for &b in bytes {
            digest = (digest ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    let mut explained = 0;
    for batch in &test {
        let out = learned.score_batch(batch).expect("scores");
        for i in 0..out.scores.len() {
            mix(&out.scores.value(i).to_bits().to_le_bytes());
            if out.explanations.is_valid(i) {
                explained += 1;
                mix(out.explanations.value(i).as_bytes());
            }
            mix(b"\n");
        }
    }
    eprintln!("content: {rows} rows scored, {explained} explained, digest {digest:016x}");
    let mut group = c.benchmark_group("content");
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function(
        "score per request (score_batch, feature-stage batches)",
        |b| {
            b.iter(|| {
                test.iter()
                    .map(|batch| learned.score_batch(batch).expect("scores").scores.len())
                    .sum::<usize>()
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench_content);
criterion_main!(benches);
