//! gatewatch-features: turns access events into per-request and windowed features.
//!
//! [`FeatureStage`] takes Arrow batches in the ingest access-event schema and returns them
//! with appended columns: the endpoint template, the client and network keys, the object
//! id a request names, a lateness flag, and the Float32 `f_…` features listed in
//! `FEATURES.md` (generated from [`catalog::FEATURES`]). Along the way it keeps:
//!
//! - **templating** ([`template`]): rule-based `{id}` placeholders, learned `{param}`
//!   positions, or the paths of an OpenAPI spec ([`openapi`]);
//! - **the API inventory** ([`Inventory`]): per method + template, first/last seen, volume,
//!   clients, status mix, authentication, spec status (shadow, zombie, new);
//! - **event-time windows** ([`window`]) per client, client network, endpoint and
//!   client × endpoint, over the configured spans, as rings of time buckets (O(1) per
//!   event), with HyperLogLog sketches ([`hll`]) for distinct counts;
//! - **bounded state** ([`table`]): every entity table has a cap, idle entities leave after
//!   a TTL and the least recently seen go first when a table is full; [`StateStats`] gives
//!   the sizes, evictions and bytes per client, and per table ([`TableStats`]) its fill,
//!   cap and evictions by cause;
//! - **baselines**: slow per-client and per-endpoint EWMAs for ratios, z-scores and
//!   explanations ([`FeatureStage::client_baseline`]).
//!
//! Every value is computed from the state after the event is counted, event by event, so
//! the output is the same however the stream is cut into batches.
//!
//! ```
//! use gatewatch_features::{FeatureConfig, FeatureStage};
//! let stage = FeatureStage::new(FeatureConfig::default()).unwrap();
//! assert!(stage.feature_names().iter().any(|n| n == "f_client_distinct_ids_10m"));
//! ```

pub mod catalog;
pub mod config;
pub mod hash;
pub mod hll;
mod input;
pub mod inventory;
mod math;
mod mem;
pub mod openapi;
pub mod request;
mod seen;
mod split;
mod stage;
pub mod table;
pub mod template;
pub mod window;

pub use catalog::{FEATURES, FeatureDef};
pub use config::{ClientKey, FeatureConfig};
pub use inventory::{Endpoint, Inventory};
pub use stage::{FeatureStage, MAX_AHEAD_OF_CLOCK_US, StateStats, TABLE_KINDS, TableStats};

/// Errors of the feature stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid; fix the configuration (not retryable).
    #[error("invalid feature configuration: {0}")]
    Config(String),
    /// The OpenAPI spec cannot be read or parsed; fix the file (not retryable).
    #[error("OpenAPI spec: {0}")]
    Spec(String),
    /// The input batch lacks a required column or has one of an unusable type; the batch
    /// cannot be processed (dead-letter it).
    #[error("input batch: {0}")]
    Schema(String),
    /// Arrow refused to assemble the output (a bug; stop).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;
