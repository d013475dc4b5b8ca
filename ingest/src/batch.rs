//! Records in, Arrow batches and dead letters out.

use arrow::array::RecordBatch;

use crate::dead_letter::{DeadLetter, DeadLetterCounts, DecodeError, Reason};
use crate::decode::Decoder;
use crate::provenance::Provenance;
use crate::schema::EventBuilder;

/// Default largest record accepted, in bytes (1 MiB); bigger ones are dead letters.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

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
pub struct BatchDecoder {
    decoder: Box<dyn Decoder>,
    builder: EventBuilder,
    dead_letters: Vec<DeadLetter>,
    max_record_bytes: usize,
}

impl BatchDecoder {
    /// A batch decoder around `decoder`, pre-sized for `capacity` rows.
    pub fn new(decoder: Box<dyn Decoder>, capacity: usize) -> Self {
        Self {
            decoder,
            builder: EventBuilder::with_capacity(capacity),
            dead_letters: Vec::new(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// Records longer than this become `too_large` dead letters.
    pub fn with_max_record_bytes(mut self, max: usize) -> Self {
        self.max_record_bytes = max;
        self
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

    fn decode_one(&mut self, record: &[u8], prov: &Provenance<'_>) -> Result<(), DecodeError> {
        if record.len() > self.max_record_bytes {
            return Err(DecodeError::new(
                Reason::TooLarge,
                format!(
                    "record of {} bytes exceeds the limit of {}",
                    record.len(),
                    self.max_record_bytes
                ),
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
        self.builder.append(self.decoder.format(), &ev, prov);
        Ok(())
    }

    /// Events plus dead letters since the last [`finish`](Self::finish).
    pub fn pending(&self) -> usize {
        self.builder.len() + self.dead_letters.len()
    }

    /// Takes everything since the last call as one batch.
    pub fn finish(&mut self) -> DecodedBatch {
        DecodedBatch {
            events: self.builder.finish(),
            dead_letters: std::mem::take(&mut self.dead_letters),
        }
    }
}
