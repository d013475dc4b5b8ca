//! Helpers shared by the simulator's integration tests.

#![allow(dead_code)]

use gatewatch_simulator::{SimConfig, SimEvent, Simulator};

/// 2025-06-02T08:00:00Z.
pub const START: i64 = 1_748_851_200_000_000;

/// A config with every scenario on, at a modest normal rate so a few tens of thousands of
/// events span more than the first five simulated minutes (when every scenario's first
/// campaign has started).
pub fn all_attacks(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        start_us: START,
        rate_per_sec: 20.0,
        ..SimConfig::default()
    }
}

/// Normal traffic only.
pub fn benign(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        start_us: START,
        scenarios: Vec::new(),
        ..SimConfig::default()
    }
}

/// The first `n` events of a simulator built from `cfg`.
pub fn events(cfg: SimConfig, n: usize) -> Vec<SimEvent> {
    let mut sim = Simulator::new(cfg).expect("valid config");
    (0..n).map(|_| sim.next_event().clone()).collect()
}

/// The number in a path segment after `prefix` (`/api/v1/orders/` → 5000123).
pub fn id_after(path: &str, prefix: &str) -> Option<u64> {
    let rest = path.strip_prefix(prefix)?;
    rest.split('/').next()?.parse().ok()
}
