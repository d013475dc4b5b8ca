//! The SQL session over the store: the four tables, the hunting functions and the safety
//! limits, shared by `gatewatch query` and `gatewatch sql`.
//!
//! Read-only on purpose. A statement is checked twice before it runs: by kind (only
//! `SELECT`/`WITH`/`VALUES` queries, `EXPLAIN` of one, and `SHOW`), and its plan by
//! DataFusion's [`SQLOptions`] with DDL, DML and session statements off (which also
//! refuses `COPY … TO` and `CREATE EXTERNAL TABLE`). No table function or URL table that
//! reads files is registered: tables are the four of the store and nothing else. Every
//! query runs under a timeout, inside a memory pool of fixed size (a query that needs more
//! fails with a clear error instead of taking the machine; nothing is spilled to disk), and
//! returns at most [`QueryLimits::max_rows`] rows and [`QueryLimits::max_result_mb`] MiB of
//! Arrow data, saying when and where it cut.
//!
//! A session lives as long as `gatewatch sql` or the dashboard: before planning it brings
//! its tables up to date with the store ([`HuntSession::sync`]), so a table that gets its
//! first file, or files with new columns, is queried as it is without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arrow::array::{MutableArrayData, RecordBatch, make_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{SetExpr, Statement as SqlStatement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::listing::{MergeAwareFiles, file_vanished, hold_listing_lock};
use crate::store::Table;

/// The catalog (database) name the tables live in.
pub const CATALOG: &str = "gatewatch";
/// The schema the tables live in.
pub const SCHEMA: &str = "public";
/// Hive partition columns every time-partitioned table gets from its directory names.
pub const PARTITION_COLUMNS: [&str; 2] = ["date", "hour"];
/// How often [`HuntSession::sync`] checks the tables that have files for new columns (by
/// the footer of each table's newest file; a table without any file is looked at before
/// every query: that look is a walk of its directory that stops at the first file).
pub const SCHEMA_RECHECK: Duration = Duration::from_secs(5);
/// How many times a query that found a listed file gone is planned and run again, after
/// waits of 20 ms doubling up to [`VANISHED_FILE_WAIT_MAX`] (2.5 s in all): a merge or
/// retention removes a file once, but a long query on a busy machine can meet a few
/// merges in a row; more would mean something else is wrong.
pub const VANISHED_FILE_RETRIES: usize = 8;
/// The longest wait before a query that found a listed file gone runs again.
pub const VANISHED_FILE_WAIT_MAX: Duration = Duration::from_millis(640);

/// Limits applied to every query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLimits {
    /// Seconds a query may run before it is cancelled.
    pub timeout_secs: u64,
    /// Memory, in MiB, that all running queries may hold together (sorts, joins,
    /// aggregations); a query that needs more fails with a resources-exhausted error.
    pub memory_limit_mb: usize,
    /// Most rows a query returns; the rest are cut off and the caller is told.
    pub max_rows: usize,
    /// Most MiB of Arrow data a query returns, counted as the batches arrive; the rest is
    /// cut off and the caller is told. Rows are capped by count, but one row can be
    /// arbitrarily wide: this bounds what a result holds in memory before it is sent.
    pub max_result_mb: usize,
}

/// Default for [`QueryLimits::timeout_secs`].
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// Default for [`QueryLimits::memory_limit_mb`].
pub const DEFAULT_MEMORY_LIMIT_MB: usize = 2048;
/// Default for [`QueryLimits::max_rows`].
pub const DEFAULT_MAX_ROWS: usize = 100_000;
/// Default for [`QueryLimits::max_result_mb`].
pub const DEFAULT_MAX_RESULT_MB: usize = 256;

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            memory_limit_mb: DEFAULT_MEMORY_LIMIT_MB,
            max_rows: DEFAULT_MAX_ROWS,
            max_result_mb: DEFAULT_MAX_RESULT_MB,
        }
    }
}

impl QueryLimits {
    /// Checks every field; `section` prefixes the key in the message (`sql`).
    pub fn validate(&self) -> Result<()> {
        let bad = |key, message: String| Err(Error::Config { key, message });
        if !(1..=86_400).contains(&self.timeout_secs) {
            return bad(
                "sql.timeout_secs",
                format!("must be in [1, 86400], got {}", self.timeout_secs),
            );
        }
        if !(16..=1 << 20).contains(&self.memory_limit_mb) {
            return bad(
                "sql.memory_limit_mb",
                format!("must be in [16, 1048576], got {}", self.memory_limit_mb),
            );
        }
        if !(1..=100_000_000).contains(&self.max_rows) {
            return bad(
                "sql.max_rows",
                format!("must be in [1, 100000000], got {}", self.max_rows),
            );
        }
        if !(1..=1 << 20).contains(&self.max_result_mb) {
            return bad(
                "sql.max_result_mb",
                format!("must be in [1, 1048576], got {}", self.max_result_mb),
            );
        }
        Ok(())
    }

    /// [`max_result_mb`](Self::max_result_mb) in bytes.
    pub fn max_result_bytes(&self) -> usize {
        self.max_result_mb.saturating_mul(1 << 20)
    }
}

/// The limit that cut a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCap {
    /// [`QueryLimits::max_rows`].
    Rows,
    /// [`QueryLimits::max_result_mb`] (or what was left of it for the statements of one
    /// request, see [`HuntSession::execute_within`]).
    Bytes,
}

impl ResultCap {
    /// The setting's key in the `[sql]` section.
    pub fn key(self) -> &'static str {
        match self {
            ResultCap::Rows => "max_rows",
            ResultCap::Bytes => "max_result_mb",
        }
    }
}

/// What a query returned.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// Schema of the result.
    pub schema: SchemaRef,
    /// The rows: at most [`QueryLimits::max_rows`] of them, in at most
    /// [`QueryLimits::max_result_mb`] MiB.
    pub batches: Vec<RecordBatch>,
    /// Rows returned.
    pub rows: usize,
    /// True when the result was cut at a limit ([`cut_by`](Self::cut_by) says which).
    pub truncated: bool,
    /// The limit that cut the result, when one did.
    pub cut_by: Option<ResultCap>,
    /// Bytes of Arrow data the batches hold ([`RecordBatch::get_array_memory_size`]).
    pub bytes: usize,
}

impl QueryOutput {
    /// What to tell the user when the result was cut, naming the limit; `None` when it
    /// was not.
    pub fn cut_message(&self) -> Option<String> {
        let cap = self.cut_by?;
        Some(match cap {
            ResultCap::Rows => format!(
                "result cut at {} rows (the [sql] {} limit); narrow the query or aggregate",
                self.rows,
                cap.key()
            ),
            ResultCap::Bytes => format!(
                "result cut at {} rows, {} MiB (the [sql] {} limit); select fewer or narrower columns, or aggregate",
                self.rows,
                self.bytes.div_ceil(1 << 20),
                cap.key()
            ),
        })
    }
}

/// A DataFusion session over one data directory.
#[derive(Clone)]
pub struct HuntSession {
    ctx: SessionContext,
    limits: QueryLimits,
    dir: PathBuf,
    /// What each table is registered as, for [`HuntSession::sync`].
    registered: Arc<tokio::sync::Mutex<Registered>>,
}

/// The tables as registered.
struct Registered {
    /// Per table (in [`Table::ALL`] order): its files' schema, `None` while it has no file
    /// (an empty table of the base schema is registered then).
    schemas: [Option<SchemaRef>; 4],
    /// When the schemas of the tables with files were last read.
    read_at: Instant,
}

/// The schema the store's tables live in: like DataFusion's in-memory one, except that
/// registering a table under a name in use replaces it in one step, so a query planned
/// while [`HuntSession::sync`] replaces a table finds the old or the new one, never none.
#[derive(Debug, Default)]
struct StoreTables {
    tables: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
}

#[async_trait::async_trait]
impl SchemaProvider for StoreTables {
    fn table_names(&self) -> Vec<String> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = tables.keys().cloned().collect();
        names.sort();
        names
    }

    async fn table(
        &self,
        name: &str,
    ) -> std::result::Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        Ok(tables.get(name).cloned())
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> std::result::Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        Ok(tables.insert(name, table))
    }

    fn deregister_table(
        &self,
        name: &str,
    ) -> std::result::Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        Ok(tables.remove(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        tables.contains_key(name)
    }
}

impl std::fmt::Debug for HuntSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HuntSession")
            .field("dir", &self.dir)
            .field("limits", &self.limits)
            .finish()
    }
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

impl HuntSession {
    /// Opens a session over the store in `dir` (which need not exist yet: missing tables
    /// are empty). Each table's schema is the union of its files' schemas, so files
    /// written before a column existed read that column as NULL.
    pub async fn open(dir: impl AsRef<Path>, limits: QueryLimits) -> Result<HuntSession> {
        limits.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_information_schema(true)
            // Late materialisation: evaluate selective predicates (one client, one
            // status) while decoding, before the wide string columns are read.
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true)
            // File-level min/max let a time or client filter skip whole files.
            .set_bool("datafusion.execution.collect_statistics", true);
        config.options_mut().sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_limit_mb << 20, 1.0)
            // No spilling: a sort or aggregation that outgrows the pool fails (see
            // `explain_resources`) instead of writing up to DataFusion's default 100 GiB
            // of temporary files to the disk `gatewatch run` writes the store to.
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            // No listing cache: the store adds files at every flush and replaces the
            // inventory snapshot in place, so a cached listing would hide new rows from a
            // long-lived session (`gatewatch sql`, the dashboard) and point it at the byte
            // ranges of a file that no longer exists.
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        // Listings that stay consistent while maintenance merges files (see `listing`).
        ctx.register_object_store(
            ObjectStoreUrl::local_filesystem().as_ref(),
            Arc::new(MergeAwareFiles::new(&dir)),
        );
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| DataFusionError::Internal(format!("no catalog {CATALOG}")))?;
        catalog.register_schema(SCHEMA, Arc::new(StoreTables::default()))?;
        for udf in crate::udf::all() {
            ctx.register_udf(udf);
        }
        let session = HuntSession {
            ctx,
            limits,
            dir,
            registered: Arc::new(tokio::sync::Mutex::new(Registered {
                schemas: Default::default(),
                read_at: Instant::now(),
            })),
        };
        session.refresh().await?;
        Ok(session)
    }

    /// Re-reads every table's schema from its files and registers it anew (new files
    /// appear in queries without this; see [`sync`](Self::sync) for the rest).
    pub async fn refresh(&self) -> Result<()> {
        let mut registered = self.registered.lock().await;
        for (i, t) in Table::ALL.into_iter().enumerate() {
            let has_files = has_parquet(&self.dir.join(t.name()));
            let (provider, schema) = self.provider(t, has_files).await?;
            self.ctx.register_table(t.name(), provider)?;
            registered.schemas[i] = schema;
        }
        registered.read_at = Instant::now();
        Ok(())
    }

    /// Brings the tables up to date with the store, cheaply enough to run before every
    /// query: a table registered empty is registered anew as soon as it has a file (the
    /// look is a walk of its directory that stops at the first file), and at most every
    /// [`SCHEMA_RECHECK`] each table with files is checked for new columns by reading the
    /// schema of one footer, its newest file's (one walk of its directory for the file
    /// times). Only when that file has a column the registered schema lacks is the table's
    /// schema inferred again from every footer and the table registered anew. Files added
    /// to a table with files need none of this: every query lists them.
    ///
    /// The lock on what is registered is held only to decide what to look at and to swap
    /// in a new table: the walks and footer reads run without it, so other queries do not
    /// wait behind them. A failure (a file replaced by compaction while its footer was
    /// read) is logged and leaves the table as it was; the next call tries again.
    pub async fn sync(&self) {
        let (schemas, reread) = {
            let mut registered = self.registered.lock().await;
            let reread = registered.read_at.elapsed() >= SCHEMA_RECHECK;
            if reread {
                // Claimed now, so queries arriving during this recheck do not start one.
                registered.read_at = Instant::now();
            }
            (registered.schemas.clone(), reread)
        };
        for (i, t) in Table::ALL.into_iter().enumerate() {
            let tdir = self.dir.join(t.name());
            let due = match &schemas[i] {
                None => tokio::task::spawn_blocking(move || has_parquet(&tdir))
                    .await
                    .unwrap_or(false),
                Some(schema) if reread => {
                    let schema = schema.clone();
                    let checked =
                        tokio::task::spawn_blocking(move || newest_has_new_columns(&tdir, &schema))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| e.to_string()));
                    checked.unwrap_or_else(|e| {
                        tracing::warn!(table = t.name(), error = %e, "sql: cannot read table schema");
                        false
                    })
                }
                Some(_) => false,
            };
            if !due {
                continue;
            }
            // Either look above found a file: the walk is not done again.
            match self.provider(t, true).await {
                Ok((provider, schema)) => {
                    let mut registered = self.registered.lock().await;
                    if registered.schemas[i] != schemas[i] {
                        // Another query registered it meanwhile.
                        continue;
                    }
                    if schema != registered.schemas[i] {
                        tracing::debug!(table = t.name(), "sql: table registered anew");
                        if let Err(e) = self.ctx.register_table(t.name(), provider) {
                            tracing::warn!(table = t.name(), error = %e, "sql: cannot register table");
                            continue;
                        }
                        registered.schemas[i] = schema;
                    }
                }
                Err(e) => {
                    tracing::warn!(table = t.name(), error = %e, "sql: cannot read table schema");
                }
            }
        }
    }

    /// The provider for `table` as the store has it now, with its files' schema (`None`
    /// when it has no file yet); `has_files` is what [`has_parquet`] found for its directory.
    async fn provider(
        &self,
        table: Table,
        has_files: bool,
    ) -> Result<(Arc<dyn TableProvider>, Option<SchemaRef>)> {
        let tdir = self.dir.join(table.name());
        Ok(if has_files {
            let abs = std::fs::canonicalize(&tdir).map_err(Error::io("resolve", &tdir))?;
            let url = format!("{}/", abs.display());
            let url = ListingTableUrl::parse(&url)?;
            let mut opts = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            if table.is_partitioned() {
                opts = opts.with_table_partition_cols(
                    PARTITION_COLUMNS
                        .iter()
                        .map(|c| (c.to_string(), DataType::Utf8))
                        .collect(),
                );
            }
            let state = self.ctx.state();
            // Footers are read after the listing: with the listing lock held throughout,
            // no merge deletes a listed file before its footer is read.
            let inferred = {
                let _listing = hold_listing_lock(self.dir.clone()).await;
                opts.infer_schema(&state, &url).await?
            };
            let schema = if inferred.fields().is_empty() {
                base_schema(table)
            } else {
                inferred
            };
            let cfg = ListingTableConfig::new(url)
                .with_listing_options(opts)
                .with_schema(schema.clone());
            (Arc::new(ListingTable::try_new(cfg)?), Some(schema))
        } else {
            let mut fields: Vec<Field> = base_schema(table)
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            if table.is_partitioned() {
                fields.extend(
                    PARTITION_COLUMNS
                        .iter()
                        .map(|c| Field::new(*c, DataType::Utf8, true)),
                );
            }
            let empty = MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]])?;
            (Arc::new(empty), None)
        })
    }

    /// The DataFusion context, for the SQL server (which adds `pg_catalog`).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The limits every query runs under.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// Splits SQL text into its statements (a hunt file, a `-f` script), re-printed one
    /// by one; comments are dropped.
    pub fn split_statements(sql: &str) -> Result<Vec<String>> {
        let stmts = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})
            .map_err(Error::DataFusion)?;
        Ok(stmts.iter().map(|s| s.to_string()).collect())
    }

    /// Parses, checks and plans one read-only statement.
    pub async fn plan(&self, sql: &str) -> Result<LogicalPlan> {
        let mut stmts = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})
            .map_err(Error::DataFusion)?;
        if stmts.len() != 1 {
            return Err(Error::Refused(format!(
                "expected one statement, got {}",
                stmts.len()
            )));
        }
        let Some(stmt) = stmts.pop_front() else {
            return Err(Error::Refused("empty statement".into()));
        };
        check_df_statement(&stmt)?;
        self.sync().await;
        let plan = self
            .ctx
            .state()
            .statement_to_plan(stmt)
            .await
            .map_err(name_the_tables)?;
        self.check_plan(&plan)?;
        Ok(plan)
    }

    /// Refuses a plan that would change anything (DDL, DML, `COPY`, `SET`).
    pub fn check_plan(&self, plan: &LogicalPlan) -> Result<()> {
        read_only()
            .verify_plan(plan)
            .map_err(|e| Error::Refused(format!("{e}; gatewatch SQL is read-only")))
    }

    /// Runs one read-only statement under the limits.
    pub async fn query(&self, sql: &str) -> Result<QueryOutput> {
        let timeout = Duration::from_secs(self.limits.timeout_secs);
        let fut = async {
            let plan = self.plan(sql).await?;
            self.run(plan, self.limits.max_result_bytes()).await
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| Error::Timeout(self.limits.timeout_secs))?
    }

    /// Runs an already checked plan under the limits.
    pub async fn execute(&self, plan: LogicalPlan) -> Result<QueryOutput> {
        self.execute_within(plan, self.limits.max_result_bytes())
            .await
    }

    /// Runs an already checked plan under the limits, returning at most `max_bytes` of
    /// Arrow data (at most the configured cap): one request that carries several
    /// statements shares one budget, so together they hold no more than one result may.
    pub async fn execute_within(&self, plan: LogicalPlan, max_bytes: usize) -> Result<QueryOutput> {
        self.check_plan(&plan)?;
        let timeout = Duration::from_secs(self.limits.timeout_secs);
        let max_bytes = max_bytes.min(self.limits.max_result_bytes());
        tokio::time::timeout(timeout, self.run(plan, max_bytes))
            .await
            .map_err(|_| Error::Timeout(self.limits.timeout_secs))?
    }

    /// Runs `plan`, planning it again (listing the files anew) when a file it listed is
    /// gone by the time it is read: maintenance merged or dropped it meanwhile (see
    /// [`crate::listing`]). Nothing has been returned by then: results are collected whole.
    async fn run(&self, plan: LogicalPlan, max_bytes: usize) -> Result<QueryOutput> {
        let mut again = 0;
        loop {
            match self.run_once(plan.clone(), max_bytes).await {
                Err(Error::DataFusion(e)) if again < VANISHED_FILE_RETRIES && file_vanished(&e) => {
                    again += 1;
                    tracing::debug!(error = %e, again, "sql: a listed file is gone; planning the query again");
                    // A merge deletes its inputs a moment after its output is in place:
                    // the next listing, a moment later, has only the output.
                    let wait = Duration::from_millis(10 << again).min(VANISHED_FILE_WAIT_MAX);
                    tokio::time::sleep(wait).await;
                }
                done => return done,
            }
        }
    }

    async fn run_once(&self, plan: LogicalPlan, max_bytes: usize) -> Result<QueryOutput> {
        let explain = |e| self.explain_resources(e);
        let df = self.ctx.execute_logical_plan(plan).await.map_err(explain)?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await.map_err(explain)?;
        let mut acc = Collector::new(self.limits.max_rows, max_bytes);
        while let Some(batch) = stream.next().await {
            if !acc.push(batch.map_err(explain)?)? {
                // Dropping the stream cancels the rest of the plan.
                break;
            }
        }
        Ok(acc.finish(schema))
    }

    /// A resources-exhausted error told in gatewatch's terms: DataFusion's own names
    /// settings a client cannot change (`datafusion.runtime.memory_limit`) and lists its
    /// operators' reservations; the cause is kept at the end.
    fn explain_resources(&self, e: DataFusionError) -> Error {
        let DataFusionError::ResourcesExhausted(cause) = e.find_root() else {
            return Error::DataFusion(e);
        };
        let cause = cause.lines().next().unwrap_or_default();
        Error::DataFusion(DataFusionError::ResourcesExhausted(format!(
            "the query needs more memory than the {} MiB that running queries share (the [sql] memory_limit_mb setting; nothing is spilled to disk): filter on time or client, aggregate, or select fewer columns ({cause})",
            self.limits.memory_limit_mb
        )))
    }
}

/// Gathers a result's batches up to a row cap and a byte cap.
struct Collector {
    max_rows: usize,
    max_bytes: usize,
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    cut_by: Option<ResultCap>,
}

impl Collector {
    fn new(max_rows: usize, max_bytes: usize) -> Collector {
        Collector {
            max_rows,
            max_bytes,
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
            cut_by: None,
        }
    }

    /// Takes `batch`, or as much of it as the caps leave room for; false once a cap is
    /// reached and nothing more should be read.
    fn push(&mut self, batch: RecordBatch) -> Result<bool> {
        if batch.num_rows() == 0 {
            // Nothing to cut. The first one is kept for its schema (see `finish`); more
            // would only hold buffers.
            if self.batches.is_empty() {
                self.batches.push(batch);
            }
            return Ok(true);
        }
        let mut batch = batch;
        if self.rows + batch.num_rows() > self.max_rows {
            batch = batch.slice(0, self.max_rows - self.rows);
            self.cut_by = Some(ResultCap::Rows);
        }
        let mut size = batch.get_array_memory_size();
        if self.bytes + size > self.max_bytes {
            // A slice keeps its parent's buffers alive, so it is measured (and held) at
            // the parent's size: keep a copy of the rows that fit instead, estimated from
            // the average row, and only if the copy really fits.
            let room = self.max_bytes - self.bytes;
            let per_row = size.div_ceil(batch.num_rows().max(1)).max(1);
            let fit = (room / per_row).min(batch.num_rows());
            let part = if fit > 0 {
                Some(compact(&batch.slice(0, fit))?)
            } else {
                None
            };
            (batch, size) = match part {
                Some(p) if self.bytes + p.get_array_memory_size() <= self.max_bytes => {
                    let n = p.get_array_memory_size();
                    (p, n)
                }
                _ => (batch.slice(0, 0), 0),
            };
            self.cut_by = Some(ResultCap::Bytes);
        }
        if batch.num_rows() > 0 {
            self.rows += batch.num_rows();
            self.bytes += size;
            self.batches.push(batch);
        }
        Ok(self.cut_by.is_none())
    }

    fn finish(self, schema: SchemaRef) -> QueryOutput {
        // The batches' own schema, where there are any: the plan's may differ in
        // nullability or metadata, and consumers re-wrap the batches in tables.
        let schema = self.batches.first().map(|b| b.schema()).unwrap_or(schema);
        QueryOutput {
            schema,
            batches: self.batches,
            rows: self.rows,
            truncated: self.cut_by.is_some(),
            cut_by: self.cut_by,
            bytes: self.bytes,
        }
    }
}

/// `batch` copied into buffers of its own size.
fn compact(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(batch.num_columns());
    for c in batch.columns() {
        let source = c.to_data();
        let mut data = MutableArrayData::new(vec![&source], false, c.len());
        data.try_extend(0, 0, c.len())?;
        columns.push(make_array(data.freeze()));
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Whether any Parquet file lies under `dir` (stops at the first).
fn has_parquet(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if has_parquet(&p) {
                return true;
            }
        } else if name.ends_with(".parquet") && !name.starts_with('.') {
            return true;
        }
    }
    false
}

/// A query that names a table the store does not have gets the list of those it has: an
/// analyst who typed `event` or `alert` learns the right name from the error itself.
fn name_the_tables(e: DataFusionError) -> Error {
    // The planner wraps the message in a diagnostic (the span of the name in the query).
    if let DataFusionError::Plan(msg) = e.find_root()
        && msg.starts_with("table '")
        && msg.ends_with("not found")
    {
        let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        return Error::DataFusion(DataFusionError::Plan(format!(
            "{msg}; the store's tables are {}",
            names.join(", ")
        )));
    }
    Error::DataFusion(e)
}

/// The Parquet file under `dir` written last (latest modification time, the greater path
/// on a tie), found in one walk; `None` when there is none.
fn newest_parquet(dir: &Path) -> Option<PathBuf> {
    fn walk(dir: &Path, best: &mut Option<(std::time::SystemTime, PathBuf)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(kind) = e.file_type() else {
                continue;
            };
            let p = e.path();
            if kind.is_dir() {
                walk(&p, best);
                continue;
            }
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !name.ends_with(".parquet") || name.starts_with('.') {
                continue;
            }
            // A file removed by compaction since the listing is skipped.
            let Ok(modified) = e.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            let newer = match best {
                None => true,
                Some((t, bp)) => (modified, &p) > (*t, bp),
            };
            if newer {
                *best = Some((modified, p));
            }
        }
    }
    let mut best = None;
    walk(dir, &mut best);
    best.map(|(_, p)| p)
}

/// Whether the newest Parquet file under `dir` has a column `registered` lacks: only that
/// file's footer is read. False when there is no file.
fn newest_has_new_columns(dir: &Path, registered: &Schema) -> Result<bool> {
    let Some(path) = newest_parquet(dir) else {
        return Ok(false);
    };
    let file = std::fs::File::open(&path).map_err(Error::io("open", &path))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?;
    Ok(builder
        .schema()
        .fields()
        .iter()
        .any(|f| registered.field_with_name(f.name()).is_err()))
}

/// The columns a table has before any file exists, so queries over an empty store plan.
fn base_schema(table: Table) -> SchemaRef {
    let ts = || {
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )
    };
    match table {
        Table::Events => gatewatch_ingest::schema::access_event_schema(),
        Table::Alerts | Table::Incidents => Arc::new(Schema::new(vec![ts()])),
        Table::Endpoints => Arc::new(Schema::new(vec![Field::new(
            "endpoint_template",
            DataType::Utf8,
            true,
        )])),
    }
}

fn check_df_statement(stmt: &DfStatement) -> Result<()> {
    match stmt {
        DfStatement::Statement(s) => check_sql_statement(s),
        DfStatement::Explain(e) => check_df_statement(&e.statement),
        DfStatement::CreateExternalTable(_) => Err(refused("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(refused("COPY")),
        other => Err(refused(&first_words(&other.to_string()))),
    }
}

/// Whether a parsed PostgreSQL statement is one the read-only surface runs.
pub fn check_sql_statement(s: &SqlStatement) -> Result<()> {
    match s {
        SqlStatement::Query(q) => check_set_expr(&q.body),
        SqlStatement::Explain { statement, .. } => check_sql_statement(statement),
        SqlStatement::ShowVariable { .. }
        | SqlStatement::ShowTables { .. }
        | SqlStatement::ShowColumns { .. } => Ok(()),
        other => Err(refused(&first_words(&other.to_string()))),
    }
}

fn check_set_expr(e: &SetExpr) -> Result<()> {
    match e {
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => Ok(()),
        SetExpr::Query(q) => check_set_expr(&q.body),
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        other => Err(refused(&first_words(&other.to_string()))),
    }
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

fn refused(what: &str) -> Error {
    Error::Refused(format!(
        "{what} is not allowed: gatewatch SQL is read-only (SELECT, WITH, VALUES, EXPLAIN and SHOW only)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};
    use std::time::SystemTime;

    /// Writes a one-row file with columns `cols` at `rel` under `dir`, modified at `secs`.
    fn write(dir: &Path, rel: &str, cols: &[&str], secs: u64) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let fields: Vec<Field> = cols
            .iter()
            .map(|c| Field::new(*c, DataType::Int64, true))
            .collect();
        let arrays: Vec<ArrayRef> = cols
            .iter()
            .map(|_| Arc::new(Int64Array::from(vec![1])) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
        let file = std::fs::File::create(&path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        let file = w.into_inner().unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn the_schema_recheck_reads_only_the_newest_files_footer() {
        let dir = tempfile::tempdir().unwrap();
        let registered = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        assert_eq!(newest_parquet(dir.path()), None);
        assert!(!newest_has_new_columns(dir.path(), &registered).unwrap());

        write(
            dir.path(),
            "date=2026-01-01/hour=00/x.parquet",
            &["a"],
            1_000,
        );
        assert!(!newest_has_new_columns(dir.path(), &registered).unwrap());

        // An older file with a new column is not looked at (full inference at open or at
        // the registration found it); the newest file, by modification time, is.
        write(
            dir.path(),
            "date=2026-01-01/hour=01/y.parquet",
            &["a", "b"],
            500,
        );
        write(
            dir.path(),
            "date=2025-12-31/hour=23/z.parquet",
            &["a"],
            2_000,
        );
        assert_eq!(
            newest_parquet(dir.path()).unwrap(),
            dir.path().join("date=2025-12-31/hour=23/z.parquet")
        );
        assert!(!newest_has_new_columns(dir.path(), &registered).unwrap());

        write(
            dir.path(),
            "date=2026-01-02/hour=00/w.parquet",
            &["a", "c"],
            3_000,
        );
        assert!(newest_has_new_columns(dir.path(), &registered).unwrap());
        // Hidden (in-progress) files are not files of the table.
        write(
            dir.path(),
            "date=2026-01-02/hour=00/.tmp.parquet",
            &["a", "d"],
            4_000,
        );
        assert_eq!(
            newest_parquet(dir.path()).unwrap(),
            dir.path().join("date=2026-01-02/hour=00/w.parquet")
        );
    }
}
