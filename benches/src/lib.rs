//! Shared helpers for the criterion benches in `benches/`: realistic input made by the
//! simulator, so every stage is measured on the traffic it will see.

use gatewatch_ingest::Format;
use gatewatch_simulator::{SimConfig, Simulator, render};

/// Start of simulated time for every bench corpus (fixed, so corpora are identical run to
/// run): 2026-01-05T00:00:00Z.
pub const START_US: i64 = 1_767_571_200_000_000;

/// `n` simulated records in `format`, newline-separated, from a fixed seed.
pub fn corpus(format: Format, n: usize) -> Vec<u8> {
    let cfg = SimConfig {
        seed: 42,
        start_us: START_US,
        ..SimConfig::default()
    };
    let mut out = Vec::with_capacity(n * 320);
    for ev in Simulator::new(cfg).take(n) {
        render(&ev, format, &mut out);
    }
    out
}

/// The records of a corpus, one slice per line.
pub fn lines(corpus: &[u8]) -> Vec<&[u8]> {
    corpus
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

/// True when criterion runs for real (`cargo bench`), false in `cargo test`'s quick
/// check, so benches can size their input to the mode.
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}
