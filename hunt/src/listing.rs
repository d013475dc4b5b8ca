//! The store's files as a query lists them, consistent while maintenance merges.
//!
//! A merge ([`crate::store`]) writes its journal, renames its output into the hour's
//! directory, deletes its inputs and then the journal. A query lists the directory
//! (planning) and reads the files later (execution). Two things can go wrong.
//!
//! The listing itself is not a snapshot: a directory read misses an entry renamed in
//! behind its cursor, and the local file system skips an entry deleted before it is
//! looked at, so a listing taken during a merge could hold neither its output nor its
//! inputs. [`MergeAwareFiles`] therefore lists under the store's listing lock, held shared
//! (`crate::store::ListingLock`), and maintenance renames a merge's output into place and
//! deletes its inputs under the same lock, held exclusively: a listing sees the inputs or
//! the output, never neither.
//!
//! The files may still change between the listing and the reads, and a merge a crash
//! interrupted leaves its output beside its inputs until maintenance finishes it. So after
//! listing, a merge output that shares its directory with other files has its journal
//! looked up, and while the journal is there the merge's inputs are left out. Every case
//! then ends in either the right rows or a missing file:
//!
//! - the listing has the output and an input, and the journal is there when looked up: the
//!   inputs are left out;
//! - the journal is already gone: so are the inputs (they are deleted before it). Under
//!   the lock they were gone before the listing began, so it does not hold them; without
//!   the lock (a data directory no writer has opened) the listing checks that the files
//!   beside such an output still exist and fails with a missing one (the query itself
//!   might never open it: a `count(*)` is answered from the file statistics an earlier
//!   query cached);
//! - the listing has inputs but not the output: the output is not read, and the inputs are
//!   read if they are still there (if not, the query fails to open one).
//!
//! A query that fails on a missing file is planned and run again
//! ([`crate::session::HuntSession`]); the retention that drops old hours ends the same way.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::store::{ListingLock, journal_name, merged_file_id, parse_journal};

/// The local file system, with listings taken under the store's listing lock that leave
/// out the inputs of a merge whose output they hold (see the module docs). Everything
/// else is the inner store's.
#[derive(Debug)]
pub struct MergeAwareFiles {
    inner: Arc<LocalFileSystem>,
    /// The store's directory, where its listing lock is.
    store_dir: PathBuf,
}

impl MergeAwareFiles {
    /// The whole local file system (each table's URL names its directory), listed under
    /// the listing lock of the store at `store_dir`.
    pub fn new(store_dir: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(LocalFileSystem::new()),
            store_dir: store_dir.into(),
        }
    }

    /// `listed` without the inputs of merges whose output it holds and whose journal is
    /// still there now. When the listing was not `locked`, also an error (not found) when
    /// a file it holds beside a merge output whose journal is gone has been deleted since:
    /// it was merged into a file the listing may hold too. (The query cannot be trusted to
    /// find that out by opening the file: a `count(*)` is answered from file statistics
    /// cached by an earlier query.) A listing taken under the listing lock needs no such
    /// check: a merge whose journal is gone deleted its inputs before the listing began.
    fn without_merged_inputs(
        inner: &LocalFileSystem,
        listed: Vec<ObjectMeta>,
        locked: bool,
    ) -> Result<Vec<ObjectMeta>> {
        // Directory → data files listed in it (not the hidden temporary files and journals
        // a listing holds too); only directories holding a merge output and something else
        // can hold a merge in flight.
        let mut by_dir: HashMap<Path, Vec<&str>> = HashMap::new();
        for meta in &listed {
            if let Some((dir, name)) = split(&meta.location)
                && !name.starts_with('.')
                && name.ends_with(".parquet")
            {
                by_dir.entry(dir).or_default().push(name);
            }
        }
        let mut left_out: HashSet<Path> = HashSet::new();
        let mut recheck: Vec<&Path> = Vec::new();
        for (dir, names) in &by_dir {
            if names.len() < 2 {
                continue;
            }
            for id in names.iter().filter_map(|n| merged_file_id(n)) {
                let journal = inner.path_to_filesystem(&dir.clone().join(journal_name(id)))?;
                // A journal is a few lines: read here rather than on a blocking thread.
                match std::fs::read_to_string(&journal) {
                    Ok(text) => {
                        let (output, inputs) = parse_journal(&text);
                        if output.is_some_and(|o| names.contains(&o)) {
                            left_out.extend(inputs.map(|i| dir.clone().join(i)));
                        }
                    }
                    // Finished long ago, or (only possible without the lock) during the
                    // listing: then its inputs, which this listing may hold, are gone too.
                    Err(_) if !locked => recheck.push(dir),
                    Err(_) => {}
                }
            }
        }
        for dir in recheck {
            for name in &by_dir[dir] {
                let file = dir.clone().join(*name);
                if left_out.contains(&file) {
                    continue;
                }
                let path = inner.path_to_filesystem(&file)?;
                if let Err(e) = std::fs::metadata(&path) {
                    return Err(datafusion::object_store::Error::NotFound {
                        path: path.display().to_string(),
                        source: Box::new(e),
                    });
                }
            }
        }
        if left_out.is_empty() {
            return Ok(listed);
        }
        tracing::debug!(
            files = left_out.len(),
            "sql: a merge is in flight; its inputs are left out of the listing"
        );
        Ok(listed
            .into_iter()
            .filter(|m| !left_out.contains(&m.location))
            .collect())
    }
}

/// Holds the listing lock of the store at `store_dir` shared, waiting (off the async
/// threads) for a merge's swap in progress; released when the value is dropped. While it
/// is held no merge puts its output in place or deletes its inputs.
pub(crate) async fn hold_listing_lock(store_dir: PathBuf) -> Option<ListingLock> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(move || ListingLock::shared(&store_dir))
            .await
            .ok()
            .flatten(),
        Err(_) => ListingLock::shared(&store_dir),
    }
}

/// A file's directory and name.
fn split(location: &Path) -> Option<(Path, &str)> {
    let (dir, name) = location.as_ref().rsplit_once('/')?;
    Some((Path::parse(dir).ok()?, name))
}

impl fmt::Display for MergeAwareFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MergeAwareFiles({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for MergeAwareFiles {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let store_dir = self.store_dir.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let listing = hold_listing_lock(store_dir).await;
            let listed: Result<Vec<ObjectMeta>> = inner.list(prefix.as_ref()).try_collect().await;
            listed.and_then(|listed| Self::without_merged_inputs(&inner, listed, listing.is_some()))
        })
        .map_ok(|metas| futures::stream::iter(metas.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let listing = hold_listing_lock(self.store_dir.clone()).await;
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        result.objects =
            Self::without_merged_inputs(&self.inner, result.objects, listing.is_some())?;
        Ok(result)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Whether `e` comes from a file that was listed but is gone (a merge's input, an hour
/// that retention dropped): the query is worth planning again.
pub fn file_vanished(e: &DataFusionError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(os) = err.downcast_ref::<datafusion::object_store::Error>()
            && matches!(os, datafusion::object_store::Error::NotFound { .. })
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::NotFound
        {
            return true;
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::{ParquetReadOptions, SessionContext};

    fn write_file(path: &std::path::Path, values: Vec<i64>) {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))]).unwrap();
        let file = std::fs::File::create(path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn rows(batches: &[RecordBatch]) -> usize {
        batches.iter().map(RecordBatch::num_rows).sum()
    }

    #[tokio::test]
    async fn a_file_gone_between_planning_and_reading_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("a.parquet"), vec![1, 2, 3]);
        write_file(&dir.path().join("b.parquet"), vec![4, 5]);
        let ctx = SessionContext::new();
        let url = format!("{}/", dir.path().display());
        ctx.register_parquet("t", &url, ParquetReadOptions::default())
            .await
            .unwrap();
        let df = ctx.sql("SELECT x FROM t WHERE x > 0").await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        std::fs::remove_file(dir.path().join("b.parquet")).unwrap();
        let e = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap_err();
        assert!(file_vanished(&e), "not told a vanished file: {e}");
        // Other failures are not.
        let e = ctx.sql("SELECT nope FROM t").await.unwrap_err();
        assert!(!file_vanished(&e), "{e}");
    }

    #[tokio::test]
    async fn a_listing_leaves_out_the_inputs_of_a_merge_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let hour = dir.path().join("hour=08");
        std::fs::create_dir(&hour).unwrap();
        write_file(&hour.join("part-1a-000001.parquet"), vec![1, 2]);
        write_file(&hour.join("part-1a-000002.parquet"), vec![3]);
        write_file(&hour.join("part-1b-000001.parquet"), vec![9]);
        write_file(&hour.join("part-mf00.parquet"), vec![1, 2, 3]);
        // As the hunt session has it: every query lists the files anew.
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_cache_manager(
                datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                    .with_list_files_cache_limit(0),
            )
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(Default::default(), runtime);
        ctx.register_object_store(
            datafusion::execution::object_store::ObjectStoreUrl::local_filesystem().as_ref(),
            Arc::new(MergeAwareFiles::new(dir.path())),
        );
        let url = format!("{}/", dir.path().display());
        ctx.register_parquet("t", &url, ParquetReadOptions::default())
            .await
            .unwrap();
        let count = || async {
            rows(
                &ctx.sql("SELECT x FROM t WHERE x > 0")
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap(),
            )
        };
        // No journal: no merge in flight, every file counts (the output here holds a
        // copy, as a file left by a finished merge never would).
        assert_eq!(count().await, 7);
        // The journal of the merge that wrote part-mf00 from the first two files: they
        // are left out while it is there; the file it did not merge stays.
        std::fs::write(
            hour.join(journal_name("f00")),
            "part-mf00.parquet\npart-1a-000001.parquet\npart-1a-000002.parquet\n",
        )
        .unwrap();
        assert_eq!(count().await, 4);
        // Before its output is in place the journal leaves the inputs in.
        std::fs::rename(hour.join("part-mf00.parquet"), hour.join(".part-mf00.tmp")).unwrap();
        assert_eq!(count().await, 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listing_waits_for_a_merge_swap_in_progress() {
        // A listing that ran during the swap could miss both the output (renamed in behind
        // its cursor) and the inputs (deleted before it looked at them). It waits instead,
        // and then sees the output alone.
        let dir = tempfile::tempdir().unwrap();
        let hour = dir.path().join("events/hour=08");
        std::fs::create_dir_all(&hour).unwrap();
        for i in 0..3 {
            write_file(&hour.join(format!("part-1a-{i:06}.parquet")), vec![i]);
        }
        let lock = ListingLock::for_maintenance(dir.path()).unwrap();
        let swap = lock
            .exclusive(&|| false)
            .unwrap()
            .expect("not asked to stop");
        let files = Arc::new(MergeAwareFiles::new(dir.path()));
        let prefix = Path::from_filesystem_path(dir.path().join("events")).unwrap();
        let listing = {
            let (files, prefix) = (files.clone(), prefix.clone());
            tokio::spawn(async move {
                files
                    .list(Some(&prefix))
                    .map_ok(|m| m.location.filename().unwrap_or_default().to_string())
                    .try_collect::<Vec<String>>()
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !listing.is_finished(),
            "a listing ran while a merge held the listing lock"
        );
        // The swap: output in place, inputs gone.
        write_file(&hour.join("part-mf01.parquet"), vec![0, 1, 2]);
        for i in 0..3 {
            std::fs::remove_file(hour.join(format!("part-1a-{i:06}.parquet"))).unwrap();
        }
        drop(swap);
        let listed = tokio::time::timeout(std::time::Duration::from_secs(10), listing)
            .await
            .expect("the listing still waits after the swap")
            .unwrap()
            .unwrap();
        assert_eq!(listed, vec!["part-mf01.parquet".to_string()]);
        // No swap in progress: a listing does not wait, and holding it shared does not
        // keep another listing out.
        let _held = hold_listing_lock(dir.path().to_path_buf()).await.unwrap();
        let again = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            files.list(Some(&prefix)).try_collect::<Vec<_>>(),
        )
        .await
        .expect("a listing waited on another listing")
        .unwrap();
        assert_eq!(again.len(), 1);
    }
}
