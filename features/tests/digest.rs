//! Digests of every output column over a few large workloads, in release mode only
//! (ignored by default):
//!
//! ```sh
//! cargo test --release -p gatewatch-features --test digest -- --ignored --nocapture
//! ```
//!
//! A change meant to make the stage faster without changing what it computes must print
//! the same digests before and after: run this test on both builds and compare. The
//! workloads are the throughput test's (100,000 clients, pairs evicted all the time), the
//! same with late events and IPv6 clients, the same against small caps and a short TTL
//! (constant eviction of every kind), and simulated traffic of every scenario, with and
//! without an OpenAPI spec.

mod common;

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hasher};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type};
use gatewatch_features::openapi::Spec;
use gatewatch_features::{FeatureConfig, FeatureStage};
use gatewatch_ingest::{EventBuilder, Format, Provenance};
use gatewatch_simulator::{SimConfig, Simulator, openapi_json};

const BATCH: usize = 8192;
const CLIENTS: u64 = 100_000;
const GAP_US: i64 = 1_000;

/// The throughput workload; with `disorder`, one event in five is moved up to two minutes
/// back (some beyond the allowed lateness) and one client in eight has an IPv6 address.
fn corpus(n: usize, disorder: bool) -> Vec<RecordBatch> {
    let mut sim = Simulator::new(SimConfig {
        seed: 42,
        start_us: common::T0,
        ..SimConfig::default()
    })
    .unwrap();
    let mut batches = Vec::new();
    let mut b = EventBuilder::with_capacity(BATCH);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..n {
        let mut e = sim.next_event().to_access_event();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let c = x % CLIENTS;
        e.timestamp_us = common::T0 + i as i64 * GAP_US;
        if disorder && (x >> 50).is_multiple_of(5) {
            e.timestamp_us -= ((x >> 24) % 120_000_000) as i64;
        }
        e.source_ip = Some(Cow::Owned(if disorder && c % 8 == 3 {
            format!("2001:db8:{:x}::{:x}", c >> 8, c & 255)
        } else {
            format!("10.{}.{}.{}", c >> 16, (c >> 8) & 255, c & 255)
        }));
        e.client_id = c.is_multiple_of(2).then(|| Cow::Owned(format!("cust-{c}")));
        if (x >> 40).is_multiple_of(4) {
            e.path = Cow::Owned(format!(
                "/api/v3/res{}/{}",
                (x >> 20) % 150,
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

/// Runs `batches` through `stage` and prints the digest of the output and the state
/// counters.
fn digest(name: &str, mut stage: FeatureStage, batches: &[RecordBatch]) {
    let mut h = DefaultHasher::new();
    for b in batches {
        let out = stage.process(b).unwrap();
        hash_output(&out, b.num_columns(), &mut h);
    }
    let s = stage.state_stats();
    println!(
        "{name}: digest {:016x}; {} events, {} late, {} clients, {} pairs, {} endpoints, \
         {} networks, {} evictions",
        h.finish(),
        s.events,
        s.late_events,
        s.clients,
        s.pairs,
        s.endpoints,
        s.networks,
        s.evictions
    );
}

#[test]
#[ignore = "release-mode comparison; run with --release -- --ignored"]
fn output_digests() {
    let plain = corpus(1_000_000, false);
    let stage = |cfg| FeatureStage::new(cfg).unwrap();
    digest("throughput", stage(FeatureConfig::default()), &plain);
    let messy = corpus(700_000, true);
    digest("disorder+ipv6", stage(FeatureConfig::default()), &messy);
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
    digest("small caps", stage(small), &messy[..40]);
    let evs = common::simulate_for(
        SimConfig {
            seed: 7,
            start_us: common::T0,
            ..SimConfig::default()
        },
        40 * 60 * 1_000_000,
    );
    let batches: Vec<RecordBatch> = evs.chunks(1000).map(common::batch_of).collect();
    digest(
        "simulated 40 min",
        stage(FeatureConfig::default()),
        &batches,
    );
    let spec = Spec::from_json(&openapi_json()).unwrap();
    let with_spec = FeatureStage::with_spec(FeatureConfig::default(), spec).unwrap();
    digest("simulated 40 min, OpenAPI spec", with_spec, &batches);
}
