//! Request-content profiles, per core: training per request and scoring per request,
//! on simulated traffic (default mix, every attack scenario on), one request at a time
//! through the row API and a whole Arrow batch through `score_batch`.
//!
//! The endpoint template is the route the simulated gateway matched (the feature stage's
//! `endpoint_template` in the pipeline), the raw path when none matched.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch_benches::full_run;
use gatewatch_models::content::{ContentConfig, ContentProfiles, ContentRequest};
use gatewatch_simulator::{SimConfig, Simulator};

/// (method, template, query, body) of `n` simulated requests.
type Row = (String, String, Option<String>, Option<String>);

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
            )
        })
        .collect()
}

fn req(r: &Row) -> ContentRequest<'_> {
    ContentRequest::new(&r.0, &r.1, r.2.as_deref(), r.3.as_deref())
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
            col(&|r| Some(r.1.as_str())),
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
}

criterion_group!(benches, bench_content);
criterion_main!(benches);
