//! Writes a store of simulated traffic, for the DuckDB comparison and for trying hunts:
//!
//! ```sh
//! cargo run --release -p gatewatch-hunt --example sim_store -- DIR EVENTS [SEED] [RATE] [ZSTD_LEVEL]
//! ```
//!
//! `RATE` is the mean events per simulated second (default 116, so 10 M events span
//! about a day); `ZSTD_LEVEL` is the store's `zstd_level` (default: the store's default).
//! Prints the ground truth (events per label, writer throughput) as JSON-ish
//! lines on stdout.

use std::time::Instant;

use gatewatch_hunt::testdata::write_simulated;
use gatewatch_hunt::{Store, StoreConfig};
use gatewatch_simulator::SimConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, events, rest @ ..] = args.as_slice() else {
        eprintln!("usage: sim_store DIR EVENTS [SEED] [RATE] [ZSTD_LEVEL]");
        std::process::exit(2);
    };
    let events: u64 = events.parse()?;
    let seed: u64 = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(7);
    let rate: f64 = rest.get(1).map(|s| s.parse()).transpose()?.unwrap_or(116.0);
    let defaults = StoreConfig::default();
    let zstd_level: i32 = rest
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(defaults.zstd_level);
    let mut store = Store::open(
        dir,
        StoreConfig {
            zstd_level,
            ..defaults
        },
    )?;
    let cfg = SimConfig {
        seed,
        rate_per_sec: rate,
        ..SimConfig::default()
    };
    let t = Instant::now();
    let truth = write_simulated(&mut store, cfg, events, 8192)?;
    let secs = t.elapsed().as_secs_f64();
    let stats = store.stats();
    println!(
        "events {} files {} bytes {} seconds {secs:.1} rows_per_sec {:.0}",
        truth.events,
        stats.files_written,
        stats.bytes_written,
        truth.events as f64 / secs
    );
    for (label, n) in &truth.label_counts {
        println!("label {label} {n}");
    }
    Ok(())
}
