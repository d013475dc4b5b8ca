//! Prints simulated log records: `cargo run -p gatewatch-simulator --example sample -- kong 20`.
//!
//! Arguments: format (default `combined`), number of events (default 20), and optionally a
//! scenario list (`bola,ssrf`, `none`) to see one attack's records.

use gatewatch_ingest::Format;
use gatewatch_simulator::{Scenario, SimConfig, Simulator, render};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let format: Format = args.next().as_deref().unwrap_or("combined").parse()?;
    let n: usize = args.next().as_deref().unwrap_or("20").parse()?;
    let mut cfg = SimConfig::default();
    let only = match args.next() {
        Some(list) => Some(Scenario::parse_list(&list)?),
        None => None,
    };
    if let Some(list) = &only {
        cfg.scenarios = list.clone();
    }
    let mut sim = Simulator::new(cfg)?;
    let mut out = Vec::new();
    let mut shown = 0;
    while shown < n {
        let ev = sim.next_event();
        // With a scenario list, show only its events.
        if only.as_ref().is_some_and(|l| !l.is_empty()) && ev.scenario.is_none() {
            continue;
        }
        render(ev, format, &mut out);
        shown += 1;
    }
    std::io::Write::write_all(&mut std::io::stdout(), &out)?;
    Ok(())
}
