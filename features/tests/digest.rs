//! Digests of every output column over a few large workloads, in release mode only
//! (ignored by default):
//!
//! ```sh
//! cargo test --release -p gatewatch-features --test digest -- --ignored --nocapture
//! ```
//!
//! A change meant to make the stage faster without changing what it computes must print
//! the same digests before and after: run this test on both builds and compare. Within
//! one build the test checks that two fresh stages give the same digest. The
//! workloads are the throughput test's (100,000 clients, pairs evicted all the time), the
//! same with late events and IPv6 clients, the same against small caps and a short TTL
//! (constant eviction of every kind), and simulated traffic of every scenario, with and
//! without an OpenAPI spec.

mod common;

use gatewatch_simulator::workload;

use std::hash::{DefaultHasher, Hasher};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type};
use gatewatch_features::openapi::Spec;
use gatewatch_features::{FeatureConfig, FeatureStage};
use gatewatch_simulator::{SimConfig, openapi_json};

/// Hashes every appended column of `out` (from `first`, the first appended column) into
/// `h`: strings with their nulls, booleans, and the bits of every float.
fn hash_output(out: &RecordBatch, first: usize, h: &mut DefaultHasher) {
    for col in &out.columns()[first..] {
        match col.data_type() {
            DataType::Utf8 => {
                let a = col.as_string::<i32>();
                for i in 0..a.len() {
                    if a.is_null(i) {
                        h.write_u8(0);
                    } else {
                        h.write_u8(1);
                        h.write(a.value(i).as_bytes());
                    }
                }
            }
            DataType::Boolean => {
                let a = col.as_boolean();
                for i in 0..a.len() {
                    h.write_u8(u8::from(a.value(i)));
                }
            }
            DataType::Float32 => {
                for v in col.as_primitive::<Float32Type>().values() {
                    h.write_u32(v.to_bits());
                }
            }
            other => panic!("unexpected output column type {other}"),
        }
    }
}

/// Runs `batches` through a stage from `make`, twice with fresh stages: the two digests
/// must agree (the output may depend on nothing but the input and the configuration),
/// and the digest and state counters are printed for comparison with another build.
fn digest(name: &str, make: impl Fn() -> FeatureStage, batches: &[RecordBatch]) {
    let run = || {
        let mut stage = make();
        let mut h = DefaultHasher::new();
        for b in batches {
            let out = stage.process(b).unwrap();
            hash_output(&out, b.num_columns(), &mut h);
        }
        (h.finish(), stage.state_stats())
    };
    let (d, s) = run();
    let (again, _) = run();
    assert_eq!(d, again, "{name}: two fresh stages gave different output");
    println!(
        "{name}: digest {d:016x}; {} events, {} late, {} clients, {} pairs, {} endpoints, \
         {} networks, {} evictions",
        s.events, s.late_events, s.clients, s.pairs, s.endpoints, s.networks, s.evictions
    );
}

#[test]
#[ignore = "release-mode comparison; run with --release -- --ignored"]
fn output_digests() {
    let plain = workload::rekeyed_corpus(1_000_000, false);
    let stage = |cfg: &FeatureConfig| FeatureStage::new(cfg.clone()).unwrap();
    let default = FeatureConfig::default();
    digest("throughput", || stage(&default), &plain);
    let messy = workload::rekeyed_corpus(700_000, true);
    digest("disorder+ipv6", || stage(&default), &messy);
    let small = FeatureConfig {
        max_clients: 3_000,
        max_pairs: 6_000,
        max_endpoints: 60,
        max_networks: 1_500,
        max_templates: 2_000,
        spans: vec!["10s".into(), "1m".into()],
        reference_span: "1m".into(),
        idle_ttl: "90s".into(),
        warmup: "1m".into(),
        new_endpoint_period: "2m".into(),
        ..FeatureConfig::default()
    };
    digest("small caps", || stage(&small), &messy[..40]);
    let evs = common::simulate_for(
        SimConfig {
            seed: 7,
            start_us: common::T0,
            ..SimConfig::default()
        },
        40 * 60 * 1_000_000,
    );
    let batches: Vec<RecordBatch> = evs.chunks(1000).map(common::batch_of).collect();
    digest("simulated 40 min", || stage(&default), &batches);
    let spec = Spec::from_json(&openapi_json()).unwrap();
    let with_spec = || FeatureStage::with_spec(FeatureConfig::default(), spec.clone()).unwrap();
    digest("simulated 40 min, OpenAPI spec", with_spec, &batches);
}
