//! The at-scale workload the feature stage is measured and pinned on.
//!
//! Simulated traffic (seed 42, every scenario) re-keyed onto many clients, so that the
//! feature stage's throughput test, its digest test and its criterion bench all run the
//! same events: one generator, not one per crate.

use std::borrow::Cow;

use arrow::array::RecordBatch;
use gatewatch_ingest::{EventBuilder, Format, Provenance};

use crate::{SimConfig, Simulator};

/// Event time of the workload's first event: 2026-01-05T00:00:00Z, in µs.
pub const START_US: i64 = 1_767_571_200_000_000;
/// Events per batch of [`rekeyed_corpus`].
pub const CORPUS_BATCH: usize = 8192;
/// Distinct clients of [`rekeyed_corpus`].
pub const CORPUS_CLIENTS: u64 = 100_000;
/// Extra resources of [`rekeyed_corpus`] (`/api/v3/g<k/6>/res<k%6>/<id>`), on top of the
/// simulator's own endpoints: 227 endpoints (method and template) in all.
pub const EXTRA_RESOURCES: u64 = 30;
/// Event-time gap between two events of [`rekeyed_corpus`], µs: 1,000 events per
/// simulated second.
pub const CORPUS_GAP_US: i64 = 1_000;

/// `n` events of simulated traffic (seed 42, every scenario, from [`START_US`]) re-keyed
/// onto [`CORPUS_CLIENTS`] clients (half by `client_id`, half by IP only), one event
/// every [`CORPUS_GAP_US`], a quarter of the requests sent to [`EXTRA_RESOURCES`] extra
/// resources, in [`CORPUS_BATCH`]-row batches. With `disorder`, one event in five is
/// moved up to two minutes back (some beyond the feature stage's default lateness) and
/// one client in eight has an IPv6 address.
pub fn rekeyed_corpus(n: usize, disorder: bool) -> Vec<RecordBatch> {
    rekeyed_corpus_on(n, disorder, CORPUS_CLIENTS)
}

/// [`rekeyed_corpus`] re-keyed onto `clients` clients instead of [`CORPUS_CLIENTS`].
pub fn rekeyed_corpus_on(n: usize, disorder: bool, clients: u64) -> Vec<RecordBatch> {
    let mut sim = Simulator::new(SimConfig {
        seed: 42,
        start_us: START_US,
        ..SimConfig::default()
    })
    .expect("the default simulator configuration is valid");
    let mut batches = Vec::new();
    let mut b = EventBuilder::with_capacity(CORPUS_BATCH);
    // xorshift64: cheap, fixed, and the same on every machine.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..n {
        let mut e = sim.next_event().to_access_event();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let c = x % clients.max(1);
        e.timestamp_us = START_US + i as i64 * CORPUS_GAP_US;
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
            // Five groups of six: few enough values per position that the learned
            // templater keeps each as a literal, so these are templates of their own.
            let k = (x >> 20) % EXTRA_RESOURCES;
            e.path = Cow::Owned(format!(
                "/api/v3/g{}/res{}/{}",
                k / 6,
                k % 6,
                (x >> 8) % 100_000
            ));
        }
        b.append(Format::Json, &e, &Provenance::None);
        if b.len() == CORPUS_BATCH {
            batches.push(b.finish());
        }
    }
    if !b.is_empty() {
        batches.push(b.finish());
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;

    #[test]
    fn the_workload_is_fixed_and_rekeyed() {
        let a = rekeyed_corpus_on(20_000, true, 500);
        let b = rekeyed_corpus_on(20_000, true, 500);
        assert_eq!(a, b, "the same call gives the same events");
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].num_rows(), CORPUS_BATCH);
        let rows: usize = a.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 20_000);
        let ips: std::collections::HashSet<String> = a
            .iter()
            .flat_map(|b| {
                let col = b
                    .column_by_name(gatewatch_ingest::schema::col::SOURCE_IP)
                    .expect("source_ip");
                let ips: Vec<String> = col
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(str::to_string)
                    .collect();
                ips
            })
            .collect();
        assert!(
            ips.len() <= 500 && ips.len() > 400,
            "{} addresses",
            ips.len()
        );
        assert!(ips.iter().any(|ip| ip.contains(':')), "no IPv6 client");
    }
}
