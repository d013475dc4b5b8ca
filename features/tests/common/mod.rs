//! Helpers shared by the integration tests: batches from simulator traffic or from
//! hand-made events.
#![allow(dead_code)]

use std::borrow::Cow;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float32Type;
use gatewatch_ingest::{AccessEvent, EventBuilder, Format, Provenance};
use gatewatch_simulator::{SimConfig, Simulator};

/// 2026-01-05T00:00:00Z.
pub const T0: i64 = 1_767_571_200_000_000;

/// A batch of access events.
pub fn batch_of(events: &[AccessEvent<'_>]) -> RecordBatch {
    let mut b = EventBuilder::with_capacity(events.len());
    for e in events {
        b.append(Format::Json, e, &Provenance::None);
    }
    b.finish()
}

/// A simple event.
pub fn ev(
    t_us: i64,
    ip: &str,
    client: Option<&str>,
    method: &str,
    path: &str,
    status: u16,
) -> AccessEvent<'static> {
    AccessEvent {
        timestamp_us: t_us,
        source_ip: Some(Cow::Owned(ip.to_owned())),
        client_id: client.map(|c| Cow::Owned(c.to_owned())),
        method: Some(Cow::Owned(method.to_owned())),
        path: Cow::Owned(path.to_owned()),
        status: Some(status),
        response_bytes: Some(1000),
        request_bytes: Some(300),
        latency_ms: Some(12.0),
        user_agent: Some(Cow::Borrowed("test-agent/1.0")),
        ..AccessEvent::default()
    }
}

/// Simulated traffic as owned events with their labels.
pub fn simulate(cfg: SimConfig, n: usize) -> Vec<AccessEvent<'static>> {
    let mut sim = Simulator::new(cfg).expect("valid simulator config");
    (0..n)
        .map(|_| {
            let e = sim.next_event().to_access_event();
            owned(e)
        })
        .collect()
}

/// Simulated traffic until `duration_us` of simulated time has passed.
pub fn simulate_for(cfg: SimConfig, duration_us: i64) -> Vec<AccessEvent<'static>> {
    let end = cfg.start_us + duration_us;
    let mut sim = Simulator::new(cfg).expect("valid simulator config");
    let mut out = Vec::new();
    loop {
        let e = sim.next_event();
        if e.time_us >= end {
            break;
        }
        out.push(owned(e.to_access_event()));
    }
    out
}

fn own(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
    c.map(|c| Cow::Owned(c.into_owned()))
}

/// An owned copy of an event.
pub fn owned(e: AccessEvent<'_>) -> AccessEvent<'static> {
    AccessEvent {
        timestamp_us: e.timestamp_us,
        source_ip: own(e.source_ip),
        client_id: own(e.client_id),
        method: own(e.method),
        domain: own(e.domain),
        path: Cow::Owned(e.path.into_owned()),
        query: own(e.query),
        route: own(e.route),
        http_version: own(e.http_version),
        status: e.status,
        request_bytes: e.request_bytes,
        response_bytes: e.response_bytes,
        latency_ms: e.latency_ms,
        upstream_latency_ms: e.upstream_latency_ms,
        user_agent: own(e.user_agent),
        referrer: own(e.referrer),
        request_id: own(e.request_id),
        body: own(e.body),
        waf_action: own(e.waf_action),
        waf_rule_ids: e
            .waf_rule_ids
            .into_iter()
            .map(|c| Cow::Owned(c.into_owned()))
            .collect(),
        label: own(e.label),
    }
}

/// The Float32 column `name`.
pub fn f32_col(b: &RecordBatch, name: &str) -> Vec<f32> {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_primitive::<Float32Type>()
        .values()
        .to_vec()
}

/// The string column `name` (nulls as None).
pub fn str_col(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let a = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let s = a.as_string::<i32>();
    (0..s.len())
        .map(|i| s.is_valid(i).then(|| s.value(i).to_owned()))
        .collect()
}

/// Labels of a batch (dictionary column).
pub fn labels(b: &RecordBatch) -> Vec<String> {
    let a = b.column_by_name("label").expect("label column");
    let d = a.as_dictionary::<arrow::datatypes::Int32Type>();
    let v = d.values().as_string::<i32>();
    (0..d.len())
        .map(|i| {
            if d.is_valid(i) {
                v.value(d.keys().value(i) as usize).to_owned()
            } else {
                String::new()
            }
        })
        .collect()
}
