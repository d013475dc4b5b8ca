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

/// Most proxy hops [`DecodeOptions::trusted_proxy_hops`] accepts; a longer chain of one's
/// own proxies is a configuration mistake.
pub const MAX_TRUSTED_PROXY_HOPS: usize = 32;

/// What decoders need besides the format: the generic `json` format's field mapping, and
/// which `X-Forwarded-For` entry names the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Customises the generic `json` decoder; other formats ignore it.
    pub json_fields: JsonFieldMapping,
    /// How many `X-Forwarded-For` entries, counted from the right, were appended by
    /// proxies the operator runs (load balancers, and the gateway itself when it appends).
    /// The client address is the leftmost of those: the entry this many places from the
    /// right, or the leftmost entry when the list is shorter. Entries further left were
    /// sent by the client and can be anything, so they are never used. 0 ignores
    /// `X-Forwarded-For` and takes the connection's remote address. Default 1 (the
    /// rightmost entry, written by the proxy in front of the gateway).
    ///
    /// Applies to formats that log both (`envoy`, and `json` with `forwarded_for` mapped).
    pub trusted_proxy_hops: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            json_fields: JsonFieldMapping::default(),
            trusted_proxy_hops: 1,
        }
    }
}

impl From<JsonFieldMapping> for DecodeOptions {
    fn from(json_fields: JsonFieldMapping) -> Self {
        Self {
            json_fields,
            ..Self::default()
        }
    }
}

/// Checks a [`DecodeOptions::trusted_proxy_hops`] value, with a message naming it.
pub fn check_trusted_proxy_hops(hops: usize) -> Result<(), String> {
    if hops > MAX_TRUSTED_PROXY_HOPS {
        return Err(format!(
            "trusted_proxy_hops = {hops} is more than {MAX_TRUSTED_PROXY_HOPS} proxies"
        ));
    }
    Ok(())
}

/// Builds the decoder for `format` with `options` (the field mapping of the generic `json`
/// format, the trusted `X-Forwarded-For` hops).
/// The field mapping is checked where the `json` decoder is built from it.
pub fn decoder_for(format: Format, options: &DecodeOptions) -> Result<Box<dyn Decoder>, String> {
    check_trusted_proxy_hops(options.trusted_proxy_hops)?;
    Ok(match format {
        Format::Combined => Box::new(clf::ClfDecoder::new(true)),
        Format::Common => Box::new(clf::ClfDecoder::new(false)),
        other => Box::new(
            json::JsonDecoder::new(other, &options.json_fields)?
                .with_trusted_proxy_hops(options.trusted_proxy_hops),
        ),
    })
}
