//! Where records come from: files and stdin ([`mod@file`]), Kafka ([`kafka`]).
//!
//! A source is a blocking producer of [`DecodedBatch`]es. A batch closes when it holds
//! [`Batching::max_rows`] records or [`Batching::max_bytes`] bytes of them, or when
//! [`Batching::linger`] has passed since its first record, whichever comes first, so a
//! trickle of traffic is still delivered promptly and a flood of large records stays
//! within a bounded memory.

pub mod admin;
pub mod deliveries;
pub mod file;
pub mod kafka;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::batch::DecodedBatch;

/// Most rows a batch may hold. A batch's text columns are Arrow strings, whose offsets
/// are 32-bit: a column holds at most 2 GiB. The longest value a decoder keeps in one
/// column is 8 KiB (a query; WAF rule ids per event are at most 64 of 128 bytes), so
/// 65,536 rows stay at a quarter of that whatever the records hold; 262,144 rows of long
/// queries would overflow it.
pub const MAX_BATCH_ROWS: usize = 1 << 16;

/// When a batch closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batching {
    /// Close a batch at this many records (events plus dead letters). Default 8192, at
    /// most [`MAX_BATCH_ROWS`]. Every record of a batch waits for the batch to fill and
    /// then for the whole batch to be scored, so smaller batches bring alerts sooner; but
    /// each batch also has a fixed cost (about 1.7 ms on a 2-core VM, spread over every
    /// stage). BENCHMARKS.md ("Batch size against latency") has the measurements.
    pub max_rows: usize,
    /// Close a non-empty batch this long after its first record. Default 200 ms.
    #[serde(with = "millis", rename = "linger_ms")]
    pub linger: Duration,
    /// Close a batch once its records hold this many bytes. Default 64 MiB. Records may be
    /// up to `max_record_bytes` each (1 MiB by default), so without it a batch of large
    /// records could hold `max_rows` MiB before it closed, and several are in flight.
    pub max_bytes: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_rows: 8192,
            linger: Duration::from_millis(200),
            max_bytes: 64 << 20,
        }
    }
}

impl Batching {
    /// Whether a batch of `records` records holding `bytes` bytes must close (the linger
    /// aside): `max_rows` records, or `max_bytes` of them.
    pub fn is_full(&self, records: usize, bytes: usize) -> bool {
        records >= self.max_rows || bytes >= self.max_bytes
    }

    /// Checks the limits, naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_rows == 0 || self.max_rows > MAX_BATCH_ROWS {
            return Err(format!(
                "batch.max_rows must be between 1 and {MAX_BATCH_ROWS}, got {}",
                self.max_rows
            ));
        }
        if !(1 << 20..=1 << 30).contains(&self.max_bytes) {
            return Err(format!(
                "batch.max_bytes must be between 1048576 (1 MiB) and 1073741824 (1 GiB), got {}",
                self.max_bytes
            ));
        }
        if self.linger.is_zero() || self.linger > Duration::from_secs(60) {
            return Err(format!(
                "batch.linger_ms must be between 1 and 60000, got {}",
                self.linger.as_millis()
            ));
        }
        Ok(())
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A batch together with what is needed to acknowledge it.
#[derive(Debug)]
pub struct SourceBatch {
    /// The decoded records.
    pub decoded: DecodedBatch,
    /// Hand back to the source's acknowledger once the batch's results are durable.
    /// `None` for sources that need no acknowledgement (files).
    pub ack: Option<kafka::AckToken>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_rows_are_capped_where_text_columns_cannot_overflow() {
        let at = |max_rows| Batching {
            max_rows,
            ..Batching::default()
        };
        assert_eq!(at(MAX_BATCH_ROWS).validate(), Ok(()));
        for bad in [0, MAX_BATCH_ROWS + 1, 1 << 20] {
            let e = at(bad).validate().unwrap_err();
            assert!(e.contains("batch.max_rows") && e.contains("65536"), "{e}");
        }
        for bad in [0, (1 << 20) - 1, (1 << 30) + 1] {
            let b = Batching {
                max_bytes: bad,
                ..Batching::default()
            };
            assert!(b.validate().unwrap_err().contains("batch.max_bytes"));
        }
        // The longest value kept per row in one column, times the rows, within i32 offsets
        // with room to spare.
        let longest = crate::schema::MAX_QUERY_BYTES.max(64 * 128);
        assert!(MAX_BATCH_ROWS * longest <= (i32::MAX as usize) / 2);
    }
}
