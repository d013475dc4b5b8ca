//! gatewatch-hunt: the Parquet event store and SQL over DataFusion, from the CLI and the
//! PostgreSQL wire protocol.
//!
//! Empty until the hunt issue lands; see ARCHITECTURE.md for where it sits.
