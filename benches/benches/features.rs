//! The feature stage, per core: templating + inventory + windows + features.
//!
//! Input is simulated traffic (realistic paths, queries, bodies, user agents, statuses)
//! re-keyed onto 100,000 clients (half identified by `client_id`, half by IP only) and
//! spread over about 200 endpoint templates, in batches of 8192 rows built before timing.
//! The stage is warmed with one pass over the corpus so every client, pair and endpoint
//! is already tracked, and each timed pass shifts the timestamps forward so event time
//! keeps advancing as it does in production. Throughput is events per second on one
//! thread.
//!
//! `features_parts` times two parts of that work alone on the same corpus, so the stage's
//! figure can be split: the lexer (character classes, entropy and injection markers of
//! path, query and body) and the templater (a raw path to its endpoint template, learned
//! positions included). The rest of an event's time is the windows, the tables and the
//! feature arithmetic.
//!
//! `openapi_match` times mapping request paths to an OpenAPI spec's declared paths (the
//! segment hashing included), once with the simulated shop's spec and once with that spec
//! plus about 1,500 further declared paths, the size of a large public API's spec.

use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch_benches::{full_run, shifted, simulator};
use gatewatch_features::openapi::{Spec, seg_hash};
use gatewatch_features::request::Lexer;
use gatewatch_features::template::Templater;
use gatewatch_features::{FeatureConfig, FeatureStage};
use gatewatch_ingest::schema::col;
use gatewatch_simulator::workload::{CORPUS_GAP_US, rekeyed_corpus};

/// The feature stage's at-scale workload: 100,000 clients, 227 endpoints, one event every
/// millisecond of event time (the throughput and digest tests run the same events).
fn corpus(n: usize) -> Vec<RecordBatch> {
    rekeyed_corpus(n, false)
}

fn bench_features(c: &mut Criterion) {
    let n = if full_run() { 1_000_000 } else { 20_000 };
    let batches = corpus(n);
    let span_us = n as i64 * CORPUS_GAP_US;
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

/// The request strings of `batches`: path, query and body of every row.
fn request_strings(batches: &[RecordBatch]) -> Vec<(String, Option<String>, Option<String>)> {
    let mut rows = Vec::new();
    for b in batches {
        let column = |name: &str| {
            b.column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"))
                .as_string::<i32>()
        };
        let (path, query, body) = (column(col::PATH), column(col::QUERY), column(col::BODY));
        let text =
            |a: &arrow::array::StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
        for i in 0..b.num_rows() {
            rows.push((
                text(path, i).unwrap_or_default(),
                text(query, i),
                text(body, i),
            ));
        }
    }
    rows
}

fn bench_parts(c: &mut Criterion) {
    let n = if full_run() { 200_000 } else { 20_000 };
    let requests = request_strings(&corpus(n));
    let mut group = c.benchmark_group("features_parts");
    group.throughput(Throughput::Elements(requests.len() as u64));
    group.sample_size(10);
    let mut lexer = Lexer::new();
    group.bench_function("lexer (path, query, body)", |b| {
        b.iter(|| {
            let mut bytes = 0f32;
            for (path, query, body) in &requests {
                let l = lexer.request_features(path, query.as_deref(), body.as_deref());
                bytes += std::hint::black_box(l).path_len;
            }
            bytes
        })
    });
    // The stage's default learning settings; warmed by one pass, as the stage is.
    let mut templater = Templater::new(FeatureConfig::default().learn_config());
    let mut out = String::new();
    for (path, _, _) in &requests {
        templater.template(path, &mut out);
    }
    group.bench_function("templater (path)", |b| {
        b.iter(|| {
            let mut ids = 0usize;
            for (path, _, _) in &requests {
                ids += usize::from(templater.template(path, &mut out).is_some());
            }
            ids
        })
    });
    group.finish();
}

/// The simulated shop's spec with up to `extra` further paths (fewer where two come out
/// the same) under `/api/v1` and `/api/v2`, each of one to three literal segments after
/// the version, a third of them ending in a parameter.
fn spec_with(extra: usize) -> Spec {
    let mut doc: serde_json::Value =
        serde_json::from_str(&gatewatch_simulator::openapi_json()).expect("spec json");
    let paths = doc["paths"].as_object_mut().expect("paths");
    for k in 0..extra {
        let mut p = format!("/api/v{}/svc{}", 1 + k % 2, k % 97);
        for d in 0..k % 3 {
            p.push_str(&format!("/r{}", (k / 97 + d) % 31));
        }
        if k % 3 == 0 {
            p.push_str("/{id}");
        }
        paths.insert(p, serde_json::json!({"get": {"responses": {}}}));
    }
    Spec::from_json(&doc.to_string()).expect("spec")
}

fn bench_openapi(c: &mut Criterion) {
    let mut sim = simulator();
    let requests: Vec<(String, String)> = (0..20_000)
        .map(|_| {
            let e = sim.next_event().to_access_event();
            (
                e.method.unwrap_or_default().into_owned(),
                e.path.into_owned(),
            )
        })
        .collect();
    let mut group = c.benchmark_group("openapi_match");
    group.throughput(Throughput::Elements(requests.len() as u64));
    for extra in [0, 2_000] {
        let spec = spec_with(extra);
        let mut segs: Vec<u64> = Vec::new();
        group.bench_function(format!("{} declared paths", spec.paths.len()), |b| {
            b.iter(|| {
                let mut matched = 0usize;
                for (method, path) in &requests {
                    segs.clear();
                    segs.extend(path.split('/').map(seg_hash));
                    matched += usize::from(spec.match_path(&segs, method).is_some());
                }
                matched
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_features, bench_parts, bench_openapi);
criterion_main!(benches);
