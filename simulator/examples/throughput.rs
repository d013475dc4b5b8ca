//! Measures generation and rendering speed:
//! `cargo run --release -p gatewatch-simulator --example throughput -- 1000000`.
//!
//! Prints events/s for generation alone and for generation plus rendering in each format.

use std::time::Instant;

use gatewatch_ingest::Format;
use gatewatch_simulator::{SimConfig, Simulator, render};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("1000000")
        .parse()?;
    let mut sim = Simulator::new(SimConfig::default())?;
    let t = Instant::now();
    let mut sink = 0u64;
    for _ in 0..n {
        sink = sink.wrapping_add(sim.next_event().response_bytes);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "generate only      {:>10.0} events/s (checksum {sink})",
        n as f64 / secs
    );
    for format in Format::ALL {
        let mut sim = Simulator::new(SimConfig::default())?;
        let mut buf = Vec::with_capacity(1 << 20);
        let mut bytes = 0usize;
        let t = Instant::now();
        for _ in 0..n {
            render(sim.next_event(), format, &mut buf);
            if buf.len() > 1 << 20 {
                bytes += buf.len();
                buf.clear();
            }
        }
        bytes += buf.len();
        let secs = t.elapsed().as_secs_f64();
        // Rendering alone: the same events again, already generated.
        let mut sim = Simulator::new(SimConfig::default())?;
        let events: Vec<_> = (0..n.min(200_000))
            .map(|_| sim.next_event().clone())
            .collect();
        let t = Instant::now();
        for ev in &events {
            render(ev, format, &mut buf);
            if buf.len() > 1 << 20 {
                buf.clear();
            }
        }
        let render_secs = t.elapsed().as_secs_f64();
        println!(
            "{:<12} generate+render {:>10.0} events/s, render only {:>10.0} events/s, {:>6.0} bytes/event",
            format.name(),
            n as f64 / secs,
            events.len() as f64 / render_secs,
            bytes as f64 / n as f64,
        );
    }
    Ok(())
}
