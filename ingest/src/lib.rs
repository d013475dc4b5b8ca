//! gatewatch-ingest: everything between raw log bytes and Arrow batches.
//!
//! - [`schema`]: the canonical access-event schema every format decodes into, and the
//!   [`EventBuilder`] that appends rows to it.
//! - [`decode`]: one [`Decoder`] per log format ([`Format`]): nginx/Apache `combined` and
//!   `common`, Kong, Envoy, AWS API Gateway, AWS WAF, ModSecurity and generic ECS JSON.
//! - [`batch`]: [`BatchDecoder`] feeds records through a decoder into batches, turning
//!   failures into [`DeadLetter`]s counted per [`Reason`].
//! - [`source`]: where records come from — files (plain or gzip) and stdin, and Kafka
//!   (consumer group, manual commits up to what downstream acknowledged).
//! - [`throttle`]: warnings that repeat while a condition lasts (a broker down), logged
//!   at most once per interval with the count held back.
//!
//! Nothing here knows about features, models or tokio: sources are blocking iterators of
//! batches that the binary runs on threads of their own.

pub mod batch;
pub mod dead_letter;
pub mod decode;
pub mod provenance;
pub mod schema;
pub mod source;
pub mod throttle;
pub mod time;

use std::fmt;
use std::str::FromStr;

pub use batch::{BatchDecoder, DecodedBatch};
pub use dead_letter::{DeadLetter, DeadLetterCounts, DecodeError, Reason};
pub use decode::{DecodeOptions, Decoder, JsonFieldMapping, decoder_for};
pub use provenance::{OwnedProvenance, Provenance};
pub use schema::{AccessEvent, EventBuilder, access_event_schema};

/// Errors of the ingest crate. Decode failures are not errors (they are dead letters);
/// these are failures of the sources themselves.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read. Stop: the input is gone or unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Kafka client error. Retryable errors are retried inside the source; this one is not.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Bad configuration, naming the setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A dead letter could not be written to its sink.
    #[error("dead-letter sink: {0}")]
    DeadLetterSink(String),
}

/// Result with the ingest [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A log format gatewatch can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// nginx / Apache combined log format (+ optional nginx timings).
    Combined,
    /// Common log format (+ optional nginx timings).
    Common,
    /// Kong Gateway http-log plugin JSON.
    Kong,
    /// Envoy JSON access log.
    Envoy,
    /// AWS API Gateway JSON access log.
    AwsApigw,
    /// AWS WAF JSON log.
    AwsWaf,
    /// ModSecurity v3 JSON audit log.
    Modsecurity,
    /// Generic JSON with ECS field names (configurable mapping).
    Json,
}

impl Format {
    /// Every format, in documentation order.
    pub const ALL: [Format; 8] = [
        Format::Combined,
        Format::Common,
        Format::Kong,
        Format::Envoy,
        Format::AwsApigw,
        Format::AwsWaf,
        Format::Modsecurity,
        Format::Json,
    ];

    /// The name used on the command line and in config.
    pub fn name(self) -> &'static str {
        match self {
            Format::Combined => "combined",
            Format::Common => "common",
            Format::Kong => "kong",
            Format::Envoy => "envoy",
            Format::AwsApigw => "aws-apigw",
            Format::AwsWaf => "aws-waf",
            Format::Modsecurity => "modsecurity",
            Format::Json => "json",
        }
    }

    /// True for the JSON-based formats.
    pub fn is_json(self) -> bool {
        !matches!(self, Format::Combined | Format::Common)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
                format!("unknown format {s:?}; expected one of {}", names.join(", "))
            })
    }
}
