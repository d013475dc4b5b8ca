//! The one entry point every fuzz target calls: bytes in, through [`BatchDecoder::push`]
//! and [`BatchDecoder::finish`], with the batch's bookkeeping checked on the way out.
//!
//! Each input is decoded twice in one batch: whole, as one record (a Kafka message may
//! hold anything), and split at newlines, as the file source splits a log. So one run
//! exercises the decoder, the dead-letter path and the Arrow builders with several rows,
//! and any state a decoder carries from one record to the next.

use gatewatch_ingest::dead_letter::MAX_DEAD_LETTER_RAW_BYTES;
use gatewatch_ingest::schema::col;
use gatewatch_ingest::{
    BatchDecoder, Format, Provenance, Reason, access_event_schema, decoder_for,
};

/// Largest record the fuzz targets accept, far below the 1 MiB default, so a run spends
/// its time on shapes rather than on copying; bigger inputs exercise `too_large`.
const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Decodes `data` as `format` and checks that every record became exactly one event or
/// one dead letter with a reason. Panics (a crash for libFuzzer) on any violation.
pub fn run(format: Format, data: &[u8]) {
    let decoder = decoder_for(format, &Default::default()).expect("decoder");
    let mut batch = BatchDecoder::new(decoder, 16).with_max_record_bytes(MAX_RECORD_BYTES);

    let mut records: Vec<&[u8]> = vec![data];
    if data.contains(&b'\n') {
        records.extend(data.split(|&b| b == b'\n'));
    }
    let mut ok = 0;
    for (i, record) in records.iter().enumerate() {
        let prov = Provenance::File {
            path: "fuzz",
            line: i as u64 + 1,
        };
        if batch.push(record, &prov) {
            ok += 1;
        }
    }
    assert_eq!(batch.pending(), records.len());

    let out = batch.finish();
    assert_eq!(out.events.num_rows(), ok);
    assert_eq!(out.dead_letters.len(), records.len() - ok);
    assert_eq!(out.events.schema(), access_event_schema());
    assert_eq!(
        out.events.column_by_name(col::PATH).unwrap().null_count(),
        0
    );
    for d in &out.dead_letters {
        assert!(Reason::ALL.contains(&d.reason));
        assert!(!d.detail.is_empty());
        assert!(d.raw.len() <= 3 * MAX_DEAD_LETTER_RAW_BYTES);
    }
}
