//! How fast a flush's events are put into client-then-time order before they are
//! encoded: `gatewatch_hunt::gather::gather_column` against Arrow's `interleave` on the
//! same simulated events, same order, every column of the access-event schema, side by
//! side in one run.
//!
//! ```sh
//! cargo run --release -p gatewatch-hunt --example gather_speed [EVENTS] [ROUNDS]
//! ```
//!
//! Prints each round's two times and the medians' ratio.

use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::compute::{SortColumn, concat, interleave, lexsort_to_indices};
use gatewatch_hunt::gather::gather_column;
use gatewatch_ingest::schema::EventBuilder;
use gatewatch_ingest::{Format, Provenance};
use gatewatch_simulator::{SimConfig, Simulator};

/// Rows per appended batch, as `gatewatch run` hands them to the sink.
const BATCH: usize = 8192;

fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(180_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let mut sim = Simulator::new(SimConfig {
        seed: 11,
        ..SimConfig::default()
    })
    .expect("simulator");
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut b = EventBuilder::with_capacity(BATCH);
    for i in 0..events {
        let event = sim.next_event().to_access_event();
        b.append(Format::Kong, &event, &Provenance::None);
        if (i + 1) % BATCH == 0 {
            batches.push(b.finish());
        }
    }
    batches.push(b.finish());
    let schema = batches[0].schema();
    let column =
        |c: usize| -> Vec<&dyn Array> { batches.iter().map(|b| b.column(c).as_ref()).collect() };
    let key = |name: &str| {
        let values = concat(&column(schema.index_of(name).expect("key column"))).expect("concat");
        SortColumn {
            values,
            options: None,
        }
    };
    // The store's order: client address, then time.
    let order: Vec<u32> = lexsort_to_indices(&[key("source_ip"), key("timestamp")], None)
        .expect("sort")
        .values()
        .to_vec();
    let mut place = Vec::with_capacity(events);
    for (i, b) in batches.iter().enumerate() {
        place.extend((0..b.num_rows()).map(|r| (i, r)));
    }
    let pairs: Vec<(usize, usize)> = order.iter().map(|&g| place[g as usize]).collect();
    println!(
        "{events} events in {} batches, {} columns",
        batches.len(),
        schema.fields().len()
    );
    let (mut arrow_times, mut ours) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let t = Instant::now();
        for c in 0..schema.fields().len() {
            let out = interleave(&column(c), &pairs).expect("interleave");
            assert_eq!(out.len(), events);
        }
        arrow_times.push(t.elapsed());
        let t = Instant::now();
        let indexes = UInt32Array::from(order.clone());
        for c in 0..schema.fields().len() {
            let out = gather_column(&column(c), &indexes).expect("gather");
            assert_eq!(out.len(), events);
        }
        ours.push(t.elapsed());
        println!(
            "round {round}: interleave {:.2} ms, gather_column {:.2} ms",
            ms(arrow_times[round - 1]),
            ms(ours[round - 1])
        );
    }
    let (a, g) = (median(&mut arrow_times), median(&mut ours));
    println!(
        "median: interleave {:.2} ms, gather_column {:.2} ms: {:.2}x",
        ms(a),
        ms(g),
        a.as_secs_f64() / g.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
