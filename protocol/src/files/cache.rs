//! The cache of active-file lists (`FileLists`): per (table root, version) a list built by
//! replaying the table's log (Delta) or reading its manifests (Iceberg), weighed by bytes
//! within `--cache-size`, and the walk over a version's files that builds one while it streams.
//!
//! Invariants: at most `REPLAYS_MAX` lists are built at once; a list for a new version is built
//! on top of the table's newest cached list when the order allows it (only the new commits are
//! read); a page is served only from a list of the order its token names.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use delta_kernel::arrow::array::RecordBatch;

use super::list::{
    full_order_id, iceberg_scan_rows, incremental_order_id, scan_active_files, ActiveFiles,
    ActiveFilesBuilder, BatchKept, FileRow, KeptPerFile, ICEBERG_BATCH_FILES,
};
use crate::error::{Result, SharingError};
use crate::page_token::page_token_expired;
use crate::tables::iceberg::loaded::iceberg_error;
use crate::tables::iceberg::{self, IcebergTable, TableVersion};
use crate::tables::{SnapshotSource, TableSnapshot, Tables};

/// File lists built at the same time.
const REPLAYS_MAX: usize = 2;
/// Replayed batches waiting for the line writer.
const SCAN_BATCHES_IN_FLIGHT: usize = 4;
/// Default budget of the active-file list cache.
pub const FILE_LISTS_BYTES_DEFAULT: u64 = 1 << 30;

/// The node's cached active-file lists.
pub struct FileLists {
    tables: Arc<Tables>,
    /// (table root `bucket/location`, version) → its active files, weighed by bytes.
    file_lists: moka::sync::Cache<(String, u64), Arc<ActiveFiles>>,
    file_lists_bytes_max: u64,
    /// table root → version of its newest cached list (the base of incremental builds).
    newest_listed: Mutex<HashMap<String, u64>>,
    /// Permits to build a file list (`REPLAYS_MAX`).
    replays: tokio::sync::Semaphore,
}

/// Which list orders a walk over a version's files may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListOrder {
    /// Any (a first page, or an answer without pages).
    Any,
    /// Only the order a page token was made in.
    Exactly(u64),
}

impl ListOrder {
    pub fn accepts(self, order_id: u64) -> bool {
        match self {
            ListOrder::Any => true,
            ListOrder::Exactly(wanted) => wanted == order_id,
        }
    }
}

impl FileLists {
    /// `file_lists_bytes_max` bounds the memory of cached active-file lists (`--cache-size`).
    pub fn new(tables: Arc<Tables>, file_lists_bytes_max: u64) -> Arc<FileLists> {
        Arc::new(FileLists {
            tables,
            file_lists: moka::sync::Cache::builder()
                .max_capacity(file_lists_bytes_max)
                .weigher(|_, files: &Arc<ActiveFiles>| {
                    u32::try_from(files.bytes()).unwrap_or(u32::MAX)
                })
                .build(),
            file_lists_bytes_max,
            newest_listed: Mutex::new(HashMap::new()),
            replays: tokio::sync::Semaphore::new(REPLAYS_MAX),
        })
    }

    /// Calls `visit(index, file)` for the active files of `snapshot` from index `start` on,
    /// until it breaks; `order_used` is set to the order id of the list walked before the
    /// first file is visited. From the cached list when there is one (O(files visited));
    /// otherwise the log is replayed (only the new commits, on top of the table's newest
    /// cached list, when `order` allows it) and the list is cached as it streams; files of a
    /// cached list come with the values `kept` asks for. After
    /// `visit` breaks, the replay still completes the list for the cache, unless it outgrew
    /// the budget. Blocking: call from the replay pool.
    pub fn visit_active_files(
        &self,
        snapshot: &TableSnapshot,
        start: usize,
        order: ListOrder,
        order_used: &Cell<u64>,
        kept: KeptPerFile<'_>,
        mut visit: impl FnMut(usize, &FileRow<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        let root = format!("{}/{}", snapshot.bucket, snapshot.location);
        let version = snapshot.version;
        let cached_in_order = || {
            self.file_lists
                .get(&(root.clone(), version))
                .filter(|files| order.accepts(files.order_id()))
        };
        if let Some(files) = cached_in_order() {
            order_used.set(files.order_id());
            return files.visit_from(start, kept, visit);
        }
        // At most `REPLAYS_MAX` lists are built at once (each holds up to the cache budget
        // until it is cached); a query that waited finds the list another one just built.
        let _replay = futures::executor::block_on(self.replays.acquire())
            .map_err(|_| SharingError::internal("the replay limiter is closed"))?;
        if let Some(files) = cached_in_order() {
            order_used.set(files.order_id());
            return files.visit_from(start, kept, visit);
        }
        let cached = self.file_lists.get(&(root.clone(), version));
        let base = match (&snapshot.source, order) {
            (SnapshotSource::Delta(_), ListOrder::Any) => self.incremental_base(&root, version),
            _ => None,
        };
        let order_id = match &base {
            Some(base) => incremental_order_id(base, version),
            None => full_order_id(version),
        };
        if !order.accepts(order_id) {
            return Err(page_token_expired());
        }
        order_used.set(order_id);
        // A page of another order does not replace the cached list other pages rely on.
        let cache_result = cached.is_none();
        tracing::debug!(
            %root,
            version,
            incremental_from = base.as_ref().map(|base| base.version()),
            "replaying the active files"
        );
        let engine = self.tables.engine(&snapshot.bucket);
        let budget = usize::try_from(self.file_lists_bytes_max).unwrap_or(usize::MAX);
        let mut builder = ActiveFilesBuilder::new(version, order_id, budget);
        let visiting = AtomicBool::new(true);
        let mut failure = None;
        // Three stages overlap: the replay (its own thread) hands batches to the kept-values
        // stage, which computes the file ids and URL signatures of each batch that will be
        // visited, while this thread writes the lines of the batch before.
        let (batch_sender, batch_receiver) = std::sync::mpsc::sync_channel(SCAN_BATCHES_IN_FLIGHT);
        let (kept_sender, kept_receiver) = std::sync::mpsc::sync_channel(SCAN_BATCHES_IN_FLIGHT);
        let scanned = std::thread::scope(|scope| {
            let engine = engine.as_ref();
            let base = base.as_deref();
            let visiting = &visiting;
            let replay = scope.spawn(move || {
                let hand_over = |batch| match batch_sender.send(batch) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                };
                match &snapshot.source {
                    SnapshotSource::Delta(_) => {
                        scan_active_files(snapshot, engine, base, hand_over)
                    }
                    SnapshotSource::Iceberg { table, version } => {
                        self.scan_iceberg_files(table, version, hand_over)
                    }
                }
            });
            scope.spawn(move || {
                let mut first_index = 0;
                for batch in batch_receiver {
                    let rows = batch.num_rows();
                    let visited_later =
                        visiting.load(Ordering::Relaxed) && first_index + rows > start;
                    first_index += rows;
                    // A batch whose values cannot be computed goes on without: its line
                    // writer meets the error itself.
                    let computed = visited_later
                        .then(|| BatchKept::compute(&batch, kept).ok())
                        .flatten();
                    if kept_sender.send((batch, computed)).is_err() {
                        break;
                    }
                }
            });
            for (batch, computed) in kept_receiver {
                if !visiting.load(Ordering::Relaxed) {
                    if !builder.push(batch) {
                        break;
                    }
                    continue;
                }
                match builder.push_and_visit(batch, computed, start, kept, &mut visit) {
                    Ok((_, ControlFlow::Continue(()))) => {}
                    Ok((still_kept, ControlFlow::Break(()))) => {
                        visiting.store(false, Ordering::Relaxed);
                        if !still_kept {
                            break;
                        }
                    }
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            replay
                .join()
                .unwrap_or_else(|_| Err(SharingError::internal("the log replay thread panicked")))
        });
        if let Some(error) = failure {
            return Err(error);
        }
        scanned?;
        if let Some(files) = builder.finish().filter(|_| cache_result) {
            self.file_lists
                .insert((root.clone(), version), Arc::new(files));
            let mut newest = self
                .newest_listed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let entry = newest.entry(root).or_insert(version);
            *entry = (*entry).max(version);
        }
        Ok(())
    }

    /// Builds the active-file list of `snapshot` into the cache (when it fits the budget)
    /// without answering anything, unless it is cached already. Blocking.
    pub fn build_file_list(&self, snapshot: &TableSnapshot) -> Result<()> {
        self.visit_active_files(
            snapshot,
            usize::MAX,
            ListOrder::Any,
            &Cell::new(0),
            KeptPerFile::default(),
            |_, _| ControlFlow::Break(()),
        )
    }

    /// Whether a page of `snapshot` indexed into a list of order `order_id` can be served:
    /// the cached list has that order, or a full replay yields it.
    pub fn serves_order(&self, snapshot: &TableSnapshot, order_id: u64) -> bool {
        order_id == full_order_id(snapshot.version)
            || self
                .cached_files(snapshot)
                .is_some_and(|files| files.order_id() == order_id)
    }

    /// Reads the data files of an Iceberg version as scan-row batches. Blocking.
    fn scan_iceberg_files(
        &self,
        table: &IcebergTable,
        version: &TableVersion,
        mut visit: impl FnMut(RecordBatch) -> ControlFlow<()>,
    ) -> Result<()> {
        let store = self.tables.store().bucket(&table.bucket);
        let modification_time_ms = version.timestamp_ms().unwrap_or(0);
        let mut pending = Vec::with_capacity(ICEBERG_BATCH_FILES);
        let mut failure = None;
        let mut stopped = false;
        let mut hand_over = |files: &mut Vec<_>| {
            match iceberg_scan_rows(files, &table.root, modification_time_ms) {
                Ok(batch) => {
                    files.clear();
                    stopped = visit(batch).is_break();
                }
                Err(error) => failure = Some(error),
            }
            if stopped || failure.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        self.tables
            .block_on(iceberg::data_files(
                store.as_ref(),
                table,
                version,
                |file| {
                    pending.push(file);
                    if pending.len() < ICEBERG_BATCH_FILES {
                        return ControlFlow::Continue(());
                    }
                    hand_over(&mut pending)
                },
            ))
            .map_err(|error| iceberg_error(&table.root, error))?;
        if !pending.is_empty() {
            let _ = hand_over(&mut pending);
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The cached active-file list of `snapshot`, if there is one.
    pub fn cached_files(&self, snapshot: &TableSnapshot) -> Option<Arc<ActiveFiles>> {
        let root = format!("{}/{}", snapshot.bucket, snapshot.location);
        self.file_lists.get(&(root, snapshot.version))
    }

    /// The newest cached list of `root` older than `version`.
    fn incremental_base(&self, root: &str, version: u64) -> Option<Arc<ActiveFiles>> {
        let newest = *self
            .newest_listed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(root)?;
        if newest >= version {
            return None;
        }
        self.file_lists.get(&(root.to_string(), newest))
    }
}
