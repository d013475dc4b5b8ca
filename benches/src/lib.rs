//! Shared helpers for the criterion benches in `benches/`: realistic input made by the
//! simulator, so every stage is measured on the traffic it will see.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Float32Type, TimestampMicrosecondType};
use gatewatch_features::{FeatureConfig, FeatureStage};
use gatewatch_ingest::schema::col;
use gatewatch_ingest::{EventBuilder, Format, Provenance};
use gatewatch_models::stream::Reservoir;
use gatewatch_simulator::{SimConfig, Simulator, render};

/// Start of simulated time for every bench corpus (fixed, so corpora are identical run to
/// run): 2026-01-05T00:00:00Z.
pub const START_US: i64 = 1_767_571_200_000_000;

/// The simulator every bench corpus comes from: default traffic, fixed seed and start.
pub fn simulator() -> Simulator {
    let cfg = SimConfig {
        seed: 42,
        start_us: START_US,
        ..SimConfig::default()
    };
    Simulator::new(cfg).expect("the default simulator configuration is valid")
}

/// `n` simulated records in `format`, newline-separated, from a fixed seed.
pub fn corpus(format: Format, n: usize) -> Vec<u8> {
    let mut sim = simulator();
    let mut out = Vec::with_capacity(n * 320);
    for _ in 0..n {
        render(sim.next_event(), format, &mut out);
    }
    out
}

/// `n` simulated events (the [`simulator`]'s) through a fresh feature stage with its
/// default configuration, in batches of `batch` rows: what the engine hands the models and
/// the scoring stage, learned endpoint templates included.
pub fn feature_batches(n: usize, batch: usize) -> Vec<RecordBatch> {
    let mut sim = simulator();
    let mut stage = FeatureStage::new(FeatureConfig::default()).expect("default config");
    let mut out = Vec::new();
    let mut b = EventBuilder::with_capacity(batch);
    for i in 0..n {
        b.append(
            Format::Json,
            &sim.next_event().to_access_event(),
            &Provenance::None,
        );
        if b.len() == batch || i + 1 == n {
            out.push(stage.process(&b.finish()).expect("features"));
        }
    }
    out
}

/// The `f_` feature columns of a batch, by name.
pub fn feature_names(batch: &RecordBatch) -> Vec<String> {
    batch
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name().starts_with("f_") && *f.data_type() == DataType::Float32)
        .map(|f| f.name().clone())
        .collect()
}

/// The named `Float32` columns of a batch, as slices.
pub fn f32_cols<'a>(batch: &'a RecordBatch, names: &[String]) -> Vec<&'a [f32]> {
    names
        .iter()
        .map(|n| {
            let a = batch.column_by_name(n).expect("feature column");
            a.as_primitive::<Float32Type>().values().as_ref()
        })
        .collect()
}

/// The named feature columns of `batches`, row by row, in a reservoir as the engine keeps
/// its training rows (none alerted), sized to hold them all.
pub fn feature_reservoir(batches: &[RecordBatch], names: &[String]) -> Reservoir {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut reservoir = Reservoir::new(names.len(), rows).expect("reservoir");
    let mut row = vec![0f32; names.len()];
    for b in batches {
        let cols = f32_cols(b, names);
        for r in 0..b.num_rows() {
            for (slot, c) in row.iter_mut().zip(&cols) {
                *slot = c[r];
            }
            reservoir.push(&row, 0, false).expect("row");
        }
    }
    reservoir
}

/// The records of a corpus, one slice per line.
pub fn lines(corpus: &[u8]) -> Vec<&[u8]> {
    corpus
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

/// The batches with every timestamp moved `by_us` later: stateful stages (windows,
/// incidents) see event time keep advancing when a bench feeds them the same corpus again.
pub fn shifted(batches: &[RecordBatch], by_us: i64) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|b| {
            let (i, _) = b
                .schema()
                .column_with_name(col::TIMESTAMP)
                .expect("a timestamp column");
            let ts = b
                .column(i)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .expect("timestamps in microseconds");
            let moved = ts
                .unary::<_, TimestampMicrosecondType>(|t| t + by_us)
                .with_timezone("UTC");
            let mut cols: Vec<ArrayRef> = b.columns().to_vec();
            cols[i] = Arc::new(moved);
            RecordBatch::try_new(b.schema(), cols).expect("same schema")
        })
        .collect()
}

/// True when criterion runs for real (`cargo bench`), false in `cargo test`'s quick
/// check, so benches can size their input to the mode.
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `n` simulated requests as compact Envoy JSON access-log records: only the keys of
/// Envoy's default format that a gateway ships by default (no upstream cluster, TLS or
/// connection details), which makes them about 300–400 bytes — the size the JSON decode
/// target is stated for. The full simulator records carry every optional field and are
/// 2–4× larger.
pub fn compact_envoy_corpus(n: usize) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Compact<'a> {
        start_time: String,
        method: &'a str,
        path: String,
        protocol: &'a str,
        response_code: u16,
        bytes_received: u64,
        bytes_sent: u64,
        duration: u64,
        x_forwarded_for: String,
        user_agent: &'a str,
        request_id: &'a str,
        authority: &'a str,
    }
    let mut sim = simulator();
    let mut out = Vec::with_capacity(n * 360);
    for _ in 0..n {
        let ev = sim.next_event();
        let path = if ev.query.is_empty() {
            ev.path.clone()
        } else {
            format!("{}?{}", ev.path, ev.query)
        };
        let rec = Compact {
            start_time: gatewatch_simulator::rfc3339(ev.time_us),
            method: ev.method,
            path,
            protocol: ev.http_version,
            response_code: ev.status,
            bytes_received: ev.body_bytes,
            bytes_sent: ev.response_bytes,
            duration: ev.latency_ms.round() as u64,
            x_forwarded_for: ev.source_ip.to_string(),
            user_agent: ev.user_agent,
            request_id: &ev.request_id,
            authority: ev.host,
        };
        serde_json::to_writer(&mut out, &rec).expect("writing to a Vec cannot fail");
        out.push(b'\n');
    }
    out
}

/// xorshift64*: enough randomness for bench data without a dependency, the same numbers
/// from the same seed on every machine.
pub struct BenchRng(pub u64);

impl BenchRng {
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly normal: sum of four uniforms, centred and scaled.
    pub fn normalish(&mut self) -> f32 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 1.7
    }
}
