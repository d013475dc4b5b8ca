//! The Parquet store: enriched events, alerts, incidents and the API inventory under one
//! data directory.
//!
//! Layout: `<dir>/<table>/date=YYYY-MM-DD/hour=HH/part-<writer>-<n>.parquet` for the
//! time-partitioned tables (`events`, `alerts`, `incidents`), and
//! `<dir>/endpoints/inventory.parquet` for the endpoint inventory, a snapshot that is
//! replaced whole. The partition comes from each row's `timestamp` (UTC), so a late event
//! lands in the hour it happened, and a query's time filter only opens the files of the
//! hours it asks for.
//!
//! Every file is written under a hidden temporary name, synced, and renamed into place:
//! a reader (or a crash) can see a whole file or none, never a torn one. Temporary files a
//! crash left behind are removed when the store opens.
//!
//! Every row is encoded once for good where the volume makes it matter. A flush of at
//! least a quarter of a row group ([`StoreConfig::final_encoding_min_rows`], so every
//! commit of a busy stream) is written in its final form: events sorted by client address
//! then time, compressed at `zstd_level`. Smaller flushes (a quiet stream) are written fast
//! instead: arrival order, LZ4. Maintenance merges a finished hour's small files (at least
//! `compact_min_files` of one kind): final-form files (their footer says so) by copying
//! their row groups into one file without decoding anything, the others (LZ4 flushes, and
//! small files of older builds) by reading them back, sorting the rows and compressing
//! them at `zstd_level`. So in a merged file of a busy hour each row group is
//! sorted on its own (page statistics of `source_ip` are narrow, row-group ones are not),
//! and in a merged file of a quiet hour the whole file is sorted. `source_ip` and
//! `client_id` carry bloom filters for exact lookups in every file. Columns whose values
//! mostly differ from row to row are encoded without a dictionary: floats byte-stream
//! split, event times and Kafka offsets as deltas (they rise within each client's rows),
//! request ids plain. Free text (path, query, user agent, referrer, body, request id)
//! carries no statistics: unsorted and varied, its min and max would let no filter skip
//! a page. Sorted rows are
//! gathered from the buffered batches one column at a time, each column encoded before
//! the next is gathered, so a flush never holds its rows twice.
//!
//! [`Store::append`] buffers rows per partition (bounded in rows and bytes) and numbers
//! every batch it accepts; [`Store::durable_seq`] says up to which batch everything is on
//! disk. A stream processor commits its input offsets only up to that sequence number, so
//! a crash replays what was buffered and loses nothing.
//!
//! Maintenance ([`Store::maintain`], or a background thread from
//! [`Store::spawn_maintenance`]) merges the small files of a finished hour into one and
//! drops partitions older than the retention. A merge is journalled: its inputs are listed
//! in a journal file before the merged file is renamed into place, and a merge a crash
//! interrupted is finished (or undone) the next time maintenance runs, so rows are never
//! lost and never stay duplicated.
//!
//! One writer per data directory: [`Store::open`] takes an exclusive advisory lock on
//! `<dir>/writer.lock` ([`LOCK_FILE`]), held until the store and its maintenance thread are
//! gone, so a second writer (another `gatewatch run` or `demo` on the same directory)
//! fails at open instead of deleting the first one's files in flight or the journals of
//! its merges. [`maintain`] without a store runs under the same lock.
//!
//! Readers never block a writer, but they do wait for a merge's swap: a directory listing
//! is not a snapshot (an entry renamed in behind the listing's cursor is missed, one
//! deleted before the listing looks at it is skipped), so a query listing the files while
//! a merge put its output in place and deleted its inputs could miss both and count none
//! of their rows. Maintenance holds `<dir>/listing.lock` ([`LISTING_LOCK_FILE`])
//! exclusively for that swap (a rename and a few deletes; also while retention drops a
//! day), and a query holds it shared while it lists ([`crate::listing`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::{
    SortColumn, SortOptions, cast, concat, concat_batches, lexsort_to_indices, take_record_batch,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::bloom_filter::Sbbf;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::KeyValue;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use gatewatch_ingest::schema::col;

use crate::error::{Error, Result};
use crate::gather::gather_column;

/// The tables of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Enriched access events: the access-event columns, the endpoint template, the
    /// feature columns, scores, risk, category and incident id.
    Events,
    /// Alerts as raised.
    Alerts,
    /// Incident versions: a row each time an incident opens or escalates (the versions
    /// its alerts announced), and one when it closes, idle or evicted from a full table
    /// (`activity` = `closed`: its final count, `last_seen` and peak risk). Requests folded
    /// in between raise its count and `last_seen` in the engine; the closing row has the
    /// totals.
    Incidents,
    /// The API inventory: one row per endpoint template, replaced as a whole.
    Endpoints,
}

impl Table {
    /// Every table, in the order the SQL session registers them.
    pub const ALL: [Table; 4] = [
        Table::Events,
        Table::Alerts,
        Table::Incidents,
        Table::Endpoints,
    ];

    /// The table's name in SQL and its directory under the data directory.
    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Alerts => "alerts",
            Table::Incidents => "incidents",
            Table::Endpoints => "endpoints",
        }
    }

    /// Whether rows are appended into date/hour partitions (all but the inventory
    /// snapshot).
    pub fn is_partitioned(self) -> bool {
        self != Table::Endpoints
    }
}

/// The column every appended batch carries and partitions by.
pub const TIMESTAMP_COLUMN: &str = "timestamp";
/// File name of the endpoint inventory snapshot.
pub const INVENTORY_FILE: &str = "inventory.parquet";

const HOUR_US: i64 = 3_600_000_000;

/// `[store]`: how the Parquet store writes and maintains its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The data directory, shared by `run`, `demo`, `query` and `sql`; `--data-dir`
    /// overrides it.
    pub data_dir: PathBuf,
    /// Most rows in one Parquet file; a partition's buffer is written out when it holds
    /// this many.
    pub max_file_rows: usize,
    /// Rows per Parquet row group: the unit that statistics let a query skip.
    pub row_group_rows: usize,
    /// Most bytes of rows held in memory before they are written; past it the largest
    /// buffers are written early (smaller files, merged later by maintenance).
    pub max_buffered_bytes: usize,
    /// zstd compression level (1–22) of files in their final form: flushes of at least
    /// [`final_encoding_min_rows`](Self::final_encoding_min_rows) rows and merged files.
    /// Smaller flushes, which maintenance merges later, are written with LZ4.
    pub zstd_level: i32,
    /// Partitions older than this many days are deleted; 0 keeps everything. Days are
    /// counted back from the table's newest partition (so a replay of old traffic is
    /// kept), but never from later than today by the wall clock: partitions dated after
    /// today (a gateway whose clock runs ahead) are neither the reference nor deleted.
    pub retention_days: u32,
    /// A finished hour with at least this many small files gets them merged.
    pub compact_min_files: usize,
    /// Files with fewer rows than this count as small, and maintenance merges a finished
    /// hour's small files (see the module docs for how).
    pub compact_small_file_rows: usize,
    /// Seconds between two background maintenance rounds.
    pub maintenance_interval_secs: u64,
    /// Which `f_` feature columns a stored event keeps (every other column is always
    /// kept). The stream processor applies it before appending events.
    pub event_features: EventFeatures,
    /// Feature columns kept on top of the main ones when `event_features = "main"`.
    pub extra_event_features: Vec<String>,
}

/// `[store] event_features`: which feature columns go into the `events` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFeatures {
    /// The features the detectors and the behaviour profiles read (what an alert's
    /// evidence is made of), plus `extra_event_features`. Writing the others, most of the
    /// table's columns, was about a third of the sink's CPU time.
    #[default]
    Main,
    /// Every feature column the stage computes.
    All,
}

/// Most names in [`StoreConfig::extra_event_features`].
pub const MAX_EXTRA_EVENT_FEATURES: usize = 1024;

/// Default for [`StoreConfig::max_file_rows`].
pub const DEFAULT_MAX_FILE_ROWS: usize = 1_000_000;
/// Default for [`StoreConfig::row_group_rows`].
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;
/// Default for [`StoreConfig::max_buffered_bytes`]: 256 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 << 20;
/// Compression of flushes under [`StoreConfig::final_encoding_min_rows`], which
/// maintenance later re-encodes at [`StoreConfig::zstd_level`]. These bytes are short-lived,
/// so LZ4 (about a third larger than zstd at level 1 on enriched events, for half the
/// sink's compression time).
pub const SMALL_FILE_COMPRESSION: Compression = Compression::LZ4_RAW;
/// Footer key-value entry of a file written in its final form (sorted, at
/// [`StoreConfig::zstd_level`]), which maintenance may merge by copying its row groups. A
/// file without it (a fast LZ4 flush, or a small file of an older build) is re-encoded.
const FINAL_FORM_KEY: &str = "gatewatch.form";
const FINAL_FORM_VALUE: &str = "final";

/// Default for [`StoreConfig::zstd_level`]. Level 1 rather than 3: on enriched events with
/// every feature kept (122 of their 158 columns floats) level 3 bought about 1 % less disk
/// for about 7 % more of the whole processor's CPU per event (BENCHMARKS.md).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// Default for [`StoreConfig::retention_days`].
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// Default for [`StoreConfig::compact_min_files`].
pub const DEFAULT_COMPACT_MIN_FILES: usize = 4;
/// Default for [`StoreConfig::compact_small_file_rows`].
pub const DEFAULT_COMPACT_SMALL_FILE_ROWS: usize = 250_000;
/// Default for [`StoreConfig::maintenance_interval_secs`].
pub const DEFAULT_MAINTENANCE_INTERVAL_SECS: u64 = 300;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from(crate::DEFAULT_DATA_DIR),
            max_file_rows: DEFAULT_MAX_FILE_ROWS,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            retention_days: DEFAULT_RETENTION_DAYS,
            compact_min_files: DEFAULT_COMPACT_MIN_FILES,
            compact_small_file_rows: DEFAULT_COMPACT_SMALL_FILE_ROWS,
            maintenance_interval_secs: DEFAULT_MAINTENANCE_INTERVAL_SECS,
            event_features: EventFeatures::Main,
            extra_event_features: Vec::new(),
        }
    }
}

impl StoreConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |key, message: String| Err(Error::Config { key, message });
        if !(1..=100_000_000).contains(&self.max_file_rows) {
            return bad(
                "store.max_file_rows",
                format!("must be in [1, 100000000], got {}", self.max_file_rows),
            );
        }
        if !(1..=10_000_000).contains(&self.row_group_rows) {
            return bad(
                "store.row_group_rows",
                format!("must be in [1, 10000000], got {}", self.row_group_rows),
            );
        }
        if self.max_buffered_bytes < 1 << 20 {
            return bad(
                "store.max_buffered_bytes",
                format!("must be at least 1048576, got {}", self.max_buffered_bytes),
            );
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad(
                "store.zstd_level",
                format!("must be in [1, 22], got {}", self.zstd_level),
            );
        }
        if self.compact_min_files < 2 {
            return bad(
                "store.compact_min_files",
                format!("must be at least 2, got {}", self.compact_min_files),
            );
        }
        if self.maintenance_interval_secs == 0 {
            return bad(
                "store.maintenance_interval_secs",
                "must be at least 1".into(),
            );
        }
        if self.extra_event_features.len() > MAX_EXTRA_EVENT_FEATURES {
            return bad(
                "store.extra_event_features",
                format!(
                    "at most {MAX_EXTRA_EVENT_FEATURES} names, got {}",
                    self.extra_event_features.len()
                ),
            );
        }
        // Whether a name is one the feature stage computes depends on `[features]`
        // (spans); the binary checks that. Here: only that it is a feature column's name.
        if let Some(n) = self
            .extra_event_features
            .iter()
            .find(|n| !n.starts_with("f_"))
        {
            return bad(
                "store.extra_event_features",
                format!("`{n}` is not a feature column (they start with `f_`)"),
            );
        }
        Ok(())
    }

    /// Rows from which a flush is written in its final encoding (sorted, at `zstd_level`)
    /// even when it is small: a quarter of a row group, or `compact_small_file_rows` if
    /// that is less. Maintenance merges such files by copying their row groups as they
    /// are; smaller flushes are written with LZ4 in arrival order and re-encoded when
    /// merged.
    pub fn final_encoding_min_rows(&self) -> usize {
        (self.row_group_rows / 4).clamp(1, self.compact_small_file_rows.max(1))
    }

    fn writer_properties(&self, table: Table) -> Result<WriterProperties> {
        let level = ZstdLevel::try_new(self.zstd_level)?;
        let props = self.writer_properties_with(table, Compression::ZSTD(level))?;
        Ok(props
            .into_builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                FINAL_FORM_KEY.to_owned(),
                FINAL_FORM_VALUE.to_owned(),
            )]))
            .build())
    }

    fn writer_properties_with(
        &self,
        table: Table,
        compression: Compression,
    ) -> Result<WriterProperties> {
        let mut b = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .set_statistics_enabled(EnabledStatistics::Page);
        if table == Table::Events {
            // Exact-match lookups of one client are the commonest hunt filter; a bloom
            // filter lets a reader skip a row group whose min/max range happens to cover it.
            for c in ["source_ip", "client_id"] {
                b = b.set_column_bloom_filter_enabled(ColumnPath::from(c), true);
            }
            // Every request has its own id: a dictionary would hash each one, fill up and
            // fall back to plain values anyway, after writing a dictionary page of ids
            // that no other row shares.
            b = b.set_column_dictionary_enabled(ColumnPath::from(UNIQUE_PER_ROW), false);
            // Event times (microseconds) and Kafka offsets mostly differ from row to row
            // too (a dictionary of them would hold nearly every value), but they
            // rise within each client's rows, the order a final-form file is sorted in, and
            // within each partition, the order of a small file: differences pack them into
            // a few bits without a dictionary's hashing.
            for c in ASCENDING_PER_CLIENT {
                b = b
                    .set_column_dictionary_enabled(ColumnPath::from(c), false)
                    .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
            }
            // Free text is neither sorted nor low in cardinality, so the min and max of a
            // page or row group span nearly everything and let no filter skip it; working
            // them out costs two string comparisons per value.
            for c in FREE_TEXT {
                b = b.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::None);
            }
        }
        Ok(b.build())
    }
}

/// Counters of what the store has written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Rows written to Parquet files.
    pub rows_written: u64,
    /// Files written.
    pub files_written: u64,
    /// Bytes of Parquet written.
    pub bytes_written: u64,
}

struct PartBuffer {
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    /// Sequence number of the oldest batch with rows in here: everything before it that
    /// is not in another buffer is durable.
    first_seq: u64,
}

/// The writer side of the store. One per data directory at a time: it holds the
/// directory's [`LOCK_FILE`] from [`Store::open`] until it (and its maintenance thread)
/// are gone, and a second writer, in this process or another, is refused at open. Readers
/// (SQL sessions, the dashboard) never hold it up: they share only the
/// [`LISTING_LOCK_FILE`] with its maintenance, for the moment of a listing. It is not
/// shared between threads (wrap it in a mutex or give it its own thread).
pub struct Store {
    dir: PathBuf,
    lock: Arc<DirLock>,
    cfg: StoreConfig,
    props: BTreeMap<Table, WriterProperties>,
    /// The same with [`SMALL_FILE_COMPRESSION`], for files maintenance will merge.
    small_props: BTreeMap<Table, WriterProperties>,
    buffers: BTreeMap<(Table, i64), PartBuffer>,
    buffered_bytes: usize,
    last_seq: u64,
    writer_id: String,
    file_counter: u64,
    stats: StoreStats,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("buffered_bytes", &self.buffered_bytes)
            .field("last_seq", &self.last_seq)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store under `dir`, locks it for this writer, and
    /// removes temporary files an earlier crash left behind.
    ///
    /// Fails, touching nothing, when another writer holds the directory: another
    /// `gatewatch run` or `demo`, or a live [`Store`] (or its maintenance thread) in this
    /// process.
    pub fn open(dir: impl AsRef<Path>, cfg: StoreConfig) -> Result<Store> {
        cfg.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let mut props = BTreeMap::new();
        let mut small_props = BTreeMap::new();
        for t in Table::ALL {
            let tdir = dir.join(t.name());
            fs::create_dir_all(&tdir).map_err(Error::io("create", &tdir))?;
            props.insert(t, cfg.writer_properties(t)?);
            small_props.insert(t, cfg.writer_properties_with(t, SMALL_FILE_COMPRESSION)?);
        }
        let lock = DirLock::for_writer(&dir)?;
        {
            // Rounds started through `maintain(dir)` in this process wait for this.
            let _round = lock.round();
            recover(&dir)?;
        }
        // Unique per writer so that a restarted writer (or a merge) never picks a name
        // an earlier one used.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let writer_id = format!("{:x}{:05x}", nanos, std::process::id() & 0xfffff);
        Ok(Store {
            dir,
            lock,
            cfg,
            props,
            small_props,
            buffers: BTreeMap::new(),
            buffered_bytes: 0,
            last_seq: 0,
            writer_id,
            file_counter: 0,
            stats: StoreStats::default(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What has been written so far.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Rows held in memory, not yet written.
    pub fn buffered_rows(&self) -> usize {
        self.buffers.values().map(|b| b.rows).sum()
    }

    /// Appends a batch to a partitioned table and returns its sequence number (1, 2, …).
    ///
    /// The batch needs a `timestamp` column (any time unit; nulls are refused, since a row
    /// without a time has no partition). Rows are buffered; a partition is written once it
    /// holds [`StoreConfig::max_file_rows`] rows or the buffers pass
    /// [`StoreConfig::max_buffered_bytes`].
    pub fn append(&mut self, table: Table, batch: RecordBatch) -> Result<u64> {
        if !table.is_partitioned() {
            return Err(Error::Schema {
                table: table.name(),
                message: "is a snapshot table; use Store::replace_endpoints".into(),
            });
        }
        let hours = hour_of_rows(table, &batch)?;
        let seq = self.last_seq + 1;
        if batch.num_rows() > 0 {
            for (hour, part) in split_by_hour(&batch, &hours)? {
                self.buffer(table, hour, part, seq)?;
            }
        }
        self.last_seq = seq;
        if self.buffered_bytes > self.cfg.max_buffered_bytes {
            self.relieve_memory()?;
        }
        Ok(seq)
    }

    fn buffer(&mut self, table: Table, hour: i64, part: RecordBatch, seq: u64) -> Result<()> {
        let key = (table, hour);
        // A schema change (the events table grows columns as stages land) starts a new
        // file: a file has one schema, and readers reconcile files at query time.
        let schema_changed = self
            .buffers
            .get(&key)
            .and_then(|b| b.batches.first())
            .is_some_and(|b| b.schema() != part.schema());
        if schema_changed {
            self.write_buffer(key)?;
        }
        let bytes = part.get_array_memory_size();
        let buf = self.buffers.entry(key).or_insert_with(|| PartBuffer {
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
            first_seq: seq,
        });
        buf.rows += part.num_rows();
        buf.bytes += bytes;
        buf.batches.push(part);
        self.buffered_bytes += bytes;
        if buf.rows >= self.cfg.max_file_rows {
            self.write_buffer(key)?;
        }
        Ok(())
    }

    fn relieve_memory(&mut self) -> Result<()> {
        // Largest first, down to half the limit, so the next batches do not land right
        // back over it.
        while self.buffered_bytes > self.cfg.max_buffered_bytes / 2 {
            let Some(key) = self
                .buffers
                .iter()
                .max_by_key(|(_, b)| b.bytes)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.write_buffer(key)?;
        }
        Ok(())
    }

    /// Sequence number up to which every appended batch is on disk: a batch with
    /// `seq <= durable_seq()` can be acknowledged upstream. 0 before anything is durable.
    pub fn durable_seq(&self) -> u64 {
        self.buffers
            .values()
            .map(|b| b.first_seq - 1)
            .min()
            .unwrap_or(self.last_seq)
    }

    /// Writes every buffered row and returns the new durability watermark (the sequence
    /// number of the last appended batch).
    pub fn flush(&mut self) -> Result<u64> {
        let keys: Vec<_> = self.buffers.keys().copied().collect();
        for key in keys {
            self.write_buffer(key)?;
        }
        Ok(self.durable_seq())
    }

    fn write_buffer(&mut self, key: (Table, i64)) -> Result<()> {
        let Some(buf) = self.buffers.remove(&key) else {
            return Ok(());
        };
        self.buffered_bytes -= buf.bytes;
        let (table, hour) = key;
        let Some(first) = buf.batches.first() else {
            return Ok(());
        };
        // A flush of a quarter of a row group or more is encoded once, for good: sorted and
        // at the configured level, and maintenance later merges it by copying its row
        // groups. Smaller flushes (a slow stream) go out fast, in arrival order with LZ4,
        // and are sorted and compressed when maintenance merges them.
        let encode_final = buf.rows >= self.cfg.final_encoding_min_rows();
        let sort = table == Table::Events && encode_final;
        // Unsorted rows go to the writer as the batches they came in (sliced where a file
        // ends), not concatenated first: the writer copies them into pages anyway.
        let order = if sort {
            sorted_order(&first.schema(), &buf.batches)?
        } else {
            None
        };
        let files: Vec<FileRows<'_>> = match &order {
            Some(order) => order
                .chunks(self.cfg.max_file_rows.max(1))
                .map(|order| FileRows::Gathered {
                    from: &buf.batches,
                    order,
                })
                .collect(),
            None => split_into_files(&buf.batches, self.cfg.max_file_rows)
                .into_iter()
                .map(FileRows::Batches)
                .collect(),
        };
        let pdir = partition_dir(&self.dir, table, hour);
        fs::create_dir_all(&pdir).map_err(Error::io("create", &pdir))?;
        for rows in files {
            let len = rows.len();
            self.file_counter += 1;
            let name = format!("part-{}-{:06}.parquet", self.writer_id, self.file_counter);
            let props = if encode_final {
                &self.props[&table]
            } else {
                &self.small_props[&table]
            };
            let bytes = write_parquet_atomic(&pdir, &name, rows, props)?;
            self.stats.files_written += 1;
            self.stats.rows_written += len as u64;
            self.stats.bytes_written += bytes;
        }
        Ok(())
    }

    /// Replaces the endpoint inventory with `batch` (atomically: readers see the old
    /// snapshot or the new one).
    pub fn replace_endpoints(&mut self, batch: &RecordBatch) -> Result<()> {
        let dir = self.dir.join(Table::Endpoints.name());
        let bytes = write_parquet_atomic(
            &dir,
            INVENTORY_FILE,
            FileRows::Batches(vec![batch.clone()]),
            &self.props[&Table::Endpoints],
        )?;
        self.stats.files_written += 1;
        self.stats.rows_written += batch.num_rows() as u64;
        self.stats.bytes_written += bytes;
        Ok(())
    }

    /// Runs one maintenance round now (merge small files, apply retention).
    pub fn maintain(&self) -> Result<MaintenanceReport> {
        let _round = self.lock.round();
        maintain_at(&self.dir, &self.cfg, now_secs(), &|| false)
    }

    /// Starts a thread that runs maintenance every
    /// [`StoreConfig::maintenance_interval_secs`] until the handle is stopped or dropped.
    /// It only touches files already on disk, so it runs alongside the writer. It keeps
    /// the directory locked until it stops, even if the [`Store`] is dropped first.
    pub fn spawn_maintenance(&self) -> Result<Maintenance> {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (dir, cfg, lock) = (self.dir.clone(), self.cfg.clone(), self.lock.clone());
        let (stop2, rounds2) = (stop.clone(), rounds.clone());
        let handle = std::thread::Builder::new()
            .name("store-maintenance".into())
            .spawn(move || {
                let tick = Duration::from_millis(200);
                let every = Duration::from_secs(cfg.maintenance_interval_secs);
                let mut waited = Duration::ZERO;
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    waited += tick;
                    if waited < every {
                        continue;
                    }
                    waited = Duration::ZERO;
                    let round = lock.round();
                    // A stop request ends the round between two partitions (or two merges),
                    // not at its end: after downtime one round can merge many hours.
                    let stopping = || stop2.load(Ordering::Relaxed);
                    let result = maintain_at(&dir, &cfg, now_secs(), &stopping);
                    drop(round);
                    match result {
                        Ok(r) => tracing::debug!(?r, "store maintenance"),
                        Err(e) => tracing::warn!(error = %e, "store maintenance failed; retrying next round"),
                    }
                    rounds2.fetch_add(1, Ordering::Relaxed);
                }
            })
            .map_err(Error::io("spawn maintenance thread", &self.dir))?;
        Ok(Maintenance {
            stop,
            rounds,
            handle: Some(handle),
        })
    }
}

/// Handle of the background maintenance thread; stops it when dropped.
#[derive(Debug)]
pub struct Maintenance {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Maintenance {
    /// Rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Stops the thread: a round in progress ends after the merge it is doing (the rest is
    /// left for the next run's rounds), so this returns within about one merge.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What one maintenance round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Files merged away.
    pub files_merged: u64,
    /// Merged files written.
    pub files_written: u64,
    /// Partitions (`date=` directories) deleted by retention.
    pub partitions_deleted: u64,
}

// ---------------------------------------------------------------------------------------
// Partitioning

fn hour_of_rows(table: Table, batch: &RecordBatch) -> Result<Vec<i64>> {
    let schema_err = |message: String| Error::Schema {
        table: table.name(),
        message,
    };
    let col = batch
        .column_by_name(TIMESTAMP_COLUMN)
        .ok_or_else(|| schema_err(format!("the batch has no `{TIMESTAMP_COLUMN}` column")))?;
    let ts: ArrayRef = match col.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => col.clone(),
        DataType::Timestamp(_, _) => cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))?,
        other => {
            return Err(schema_err(format!(
                "`{TIMESTAMP_COLUMN}` must be a timestamp, got {other}"
            )));
        }
    };
    let ts = ts
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| schema_err("timestamp column did not cast to microseconds".into()))?;
    if ts.null_count() > 0 {
        return Err(schema_err(format!(
            "{} rows have a null `{TIMESTAMP_COLUMN}`",
            ts.null_count()
        )));
    }
    Ok(ts.values().iter().map(|t| t.div_euclid(HOUR_US)).collect())
}

fn split_by_hour(batch: &RecordBatch, hours: &[i64]) -> Result<Vec<(i64, RecordBatch)>> {
    let Some(&first) = hours.first() else {
        return Ok(Vec::new());
    };
    if hours.iter().all(|&h| h == first) {
        return Ok(vec![(first, batch.clone())]);
    }
    let mut groups: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (i, &h) in hours.iter().enumerate() {
        groups.entry(h).or_default().push(i as u32);
    }
    groups
        .into_iter()
        .map(|(h, idx)| {
            let idx = arrow::array::UInt32Array::from(idx);
            Ok((h, take_record_batch(batch, &idx)?))
        })
        .collect()
}

/// The events column that holds a different value in every row (the request id).
const UNIQUE_PER_ROW: &str = col::REQUEST_ID;
/// String columns of the events table written without statistics (see
/// `writer_properties_with`).
const FREE_TEXT: [&str; 6] = [
    col::PATH,
    col::QUERY,
    col::USER_AGENT,
    col::REFERRER,
    col::BODY,
    UNIQUE_PER_ROW,
];
/// Integer columns of the events table whose values mostly differ from row to row and
/// rise within one client's events.
const ASCENDING_PER_CLIENT: [&str; 2] = ["timestamp", "kafka_offset"];

/// The columns events are sorted by before they are written, so that a file's row
/// groups and pages cover narrow ranges of clients and time and their statistics let a
/// client or time filter skip them.
const PRUNING_ORDER: [&str; 2] = ["source_ip", TIMESTAMP_COLUMN];

/// The order the rows of `batches` are written in when sorted by [`PRUNING_ORDER`], as
/// indexes into the batches' concatenation. `None` when the schema has none of the sort
/// columns or there are fewer than two rows. Only the sort keys are concatenated; the rows
/// themselves are gathered from the batches as they are written (see [`FileRows`]).
fn sorted_order(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Option<Vec<u32>>> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut keys = Vec::new();
    for name in PRUNING_ORDER {
        let Ok(i) = schema.index_of(name) else {
            continue;
        };
        let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
        keys.push(concat(&parts)?);
    }
    if keys.is_empty() || rows < 2 {
        return Ok(None);
    }
    Ok(Some(pruning_order(&keys)?))
}

/// The rows of one file, in the order they are written.
enum FileRows<'a> {
    /// Batches (or slices of them) written as they are.
    Batches(Vec<RecordBatch>),
    /// The rows of `from` in `order` (indexes into the concatenation of `from`).
    Gathered {
        from: &'a [RecordBatch],
        order: &'a [u32],
    },
}

impl FileRows<'_> {
    fn len(&self) -> usize {
        match self {
            FileRows::Batches(b) => b.iter().map(|b| b.num_rows()).sum(),
            FileRows::Gathered { order, .. } => order.len(),
        }
    }

    fn schema(&self) -> Option<SchemaRef> {
        match self {
            FileRows::Batches(b) => b.first().map(|b| b.schema()),
            FileRows::Gathered { from, order } => from
                .first()
                .filter(|_| !order.is_empty())
                .map(|b| b.schema()),
        }
    }
}

/// Writes gathered rows one row group at a time and, within a row group, one column at a
/// time: each column is gathered into `order` ([`gather_column`]) and encoded before the next
/// one is gathered. A flush therefore never holds its rows twice over (gathering whole
/// row groups of events at once took about 130 MB more peak memory in `gatewatch run`,
/// in buffers the system mapped and zeroed afresh on every flush), and the encoder reads
/// a column while it is still in the cache. Gathering whole columns matters: the sorted
/// order is unrelated to the order rows arrived in, so gathering a few thousand rows of
/// every column at a time reads each column's source again for every slice, which was
/// measured to be slower.
/// Row groups end where the writer's `max_row_group_row_count` says, as they would with
/// `ArrowWriter::write`. Each row group concatenates a column's parts again: a
/// sequential copy, which for 180,000 events in two row groups measured no slower than
/// in one (`gather_speed` with the order cut at 131,072 rows).
fn write_gathered<W: std::io::Write + Send>(
    writer: ArrowWriter<W>,
    schema: &SchemaRef,
    from: &[RecordBatch],
    order: &[u32],
) -> Result<W> {
    let (mut file, factory) = writer.into_serialized_writer()?;
    let row_group_rows = file
        .properties()
        .max_row_group_row_count()
        .unwrap_or(usize::MAX)
        .max(1);
    for (index, group) in order.chunks(row_group_rows).enumerate() {
        let group = arrow::array::UInt32Array::from(group.to_vec());
        let mut columns = factory.create_column_writers(index)?.into_iter();
        let mut done = Vec::with_capacity(columns.len());
        for (c, field) in schema.fields().iter().enumerate() {
            let sources: Vec<&dyn Array> = from.iter().map(|b| b.column(c).as_ref()).collect();
            let array = gather_column(&sources, &group)?;
            for leaf in compute_leaves(field, &array)? {
                let mut w = columns.next().ok_or_else(|| {
                    parquet::errors::ParquetError::General(format!(
                        "no Parquet column writer left for column {}",
                        field.name()
                    ))
                })?;
                w.write(&leaf)?;
                done.push(w.close()?);
            }
        }
        let mut group_writer = file.next_row_group()?;
        for chunk in done {
            chunk.append_to_row_group(&mut group_writer)?;
        }
        group_writer.close()?;
    }
    Ok(file.into_inner()?)
}

/// Row order of `keys` (ascending, nulls last), as `lexsort_to_indices` gives it. The
/// events' keys, a `Utf8` address then the timestamp, are sorted on a packed key: the
/// address's first 16 bytes as one big-endian integer (all of any IPv4 address), then the
/// timestamp, with the whole address compared only where two share those 16 bytes; rows
/// equal on both keys stay in row order. The general comparator dispatches on the column
/// type for every comparison; this one compares integers. Other key types take the
/// general path.
fn pruning_order(keys: &[ArrayRef]) -> Result<Vec<u32>> {
    use arrow::array::{StringArray, TimestampMicrosecondArray as Ts};
    let packed = match keys {
        [ip, ts] => ip
            .as_any()
            .downcast_ref::<StringArray>()
            .zip(ts.as_any().downcast_ref::<Ts>()),
        _ => None,
    };
    let Some((ip, ts)) = packed else {
        let cols: Vec<SortColumn> = keys
            .iter()
            .map(|values| SortColumn {
                values: values.clone(),
                options: Some(SortOptions {
                    descending: false,
                    nulls_first: false,
                }),
            })
            .collect();
        return Ok(lexsort_to_indices(&cols, None)?.values().to_vec());
    };
    // (address present, first 16 bytes, timestamp present, timestamp, row): the derived
    // order of the tuple is the wanted order except between long addresses that share
    // their first 16 bytes (or differ in trailing zero bytes), which the comparator below
    // settles with the whole strings.
    let mut rows: Vec<(bool, u128, bool, i64, u32)> = (0..ip.len())
        .map(|r| {
            let prefix = if ip.is_valid(r) {
                let b = ip.value(r).as_bytes();
                let mut word = [0u8; 16];
                let n = b.len().min(16);
                word[..n].copy_from_slice(&b[..n]);
                u128::from_be_bytes(word)
            } else {
                0
            };
            (
                ip.is_null(r),
                prefix,
                ts.is_null(r),
                if ts.is_valid(r) { ts.value(r) } else { 0 },
                r as u32,
            )
        })
        .collect();
    rows.sort_unstable_by(|a, b| {
        let head = (a.0, a.1).cmp(&(b.0, b.1));
        if head.is_ne() {
            return head;
        }
        if !a.0 {
            let (x, y) = (ip.value(a.4 as usize), ip.value(b.4 as usize));
            // Equal heads hide a difference only past byte 16 or in trailing zero bytes.
            if x.len() != y.len() || x.len() > 16 {
                let whole = x.as_bytes().cmp(y.as_bytes());
                if whole.is_ne() {
                    return whole;
                }
            }
        }
        (a.2, a.3, a.4).cmp(&(b.2, b.3, b.4))
    });
    Ok(rows.into_iter().map(|r| r.4).collect())
}

/// `batches` cut into runs of at most `max_rows` rows each (zero-copy slices), one run
/// per file; empty batches are left out.
fn split_into_files(batches: &[RecordBatch], max_rows: usize) -> Vec<Vec<RecordBatch>> {
    let max_rows = max_rows.max(1);
    let mut files = Vec::new();
    let mut current: Vec<RecordBatch> = Vec::new();
    let mut room = max_rows;
    for b in batches {
        let mut offset = 0;
        while offset < b.num_rows() {
            let len = (b.num_rows() - offset).min(room);
            current.push(b.slice(offset, len));
            offset += len;
            room -= len;
            if room == 0 {
                files.push(std::mem::take(&mut current));
                room = max_rows;
            }
        }
    }
    if !current.is_empty() {
        files.push(current);
    }
    files
}

/// `date=YYYY-MM-DD` for an hour number (hours since the epoch).
pub fn date_partition(hour: i64) -> String {
    let (y, m, d) = civil_from_days(hour.div_euclid(24));
    format!("date={y:04}-{m:02}-{d:02}")
}

fn partition_dir(dir: &Path, table: Table, hour: i64) -> PathBuf {
    dir.join(table.name())
        .join(date_partition(hour))
        .join(format!("hour={:02}", hour.rem_euclid(24)))
}

/// Year, month, day of a day number (days since 1970-01-01), proleptic Gregorian.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day number (days since 1970-01-01) of a date.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The hour of day of an `hour=HH` directory.
fn parse_hour_dir(name: &str) -> Option<i64> {
    let h: i64 = name.strip_prefix("hour=")?.parse().ok()?;
    (0..24).contains(&h).then_some(h)
}

fn parse_date_dir(name: &str) -> Option<i64> {
    let s = name.strip_prefix("date=")?;
    let mut it = s.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d))
}

// ---------------------------------------------------------------------------------------
// Files

/// `props` with dictionary encoding off for the schema's float columns. Features and
/// scores are nearly all distinct values: a dictionary encoder would hash every one of
/// them only to fall back to plain pages, and on the events table (a hundred float
/// columns) that hashing cost more than the rest of the write, compression included.
/// Their pages are split by byte position instead, which zstd compresses better.
fn float_columns_without_dictionary(
    props: &WriterProperties,
    schema: &arrow::datatypes::Schema,
) -> WriterProperties {
    let mut b = props.clone().into_builder();
    for f in schema.fields() {
        if matches!(
            f.data_type(),
            arrow::datatypes::DataType::Float32 | arrow::datatypes::DataType::Float64
        ) {
            let col = ColumnPath::from(f.name().as_str());
            b = b
                .set_column_dictionary_enabled(col.clone(), false)
                .set_column_encoding(col, Encoding::BYTE_STREAM_SPLIT);
        }
    }
    b.build()
}

/// Writes `rows` to `dir/name` through a hidden temporary file, synced before the
/// rename and the directory synced after it. Returns the file's size (0, and no file,
/// when there are no rows).
fn write_parquet_atomic(
    dir: &Path,
    name: &str,
    rows: FileRows<'_>,
    props: &WriterProperties,
) -> Result<u64> {
    let Some((tmp, len)) = write_parquet_temp(dir, name, rows, props)? else {
        return Ok(0);
    };
    rename_into_place(dir, &tmp, &dir.join(name))?;
    Ok(len)
}

/// Writes `rows` to the hidden temporary file of `dir/name` and syncs it; the caller
/// renames it into place ([`rename_into_place`], or a merge's [`swap_in`]). Returns its
/// path and size; `None` (and no file) when there are no rows.
fn write_parquet_temp(
    dir: &Path,
    name: &str,
    rows: FileRows<'_>,
    props: &WriterProperties,
) -> Result<Option<(PathBuf, u64)>> {
    let Some(schema) = rows.schema() else {
        return Ok(None);
    };
    let props = float_columns_without_dictionary(props, &schema);
    let written = write_temp(dir, name, |file| {
        let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        match rows {
            FileRows::Batches(batches) => {
                for b in &batches {
                    w.write(b)?;
                }
                Ok(w.into_inner()?)
            }
            FileRows::Gathered { from, order } => write_gathered(w, &schema, from, order),
        }
    })?;
    Ok(Some(written))
}

/// Fills the hidden temporary file of `dir/name` with `write` and syncs it, removing it
/// on failure. Returns its path and size.
fn write_temp(
    dir: &Path,
    name: &str,
    write: impl FnOnce(File) -> Result<File>,
) -> Result<(PathBuf, u64)> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let file = File::create(&tmp).map_err(Error::io("create", &tmp))?;
    let result = (|| -> Result<u64> {
        let file = write(file)?;
        file.sync_all().map_err(Error::io("sync", &tmp))?;
        Ok(file.metadata().map_err(Error::io("stat", &tmp))?.len())
    })();
    match result {
        Ok(len) => Ok((tmp, len)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Renames the synced temporary file `tmp` to `dst` in `dir` and syncs the directory;
/// the temporary file is removed if the rename fails.
fn rename_into_place(dir: &Path, tmp: &Path, dst: &Path) -> Result<()> {
    if let Err(e) = fs::rename(tmp, dst) {
        let _ = fs::remove_file(tmp);
        return Err(Error::io("rename", tmp)(e));
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync", dir))
}

fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list", dir)(e)),
    };
    for entry in rd {
        let entry = entry.map_err(Error::io("list", dir))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

fn files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// Every partition directory (`<table>/date=…/hour=…`) of the partitioned tables, plus
/// the endpoints directory.
fn leaf_dirs(dir: &Path) -> Result<Vec<(Table, PathBuf)>> {
    let mut out = Vec::new();
    for t in Table::ALL {
        let tdir = dir.join(t.name());
        if !t.is_partitioned() {
            if tdir.is_dir() {
                out.push((t, tdir));
            }
            continue;
        }
        for (_, ddir) in subdirs(&tdir)? {
            for (_, hdir) in subdirs(&ddir)? {
                out.push((t, hdir));
            }
        }
    }
    Ok(out)
}

/// The file under the data directory that the writer holds an exclusive advisory lock on
/// (`flock`) for as long as it writes.
pub const LOCK_FILE: &str = "writer.lock";

/// The writer's lock on a data directory. Shared by the [`Store`], its maintenance
/// thread and [`maintain`] calls in the same process; released (the lock file closed)
/// when the last of them lets go. The mutex serialises maintenance rounds.
struct DirLock {
    _file: File,
    rounds: Mutex<()>,
}

/// The directories this process holds, by canonical path.
static HELD: Mutex<Vec<(PathBuf, Weak<DirLock>)>> = Mutex::new(Vec::new());

impl DirLock {
    /// A new lock on `dir` for a writer: fails if anyone, in this process or another,
    /// holds it.
    fn for_writer(dir: &Path) -> Result<Arc<DirLock>> {
        Self::take(dir, true)
    }

    /// The lock this process already holds on `dir`, or a new one; fails if another
    /// process holds it.
    fn for_maintenance(dir: &Path) -> Result<Arc<DirLock>> {
        Self::take(dir, false)
    }

    fn take(dir: &Path, writer: bool) -> Result<Arc<DirLock>> {
        let key = fs::canonicalize(dir).map_err(Error::io("resolve", dir))?;
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(_, w)| w.strong_count() > 0);
        if let Some(lock) = held
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            if writer {
                return Err(in_use(dir));
            }
            return Ok(lock);
        }
        let path = dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io("create", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(in_use(dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path)(e)),
        }
        let lock = Arc::new(DirLock {
            _file: file,
            rounds: Mutex::new(()),
        });
        held.push((key, Arc::downgrade(&lock)));
        Ok(lock)
    }

    /// Waits for the maintenance round in progress (or recovery) to end.
    fn round(&self) -> MutexGuard<'_, ()> {
        self.rounds.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn in_use(dir: &Path) -> Error {
    Error::Io {
        op: "lock",
        path: dir.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!(
                "another gatewatch process is writing to this data directory (it holds \
                 {LOCK_FILE}); stop it or give this one another data directory"
            ),
        ),
    }
}

/// The file a data directory's queries and its maintenance share so that no listing
/// sees half a merge (see the module docs): in the directory's root, beside
/// [`LOCK_FILE`], and never data.
pub const LISTING_LOCK_FILE: &str = "listing.lock";

/// A data directory's [`LISTING_LOCK_FILE`], open. Maintenance holds it exclusively while
/// it swaps files ([`ListingLock::exclusive`]); a query holds it shared while it lists
/// ([`ListingLock::shared`]). Advisory (`flock`), so it binds gatewatch processes and
/// threads alike, each through its own open file.
pub(crate) struct ListingLock {
    file: File,
}

/// A held [`ListingLock`], released when dropped.
pub(crate) struct ListingGuard<'a> {
    file: &'a File,
}

impl Drop for ListingGuard<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; unlocking lets one open file serve a
        // whole maintenance round.
        let _ = self.file.unlock();
    }
}

impl ListingLock {
    /// The lock of the store at `dir`, for maintenance: the file is created if need be
    /// (and opened read-only if someone else's: `flock` needs no write access).
    pub(crate) fn for_maintenance(dir: &Path) -> Result<ListingLock> {
        let path = dir.join(LISTING_LOCK_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .or_else(|e| File::open(&path).map_err(|_| e))
            .map_err(Error::io("create", &path))?;
        Ok(ListingLock { file })
    }

    /// The lock of the store at `dir`, held shared for a query's listing until the value
    /// is dropped (closing the file releases it). Opened read-only: readers change
    /// nothing in a data directory. `None` when it is not there (no writer has opened the
    /// directory, so no maintenance runs on it) or cannot be locked (a file system without
    /// `flock`): the query lists without it.
    pub(crate) fn shared(dir: &Path) -> Option<ListingLock> {
        let path = dir.join(LISTING_LOCK_FILE);
        let file = File::open(&path).ok()?;
        match file.lock_shared() {
            Ok(()) => Some(ListingLock { file }),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "sql: listing without the listing lock");
                None
            }
        }
    }

    /// Waits until no query is listing, and keeps new listings waiting until the guard
    /// is dropped; gives up (`None`) as soon as `stopping` says so while it waits: a
    /// listing that never ends (a reader process suspended mid-listing) must not keep a
    /// shutdown waiting on maintenance.
    pub(crate) fn exclusive(
        &self,
        stopping: &dyn Fn() -> bool,
    ) -> Result<Option<ListingGuard<'_>>> {
        loop {
            match self.file.try_lock() {
                Ok(()) => return Ok(Some(ListingGuard { file: &self.file })),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if stopping() {
                        return Ok(None);
                    }
                    // Listings last milliseconds.
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io("lock", Path::new(LISTING_LOCK_FILE))(e));
                }
            }
        }
    }
}

/// Finishes (or rolls back) the merges a crash interrupted, each under the listing lock.
/// Says `false` when `stopping` said so while it waited for the lock.
fn finish_interrupted_merges(
    dir: &Path,
    listing: &ListingLock,
    stopping: &dyn Fn() -> bool,
) -> Result<bool> {
    for (_, leaf) in leaf_dirs(dir)? {
        for (name, path) in files(&leaf)? {
            if journal_id(&name).is_some() {
                let Some(_swap) = listing.exclusive(stopping)? else {
                    return Ok(false);
                };
                finish_merge(&leaf, &path)?;
            }
        }
    }
    Ok(true)
}

/// Removes temporary files and finishes (or rolls back) interrupted merges.
fn recover(dir: &Path) -> Result<()> {
    finish_interrupted_merges(dir, &ListingLock::for_maintenance(dir)?, &|| false)?;
    for (_, leaf) in leaf_dirs(dir)? {
        for (name, path) in files(&leaf)? {
            if name.starts_with('.') && name.ends_with(".tmp") {
                fs::remove_file(&path).map_err(Error::io("remove", &path))?;
            }
        }
    }
    Ok(())
}

/// The file name of merge `id`'s output. Writers' files are `part-<hex>-<n>.parquet`, so
/// the `m` tells a merge's output from theirs.
pub(crate) fn merged_file_name(id: &str) -> String {
    format!("part-m{id}.parquet")
}

/// The merge id of a merge output's file name (see [`merged_file_name`]).
pub(crate) fn merged_file_id(name: &str) -> Option<&str> {
    name.strip_prefix("part-m")?.strip_suffix(".parquet")
}

/// The file name of merge `id`'s journal, in the directory of its output. Hidden, and
/// not `.parquet`: no query lists it as data.
pub(crate) fn journal_name(id: &str) -> String {
    format!(".compact-{id}.journal")
}

/// The merge id of a journal's file name (see [`journal_name`]).
fn journal_id(name: &str) -> Option<&str> {
    name.strip_prefix(".compact-")?.strip_suffix(".journal")
}

/// A journal's text: the merge's output file name (first line) and its inputs' (the
/// rest), all in the journal's directory.
pub(crate) fn parse_journal(text: &str) -> (Option<&str>, impl Iterator<Item = &str>) {
    let mut lines = text.lines();
    let output = lines.next().filter(|l| !l.is_empty() && !l.contains('/'));
    (output, lines.filter(|l| !l.is_empty() && !l.contains('/')))
}

/// A journal names a merge's output and inputs ([`parse_journal`]). If the output made
/// it into place, the inputs are deleted; otherwise the merge never happened and only the
/// journal goes. The caller holds the [`ListingLock`] exclusively.
fn finish_merge(leaf: &Path, journal: &Path) -> Result<()> {
    let text = fs::read_to_string(journal).map_err(Error::io("read", journal))?;
    let (output, inputs) = parse_journal(&text);
    let output_done = output.is_some_and(|out| leaf.join(out).is_file());
    if output_done {
        for input in inputs {
            let p = leaf.join(input);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &p)(e)),
            }
        }
    }
    fs::remove_file(journal).map_err(Error::io("remove", journal))?;
    sync_dir(leaf)
}

// ---------------------------------------------------------------------------------------
// Maintenance

/// One maintenance round over the store at `dir`: finish interrupted merges, merge the
/// small files of every finished hour, apply retention.
///
/// It runs under the writer's lock: when a [`Store`] of this process has the directory,
/// the round runs as one of that store's (after any round in progress); otherwise it
/// takes the lock for the round, and fails if another process is writing to `dir`.
pub fn maintain(dir: &Path, cfg: &StoreConfig) -> Result<MaintenanceReport> {
    if !dir.is_dir() {
        // Nothing stored yet (and no directory to lock).
        return Ok(MaintenanceReport::default());
    }
    let lock = DirLock::for_maintenance(dir)?;
    let _round = lock.round();
    maintain_at(dir, cfg, now_secs(), &|| false)
}

/// Seconds since the epoch by the wall clock.
fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// [`maintain`] with the wall clock given (seconds since the epoch). `stopping` is asked
/// before each partition and each merge; once it says yes the round ends there, with what
/// it did so far (every merge is whole: journalled, finished or undone).
fn maintain_at(
    dir: &Path,
    cfg: &StoreConfig,
    now_secs: i64,
    stopping: &dyn Fn() -> bool,
) -> Result<MaintenanceReport> {
    let mut report = MaintenanceReport::default();
    let listing = ListingLock::for_maintenance(dir)?;
    // Journals of merges that died half-way.
    if !finish_interrupted_merges(dir, &listing, stopping)? {
        return Ok(report);
    }
    // The reference "now" is the newest partition, but never later than the wall clock:
    // partitions dated ahead of it (a gateway whose clock runs fast, which decoders
    // accept up to a day ahead; a typo'd year) never count. Otherwise a gateway a few hours
    // ahead late in the UTC day would make retention count from tomorrow and delete
    // today a day early, and would make the hour being written look finished.
    let now_hour = now_secs.div_euclid(3600);
    let today = now_hour.div_euclid(24);
    for t in Table::ALL.into_iter().filter(|t| t.is_partitioned()) {
        let tdir = dir.join(t.name());
        let dates = subdirs(&tdir)?;
        let mut hours: Vec<(Option<i64>, PathBuf)> = Vec::new();
        for (dname, ddir) in &dates {
            let day = parse_date_dir(dname);
            for (hname, hdir) in subdirs(ddir)? {
                let hour = day.zip(parse_hour_dir(&hname)).map(|(d, h)| d * 24 + h);
                hours.push((hour, hdir));
            }
        }
        // The newest hour up to now stays open: the writer is still adding to it. So do
        // hours yet to come (rows from fast clocks): they cannot have finished.
        let open = hours
            .iter()
            .filter_map(|(h, _)| *h)
            .filter(|h| *h <= now_hour)
            .max();
        for (hour, hdir) in hours {
            if hour.is_some_and(|h| Some(h) == open || h > now_hour) {
                continue;
            }
            if stopping() {
                return Ok(report);
            }
            let (merged, written) = compact_partition(&hdir, t, cfg, &listing, stopping)?;
            report.files_merged += merged;
            report.files_written += written;
        }
        if cfg.retention_days > 0 {
            let days: Vec<(i64, &PathBuf)> = dates
                .iter()
                .filter_map(|(n, p)| parse_date_dir(n).map(|d| (d, p)))
                .collect();
            let newest = days.iter().map(|(d, _)| *d).filter(|d| *d <= today).max();
            if let Some(newest) = newest {
                for (d, p) in days {
                    if newest - d >= i64::from(cfg.retention_days) {
                        // Whole: a query lists all of the day or none of it.
                        let Some(_swap) = listing.exclusive(stopping)? else {
                            return Ok(report);
                        };
                        fs::remove_dir_all(p).map_err(Error::io("remove", p))?;
                        report.partitions_deleted += 1;
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Small files that merge together: their schema, whether they are re-encoded (LZ4
/// files) rather than stitched, and each file's name and rows.
type MergeGroup = (SchemaRef, bool, Vec<(String, usize)>);

/// Merges the small files of one partition; `stopping` is asked before each merge.
fn compact_partition(
    hdir: &Path,
    table: Table,
    cfg: &StoreConfig,
    listing: &ListingLock,
    stopping: &dyn Fn() -> bool,
) -> Result<(u64, u64)> {
    // Small files grouped by schema: only files of one schema merge into one file.
    let mut groups: BTreeMap<String, MergeGroup> = BTreeMap::new();
    for (name, path) in files(hdir)? {
        if name.starts_with('.') || !name.ends_with(".parquet") {
            continue;
        }
        let file = File::open(&path).map_err(Error::io("open", &path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let rows =
            usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(usize::MAX);
        if rows >= cfg.compact_small_file_rows {
            continue;
        }
        let schema = builder.schema().clone();
        // Files of one schema and one kind merge together: files already in their final
        // form are stitched, their row groups copied as they are; the others (LZ4 files
        // written fast, in arrival order) are re-encoded.
        let rewrite = !builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .is_some_and(|kv| {
                kv.iter().any(|e| {
                    e.key == FINAL_FORM_KEY && e.value.as_deref() == Some(FINAL_FORM_VALUE)
                })
            });
        let key = format!("{rewrite} {:?}", schema.fields());
        groups
            .entry(key)
            .or_insert_with(|| (schema, rewrite, Vec::new()))
            .2
            .push((name, rows));
    }
    let props = cfg.writer_properties(table)?;
    let (mut merged, mut written) = (0, 0);
    for (_, (schema, rewrite, inputs)) in groups {
        // Chunks that each fit in one file.
        let mut chunk: Vec<String> = Vec::new();
        let mut chunk_rows = 0;
        let mut chunks = Vec::new();
        for (name, rows) in inputs {
            if chunk_rows + rows > cfg.max_file_rows && !chunk.is_empty() {
                chunks.push(std::mem::take(&mut chunk));
                chunk_rows = 0;
            }
            chunk.push(name);
            chunk_rows += rows;
        }
        chunks.push(chunk);
        for chunk in chunks
            .into_iter()
            .filter(|c| c.len() >= cfg.compact_min_files)
        {
            if stopping() {
                return Ok((merged, written));
            }
            let swapped = if rewrite {
                merge_files(hdir, table, &schema, &chunk, &props, listing, stopping)?
            } else {
                stitch_files(hdir, &chunk, listing, stopping)?
            };
            if !swapped {
                return Ok((merged, written));
            }
            merged += chunk.len() as u64;
            written += 1;
        }
    }
    Ok((merged, written))
}

fn merge_files(
    hdir: &Path,
    table: Table,
    schema: &SchemaRef,
    inputs: &[String],
    props: &WriterProperties,
    listing: &ListingLock,
    stopping: &dyn Fn() -> bool,
) -> Result<bool> {
    let (id, out) = merge_name();
    let mut batches = Vec::new();
    for name in inputs {
        let path = hdir.join(name);
        let file = File::open(&path).map_err(Error::io("open", &path))?;
        for b in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
            batches.push(b?);
        }
    }
    let order = if table == Table::Events {
        sorted_order(schema, &batches)?
    } else {
        None
    };
    let rows = match &order {
        Some(order) => FileRows::Gathered {
            from: &batches,
            order,
        },
        None => FileRows::Batches(vec![concat_batches(schema, &batches)?]),
    };
    let journal = write_journal(hdir, &id, &out, inputs)?;
    match write_parquet_temp(hdir, &out, rows, props)? {
        Some((tmp, _)) => swap_in(hdir, &tmp, &out, &journal, listing, stopping),
        None => {
            // Inputs without rows: no output, so finishing the journal only deletes it.
            finish_merge(hdir, &journal)?;
            Ok(true)
        }
    }
}

/// Puts a merge's synced output `tmp` in place as `hdir/out` and deletes its inputs
/// (those `journal` names) and the journal, as one step for queries: under the listing
/// lock. When `stopping` says so while it waits for the lock, the merge is undone instead
/// (its output and journal deleted, its inputs left for the next round) and this says
/// `false`.
fn swap_in(
    hdir: &Path,
    tmp: &Path,
    out: &str,
    journal: &Path,
    listing: &ListingLock,
    stopping: &dyn Fn() -> bool,
) -> Result<bool> {
    let Some(_swap) = listing.exclusive(stopping)? else {
        fs::remove_file(tmp).map_err(Error::io("remove", tmp))?;
        // Without its output in place the journal only says the merge never happened.
        finish_merge(hdir, journal)?;
        return Ok(false);
    };
    rename_into_place(hdir, tmp, &hdir.join(out))?;
    finish_merge(hdir, journal)?;
    Ok(true)
}

/// A merge id and its output file name.
fn merge_name() -> (String, String) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = format!("{nanos:x}");
    let out = merged_file_name(&id);
    (id, out)
}

/// Records a merge's output and inputs before the output is written, so that a round
/// after a crash can finish it (see [`finish_merge`]).
fn write_journal(hdir: &Path, id: &str, out: &str, inputs: &[String]) -> Result<PathBuf> {
    let journal = hdir.join(journal_name(id));
    let mut j = File::create(&journal).map_err(Error::io("create", &journal))?;
    let mut text = format!("{out}\n");
    for i in inputs {
        text.push_str(i);
        text.push('\n');
    }
    j.write_all(text.as_bytes())
        .map_err(Error::io("write", &journal))?;
    j.sync_all().map_err(Error::io("sync", &journal))?;
    Ok(journal)
}

/// Merges files already in their final encoding by copying their row groups, column
/// chunk by column chunk, into one file: nothing is decoded or compressed again. Each
/// row group keeps its own order (sorted when written), its statistics, page index and
/// bloom filters; the Arrow schema is the inputs' (they share one).
fn stitch_files(
    hdir: &Path,
    inputs: &[String],
    listing: &ListingLock,
    stopping: &dyn Fn() -> bool,
) -> Result<bool> {
    let (id, out) = merge_name();
    let mut sources = Vec::with_capacity(inputs.len());
    for name in inputs {
        let path = hdir.join(name);
        let file = File::open(&path).map_err(Error::io("open", &path))?;
        let meta = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&file)?;
        sources.push((file, meta));
    }
    let Some((_, first)) = sources.first() else {
        return Ok(false);
    };
    let schema = first.file_metadata().schema_descr().root_schema_ptr();
    let props = Arc::new(
        WriterProperties::builder()
            .set_key_value_metadata(first.file_metadata().key_value_metadata().cloned())
            .build(),
    );
    let journal = write_journal(hdir, &id, &out, inputs)?;
    let (tmp, _) = write_temp(hdir, &out, |file| {
        let mut w = SerializedFileWriter::new(file, schema, props)?;
        for (src, meta) in &sources {
            for (g, rg) in meta.row_groups().iter().enumerate() {
                let mut rg_out = w.next_row_group()?;
                for (c, chunk) in rg.columns().iter().enumerate() {
                    let close = ColumnCloseResult {
                        bytes_written: chunk.compressed_size().max(0) as u64,
                        rows_written: rg.num_rows().max(0) as u64,
                        metadata: chunk.clone(),
                        bloom_filter: Sbbf::read_from_column_chunk(chunk, src)?,
                        column_index: meta
                            .column_index()
                            .and_then(|ci| ci.get(g)?.get(c).cloned()),
                        offset_index: meta
                            .offset_index()
                            .and_then(|oi| oi.get(g)?.get(c).cloned()),
                    };
                    rg_out.append_column(src, close)?;
                }
                rg_out.close()?;
            }
        }
        Ok(w.into_inner()?)
    })?;
    swap_in(hdir, &tmp, &out, &journal, listing, stopping)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_241), (2025, 6, 2));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(
            date_partition(1_748_851_200_000_000 / HOUR_US),
            "date=2025-06-02"
        );
        assert_eq!(parse_date_dir("date=2025-06-02"), Some(20_241));
        assert_eq!(parse_date_dir("date=2025-13-02"), None);
        assert_eq!(parse_date_dir("hour=02"), None);
    }

    #[test]
    fn sorted_rows_are_written_by_client_then_time() {
        use arrow::array::{DictionaryArray, StringArray};
        use arrow::datatypes::{Field, Int32Type, Schema};
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("source_ip", DataType::Utf8, true),
            Field::new(
                TIMESTAMP_COLUMN,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new(
                "method",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
        ]));
        // IPv6 addresses that share their first 16 bytes, an address that is a prefix of
        // another, and timestamps from a small range, so that rows tie on either key.
        let ips = [
            "10.0.0.2",
            "10.0.0.1",
            "10.0.0.10",
            "2001:db8:85a3:0000:0000:8a2e:0370:7334",
            "2001:db8:85a3:0000:0000:8a2e:0370:1",
            "2001:db8:85a3:00",
        ];
        let methods = ["GET", "POST", "PUT", "DELETE"];
        let mut x = 7u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut batches = Vec::new();
        for _ in 0..3 {
            let n = 50 + (next() % 50) as usize;
            let ip: StringArray = (0..n)
                .map(|_| match next() % 7 {
                    0 => None,
                    k => Some(ips[k as usize - 1]),
                })
                .collect();
            let ts = TimestampMicrosecondArray::from(
                (0..n).map(|_| (next() % 40) as i64).collect::<Vec<_>>(),
            )
            .with_timezone("UTC");
            let m: DictionaryArray<Int32Type> =
                (0..n).map(|_| methods[(next() % 4) as usize]).collect();
            let cols: Vec<ArrayRef> = vec![Arc::new(ip), Arc::new(ts), Arc::new(m)];
            batches.push(RecordBatch::try_new(schema.clone(), cols).unwrap());
        }
        // The reference: everything concatenated, then reordered by a stable sort on the
        // keys (addresses byte-wise, missing ones last), so tied rows keep their order.
        let all = concat_batches(&schema, &batches).unwrap();
        let ip = all
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let ts = all
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        let mut idx: Vec<u32> = (0..all.num_rows() as u32).collect();
        idx.sort_by_key(|&r| {
            let r = r as usize;
            (
                ip.is_null(r),
                ip.is_valid(r).then(|| ip.value(r)),
                ts.value(r),
            )
        });
        let want = take_record_batch(&all, &arrow::array::UInt32Array::from(idx)).unwrap();
        let w = want
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(
            (1..want.num_rows())
                .any(|r| w.is_valid(r) && w.is_valid(r - 1) && w.value(r) == w.value(r - 1)),
            "the data has ties"
        );
        // Written the way the store writes sorted rows, in row groups smaller than the
        // data, and read back.
        let order = sorted_order(&schema, &batches).unwrap().unwrap();
        let file = tempfile::tempfile().unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        let w = ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
        let file = write_gathered(w, &schema, &batches, &order).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(
            reader.metadata().num_row_groups(),
            all.num_rows().div_ceil(100)
        );
        let read: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let got = concat_batches(&schema, &read).unwrap();
        assert_eq!(got.num_rows(), all.num_rows());
        for c in 0..schema.fields().len() {
            let (g, w) = (got.column(c), want.column(c));
            let g = cast(g, &DataType::Utf8).unwrap();
            let w = cast(w, &DataType::Utf8).unwrap();
            assert_eq!(&g, &w, "column {}", schema.field(c).name());
        }
        // Nothing to sort by: no order.
        let other = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let n = RecordBatch::try_new(
            other.clone(),
            vec![Arc::new(arrow::array::Int64Array::from(vec![2, 1]))],
        )
        .unwrap();
        assert!(sorted_order(&other, &[n]).unwrap().is_none());
    }

    #[test]
    fn batches_split_into_files_in_order_without_exceeding_the_cap() {
        use arrow::array::Int64Array;
        use arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let mk = |from: i64, len: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(from..from + len))],
            )
            .unwrap()
        };
        // 7 + 0 + 5 + 9 + 3 rows, numbered 0..24 in order.
        let batches = [mk(0, 7), mk(7, 0), mk(7, 5), mk(12, 9), mk(21, 3)];
        for cap in [1, 4, 5, 7, 12, 24, 100] {
            let files = split_into_files(&batches, cap);
            let sizes: Vec<usize> = files
                .iter()
                .map(|f| f.iter().map(|b| b.num_rows()).sum())
                .collect();
            assert!(
                sizes.iter().all(|&n| (1..=cap).contains(&n)),
                "cap {cap}: {sizes:?}"
            );
            assert!(
                sizes[..sizes.len() - 1].iter().all(|&n| n == cap),
                "cap {cap}"
            );
            let mut seen = Vec::new();
            for f in &files {
                let refs: Vec<&RecordBatch> = f.iter().collect();
                let all = concat_batches(&schema, refs).unwrap();
                let col = all.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                seen.extend(col.values().iter().copied());
            }
            assert_eq!(seen, (0..24).collect::<Vec<i64>>(), "cap {cap}");
        }
        assert!(split_into_files(&[mk(0, 0)], 10).is_empty());
    }

    /// `n` alert-like rows (a timestamp and a number) at the start of `hour`.
    fn rows_at(hour: i64, n: i64) -> RecordBatch {
        use arrow::array::Int64Array;
        use arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                TIMESTAMP_COLUMN,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("n", DataType::Int64, false),
        ]));
        let ts = TimestampMicrosecondArray::from_iter_values((0..n).map(|i| hour * HOUR_US + i))
            .with_timezone("UTC");
        RecordBatch::try_new(
            schema,
            vec![Arc::new(ts), Arc::new(Int64Array::from_iter_values(0..n))],
        )
        .unwrap()
    }

    /// One small file of `hour` in the alerts table.
    fn commit_hour(store: &mut Store, hour: i64) {
        store.append(Table::Alerts, rows_at(hour, 3)).unwrap();
        store.flush().unwrap();
    }

    /// A new store with `cfg`, and the time maintenance runs at in the tests that set
    /// it: 2025-06-02 22:30 UTC, in seconds.
    fn store_at_late_evening(cfg: &StoreConfig) -> (tempfile::TempDir, Store, i64) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), cfg.clone()).unwrap();
        let now = days_from_civil(2025, 6, 2) * 86_400 + 22 * 3600 + 30 * 60;
        (tmp, store, now)
    }

    fn parquet_in(dir: &Path) -> usize {
        match files(dir) {
            Ok(f) => f.iter().filter(|(n, _)| n.ends_with(".parquet")).count(),
            Err(_) => 0,
        }
    }

    /// A partition file a writer is still writing, as another process's would look.
    fn in_flight_file(dir: &Path) -> PathBuf {
        let hdir = partition_dir(dir, Table::Events, 20_241 * 24 + 8);
        fs::create_dir_all(&hdir).unwrap();
        let tmp = hdir.join(".part-other-000001.parquet.tmp");
        fs::write(&tmp, b"PAR1 half written").unwrap();
        tmp
    }

    #[test]
    fn a_second_writer_on_one_directory_is_refused_until_the_first_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let first = Store::open(tmp.path(), StoreConfig::default()).unwrap();
        let in_flight = in_flight_file(tmp.path());
        let e = Store::open(tmp.path(), StoreConfig::default())
            .expect_err("a second writer opened the directory")
            .to_string();
        assert!(
            e.contains(&tmp.path().display().to_string())
                && e.contains("another gatewatch process is writing"),
            "{e}"
        );
        assert!(
            in_flight.exists(),
            "the refused writer removed the first one's file in flight"
        );
        drop(first);
        let _again = Store::open(tmp.path(), StoreConfig::default()).unwrap();
    }

    #[test]
    fn a_writer_in_another_process_blocks_open_and_maintenance() {
        let tmp = tempfile::tempdir().unwrap();
        drop(Store::open(tmp.path(), StoreConfig::default()).unwrap());
        // Another process's lock: flock locks belong to the open file, so a second open of
        // the lock file conflicts just as another process would.
        let other = File::open(tmp.path().join("writer.lock")).unwrap();
        other.try_lock().unwrap();
        let in_flight = in_flight_file(tmp.path());
        let e = Store::open(tmp.path(), StoreConfig::default()).unwrap_err();
        assert!(e.to_string().contains("another gatewatch process"), "{e}");
        let e = maintain(tmp.path(), &StoreConfig::default()).unwrap_err();
        assert!(e.to_string().contains("another gatewatch process"), "{e}");
        assert!(in_flight.exists());
        drop(other);
        maintain(tmp.path(), &StoreConfig::default()).unwrap();
        let _store = Store::open(tmp.path(), StoreConfig::default()).unwrap();
        assert!(!in_flight.exists(), "a writer that opens alone cleans up");
    }

    #[test]
    fn the_maintenance_thread_keeps_the_directory_locked_and_readers_need_no_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            maintenance_interval_secs: 3600,
            ..StoreConfig::default()
        };
        let mut store = Store::open(tmp.path(), cfg.clone()).unwrap();
        commit_hour(&mut store, 20_241 * 24 + 8);
        // Maintenance in the writer's own process runs under the writer's lock.
        store.maintain().unwrap();
        maintain(tmp.path(), &cfg).unwrap();
        // So does a reader, anywhere.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let session = rt
            .block_on(crate::HuntSession::open(tmp.path(), Default::default()))
            .unwrap();
        let out = rt
            .block_on(session.query("SELECT count(*) FROM alerts"))
            .unwrap();
        assert_eq!(out.rows, 1);
        let m = store.spawn_maintenance().unwrap();
        drop(store);
        assert!(
            Store::open(tmp.path(), cfg.clone()).is_err(),
            "the maintenance thread outlives the writer and still works on the directory"
        );
        m.stop();
        let _store = Store::open(tmp.path(), cfg).unwrap();
    }

    #[test]
    fn a_partition_dated_tomorrow_does_not_move_retention() {
        let cfg = StoreConfig {
            retention_days: 1,
            ..StoreConfig::default()
        };
        // 2025-06-02 22:30 UTC; a gateway whose clock runs 2 h 40 min ahead already writes
        // 2025-06-03 01:00.
        let (tmp, mut store, now) = store_at_late_evening(&cfg);
        let today = now.div_euclid(86_400);
        for hour in [(today - 1) * 24 + 10, today * 24 + 22, (today + 1) * 24 + 1] {
            commit_hour(&mut store, hour);
        }
        let report = maintain_at(tmp.path(), &cfg, now, &|| false).unwrap();
        let adir = tmp.path().join("alerts");
        assert!(
            !adir.join("date=2025-06-01").exists(),
            "yesterday is past retention"
        );
        assert!(adir.join("date=2025-06-02").exists(), "today was deleted");
        assert!(adir.join("date=2025-06-03").exists());
        assert_eq!(report.partitions_deleted, 1);
    }

    #[test]
    fn a_partition_dated_later_today_does_not_close_the_hour_being_written() {
        let cfg = StoreConfig {
            compact_min_files: 2,
            ..StoreConfig::default()
        };
        let (tmp, mut store, now) = store_at_late_evening(&cfg);
        let current = now.div_euclid(3600);
        // A finished hour, the hour being written, and one three hours ahead (tomorrow).
        for hour in [current - 1, current, current + 3] {
            for _ in 0..3 {
                commit_hour(&mut store, hour);
            }
        }
        let report = maintain_at(tmp.path(), &cfg, now, &|| false).unwrap();
        let hdir = |h| partition_dir(tmp.path(), Table::Alerts, h);
        assert_eq!(
            parquet_in(&hdir(current - 1)),
            1,
            "the finished hour is merged"
        );
        assert_eq!(
            parquet_in(&hdir(current)),
            3,
            "the hour being written was merged"
        );
        assert_eq!(
            parquet_in(&hdir(current + 3)),
            3,
            "an hour yet to come was merged"
        );
        assert_eq!(report.files_merged, 3);
    }

    #[test]
    fn a_round_asked_to_stop_ends_between_partitions() {
        let cfg = StoreConfig {
            compact_min_files: 2,
            ..StoreConfig::default()
        };
        let (tmp, mut store, now) = store_at_late_evening(&cfg);
        let current = now.div_euclid(3600);
        // Ten finished hours of small files to merge, as after downtime.
        let finished: Vec<i64> = (1..=10).map(|k| current - k).collect();
        for &hour in &finished {
            for _ in 0..3 {
                commit_hour(&mut store, hour);
            }
        }
        // The hour being written, which stays open.
        commit_hour(&mut store, current);
        // Asked to stop as the third partition comes up.
        let asked = std::cell::Cell::new(0);
        let stopping = || {
            asked.set(asked.get() + 1);
            asked.get() > 4
        };
        let report = maintain_at(tmp.path(), &cfg, now, &stopping).unwrap();
        let hdir = |h| partition_dir(tmp.path(), Table::Alerts, h);
        let merged = finished
            .iter()
            .filter(|&&h| parquet_in(&hdir(h)) == 1)
            .count();
        let untouched = finished
            .iter()
            .filter(|&&h| parquet_in(&hdir(h)) == 3)
            .count();
        // Per partition it is asked twice (before it, before its one merge).
        assert_eq!((merged, untouched), (2, 8), "{report:?}");
        assert_eq!(report.files_merged, 6);
        assert_eq!(asked.get(), 5);

        // The next round does the rest.
        let report = maintain_at(tmp.path(), &cfg, now, &|| false).unwrap();
        assert_eq!(report.files_merged, 24);
        assert!(finished.iter().all(|&h| parquet_in(&hdir(h)) == 1));
    }

    #[test]
    fn a_merge_waiting_on_a_listing_is_undone_when_asked_to_stop() {
        let cfg = StoreConfig {
            compact_min_files: 2,
            ..StoreConfig::default()
        };
        let (tmp, mut store, now) = store_at_late_evening(&cfg);
        let current = now.div_euclid(3600);
        for _ in 0..3 {
            commit_hour(&mut store, current - 1);
        }
        commit_hour(&mut store, current);
        // A reader stuck in its listing, holding the listing lock.
        let reader = ListingLock::shared(tmp.path()).expect("the listing lock");
        let stop = Arc::new(AtomicBool::new(false));
        let round = {
            let (dir, cfg, stop) = (tmp.path().to_path_buf(), cfg.clone(), stop.clone());
            std::thread::spawn(move || {
                maintain_at(&dir, &cfg, now, &|| stop.load(Ordering::SeqCst)).unwrap()
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !round.is_finished(),
            "a merge swapped files during a listing"
        );
        stop.store(true, Ordering::SeqCst);
        let report = round.join().unwrap();
        assert_eq!(report, MaintenanceReport::default());
        // Undone whole: the inputs stay, and no output, journal or temporary file.
        let hdir = partition_dir(tmp.path(), Table::Alerts, current - 1);
        let names: Vec<String> = files(&hdir).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("part-") && merged_file_id(n).is_none())
        );
        // Once the listing is over the next round merges them.
        drop(reader);
        let report = maintain_at(tmp.path(), &cfg, now, &|| false).unwrap();
        assert_eq!((report.files_merged, report.files_written), (3, 1));
        assert_eq!(parquet_in(&hdir), 1);
    }

    #[test]
    fn bad_settings_are_named() {
        let cfg = StoreConfig {
            zstd_level: 0,
            ..StoreConfig::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("store.zstd_level"), "{e}");
        assert!(StoreConfig::default().validate().is_ok());
        let cfg = StoreConfig {
            extra_event_features: vec!["f_path_len".into(), "url_path".into()],
            ..StoreConfig::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("store.extra_event_features") && e.contains("`url_path`"),
            "{e}"
        );
        let cfg: StoreConfig =
            toml::from_str("event_features = \"all\"\nextra_event_features = [\"f_x\"]").unwrap();
        assert_eq!(cfg.event_features, EventFeatures::All);
        assert!(toml::from_str::<StoreConfig>("event_features = \"some\"").is_err());
    }
}
