//! Decoding into Arrow batches, per core: every format, on simulated traffic.
//!
//! Each iteration pushes the whole corpus through one `BatchDecoder` and finishes a
//! batch every 8192 records, exactly as the sources do, so the figure includes building
//! the Arrow arrays. Throughput is in records per second on one thread.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatewatch_benches::{compact_envoy_corpus, corpus, full_run, lines};
use gatewatch_ingest::{BatchDecoder, Format, Provenance, decoder_for};

const BATCH: usize = 8192;

fn bench_decode(c: &mut Criterion) {
    let n = if full_run() { 50_000 } else { 2_000 };
    let mut group = c.benchmark_group("decode");
    for format in Format::ALL {
        let data = corpus(format, n);
        bench_one(&mut group, format, &format.to_string(), &data);
    }
    // The JSON target is stated for gateway events of about 300 bytes.
    let data = compact_envoy_corpus(n);
    bench_one(&mut group, Format::Envoy, "envoy-compact", &data);
    group.finish();
}

fn bench_one(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    format: Format,
    name: &str,
    data: &[u8],
) {
    {
        let records = lines(data);
        let mean_bytes = data.len() / records.len().max(1);
        group.throughput(Throughput::Elements(records.len() as u64));
        let mut decoder = BatchDecoder::new(
            decoder_for(format, &Default::default()).expect("decoder"),
            BATCH,
        );
        // Every record must decode, or the bench would be timing the error path.
        for r in &records {
            assert!(
                decoder.push(r, &Provenance::None),
                "{format}: {}",
                String::from_utf8_lossy(r)
            );
        }
        decoder.finish();
        let id = format!("{name} ({mean_bytes} B/record)");
        group.bench_function(id, |b| {
            b.iter(|| {
                let mut rows = 0;
                for r in &records {
                    decoder.push(r, &Provenance::None);
                    if decoder.pending() == BATCH {
                        rows += decoder.finish().events.num_rows();
                    }
                }
                rows += decoder.finish().events.num_rows();
                assert_eq!(rows, records.len());
                rows
            })
        });
    }
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
