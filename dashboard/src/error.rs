//! The crate's error type.

/// What can go wrong in the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot be served safely or at all; fix it and restart.
    #[error("dashboard config: {0}")]
    Config(String),
    /// The listen address cannot be bound (in use, no permission); fix and restart.
    #[error("dashboard cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the configuration.
        addr: std::net::SocketAddr,
        /// Why the bind failed.
        source: std::io::Error,
    },
    /// The HTTP server stopped with an I/O error.
    #[error("dashboard server: {0}")]
    Serve(#[source] std::io::Error),
    /// No incident has this id (maps to 404).
    #[error("no incident {0}")]
    NotFound(String),
    /// The request is well-formed but not allowed in the incident's state, or a field is
    /// out of bounds (maps to 400); the caller should not retry it unchanged.
    #[error("{0}")]
    BadRequest(String),
    /// The engine could not answer (a query failed, a table is not ready); maps to 503 and
    /// may succeed when retried.
    #[error("backend unavailable: {0}")]
    Backend(String),
}

/// Result with the dashboard's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
