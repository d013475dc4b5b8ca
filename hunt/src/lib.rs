//! gatewatch-hunt: the Parquet store of everything the engine sees, and SQL over it from
//! the command line and the PostgreSQL wire protocol.
//!
//! - [`store`]: [`Store`] writes enriched events, alerts and incidents as Parquet,
//!   Hive-partitioned by date and hour under one data directory, and the endpoint
//!   inventory as a snapshot; it says which appended batches are durable so the stream
//!   processor commits its input offsets only that far; maintenance merges small files
//!   and applies retention.
//! - [`session`]: [`HuntSession`] registers the tables `events`, `alerts`, `incidents`
//!   and `endpoints` in DataFusion with the hunting functions ([`udf`]) and runs
//!   read-only queries under a timeout, a memory limit and caps on result rows and bytes;
//!   [`listing`] keeps what a query lists consistent while maintenance merges files.
//! - [`server`]: `gatewatch sql`, the same session over the PostgreSQL wire protocol, with
//!   password authentication and optional TLS.
//! - [`hunts`]: the hunt library (the `hunts/` directory of the repository), one
//!   documented query per OWASP API risk the engine covers.
//!
//! ```no_run
//! # async fn demo() -> gatewatch_hunt::Result<()> {
//! use gatewatch_hunt::{HuntSession, QueryLimits};
//! let session = HuntSession::open("./gatewatch-data", QueryLimits::default()).await?;
//! let out = session.query("SELECT count(*) FROM events").await?;
//! println!("{} rows{}", out.rows, if out.truncated { " (cut)" } else { "" });
//! # Ok(()) }
//! ```

pub mod error;
pub mod gather;
pub mod hunts;
pub mod listing;
pub mod output;
pub mod server;
pub mod session;
pub mod store;
pub mod testdata;
pub mod udf;

pub use error::{Error, Result};
pub use server::{SqlConfig, SqlServer};
pub use session::{HuntSession, QueryLimits, QueryOutput, ResultCap};
pub use store::{EventFeatures, Store, StoreConfig, Table};

/// The data directory every command uses unless `--data-dir` or `[store] data_dir` says
/// otherwise.
pub const DEFAULT_DATA_DIR: &str = "./gatewatch-data";
