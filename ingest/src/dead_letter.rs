//! Dead letters: records that could not be decoded, kept with the reason and their bytes.
//!
//! A bad record never stops a batch. It becomes a [`DeadLetter`] (reason, a human detail,
//! the first [`MAX_DEAD_LETTER_RAW_BYTES`] of the raw record, provenance), is counted per
//! reason in [`DeadLetterCounts`], and processing goes on. Reasons are a closed set so they
//! can label metrics without unbounded cardinality.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::provenance::{OwnedProvenance, Provenance};

/// Raw bytes kept per dead letter; the rest is dropped (the length is kept).
pub const MAX_DEAD_LETTER_RAW_BYTES: usize = 4096;

/// Why a record was not decoded. The `snake_case` name is stable: it appears in metrics,
/// in `gatewatch decode --summary` and in the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Empty record or a line of only whitespace.
    Empty,
    /// Bigger than the configured record limit.
    TooLarge,
    /// Not valid UTF-8.
    NotUtf8,
    /// A text log line that does not have the format's shape.
    BadLine,
    /// The request line (`"GET /x HTTP/1.1"`) is not method, target and protocol.
    BadRequestLine,
    /// Not a JSON object, or invalid JSON.
    BadJson,
    /// A required field is missing (the detail names it).
    MissingField,
    /// A timestamp that does not parse, lies outside years 1970–9999, or is more than a
    /// day ([`MAX_AHEAD_OF_CLOCK_US`](crate::batch::MAX_AHEAD_OF_CLOCK_US)) ahead of the
    /// clock of the machine decoding it.
    BadTimestamp,
    /// A status that is not a number in 100–999.
    BadStatus,
    /// A number field that is not a non-negative number.
    BadNumber,
}

impl Reason {
    /// Every reason, in a stable order.
    pub const ALL: [Reason; 10] = [
        Reason::Empty,
        Reason::TooLarge,
        Reason::NotUtf8,
        Reason::BadLine,
        Reason::BadRequestLine,
        Reason::BadJson,
        Reason::MissingField,
        Reason::BadTimestamp,
        Reason::BadStatus,
        Reason::BadNumber,
    ];

    /// The stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::TooLarge => "too_large",
            Reason::NotUtf8 => "not_utf8",
            Reason::BadLine => "bad_line",
            Reason::BadRequestLine => "bad_request_line",
            Reason::BadJson => "bad_json",
            Reason::MissingField => "missing_field",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::BadStatus => "bad_status",
            Reason::BadNumber => "bad_number",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decode failure: the reason and a short human explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The counted reason.
    pub reason: Reason,
    /// What exactly was wrong, for a human (`"missing field url.path"`).
    pub detail: String,
}

impl DecodeError {
    /// A failure with a detail message.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    /// A record (`what`: "record", "line") of `len` bytes over the limit of `limit`.
    pub fn too_large(what: &str, len: usize, limit: usize) -> Self {
        Self::new(
            Reason::TooLarge,
            format!("{what} of {len} bytes exceeds the limit of {limit}"),
        )
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for DecodeError {}

/// A record that did not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why.
    pub reason: Reason,
    /// Details for a human.
    pub detail: String,
    /// Decoder that refused it.
    pub format: String,
    /// Where it came from.
    pub provenance: OwnedProvenance,
    /// Length of the whole raw record in bytes, even when only its first bytes were kept
    /// (an over-long line is never held whole).
    pub raw_len: usize,
    /// The record, cut to [`MAX_DEAD_LETTER_RAW_BYTES`], lossily as UTF-8 (invalid bytes
    /// become U+FFFD) so the dead letter is always valid JSON.
    pub raw: String,
}

impl DeadLetter {
    /// Builds a dead letter, keeping at most [`MAX_DEAD_LETTER_RAW_BYTES`] of `raw`.
    pub fn new(err: DecodeError, format: &str, raw: &[u8], prov: &Provenance<'_>) -> Self {
        let kept = &raw[..raw.len().min(MAX_DEAD_LETTER_RAW_BYTES)];
        Self {
            reason: err.reason,
            detail: err.detail,
            format: format.to_owned(),
            provenance: prov.into(),
            raw_len: raw.len(),
            raw: String::from_utf8_lossy(kept).into_owned(),
        }
    }
}

/// Dead letters counted per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterCounts {
    counts: BTreeMap<Reason, u64>,
}

impl DeadLetterCounts {
    /// Counts one more.
    pub fn add(&mut self, reason: Reason) {
        *self.counts.entry(reason).or_default() += 1;
    }

    /// Adds all counts of `other`.
    pub fn merge(&mut self, other: &DeadLetterCounts) {
        for (r, n) in &other.counts {
            *self.counts.entry(*r).or_default() += n;
        }
    }

    /// Count for one reason.
    pub fn get(&self, reason: Reason) -> u64 {
        self.counts.get(&reason).copied().unwrap_or(0)
    }

    /// Total over all reasons.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Reasons with a non-zero count, in stable order.
    pub fn iter(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        self.counts.iter().map(|(r, n)| (*r, *n))
    }

    /// As a JSON object `{"reason": count, …}`.
    pub fn to_json(&self) -> serde_json::Value {
        let map = self
            .counts
            .iter()
            .map(|(r, n)| (r.name().to_owned(), serde_json::Value::from(*n)))
            .collect();
        serde_json::Value::Object(map)
    }
}
