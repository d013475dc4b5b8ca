//! gatewatch-scoring: turns feature columns and model scores into findings an analyst can
//! act on.
//!
//! - [`rules`]: one detector per OWASP API Security Top 10 (2023) risk that access and WAF
//!   logs can show, each a set of thresholds over feature columns, configurable by name.
//! - [`scorer`]: fuses rule findings with the model scores into one calibrated 0–100 risk per
//!   event, a category and a severity, appends them to the batch, and emits alert candidates
//!   with explanations (observed value, the entity's usual value, the population's p99).
//! - [`incidents`]: folds candidates about one entity and category into incidents with
//!   deterministic ids, re-alerting only on escalation, with suppressions and checkpoints;
//!   [`journal`]: alerts published since the last checkpoint, restored after a crash.
//! - [`ocsf`] and [`sink`]: alerts as OCSF Detection Findings to Kafka (idempotent producer),
//!   JSON lines or stdout; [`evidence`]: the SQL that pulls an incident's requests.
//!
//! Like every stage, nothing here knows about Kafka consumers or threads: the binary wires it.

pub mod category;
pub mod columns;
pub mod evidence;
pub mod incidents;
pub mod journal;
pub mod ocsf;
pub mod rules;
pub mod scorer;
pub mod sink;
pub mod stage;

pub use category::{Category, EntityKind, Severity};
pub use incidents::{
    AlertActivity, AlertCandidate, Contribution, Incident, IncidentAlert, IncidentConfig,
    IncidentCounts, IncidentStatus, IncidentTable, SampleRequest, Suppression,
};
pub use scorer::{Scorer, ScoringConfig};
pub use stage::{ScoringStage, StageOutput};

use std::path::Path;

/// Errors of the scoring stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written (retry after fixing the path or disk).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An incident checkpoint is unreadable (stop: move it aside to start fresh).
    #[error("incident checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Kafka refused or timed out (retry; offsets must not be committed).
    #[error("{context}: {message}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client's message.
        message: String,
    },
    /// The input batch lacks a column the scorer needs (stop: a wiring error).
    #[error("scoring input: {0}")]
    Input(String),
    /// A setting is invalid (stop; the message names the key).
    #[error("{0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result of the scoring stage.
pub type Result<T> = std::result::Result<T, Error>;
