//! Warnings when a feature table is too small for the traffic.
//!
//! A table that evicts to make room drops entities seen within `idle_ttl`: their windows
//! start over when they come back (a pair's distinct-object-id count among them), and a
//! learned path position evicted from the templater is learned again from scratch. The
//! metrics count these evictions; this says so in the log too, where an operator who does
//! not watch `/metrics` sees it, with the setting to raise. At most one line per table per
//! [`EVERY`], so a table that stays too small does not flood the log.

use std::time::{Duration, Instant};

use gatewatch_features::{TABLE_KINDS, TableStats};

/// Shortest time between two warnings about one table.
pub const EVERY: Duration = Duration::from_secs(600);

const TABLES: usize = TABLE_KINDS.len();

/// Per table, in [`TABLE_KINDS`] order: the `[features]` setting that caps it, and what
/// an eviction for room drops.
const CAP_SETTINGS: [(&str, &str); TABLES] = [
    (
        "max_clients",
        "clients seen within idle_ttl were evicted to make room, so their windows start over",
    ),
    (
        "max_pairs",
        "client × endpoint pairs seen within idle_ttl were evicted to make room, so their \
         windows start over",
    ),
    (
        "max_networks",
        "client networks seen within idle_ttl were evicted to make room, so their windows \
         start over",
    ),
    (
        "max_endpoints",
        "endpoints seen within idle_ttl were evicted to make room, so their windows start over",
    ),
    (
        "max_templates",
        "learned path positions were evicted to make room, so their values are learned \
         again (until then they template as separate endpoints)",
    ),
];

/// What the last warning about each table counted.
#[derive(Debug, Default)]
pub struct CapWarnings {
    /// Capacity evictions counted up to the last warning (or the first look).
    seen: [u64; TABLES],
    /// When each table was last warned about.
    warned: [Option<Instant>; TABLES],
}

/// One warning: a table evicted `evicted` entities for room since the last one.
#[derive(Debug, Clone, PartialEq)]
pub struct CapWarning {
    pub kind: &'static str,
    pub setting: &'static str,
    /// What the evictions dropped.
    pub dropped: &'static str,
    pub evicted: u64,
    pub tracked: usize,
    pub cap: usize,
    pub bytes_per_entity: usize,
}

impl std::fmt::Display for CapWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the feature state's {} table is full ({} of {}): {} {}; if that is the \
             traffic's usual live set, not a flood of one-off keys, raise [features] {} \
             (about {} B per entity)",
            self.kind,
            self.tracked,
            self.cap,
            self.evicted,
            self.dropped,
            self.setting,
            self.bytes_per_entity
        )
    }
}

impl CapWarnings {
    /// The warnings due at `now` given the tables' current counts: for each table that
    /// evicted for room since it was last warned about, once [`EVERY`] has passed since
    /// then (the first at once).
    pub fn check(&mut self, tables: &[TableStats; TABLES], now: Instant) -> Vec<CapWarning> {
        let mut out = Vec::new();
        for (i, t) in tables.iter().enumerate() {
            if t.capacity_evictions <= self.seen[i] {
                continue;
            }
            if self.warned[i].is_some_and(|w| now.duration_since(w) < EVERY) {
                continue;
            }
            out.push(CapWarning {
                kind: TABLE_KINDS[i],
                setting: CAP_SETTINGS[i].0,
                dropped: CAP_SETTINGS[i].1,
                evicted: t.capacity_evictions - self.seen[i],
                tracked: t.tracked,
                cap: t.cap,
                bytes_per_entity: t.bytes_per_entity,
            });
            self.seen[i] = t.capacity_evictions;
            self.warned[i] = Some(now);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(pair_evictions: u64) -> [TableStats; TABLES] {
        let mut t = [TableStats::default(); TABLES];
        t[1] = TableStats {
            tracked: 2_000,
            cap: 2_000,
            idle_evictions: 5,
            capacity_evictions: pair_evictions,
            bytes_per_entity: 388,
        };
        t
    }

    #[test]
    fn warns_once_per_period_with_the_evictions_since_the_last_warning() {
        let mut w = CapWarnings::default();
        let t0 = Instant::now();
        // Idle evictions alone are the normal turnover: nothing to say.
        assert!(w.check(&tables(0), t0).is_empty());
        let first = w.check(&tables(100), t0);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].kind, first[0].setting), ("pair", "max_pairs"));
        assert_eq!(first[0].evicted, 100);
        let line = first[0].to_string();
        assert!(line.contains("pair table is full (2000 of 2000)"), "{line}");
        assert!(
            line.contains("100 client × endpoint pairs seen within idle_ttl were evicted"),
            "{line}"
        );
        assert!(
            line.contains("raise [features] max_pairs (about 388 B"),
            "{line}"
        );
        // More evictions within the period: quiet; after it: the count since the warning.
        assert!(w.check(&tables(500), t0 + EVERY / 2).is_empty());
        let again = w.check(&tables(900), t0 + EVERY);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].evicted, 800);
        // A table that stopped evicting is not warned about again.
        assert!(w.check(&tables(900), t0 + EVERY * 3).is_empty());
    }
}
