//! The crate's one error type.

/// Everything that can go wrong in gatewatch-models. Training and scoring errors are
/// caller mistakes (fix the input, do not retry); artifact errors mean the file must be
/// replaced or retrained; none of them is transient.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Training or scoring input is unusable (empty, wrong width, non-finite values).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A hyper-parameter is out of range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParam {
        /// The parameter's name.
        name: &'static str,
        /// Why the value is rejected.
        reason: String,
    },
    /// A column named for scoring is absent from the batch or is not `Float32`.
    #[error("column {name:?}: {reason}")]
    Column {
        /// The column's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The artifact was trained on a different feature list than the caller scores with.
    #[error(
        "model was trained on a different feature set (model hash {model_hash:016x}, \
         expected {expected_hash:016x}); missing from model: [{}]; extra in model: [{}]{}",
        missing.join(", "), extra.join(", "),
        if *reordered { "; same names in a different order" } else { "" }
    )]
    FeatureMismatch {
        /// Features the caller scores with that the model does not know.
        missing: Vec<String>,
        /// Features the model was trained on that the caller does not provide.
        extra: Vec<String>,
        /// True when the names agree but their order differs.
        reordered: bool,
        /// Hash of the model's feature list.
        model_hash: u64,
        /// Hash of the caller's feature list.
        expected_hash: u64,
    },
    /// The file is not a gatewatch model, is truncated or corrupt.
    #[error("not a valid model artifact: {0}")]
    Corrupt(String),
    /// The file is a gatewatch model of a format version this build cannot read.
    #[error(
        "model artifact format version {found} is not supported (this build reads {supported})"
    )]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// Reading or writing the artifact file failed.
    #[error("model artifact I/O on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An error from linfa (clustering).
    #[error("linfa: {0}")]
    Linfa(#[from] linfa::Error),
    /// k-means failed.
    #[error("k-means: {0}")]
    KMeans(#[from] linfa_clustering::KMeansError),
    /// The background trainer thread panicked or was dropped.
    #[error("trainer thread failed: {0}")]
    Trainer(String),
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
