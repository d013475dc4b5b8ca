//! Stores with known contents, written from the labelled simulator: for the tests (the
//! SQL files and the hunt library are checked against the simulator's ground truth),
//! the benches and the DuckDB comparison.

use std::collections::{BTreeMap, BTreeSet};

use gatewatch_ingest::Format;
use gatewatch_ingest::provenance::Provenance;
use gatewatch_ingest::schema::EventBuilder;
use gatewatch_simulator::{SimConfig, Simulator};

use crate::error::{Error, Result};
use crate::store::{Store, Table};

/// What the simulator generated, counted while the events were written, so that
/// expected query results come from the generator and not from the store under test.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Truth {
    /// Events written.
    pub events: u64,
    /// Events per label (`benign` or a scenario name).
    pub label_counts: BTreeMap<String, u64>,
    /// Per attack scenario, each actor (client id, else source address) and how many of
    /// its events carried that scenario's label.
    pub actors: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per attack scenario, each source address and how many of its events carried that
    /// scenario's label (for hunts about addresses rather than identities).
    pub addresses: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per scenario, the hours (hours since the epoch) with events of that label, and
    /// how many.
    pub hours: BTreeMap<String, BTreeMap<i64, u64>>,
    /// Time of the first and last event, µs since the epoch.
    pub first_us: i64,
    /// See `first_us`.
    pub last_us: i64,
    /// Events per hour (hours since the epoch).
    pub events_per_hour: BTreeMap<i64, u64>,
    /// Sum of `http_response_bytes` over all events.
    pub response_bytes: u64,
    /// Distinct actors (client id, else source address) over all events.
    pub distinct_actors: u64,
}

impl Truth {
    /// Actors of any of `scenarios` with at least `min_events` labelled events.
    pub fn actors_of(&self, scenarios: &[&str], min_events: u64) -> BTreeSet<String> {
        Self::of(&self.actors, scenarios, min_events)
    }

    /// Source addresses of any of `scenarios` with at least `min_events` labelled events.
    pub fn addresses_of(&self, scenarios: &[&str], min_events: u64) -> BTreeSet<String> {
        Self::of(&self.addresses, scenarios, min_events)
    }

    fn of(
        map: &BTreeMap<String, BTreeMap<String, u64>>,
        scenarios: &[&str],
        min_events: u64,
    ) -> BTreeSet<String> {
        scenarios
            .iter()
            .filter_map(|s| map.get(*s))
            .flat_map(|m| {
                m.iter()
                    .filter(|(_, n)| **n >= min_events)
                    .map(|(a, _)| a.clone())
            })
            .collect()
    }
}

/// Generates `events` events with `cfg` and appends them to the events table in batches
/// of `batch_rows`, then flushes. Returns what was generated.
pub fn write_simulated(
    store: &mut Store,
    cfg: SimConfig,
    events: u64,
    batch_rows: usize,
) -> Result<Truth> {
    let mut sim = Simulator::new(cfg).map_err(|e| Error::Config {
        key: "simulator",
        message: e.to_string(),
    })?;
    let batch_rows = batch_rows.max(1);
    let mut truth = Truth {
        first_us: i64::MAX,
        last_us: i64::MIN,
        ..Truth::default()
    };
    let mut all_actors: BTreeSet<String> = BTreeSet::new();
    let mut builder = EventBuilder::with_capacity(batch_rows);
    let mut pending = 0;
    for _ in 0..events {
        let ev = sim.next_event();
        let label = ev.label();
        let actor = ev
            .client_id()
            .map(str::to_owned)
            .unwrap_or_else(|| ev.source_ip.to_string());
        let hour = ev.time_us.div_euclid(3_600_000_000);
        truth.events += 1;
        *truth.label_counts.entry(label.to_owned()).or_default() += 1;
        *truth.events_per_hour.entry(hour).or_default() += 1;
        truth.response_bytes += ev.response_bytes;
        truth.first_us = truth.first_us.min(ev.time_us);
        truth.last_us = truth.last_us.max(ev.time_us);
        if ev.is_attack() {
            *truth
                .actors
                .entry(label.to_owned())
                .or_default()
                .entry(actor.clone())
                .or_default() += 1;
            *truth
                .addresses
                .entry(label.to_owned())
                .or_default()
                .entry(ev.source_ip.to_string())
                .or_default() += 1;
            *truth
                .hours
                .entry(label.to_owned())
                .or_default()
                .entry(hour)
                .or_default() += 1;
        }
        // Grows with the distinct addresses of the run (proxy-rotating attackers add a
        // few per campaign): a helper for tests and benches, sized by their event counts.
        all_actors.insert(actor);
        builder.append(Format::Kong, &ev.to_access_event(), &Provenance::None);
        pending += 1;
        if pending == batch_rows {
            store.append(Table::Events, builder.finish())?;
            pending = 0;
        }
    }
    if pending > 0 {
        store.append(Table::Events, builder.finish())?;
    }
    store.flush()?;
    truth.distinct_actors = all_actors.len() as u64;
    Ok(truth)
}
