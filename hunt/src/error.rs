//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the store, the SQL session or the SQL server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed. Usually worth retrying once the disk has room
    /// or the permissions are fixed; the store never leaves a half-written file visible.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `rename`, …).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding or decoding Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// An Arrow kernel failed (cast, sort, concat).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A batch handed to the store does not fit the table (no `timestamp` column, …):
    /// a caller bug, not worth retrying.
    #[error("table {table}: {message}")]
    Schema {
        /// The table the batch was meant for.
        table: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The query was refused before it ran: not a read-only query, a file-reading
    /// function, more than one statement where one is expected.
    #[error("refused: {0}")]
    Refused(String),
    /// The query ran longer than the configured per-query timeout.
    #[error("query cancelled: it ran longer than the {0} s limit")]
    Timeout(u64),
    /// DataFusion failed to plan or run the query (syntax error, unknown column, memory
    /// limit reached, …).
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A setting is out of range.
    #[error("invalid setting {key}: {message}")]
    Config {
        /// The setting's name as it appears in the configuration file.
        key: &'static str,
        /// Why it is refused.
        message: String,
    },
    /// The SQL server could not start (address in use, bad TLS files).
    #[error("sql server: {0}")]
    Server(String),
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
