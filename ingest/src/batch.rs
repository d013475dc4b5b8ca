//! Records in, Arrow batches and dead letters out.

use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::RecordBatch;

use crate::dead_letter::{DeadLetter, DeadLetterCounts, DecodeError, Reason};
use crate::decode::Decoder;
use crate::provenance::Provenance;
use crate::schema::EventBuilder;

/// Default largest record accepted, in bytes (1 MiB); bigger ones are dead letters.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// How far ahead of this machine's clock a record's timestamp may be (one day, the bound
/// the scoring stage uses too). A later one is a broken clock, not an event: kept, it
/// would become the newest date partition of the store, which retention counts back from,
/// and move the scoring watermark years on. Such a record is a `bad_timestamp` dead letter.
pub const MAX_AHEAD_OF_CLOCK_US: i64 = 86_400_000_000;

/// The output of decoding a run of records.
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    /// Decoded events in the access-event schema.
    pub events: RecordBatch,
    /// Records that did not decode, in input order.
    pub dead_letters: Vec<DeadLetter>,
}

impl DecodedBatch {
    /// Dead letters counted per reason.
    pub fn dead_letter_counts(&self) -> DeadLetterCounts {
        let mut c = DeadLetterCounts::default();
        for d in &self.dead_letters {
            c.add(d.reason);
        }
        c
    }

    /// Events plus dead letters: every record this batch accounts for.
    pub fn records(&self) -> usize {
        self.events.num_rows() + self.dead_letters.len()
    }
}

/// Feeds records through one decoder into one batch at a time.
///
/// A record becomes a dead letter rather than a row when it is longer than the record
/// limit ([`with_max_record_bytes`](Self::with_max_record_bytes)), not UTF-8, blank, refused
/// by the decoder, or dated more than [`MAX_AHEAD_OF_CLOCK_US`] (a day) ahead of this
/// machine's clock. The clock is read once per batch, at its first decoded record.
pub struct BatchDecoder {
    decoder: Box<dyn Decoder>,
    builder: EventBuilder,
    dead_letters: Vec<DeadLetter>,
    max_record_bytes: usize,
    /// The latest event time accepted in this batch; `None` until the batch's first
    /// decoded record reads the clock.
    latest_time_us: Option<i64>,
}

impl BatchDecoder {
    /// A batch decoder around `decoder`, pre-sized for `capacity` rows.
    pub fn new(decoder: Box<dyn Decoder>, capacity: usize) -> Self {
        Self {
            decoder,
            builder: EventBuilder::with_capacity(capacity),
            dead_letters: Vec::new(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            latest_time_us: None,
        }
    }

    /// Records longer than this become `too_large` dead letters.
    pub fn with_max_record_bytes(mut self, max: usize) -> Self {
        self.max_record_bytes = max;
        self
    }

    /// The longest record accepted, in bytes.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// The decoder's format.
    pub fn format(&self) -> crate::Format {
        self.decoder.format()
    }

    /// Decodes one record. Returns whether it became an event (else a dead letter).
    pub fn push(&mut self, record: &[u8], prov: &Provenance<'_>) -> bool {
        match self.decode_one(record, prov) {
            Ok(()) => true,
            Err(err) => {
                self.dead_letters.push(DeadLetter::new(
                    err,
                    self.decoder.format().name(),
                    record,
                    prov,
                ));
                false
            }
        }
    }

    /// Records a dead letter found before decoding (a line too long to buffer, say).
    pub fn push_dead_letter(&mut self, err: DecodeError, raw: &[u8], prov: &Provenance<'_>) {
        self.dead_letters.push(DeadLetter::new(
            err,
            self.decoder.format().name(),
            raw,
            prov,
        ));
    }

    /// As [`push_dead_letter`](Self::push_dead_letter), for a record of which only the
    /// first bytes (`head`) were kept: the dead letter records its whole length, `raw_len`.
    pub fn push_cut_dead_letter(
        &mut self,
        err: DecodeError,
        head: &[u8],
        raw_len: usize,
        prov: &Provenance<'_>,
    ) {
        let mut letter = DeadLetter::new(err, self.decoder.format().name(), head, prov);
        letter.raw_len = raw_len.max(head.len());
        self.dead_letters.push(letter);
    }

    fn decode_one(&mut self, record: &[u8], prov: &Provenance<'_>) -> Result<(), DecodeError> {
        if record.len() > self.max_record_bytes {
            return Err(DecodeError::too_large(
                "record",
                record.len(),
                self.max_record_bytes,
            ));
        }
        // The SIMD check says only whether a record is valid, and it is the cheaper one on
        // kilobyte records; a record that fails it is checked again by the standard one,
        // which says where it went wrong.
        let text = match simdutf8::basic::from_utf8(record) {
            Ok(t) => t,
            Err(_) => std::str::from_utf8(record).map_err(|e| {
                DecodeError::new(
                    Reason::NotUtf8,
                    format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                )
            })?,
        };
        if text.trim().is_empty() {
            return Err(DecodeError::new(Reason::Empty, "empty record"));
        }
        let ev = self.decoder.decode(text)?;
        // Checked before appending, so a refused record leaves no row behind.
        let latest = *self
            .latest_time_us
            .get_or_insert_with(latest_accepted_time_us);
        if ev.timestamp_us > latest {
            return Err(DecodeError::new(
                Reason::BadTimestamp,
                format!(
                    "timestamp {} is more than a day ahead of this machine's clock",
                    crate::time::format_rfc3339_ms(ev.timestamp_us)
                ),
            ));
        }
        self.builder.append(self.decoder.format(), &ev, prov);
        Ok(())
    }

    /// Events plus dead letters since the last [`finish`](Self::finish).
    pub fn pending(&self) -> usize {
        self.builder.len() + self.dead_letters.len()
    }

    /// Takes everything since the last call as one batch.
    pub fn finish(&mut self) -> DecodedBatch {
        self.latest_time_us = None;
        DecodedBatch {
            events: self.builder.finish(),
            dead_letters: std::mem::take(&mut self.dead_letters),
        }
    }
}

/// The latest event time accepted now: this machine's clock plus [`MAX_AHEAD_OF_CLOCK_US`],
/// in microseconds. The decoders, the feature stage and the scoring stage all judge event
/// times by it.
pub fn latest_accepted_time_us() -> i64 {
    // A clock before 1970 reads as 1970: records are then checked against a day after it.
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    now_us.saturating_add(MAX_AHEAD_OF_CLOCK_US)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, decoder_for};

    fn now_us() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
    }

    fn envoy_at(time_us: i64) -> String {
        format!(
            r#"{{"start_time":"{}","path":"/orders"}}"#,
            crate::time::format_rfc3339_ms(time_us)
        )
    }

    #[test]
    fn a_record_dated_over_a_day_ahead_is_a_bad_timestamp_dead_letter() {
        const HOUR_US: i64 = 3_600_000_000;
        let mut dec =
            BatchDecoder::new(decoder_for(Format::Envoy, &Default::default()).unwrap(), 8);
        let now = now_us();
        let year_ahead = envoy_at(now + 365 * 24 * HOUR_US);
        let hour_ahead = envoy_at(now + HOUR_US);
        let past = envoy_at(now - 30 * 24 * HOUR_US);
        assert!(!dec.push(year_ahead.as_bytes(), &Provenance::None));
        assert!(dec.push(hour_ahead.as_bytes(), &Provenance::None));
        assert!(dec.push(past.as_bytes(), &Provenance::None));
        let out = dec.finish();
        assert_eq!(out.events.num_rows(), 2, "the refused record left no row");
        assert_eq!(out.dead_letters.len(), 1);
        let d = &out.dead_letters[0];
        assert_eq!(d.reason, Reason::BadTimestamp);
        let stamp = crate::time::format_rfc3339_ms(now + 365 * 24 * HOUR_US);
        assert!(d.detail.contains(&stamp), "{}", d.detail);
        assert!(
            d.detail
                .contains("more than a day ahead of this machine's clock"),
            "{}",
            d.detail
        );
    }
}
