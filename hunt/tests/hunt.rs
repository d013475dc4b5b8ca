//! The store, the SQL session and the hunt library, end to end: stores written from the
//! labelled simulator, SQL files with expected results counted from the generator, hunts
//! checked against the simulator's ground truth, and the read-only guarantees.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use gatewatch_hunt::store::{Table, maintain};
use gatewatch_hunt::testdata::{Truth, write_simulated};
use gatewatch_hunt::{Error, HuntSession, QueryLimits, Store, StoreConfig};
use gatewatch_simulator::SimConfig;

const HOUR_US: i64 = 3_600_000_000;
/// 2025-06-02T08:00:00Z
const T0: i64 = 1_748_851_200_000_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A small events-like batch: `n` rows at `t0 + i * step_us`, client `ip-<i % 7>`.
fn batch(n: usize, t0: i64, step_us: i64) -> RecordBatch {
    let ts: Vec<i64> = (0..n as i64).map(|i| t0 + i * step_us).collect();
    let ips: Vec<String> = (0..n).map(|i| format!("10.0.0.{}", i % 7)).collect();
    let paths: Vec<String> = (0..n).map(|i| format!("/api/v1/orders/{i}")).collect();
    let schema = Schema::new(vec![
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("source_ip", DataType::Utf8, true),
        Field::new("url_path", DataType::Utf8, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")) as ArrayRef,
            Arc::new(StringArray::from(ips)),
            Arc::new(StringArray::from(paths)),
        ],
    )
    .unwrap()
}

/// Appends `b` to the events table and flushes it: one commit, one file per hour.
fn commit(store: &mut Store, b: RecordBatch) {
    store.append(Table::Events, b).unwrap();
    store.flush().unwrap();
}

/// `b` with one more column at the end.
fn with_column(b: &RecordBatch, field: Field, values: ArrayRef) -> RecordBatch {
    let mut fields: Vec<Field> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(field);
    let mut cols = b.columns().to_vec();
    cols.push(values);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// `batch` plus a Float32 feature column, as the events table grows.
fn batch_with_feature(n: usize, t0: i64) -> RecordBatch {
    with_column(
        &batch(n, t0, 1_000_000),
        Field::new("f_test", DataType::Float32, true),
        Arc::new(Float32Array::from(
            (0..n).map(|i| i as f32).collect::<Vec<_>>(),
        )),
    )
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn hidden_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap().to_string_lossy().starts_with('.') {
                out.push(p);
            }
        }
    }
    out
}

/// Renders every row as its values joined by single spaces (NULL for nulls).
fn rows(out: &gatewatch_hunt::QueryOutput) -> Vec<String> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut lines = Vec::new();
    for b in &out.batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            lines.push(
                fmts.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
    lines
}

fn count(session: &HuntSession, rt: &tokio::runtime::Runtime, sql: &str) -> i64 {
    let out = rt
        .block_on(session.query(sql))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows(&out)[0].parse().unwrap()
}

// ------------------------------------------------------------------------------------
// Store

#[test]
fn partitions_by_hour_and_reports_durability() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), StoreConfig::default()).unwrap();
    // 100 minutes at one row a minute, starting 08:30: 30 rows in hour 08, 60 in 09 and
    // 10 in 10.
    let seq = store
        .append(Table::Events, batch(100, T0 + HOUR_US / 2, 60_000_000))
        .unwrap();
    assert_eq!(seq, 1);
    assert_eq!(store.durable_seq(), 0, "nothing written yet");
    assert!(parquet_files(tmp.path()).is_empty());
    assert_eq!(store.flush().unwrap(), 1);
    assert_eq!(store.durable_seq(), 1);
    let files = parquet_files(tmp.path());
    let rel: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(tmp.path())
                .unwrap()
                .parent()
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        rel,
        [
            "events/date=2025-06-02/hour=08",
            "events/date=2025-06-02/hour=09",
            "events/date=2025-06-02/hour=10"
        ]
    );
    assert!(
        hidden_files(tmp.path()).is_empty(),
        "no temporary file left"
    );
    let rt = rt();
    let s = rt
        .block_on(HuntSession::open(tmp.path(), QueryLimits::default()))
        .unwrap();
    assert_eq!(count(&s, &rt, "SELECT count(*) FROM events"), 100);
    assert_eq!(
        count(&s, &rt, "SELECT count(*) FROM events WHERE hour = '08'"),
        30
    );
    assert_eq!(
        count(&s, &rt, "SELECT count(*) FROM events WHERE hour = '09'"),
        60
    );
    assert_eq!(
        count(
            &s,
            &rt,
            "SELECT count(*) FROM events WHERE date = '2025-06-02' AND hour = '10'"
        ),
        10
    );
    // Missing timestamp: an error naming the table, not a panic.
    let no_ts = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["a"])) as ArrayRef],
    )
    .unwrap();
    let e = store.append(Table::Alerts, no_ts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Schema {
                table: "alerts",
                ..
            }
        ),
        "{e}"
    );
    assert!(store.append(Table::Endpoints, batch(1, T0, 1)).is_err());
}

#[test]
fn files_are_bounded_and_watermark_follows_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_file_rows: 100,
        ..StoreConfig::default()
    };
    let mut store = Store::open(tmp.path(), cfg).unwrap();
    // 60 rows in hour 08 (buffered), then 150 rows in hour 09: the 09 buffer passes 100
    // rows and is written at once, but batch 1 still waits in the 08 buffer.
    store
        .append(Table::Events, batch(60, T0, 1_000_000))
        .unwrap();
    store
        .append(Table::Events, batch(150, T0 + HOUR_US, 1_000_000))
        .unwrap();
    assert_eq!(
        parquet_files(tmp.path()).len(),
        2,
        "150 rows → files of 100 and 50"
    );
    assert_eq!(store.durable_seq(), 0);
    store
        .append(Table::Events, batch(40, T0 + 100_000_000, 1_000_000))
        .unwrap();
    // Hour 08 now holds 100 rows: written; everything is durable.
    assert_eq!(store.durable_seq(), 3);
    assert_eq!(store.buffered_rows(), 0);
    for f in parquet_files(tmp.path()) {
        let r = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&f).unwrap())
            .unwrap();
        let rows = parquet::file::reader::FileReader::metadata(&r)
            .file_metadata()
            .num_rows();
        assert!(rows <= 100, "{} has {rows} rows", f.display());
    }
    assert_eq!(store.stats().rows_written, 250);
}

#[test]
fn memory_bound_writes_early() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_buffered_bytes: 1 << 20,
        ..StoreConfig::default()
    };
    let mut store = Store::open(tmp.path(), cfg).unwrap();
    for i in 0..40 {
        store
            .append(Table::Events, batch(2000, T0 + i * 2_000_000_000, 1_000))
            .unwrap();
    }
    assert!(
        store.stats().files_written > 0,
        "the byte bound forced writes before flush"
    );
    store.flush().unwrap();
    assert_eq!(store.stats().rows_written, 80_000);
}

#[test]
fn crash_leftovers_never_break_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), StoreConfig::default()).unwrap();
    commit(&mut store, batch(10, T0, 1_000_000));
    drop(store);
    let hour = tmp.path().join("events/date=2025-06-02/hour=08");
    // A torn temporary file, as a crash mid-write leaves it.
    std::fs::write(hour.join(".part-dead-000001.parquet.tmp"), b"PAR1 torn").unwrap();
    let rt = rt();
    let s = rt
        .block_on(HuntSession::open(tmp.path(), QueryLimits::default()))
        .unwrap();
    assert_eq!(
        count(&s, &rt, "SELECT count(*) FROM events"),
        10,
        "temporary files are invisible"
    );
    // Reopening the writer cleans up.
    let _store = Store::open(tmp.path(), StoreConfig::default()).unwrap();
    assert!(hidden_files(tmp.path()).is_empty());
}

#[test]
fn compaction_merges_small_files_and_a_crashed_merge_is_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        compact_min_files: 3,
        ..StoreConfig::default()
    };
    let mut store = Store::open(tmp.path(), cfg.clone()).unwrap();
    for i in 0..6 {
        commit(&mut store, batch(10, T0 + i * 60_000_000, 1_000_000));
    }
    // The newest hour stays open and is not merged.
    store
        .append(Table::Events, batch(5, T0 + HOUR_US, 1_000_000))
        .unwrap();
    commit(&mut store, batch(5, T0 + HOUR_US, 1_000_000));
    commit(&mut store, batch(5, T0 + HOUR_US, 1_000_000));
    assert_eq!(parquet_files(tmp.path()).len(), 8);
    let report = maintain(tmp.path(), &cfg).unwrap();
    assert_eq!(report.files_merged, 6);
    assert_eq!(report.files_written, 1);
    assert_eq!(parquet_files(tmp.path()).len(), 3);
    let rt = rt();
    let s = rt
        .block_on(HuntSession::open(tmp.path(), QueryLimits::default()))
        .unwrap();
    assert_eq!(count(&s, &rt, "SELECT count(*) FROM events"), 75);

    // A merge that crashed after its output was renamed into place but before its inputs
    // were deleted: the journal lets the next round delete them, so no row is counted
    // twice.
    let hour = tmp.path().join("events/date=2025-06-02/hour=08");
    let merged = parquet_files(&hour).pop().unwrap();
    let copy = hour.join("part-input-copy.parquet");
    std::fs::copy(&merged, &copy).unwrap();
    let out = hour.join("part-mfake.parquet");
    std::fs::copy(&merged, &out).unwrap();
    std::fs::write(
        hour.join(".compact-fake.journal"),
        "part-mfake.parquet\npart-input-copy.parquet\n",
    )
    .unwrap();
    std::fs::remove_file(&merged).unwrap();
    // A query meanwhile (or during a merge between its rename and the inputs' deletion)
    // leaves the inputs out while the journal says the output holds their rows.
    let s = rt
        .block_on(HuntSession::open(tmp.path(), QueryLimits::default()))
        .unwrap();
    assert_eq!(
        count(&s, &rt, "SELECT count(*) FROM events"),
        75,
        "a merge's inputs are not counted beside its output"
    );
    maintain(tmp.path(), &cfg).unwrap();
    assert!(!copy.exists() && out.exists());
    assert!(hidden_files(tmp.path()).is_empty());
    let s = rt
        .block_on(HuntSession::open(tmp.path(), QueryLimits::default()))
        .unwrap();
    assert_eq!(count(&s, &rt, "SELECT count(*) FROM events"), 75);
}

#[test]
fn queries_while_maintenance_merges_count_every_row_once() {
    // Round after round, three small files land in a finished hour and maintenance merges
    // them, while a session counts the rows again and again: each query sees every row
    // once, never an error about a file the merge deleted, never a row twice. (Without
    // the merge-aware listing and the query's second try this fails within a few rounds,
    // with a missing file or with rows counted twice.)
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        compact_min_files: 3,
        ..StoreConfig::default()
    };
    let mut store = Store::open(tmp.path(), cfg.clone()).unwrap();
    // An hour later than the merged ones stays open, so the earlier hour counts as
    // finished.
    commit(&mut store, batch(1, T0 + 5 * HOUR_US, 1_000_000));
    // Rows whose commit has ended, and rows whose commit has begun.
    let committed = Arc::new(AtomicI64::new(1));
    let begun = Arc::new(AtomicI64::new(1));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let dir = tmp.path().to_path_buf();
        let (committed, begun, done) = (committed.clone(), begun.clone(), done.clone());
        std::thread::spawn(move || {
            let rt = rt();
            let s = rt
                .block_on(HuntSession::open(&dir, QueryLimits::default()))
                .unwrap();
            let mut queries = 0;
            while !done.load(Ordering::SeqCst) || queries == 0 {
                // The rows stored before the query started, and those whose storing had
                // begun when it ended: the answer lies between.
                let before = committed.load(Ordering::SeqCst);
                let n = match rt.block_on(s.query("SELECT count(*) FROM events")) {
                    Ok(out) => out.batches[0]
                        .column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .unwrap()
                        .value(0),
                    Err(e) => panic!("query {queries} failed during maintenance: {e}"),
                };
                let after = begun.load(Ordering::SeqCst);
                assert!(
                    (before..=after).contains(&n),
                    "query {queries} counted {n} rows, stored {before}..={after}"
                );
                queries += 1;
            }
            queries
        })
    };
    let mut merges = 0;
    for round in 0..40 {
        for f in 0..3 {
            let t = T0 + (round * 3 + f) * 1_000_000;
            begun.fetch_add(20, Ordering::SeqCst);
            commit(&mut store, batch(20, t, 1_000));
            committed.fetch_add(20, Ordering::SeqCst);
        }
        merges += maintain(tmp.path(), &cfg).unwrap().files_written;
        // Merges far more often than a store's maintenance ever does, with time for a
        // query that met one to run again.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    done.store(true, Ordering::SeqCst);
    let queries = reader.join().unwrap();
    assert!(
        merges >= 40,
        "only {merges} merged files written in 40 rounds"
    );
    assert!(queries >= 5, "only {queries} queries ran during the merges");
}

/// A Parquet file's footer, with its page index where it has one.
fn footer(path: &Path) -> parquet::file::metadata::ParquetMetaData {
    let file = std::fs::File::open(path).unwrap();
    parquet::file::metadata::ParquetMetaDataReader::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional)
        .parse_and_finish(&file)
        .unwrap()
}

/// The compression codecs of a file's column chunks.
fn codecs(path: &Path) -> BTreeSet<String> {
    footer(path)
        .row_groups()
        .iter()
        .flat_map(|rg| rg.columns().iter())
        .map(|c| match c.compression() {
            parquet::basic::Compression::ZSTD(_) => "ZSTD".to_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The encodings of one column's chunks in a file.
fn column_encodings(path: &Path, column: &str) -> BTreeSet<String> {
    footer(path)
        .row_groups()
        .iter()
        .flat_map(|rg| rg.columns().iter())
        .filter(|c| c.column_path().string() == column)
        .flat_map(|c| c.encodings().map(|e| format!("{e:?}")).collect::<Vec<_>>())
        .collect()
}

/// Event times in a final-form file: delta-packed, never through a dictionary (they
/// mostly differ from row to row, and rise within each client's sorted rows).
fn assert_times_delta_packed(path: &Path) {
    let enc = column_encodings(path, "timestamp");
    assert!(enc.contains("DELTA_BINARY_PACKED"), "{enc:?}");
    assert!(!enc.iter().any(|e| e.contains("DICTIONARY")), "{enc:?}");
}

/// `(source_ip, timestamp)` of every row of one Parquet file, in file order.
fn file_rows(path: &Path) -> Vec<(String, i64)> {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let ip = b["source_ip"]
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let ts = b["timestamp"]
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        out.extend((0..b.num_rows()).map(|i| (ip.value(i).to_owned(), ts.value(i))));
    }
    out
}

fn is_sorted(rows: &[(String, i64)]) -> bool {
    rows.windows(2).all(|w| w[0] <= w[1])
}

#[test]
fn small_files_keep_arrival_order_in_lz4_and_merged_or_full_files_are_sorted_in_zstd() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        compact_min_files: 3,
        compact_small_file_rows: 40,
        ..StoreConfig::default()
    };
    let mut store = Store::open(tmp.path(), cfg.clone()).unwrap();
    // Three commits of 10 rows (clients cycle 0..7, so arrival order is not sorted).
    for i in 0..3 {
        commit(&mut store, batch(10, T0 + i * 60_000_000, 1_000_000));
    }
    // One full-size file in another hour.
    commit(&mut store, batch(50, T0 + HOUR_US, 1_000_000));
    // And the open hour after it, so both are finished.
    commit(&mut store, batch(1, T0 + 2 * HOUR_US, 1_000_000));
    let hour8 = tmp.path().join("events/date=2025-06-02/hour=08");
    let small = parquet_files(&hour8);
    assert_eq!(small.len(), 3);
    for f in &small {
        let rows = file_rows(f);
        assert_eq!(rows.len(), 10);
        assert!(!is_sorted(&rows), "{} was sorted: {rows:?}", f.display());
        let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "arrival order kept");
        assert_eq!(codecs(f), BTreeSet::from(["LZ4_RAW".to_owned()]));
    }
    let full = parquet_files(&tmp.path().join("events/date=2025-06-02/hour=09"));
    assert_eq!(full.len(), 1);
    let rows = file_rows(&full[0]);
    assert_eq!(rows.len(), 50);
    assert!(is_sorted(&rows), "full-size file not sorted: {rows:?}");
    assert_eq!(codecs(&full[0]), BTreeSet::from(["ZSTD".to_owned()]));
    assert_times_delta_packed(&full[0]);

    let report = maintain(tmp.path(), &cfg).unwrap();
    assert_eq!(report.files_merged, 3);
    let merged = parquet_files(&hour8);
    assert_eq!(merged.len(), 1);
    let rows = file_rows(&merged[0]);
    assert_eq!(rows.len(), 30);
    assert!(is_sorted(&rows), "merged file not sorted: {rows:?}");
    assert_eq!(codecs(&merged[0]), BTreeSet::from(["ZSTD".to_owned()]));
    assert_times_delta_packed(&merged[0]);
}

#[test]
fn flushes_of_a_quarter_row_group_are_final_and_merged_by_copying_row_groups() {
    let tmp = tempfile::tempdir().unwrap();
    // Row groups of 40 rows: flushes of 10 rows or more are written sorted in zstd and
    // merged by stitching; smaller ones in LZ4, merged by re-encoding.
    let cfg = StoreConfig {
        row_group_rows: 40,
        compact_min_files: 3,
        compact_small_file_rows: 1000,
        ..StoreConfig::default()
    };
    assert_eq!(cfg.final_encoding_min_rows(), 10);
    let mut store = Store::open(tmp.path(), cfg.clone()).unwrap();
    let mut want: Vec<(String, i64)> = Vec::new();
    for i in 0..3 {
        let b = batch(20, T0 + i * 60_000_000, 1_000_000);
        commit(&mut store, b);
    }
    // Two small flushes, too few to merge on their own.
    commit(&mut store, batch(4, T0 + 10 * 60_000_000, 1_000_000));
    commit(&mut store, batch(4, T0 + 20 * 60_000_000, 1_000_000));
    commit(&mut store, batch(1, T0 + HOUR_US, 1_000_000));
    let hour8 = tmp.path().join("events/date=2025-06-02/hour=08");
    let before = parquet_files(&hour8);
    assert_eq!(before.len(), 5);
    let (mut finals, mut fast) = (0, 0);
    for f in &before {
        let rows = file_rows(f);
        if rows.len() == 20 {
            assert!(is_sorted(&rows), "a final flush is sorted: {rows:?}");
            assert_eq!(codecs(f), BTreeSet::from(["ZSTD".to_owned()]));
            finals += 1;
        } else {
            assert_eq!(codecs(f), BTreeSet::from(["LZ4_RAW".to_owned()]));
            fast += 1;
        }
        want.extend(rows);
    }
    assert_eq!((finals, fast), (3, 2));

    let report = maintain(tmp.path(), &cfg).unwrap();
    assert_eq!((report.files_merged, report.files_written), (3, 1));
    let after = parquet_files(&hour8);
    assert_eq!(after.len(), 3, "the stitched file and the two LZ4 files");
    let stitched: Vec<&PathBuf> = after
        .iter()
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-m")
        })
        .collect();
    assert_eq!(stitched.len(), 1);
    let meta = footer(stitched[0]);
    let file = std::fs::File::open(stitched[0]).unwrap();
    assert_eq!(meta.num_row_groups(), 3, "one row group per input, copied");
    assert!(meta.offset_index().is_some(), "page index kept");
    let column = |name: &str| {
        meta.file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.name() == name)
            .unwrap()
    };
    // Each row group is one input: sorted within itself, bloom filter of source_ip kept.
    let ip_col = column("source_ip");
    // Free text is written without statistics (they would let no filter skip anything);
    // the sort key keeps them.
    let path_col = column("url_path");
    for rg in meta.row_groups() {
        assert_eq!(rg.num_rows(), 20);
        let bloom =
            parquet::bloom_filter::Sbbf::read_from_column_chunk(rg.column(ip_col), &file).unwrap();
        assert!(bloom.is_some_and(|b| b.check(&"10.0.0.3")));
        assert!(rg.column(ip_col).statistics().is_some());
        assert!(rg.column(path_col).statistics().is_none());
    }
    let rows = file_rows(stitched[0]);
    for group in rows.chunks(20) {
        assert!(is_sorted(group), "{group:?}");
    }
    assert_eq!(codecs(stitched[0]), BTreeSet::from(["ZSTD".to_owned()]));
    let mut got: Vec<(String, i64)> = after.iter().flat_map(|f| file_rows(f)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every row once");

    // The stitched file reads back through SQL with its Arrow types.
    let rt = rt();
    let s = rt
        .block_on(HuntSession::open(tmp.path(), QueryLimits::default()))
        .unwrap();
    assert_eq!(count(&s, &rt, "SELECT count(*) FROM events"), 69);
    assert_eq!(
        count(
            &s,
            &rt,
            "SELECT count(*) FROM events WHERE source_ip = '10.0.0.3' \
             AND timestamp < TIMESTAMP '2025-06-02 09:00:00+00:00'"
        ),
        want.iter().filter(|(ip, _)| ip == "10.0.0.3").count() as i64
    );
}

#[test]
fn small_files_without_the_final_form_mark_are_re_encoded_whatever_their_codec() {
    // Small zstd files in arrival order, as an older build wrote every commit: nothing in
    // them says they were sorted, so a merge sorts and re-encodes them.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        compact_min_files: 3,
        ..StoreConfig::default()
    };
    let hour8 = tmp.path().join("events/date=2025-06-02/hour=08");
    std::fs::create_dir_all(&hour8).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    for i in 0..3 {
        let b = batch(10, T0 + i * 60_000_000, 1_000_000);
        let f = std::fs::File::create(hour8.join(format!("part-old-{i}.parquet"))).unwrap();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(f, b.schema(), Some(props.clone())).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
    }
    let mut store = Store::open(tmp.path(), cfg.clone()).unwrap();
    commit(&mut store, batch(1, T0 + HOUR_US, 1_000_000));
    let report = maintain(tmp.path(), &cfg).unwrap();
    assert_eq!((report.files_merged, report.files_written), (3, 1));
    let merged = parquet_files(&hour8);
    assert_eq!(merged.len(), 1);
    let rows = file_rows(&merged[0]);
    assert_eq!(rows.len(), 30);
    assert!(is_sorted(&rows), "re-encoded and sorted: {rows:?}");
    // The merged file is in its final form and says so.
    let meta = footer(&merged[0]);
    let kv = meta.file_metadata().key_value_metadata().unwrap();
    assert!(
        kv.iter()
            .any(|e| e.key == "gatewatch.form" && e.value.as_deref() == Some("final")),
        "{kv:?}"
    );
}

#[test]
fn retention_drops_old_days() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        retention_days: 2,
        ..StoreConfig::default()
    };
    let mut store = Store::open(tmp.path(), cfg.clone()).unwrap();
    for day in 0..4 {
        store
            .append(Table::Events, batch(3, T0 + day * 24 * HOUR_US, 1_000_000))
            .unwrap();
    }
    store.flush().unwrap();
    let report = maintain(tmp.path(), &cfg).unwrap();
    assert_eq!(report.partitions_deleted, 2);
    let mut days: Vec<String> = std::fs::read_dir(tmp.path().join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    days.sort();
    assert_eq!(days, ["date=2025-06-04", "date=2025-06-05"]);
}

/// Microseconds since the epoch now, by the wall clock.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// 2099-01-01T00:00:00Z: an event from a client with a wrong clock.
const FAR_FUTURE_US: i64 = 4_070_908_800_000_000;

#[test]
fn retention_counts_from_today_at_the_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        retention_days: 7,
        ..StoreConfig::default()
    };
    let now = now_us();
    let mut store = Store::open(tmp.path(), cfg.clone()).unwrap();
    for t in [now - 30 * 24 * HOUR_US, now - HOUR_US, now, FAR_FUTURE_US] {
        store.append(Table::Events, batch(3, t, 1)).unwrap();
    }
    store.flush().unwrap();
    let report = maintain(tmp.path(), &cfg).unwrap();
    assert_eq!(report.partitions_deleted, 1, "only the month-old day goes");
    let rt = rt();
    let s = rt
        .block_on(HuntSession::open(tmp.path(), QueryLimits::default()))
        .unwrap();
    assert_eq!(count(&s, &rt, "SELECT count(*) FROM events"), 9);
    assert_eq!(
        count(
            &s,
            &rt,
            "SELECT count(*) FROM events WHERE date = '2099-01-01'"
        ),
        3,
        "a partition dated after tomorrow is not deleted either"
    );
}

#[test]
fn a_far_future_hour_does_not_close_the_hour_being_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        compact_min_files: 2,
        ..StoreConfig::default()
    };
    let mut store = Store::open(tmp.path(), cfg.clone()).unwrap();
    // The current hour, written by small commits, and one stray event from 2099.
    let now = now_us();
    let hour_start = now - now.rem_euclid(HOUR_US);
    for i in 0..3 {
        commit(&mut store, batch(4, hour_start + i, 1));
    }
    commit(&mut store, batch(1, FAR_FUTURE_US, 1));
    assert_eq!(parquet_files(tmp.path()).len(), 4);
    let report = maintain(tmp.path(), &cfg).unwrap();
    assert_eq!(report.files_merged, 0, "the open hour was merged");
    assert_eq!(parquet_files(tmp.path()).len(), 4);
}

#[test]
fn background_maintenance_runs_and_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        maintenance_interval_secs: 1,
        compact_min_files: 2,
        ..StoreConfig::default()
    };
    let mut store = Store::open(tmp.path(), cfg).unwrap();
    for i in 0..3 {
        commit(&mut store, batch(4, T0 + i * 1_000_000, 1));
    }
    commit(&mut store, batch(4, T0 + 2 * HOUR_US, 1));
    let m = store.spawn_maintenance().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while m.rounds() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    m.stop();
    assert_eq!(
        parquet_files(tmp.path()).len(),
        2,
        "three files of hour 08 merged into one"
    );
}

#[test]
fn endpoints_snapshot_is_replaced_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), StoreConfig::default()).unwrap();
    let inv = |names: &[&str]| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "endpoint_template",
                DataType::Utf8,
                false,
            )])),
            vec![Arc::new(StringArray::from(names.to_vec())) as ArrayRef],
        )
        .unwrap()
    };
    store.replace_endpoints(&inv(&["/a", "/b", "/c"])).unwrap();
    store.replace_endpoints(&inv(&["/a", "/b"])).unwrap();
    let rt = rt();
    let s = rt
        .block_on(HuntSession::open(tmp.path(), QueryLimits::default()))
        .unwrap();
    assert_eq!(count(&s, &rt, "SELECT count(*) FROM endpoints"), 2);
}

#[test]
fn files_written_before_a_column_existed_read_it_as_null() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), StoreConfig::default()).unwrap();
    store
        .append(Table::Events, batch(30, T0, 1_000_000))
        .unwrap();
    // Same hour, new schema: a second file.
    commit(&mut store, batch_with_feature(20, T0 + 100_000_000));
    assert_eq!(parquet_files(tmp.path()).len(), 2);
    let rt = rt();
    let s = rt
        .block_on(HuntSession::open(tmp.path(), QueryLimits::default()))
        .unwrap();
    assert_eq!(count(&s, &rt, "SELECT count(*) FROM events"), 50);
    assert_eq!(count(&s, &rt, "SELECT count(f_test) FROM events"), 20);
    assert_eq!(
        count(&s, &rt, "SELECT count(*) FROM events WHERE f_test IS NULL"),
        30
    );
    assert_eq!(
        count(&s, &rt, "SELECT CAST(sum(f_test) AS BIGINT) FROM events"),
        (0..20).sum::<i64>()
    );
}

// ------------------------------------------------------------------------------------
// Limits

#[test]
fn limits_cut_rows_time_out_and_bound_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let limits = QueryLimits {
        max_rows: 10,
        timeout_secs: 2,
        memory_limit_mb: 16,
        ..QueryLimits::default()
    };
    let s = rt.block_on(HuntSession::open(tmp.path(), limits)).unwrap();
    let out = rt
        .block_on(s.query("SELECT * FROM generate_series(1, 1000)"))
        .unwrap();
    assert!(out.truncated);
    assert_eq!(out.rows, 10);
    assert_eq!(rows(&out).len(), 10);
    let out = rt
        .block_on(s.query("SELECT * FROM generate_series(1, 10)"))
        .unwrap();
    assert!(!out.truncated);
    assert_eq!(out.rows, 10);

    let t = std::time::Instant::now();
    let e = rt
        .block_on(s.query("SELECT count(*) FROM generate_series(1, 1000000000000) a"))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(2)), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));

    let e = rt
        .block_on(s.query("SELECT array_agg(value) FROM generate_series(1, 20000000)"))
        .unwrap_err();
    assert!(
        e.to_string().to_lowercase().contains("resources exhausted"),
        "{e}"
    );
    // The session keeps working after each failure.
    assert_eq!(count(&s, &rt, "SELECT count(*) FROM events"), 0);
}

#[test]
fn an_unknown_table_is_answered_with_the_tables_there_are() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = rt
        .block_on(HuntSession::open(tmp.path(), QueryLimits::default()))
        .unwrap();
    let e = rt
        .block_on(s.query("SELECT count(*) FROM event"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'gatewatch.public.event' not found"), "{e}");
    assert!(
        e.ends_with("the store's tables are events, alerts, incidents, endpoints"),
        "{e}"
    );
    // Other planning errors are left as they are.
    let e = rt
        .block_on(s.query("SELECT no_such_column FROM events"))
        .unwrap_err()
        .to_string();
    assert!(!e.contains("the store's tables"), "{e}");
}

#[test]
fn a_sort_bigger_than_the_memory_limit_fails_instead_of_spilling_to_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let limits = QueryLimits {
        max_rows: 10,
        memory_limit_mb: 16,
        ..QueryLimits::default()
    };
    let s = rt.block_on(HuntSession::open(tmp.path(), limits)).unwrap();
    // 80 MB of rows to sort, five times the pool: DataFusion would write them to
    // temporary files and merge them back if it could.
    let e = rt
        .block_on(s.query("SELECT value FROM generate_series(1, 10000000) ORDER BY value DESC"))
        .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(&e, Error::DataFusion(d) if matches!(d.find_root(), datafusion::error::DataFusionError::ResourcesExhausted(_))),
        "{text}"
    );
    assert!(text.contains("memory_limit_mb"), "{text}");
    assert_eq!(
        s.context().runtime_env().disk_manager.used_disk_space(),
        0,
        "{text}"
    );
    // No temporary files: a sort or aggregation that outgrows the pool fails, it is not
    // written out to the disk the engine and the store need.
    assert!(!s.context().runtime_env().disk_manager.tmp_files_enabled());
    // The session keeps working.
    assert_eq!(count(&s, &rt, "SELECT count(*) FROM events"), 0);
}

#[test]
fn wide_rows_are_cut_at_the_result_byte_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let limits = QueryLimits {
        max_result_mb: 1,
        ..QueryLimits::default()
    };
    let s = rt.block_on(HuntSession::open(tmp.path(), limits)).unwrap();
    // 20 MB of text in 2,000 rows: far under the row cap, far over the byte cap.
    let out = rt
        .block_on(s.query("SELECT repeat('x', 10000) AS s FROM generate_series(1, 2000)"))
        .unwrap();
    assert!(out.truncated);
    assert_eq!(out.cut_by, Some(gatewatch_hunt::ResultCap::Bytes));
    assert!(out.rows > 0 && out.rows < 2000, "{} rows", out.rows);
    let held: usize = out.batches.iter().map(|b| b.get_array_memory_size()).sum();
    assert_eq!(held, out.bytes);
    assert!(out.bytes <= 1 << 20, "{} bytes", out.bytes);
    let message = out.cut_message().unwrap();
    assert!(message.contains("max_result_mb"), "{message}");

    let out = rt
        .block_on(s.query("SELECT repeat('x', 100) AS s FROM generate_series(1, 2000)"))
        .unwrap();
    assert!(!out.truncated && out.cut_by.is_none() && out.cut_message().is_none());
    assert_eq!(out.rows, 2000);

    let bad = QueryLimits {
        max_result_mb: 0,
        ..QueryLimits::default()
    };
    let e = rt.block_on(HuntSession::open(tmp.path(), bad)).unwrap_err();
    assert!(e.to_string().contains("sql.max_result_mb"), "{e}");
}

// ------------------------------------------------------------------------------------
// SQL files and the hunt library over one stored simulator run

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    truth: Truth,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut store = Store::open(&path, StoreConfig::default()).unwrap();
        // Three hours of Monday-morning traffic with a high attack share, so every
        // scenario runs several campaigns.
        let cfg = SimConfig {
            seed: 7,
            attack_share: 0.25,
            ..SimConfig::default()
        };
        let truth = write_simulated(&mut store, cfg, 250_000, 8192).unwrap();
        Fixture {
            _dir: dir,
            path,
            truth,
        }
    })
}

fn iso(us: i64) -> String {
    let days = us.div_euclid(86_400_000_000);
    let secs = us.rem_euclid(86_400_000_000) / 1_000_000;
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn substitutions(t: &Truth) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("events".into(), t.events.to_string());
    m.insert("response_bytes".into(), t.response_bytes.to_string());
    m.insert("distinct_actors".into(), t.distinct_actors.to_string());
    for (label, n) in &t.label_counts {
        m.insert(format!("label:{label}"), n.to_string());
    }
    let per_hour: Vec<String> = t
        .events_per_hour
        .iter()
        .map(|(h, n)| format!("{} {n}", &iso(h * HOUR_US)[..13]))
        .collect();
    m.insert("per_hour".into(), per_hour.join("\n"));
    let (h, n) = t.events_per_hour.iter().next().unwrap();
    m.insert(
        "first_hour_start".into(),
        iso(h * HOUR_US).replace('T', " "),
    );
    m.insert(
        "first_hour_end".into(),
        iso((h + 1) * HOUR_US).replace('T', " "),
    );
    m.insert("first_hour_events".into(), n.to_string());
    m
}

fn substitute(text: &str, subs: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in subs {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    assert!(!out.contains("${"), "unknown substitution in:\n{out}");
    out
}

/// Runs one sqllogictest-style file: `query [rowsort]` blocks with expected rows after
/// `----`, and `statement error [text]` blocks that must fail (with `text` in the message).
fn run_slt(session: &HuntSession, rt: &tokio::runtime::Runtime, name: &str, text: &str) -> usize {
    let mut checked = 0;
    for block in text.split("\n\n") {
        let lines: Vec<&str> = block
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        let Some(head) = lines.first() else { continue };
        if let Some(rest) = head.strip_prefix("statement error") {
            let sql = lines[1..].join("\n");
            match rt.block_on(session.query(&sql)) {
                Ok(_) => panic!("{name}: expected an error from\n{sql}"),
                Err(e) => {
                    let want = rest.trim();
                    assert!(
                        e.to_string().to_lowercase().contains(&want.to_lowercase()),
                        "{name}: error of\n{sql}\nis {e:?}, wanted it to mention {want:?}"
                    );
                }
            }
        } else if let Some(mode) = head.strip_prefix("query") {
            let sep = lines
                .iter()
                .position(|l| *l == "----")
                .unwrap_or_else(|| panic!("{name}: no ---- in {block}"));
            let sql = lines[1..sep].join("\n");
            let mut want: Vec<String> = lines[sep + 1..].iter().map(|s| s.to_string()).collect();
            let out = rt
                .block_on(session.query(&sql))
                .unwrap_or_else(|e| panic!("{name}: {sql}: {e}"));
            let mut got = rows(&out);
            if mode.trim() == "rowsort" {
                got.sort();
                want.sort();
            }
            assert_eq!(got, want, "{name}: {sql}");
        } else {
            panic!("{name}: cannot read block starting {head:?}");
        }
        checked += 1;
    }
    checked
}

#[test]
fn sql_files_match_the_simulator() {
    let f = fixture();
    let subs = substitutions(&f.truth);
    let rt = rt();
    let session = rt
        .block_on(HuntSession::open(&f.path, QueryLimits::default()))
        .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut total = 0;
    for p in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
    {
        let text = substitute(&std::fs::read_to_string(p).unwrap(), &subs);
        total += run_slt(&session, &rt, &p.display().to_string(), &text);
    }
    assert!(total >= 20, "only {total} checks ran");
}

/// Every hunt finds the scenarios it is written for: most of the attackers of its
/// scenarios with a real campaign (recall), and little else (precision), judged by the
/// simulator's labels.
#[test]
fn hunt_library_finds_its_scenarios() {
    let f = fixture();
    let t = &f.truth;
    let rt = rt();
    let session = rt
        .block_on(HuntSession::open(&f.path, QueryLimits::default()))
        .unwrap();
    let mut report = Vec::new();
    for hunt in gatewatch_hunt::hunts::library() {
        let out = rt
            .block_on(session.query(&hunt.sql))
            .unwrap_or_else(|e| panic!("{}: {e}", hunt.name));
        let scen: Vec<&str> = hunt.scenarios.iter().map(String::as_str).collect();
        let batches = &out.batches;
        let col = hunt.entity.as_str();
        let found: BTreeSet<String> = batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column_by_name(if col == "hour" { "hour_start" } else { "actor" })
                    .unwrap();
                let f = ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default()).unwrap();
                (0..b.num_rows())
                    .map(move |i| f.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let (truth_all, truth_big): (BTreeSet<String>, BTreeSet<String>) = if col == "hour" {
            let hours = |min: u64| -> BTreeSet<String> {
                let mut per: BTreeMap<i64, u64> = BTreeMap::new();
                for s in &scen {
                    for (h, n) in t.hours.get(*s).into_iter().flatten() {
                        *per.entry(*h).or_default() += n;
                    }
                }
                per.into_iter()
                    .filter(|(_, n)| *n >= min)
                    .map(|(h, _)| format!("{}Z", iso(h * HOUR_US)))
                    .collect()
            };
            (hours(1), hours(200))
        } else if col == "address" {
            (t.addresses_of(&scen, 1), t.addresses_of(&scen, 30))
        } else {
            (t.actors_of(&scen, 1), t.actors_of(&scen, 30))
        };
        let hits = found.intersection(&truth_all).count();
        let precision = if found.is_empty() {
            0.0
        } else {
            hits as f64 / found.len() as f64
        };
        let recalled = truth_big.iter().filter(|a| found.contains(*a)).count();
        let recall = if truth_big.is_empty() {
            1.0
        } else {
            recalled as f64 / truth_big.len() as f64
        };
        let line = format!(
            "{:28} found {:4} precision {precision:.2} recall {recall:.2} ({recalled}/{} big, {} labelled)",
            hunt.name,
            found.len(),
            truth_big.len(),
            truth_all.len()
        );
        report.push((precision, recall, line));
    }
    let text: Vec<&str> = report.iter().map(|(_, _, l)| l.as_str()).collect();
    println!("{}", text.join("\n"));
    for (p, r, line) in &report {
        assert!(
            *p >= 0.8 && *r >= 0.6,
            "hunt below par: {line}\n{}",
            text.join("\n")
        );
    }
}

#[test]
fn request_ids_are_written_without_a_dictionary_and_addresses_with_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), StoreConfig::default()).unwrap();
    let ids: Vec<String> = (0..64).map(|i| format!("req-{i:08x}")).collect();
    commit(
        &mut store,
        with_column(
            &batch(64, T0, 1_000_000),
            Field::new("http_request_id", DataType::Utf8, true),
            Arc::new(StringArray::from(ids)),
        ),
    );
    let files = parquet_files(&tmp.path().join("events/date=2025-06-02/hour=08"));
    assert_eq!(files.len(), 1);
    let meta = footer(&files[0]);
    let rg = meta.row_group(0);
    let dictionary = |name: &str| {
        let c = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .unwrap();
        c.dictionary_page_offset().is_some()
    };
    assert!(
        !dictionary("http_request_id"),
        "request ids: no dictionary page"
    );
    assert!(dictionary("source_ip"), "addresses repeat: dictionary kept");
}
