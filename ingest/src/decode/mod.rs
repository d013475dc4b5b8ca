//! Decoders: bytes of one log record in, one [`AccessEvent`] or a [`DecodeError`] out.

pub mod clf;
pub mod json;
pub mod walker;

use crate::Format;
use crate::dead_letter::DecodeError;
use crate::schema::AccessEvent;

pub use json::JsonFieldMapping;

/// Turns one record (a log line or a Kafka message, as UTF-8) into an event.
///
/// Implementations must never panic, whatever the input: every failure is a
/// [`DecodeError`] with a [`Reason`](crate::Reason). Fuzz targets in `fuzz/` hold them to
/// that.
pub trait Decoder: Send {
    /// The format this decoder reads.
    fn format(&self) -> Format;

    /// Decodes one record.
    fn decode<'a>(&mut self, record: &'a str) -> Result<AccessEvent<'a>, DecodeError>;
}

/// At most 64 bytes of `s`, for quoting bad input in error details.
pub(crate) fn short(s: &str) -> &str {
    crate::schema::truncate_str(s, 64)
}

/// Builds the decoder for `format`. `json_fields` customises the generic `json` decoder.
pub fn decoder_for(
    format: Format,
    json_fields: &JsonFieldMapping,
) -> Result<Box<dyn Decoder>, String> {
    Ok(match format {
        Format::Combined => Box::new(clf::ClfDecoder::new(true)),
        Format::Common => Box::new(clf::ClfDecoder::new(false)),
        other => Box::new(json::JsonDecoder::new(other, json_fields)?),
    })
}
