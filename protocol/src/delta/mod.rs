//! Shared Delta tables read with `delta_kernel` through the storage node's `ObjectStore`
//! view: snapshots (latest, by version, by timestamp), their protocol and metadata, their
//! active files, and the share-time check that a path holds a Delta log.
//!
//! `delta_kernel` handlers block, so every call into it runs on the replay pool
//! (`spawn_blocking`), never on a core thread. Snapshots are cached per table and version;
//! the latest snapshot is refreshed incrementally (only commits after the cached version
//! are read) whenever the table's `_delta_log/` folder was written through this node since
//! the latest snapshot was read (the storage node counts writes per watched folder), so a
//! new commit is seen at once and an unchanged table costs no lookup at all.

pub mod async_queries;
pub mod changes;
pub mod files;
pub mod line_buffers;
pub mod lines;
pub mod query;

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use delta_kernel::history_manager::{first_version_after, latest_version_as_of, HistoryCommitType};
use delta_kernel::snapshot::{Snapshot, SnapshotRef};
use delta_kernel::table_features::ColumnMappingMode;
use delta_kernel::Engine;
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
use delta_kernel_default_engine::executor::TaskExecutor;
use delta_kernel_default_engine::DefaultEngine;
use futures::TryStreamExt;
use lakeshare_storage::object_store_view::NodeObjectStore;
use lakeshare_storage::Node;
use object_store::ObjectStore;
use serde_json::Value;
use url::Url;

use crate::capabilities::TableNeeds;
use crate::catalog::{SourceType, Table};
use crate::delta::files::{
    full_order_id, iceberg_scan_rows, incremental_order_id, scan_active_files, ActiveFiles,
    ActiveFilesBuilder, BatchKept, FileRow, KeptPerFile, ICEBERG_BATCH_FILES,
};
use crate::delta::lines::TableSize;
use crate::error::{ErrorKind, Result, SharingError};
use crate::iceberg::{self, IcebergTable, TableVersion};
use delta_kernel::arrow::array::RecordBatch;

pub type KernelEngine = DefaultEngine<TokioMultiThreadExecutor>;

/// Snapshots kept per table and version.
const SNAPSHOTS_CACHED_MAX: u64 = 1024;
/// File lists built at the same time.
const REPLAYS_MAX: usize = 2;
/// Replayed batches waiting for the line writer.
const SCAN_BATCHES_IN_FLIGHT: usize = 4;
/// Default budget of the active-file list cache.
pub const FILE_LISTS_BYTES_DEFAULT: u64 = 1 << 30;

/// Reads shared Delta tables. One per node (`SharedDeltaTables`).
pub struct DeltaTables {
    node: Arc<Node>,
    executor: Arc<TokioMultiThreadExecutor>,
    engines: Mutex<HashMap<String, Arc<KernelEngine>>>,
    /// (table id, version) → snapshot.
    snapshots: moka::sync::Cache<(String, u64), SnapshotRef>,
    /// table id → newest snapshot seen.
    latest: Mutex<HashMap<String, SnapshotRef>>,
    /// table id → newest snapshot seen, described (what the latest fast path serves).
    latest_described: Mutex<HashMap<String, LatestSnapshot>>,
    /// (table root `bucket/location`, version) → its active files, weighed by bytes.
    file_lists: moka::sync::Cache<(String, u64), Arc<ActiveFiles>>,
    file_lists_bytes_max: u64,
    /// table root → version of its newest cached list (the base of incremental builds).
    newest_listed: Mutex<HashMap<String, u64>>,
    /// table root `bucket/location` → its loaded Iceberg metadata.
    iceberg_tables: Mutex<HashMap<String, LoadedIceberg>>,
    /// Permits to build a file list (`REPLAYS_MAX`).
    replays: tokio::sync::Semaphore,
}

/// The newest snapshot of a table and the write counter of its `_delta_log/` folder as it
/// was before that snapshot was read: while the counter has not moved, it is still the latest.
#[derive(Clone)]
struct LatestSnapshot {
    described: Arc<TableSnapshot>,
    log_writes: Arc<AtomicU64>,
    log_writes_seen: u64,
}

/// A resolved snapshot with what the protocol needs to know about it.
#[derive(Clone)]
pub struct TableSnapshot {
    /// The version the protocol names (for Iceberg tables: see `iceberg`'s version mapping).
    pub version: u64,
    pub source: SnapshotSource,
    pub bucket: String,
    /// Table root key inside the bucket, ending with `/`.
    pub location: String,
    pub protocol: Value,
    pub metadata: Value,
    pub needs: TableNeeds,
    pub partition_columns: Vec<String>,
    /// Logical column name → physical name, when column mapping is on.
    pub physical_names: HashMap<String, String>,
}

/// Where a snapshot comes from.
#[derive(Clone)]
pub enum SnapshotSource {
    Delta(SnapshotRef),
    /// An Iceberg table's version (a main-branch snapshot, or the empty table).
    Iceberg {
        table: Arc<IcebergTable>,
        version: TableVersion,
    },
}

impl TableSnapshot {
    /// The size of the version when it is known at no cost: from the version's checksum
    /// (`.crc`) file the kernel read, or from `cached`, the version's cached file list.
    pub fn known_size(&self, cached: Option<&ActiveFiles>) -> Option<TableSize> {
        if let SnapshotSource::Delta(kernel) = &self.source {
            if let Some(stats) = kernel.get_file_stats_if_present() {
                return Some(TableSize {
                    files_bytes: u64::try_from(stats.table_size_bytes()).ok()?,
                    files: u64::try_from(stats.num_files()).ok()?,
                });
            }
        }
        cached.map(|files| TableSize {
            files_bytes: files.files_bytes(),
            files: files.len() as u64,
        })
    }

    /// The kernel snapshot of a Delta table.
    pub fn delta(&self) -> Result<&SnapshotRef> {
        match &self.source {
            SnapshotSource::Delta(snapshot) => Ok(snapshot),
            SnapshotSource::Iceberg { .. } => Err(SharingError::new(
                ErrorKind::Unsupported,
                "this operation is not available for Iceberg tables",
            )),
        }
    }
}

/// A loaded Iceberg table and the write counter of its `metadata/` folder as it was before
/// the table was loaded: while it has not moved, the loaded metadata is current.
struct LoadedIceberg {
    table: Arc<IcebergTable>,
    metadata_writes: Arc<AtomicU64>,
    metadata_writes_seen: u64,
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

/// A page token whose list order can no longer be served (the reference's wording).
pub fn page_token_expired() -> SharingError {
    SharingError::invalid("The page token has expired")
}

/// Checks that `root` (a key prefix ending with `/`, or empty) holds a Delta table: its
/// `_delta_log/` has a commit or a checkpoint. The listing stops at the first one.
pub async fn find_delta_log(store: &dyn ObjectStore, root: &str) -> Result<()> {
    let log = format!("{root}_delta_log/");
    let prefix = object_store::path::Path::parse(&log)
        .map_err(|error| SharingError::invalid(format!("'{log}' is not a usable key: {error}")))?;
    let mut listing = store.list(Some(&prefix));
    while let Some(object) = listing.try_next().await.map_err(iceberg::store_error)? {
        if object.location.filename().is_some_and(is_log_entry) {
            return Ok(());
        }
    }
    Err(SharingError::not_found(format!(
        "{log} holds no Delta commit or checkpoint"
    )))
}

/// Which snapshot a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSelector {
    Latest,
    Version(u64),
    /// Latest commit at or before this time (ms since the epoch); a time after the latest
    /// commit is refused, as Delta's time travel does.
    AsOfTimestamp(i64),
    /// Latest commit at or before this time, the latest version for a time after it (the end
    /// of a change feed, as Delta's change data reader takes it).
    UpToTimestamp(i64),
}

impl DeltaTables {
    /// `file_lists_bytes_max` bounds the memory of cached active-file lists (`--cache-size`).
    pub fn new(
        node: Arc<Node>,
        replay_threads: usize,
        file_lists_bytes_max: u64,
    ) -> Result<Arc<DeltaTables>> {
        let executor =
            TokioMultiThreadExecutor::new_owned_runtime(Some(replay_threads.max(1)), None)
                .map_err(|error| SharingError::internal(format!("replay pool: {error}")))?;
        Ok(Arc::new(DeltaTables {
            node,
            executor: Arc::new(executor),
            engines: Mutex::new(HashMap::new()),
            snapshots: moka::sync::Cache::new(SNAPSHOTS_CACHED_MAX),
            latest: Mutex::new(HashMap::new()),
            latest_described: Mutex::new(HashMap::new()),
            file_lists: moka::sync::Cache::builder()
                .max_capacity(file_lists_bytes_max)
                .weigher(|_, files: &Arc<ActiveFiles>| {
                    u32::try_from(files.bytes()).unwrap_or(u32::MAX)
                })
                .build(),
            file_lists_bytes_max,
            newest_listed: Mutex::new(HashMap::new()),
            iceberg_tables: Mutex::new(HashMap::new()),
            replays: tokio::sync::Semaphore::new(REPLAYS_MAX),
        }))
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The kernel engine reading `bucket`.
    pub fn engine(&self, bucket: &str) -> Arc<KernelEngine> {
        let mut engines = self
            .engines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        engines
            .entry(bucket.to_string())
            .or_insert_with(|| {
                let store = Arc::new(NodeObjectStore::new(self.node.clone(), bucket.to_string()));
                Arc::new(
                    DefaultEngine::builder(store)
                        .with_task_executor(self.executor.clone())
                        .build(),
                )
            })
            .clone()
    }

    /// The cached latest snapshot of `table`, if it is still the latest. Nothing was
    /// written into its `_delta_log/` through this node since it was read: no lookup at all.
    /// Otherwise one metadata lookup: Delta writes every version as
    /// `_delta_log/<version>.json`, so a missing next commit file means no newer version.
    pub async fn latest_if_current(&self, table: &Table) -> Option<Arc<TableSnapshot>> {
        let (bucket, location) = table_location(table).ok()?;
        let latest = self
            .latest_described
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&table.id)
            .cloned()
            .filter(|latest| {
                latest.described.bucket == bucket && latest.described.location == location
            })?;
        let log_writes = latest.log_writes.load(Ordering::Acquire);
        if log_writes == latest.log_writes_seen {
            return Some(latest.described);
        }
        let version = latest.described.version;
        let next = format!("{location}_delta_log/{:020}.json", version + 1);
        match self.node.head_object(&bucket, &next).await {
            Err(lakeshare_storage::StorageError::NoSuchKey { .. }) => {
                let mut described = self
                    .latest_described
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(entry) = described.get_mut(&table.id) {
                    if entry.described.version == version {
                        entry.log_writes_seen = entry.log_writes_seen.max(log_writes);
                    }
                }
                Some(latest.described)
            }
            _ => None,
        }
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
        let engine = self.engine(&snapshot.bucket);
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
        let store = NodeObjectStore::new(self.node.clone(), table.bucket.clone());
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
        self.block_on(iceberg::data_files(&store, table, version, |file| {
            pending.push(file);
            if pending.len() < ICEBERG_BATCH_FILES {
                return ControlFlow::Continue(());
            }
            hand_over(&mut pending)
        }))
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

    /// Resolves a snapshot of `table`. Blocking: call from the replay pool.
    pub fn snapshot_blocking(
        &self,
        table: &Table,
        selector: &VersionSelector,
    ) -> Result<TableSnapshot> {
        if table.source_type == SourceType::Iceberg {
            return self.block_on(self.iceberg_snapshot(table, selector));
        }
        let (bucket, location) = table_location(table)?;
        let engine = self.engine(&bucket);
        let url = table_url(&bucket, &location)?;
        let log_writes = self
            .node
            .watch_folder(&bucket, &format!("{location}_delta_log/"));
        let log_writes_seen = log_writes.load(Ordering::Acquire);
        let latest = self.latest_blocking(table, &url, engine.as_ref())?;
        let snapshot = match selector {
            VersionSelector::Latest => latest,
            VersionSelector::Version(version) => {
                self.version_blocking(&table.id, &url, engine.as_ref(), &latest, *version)?
            }
            VersionSelector::AsOfTimestamp(timestamp)
            | VersionSelector::UpToTimestamp(timestamp) => {
                if matches!(selector, VersionSelector::AsOfTimestamp(_)) {
                    let latest_ms = latest.get_timestamp(engine.as_ref()).map_err(|error| {
                        SharingError::internal(format!("latest commit time: {error}"))
                    })?;
                    if *timestamp > latest_ms {
                        return Err(timestamp_after_latest_version(
                            *timestamp,
                            latest.version(),
                            latest_ms,
                        ));
                    }
                }
                let commit = latest_version_as_of(
                    &latest,
                    engine.as_ref(),
                    *timestamp,
                    HistoryCommitType::Recreatable,
                )
                .map_err(|error| timestamp_error(*timestamp, &error.to_string()))?;
                self.version_blocking(&table.id, &url, engine.as_ref(), &latest, commit.version)?
            }
        };
        let described = describe(snapshot, bucket, location)?;
        if *selector == VersionSelector::Latest {
            self.latest_described
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(
                    table.id.clone(),
                    LatestSnapshot {
                        described: Arc::new(described.clone()),
                        log_writes,
                        log_writes_seen,
                    },
                );
        }
        Ok(described)
    }

    /// The earliest version whose commit is at or after `timestamp` (the `/version` route).
    pub fn version_at_or_after_blocking(&self, table: &Table, timestamp: i64) -> Result<u64> {
        if table.source_type == SourceType::Iceberg {
            let loaded = self.block_on(self.iceberg_table(table))?;
            return loaded.version_at_or_after(timestamp);
        }
        let (bucket, location) = table_location(table)?;
        let engine = self.engine(&bucket);
        let url = table_url(&bucket, &location)?;
        let latest = self.latest_blocking(table, &url, engine.as_ref())?;
        match first_version_after(
            &latest,
            engine.as_ref(),
            timestamp,
            HistoryCommitType::Published,
        ) {
            Ok(commit) => Ok(commit.version),
            Err(_) => {
                let latest_ts = latest.get_timestamp(engine.as_ref()).unwrap_or(i64::MAX);
                if timestamp > latest_ts {
                    Err(timestamp_after_latest_commit(timestamp, latest_ts))
                } else {
                    Ok(0)
                }
            }
        }
    }

    /// The current metadata of an Iceberg table: loaded again only after its `metadata/`
    /// folder was written through this node.
    pub async fn iceberg_table(&self, table: &Table) -> Result<Arc<IcebergTable>> {
        let (bucket, location) = table_location(table)?;
        let root = format!("{bucket}/{location}");
        let cached = {
            let loaded = self
                .iceberg_tables
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            loaded.get(&root).and_then(|loaded| {
                (loaded.metadata_writes.load(Ordering::Acquire) == loaded.metadata_writes_seen)
                    .then(|| loaded.table.clone())
            })
        };
        if let Some(table) = cached {
            return Ok(table);
        }
        let metadata_writes = self
            .node
            .watch_folder(&bucket, &format!("{location}metadata/"));
        let metadata_writes_seen = metadata_writes.load(Ordering::Acquire);
        let store = NodeObjectStore::new(self.node.clone(), bucket.clone());
        let loaded = iceberg::load_table(&store, &bucket, &location)
            .await
            .map_err(|error| table_error(table, error))?;
        let loaded = Arc::new(loaded);
        self.iceberg_tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(
                root,
                LoadedIceberg {
                    table: loaded.clone(),
                    metadata_writes,
                    metadata_writes_seen,
                },
            );
        Ok(loaded)
    }

    /// Resolves a version of an Iceberg table.
    pub async fn iceberg_snapshot(
        &self,
        table: &Table,
        selector: &VersionSelector,
    ) -> Result<TableSnapshot> {
        let loaded = self.iceberg_table(table).await?;
        let version = match selector {
            VersionSelector::Latest => loaded.latest(),
            VersionSelector::Version(version) => loaded.resolve_version(*version)?,
            VersionSelector::AsOfTimestamp(timestamp) => {
                let latest = loaded.latest();
                match latest.timestamp_ms() {
                    Some(latest_ms) if *timestamp > latest_ms => {
                        return Err(timestamp_after_latest_version(
                            *timestamp,
                            latest.version,
                            latest_ms,
                        ))
                    }
                    _ => loaded.resolve_timestamp(*timestamp)?,
                }
            }
            VersionSelector::UpToTimestamp(timestamp) => loaded.resolve_timestamp(*timestamp)?,
        };
        let metadata = loaded
            .delta_metadata(&version)
            .map_err(|error| table_error(table, error))?;
        let column_mapping = loaded.needs_column_mapping();
        Ok(TableSnapshot {
            version: version.version,
            bucket: loaded.bucket.clone(),
            location: loaded.root.clone(),
            protocol: loaded.delta_protocol(&version),
            metadata,
            needs: loaded.table_needs(&version),
            partition_columns: loaded.partition_columns(&version),
            physical_names: if column_mapping {
                loaded
                    .schema_of(&version)?
                    .fields
                    .iter()
                    .map(|field| (field.name.clone(), field.name.clone()))
                    .collect()
            } else {
                HashMap::new()
            },
            source: SnapshotSource::Iceberg {
                table: loaded,
                version,
            },
        })
    }

    /// Runs `future` to completion on the calling (blocking) thread, inside the replay
    /// pool's runtime.
    pub fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        let _runtime = self.executor.enter();
        futures::executor::block_on(future)
    }

    /// Commit time (ms) of a snapshot's version.
    pub fn timestamp_blocking(&self, snapshot: &TableSnapshot) -> Result<i64> {
        if let SnapshotSource::Iceberg { version, .. } = &snapshot.source {
            return Ok(version.timestamp_ms().unwrap_or(0));
        }
        let engine = self.engine(&snapshot.bucket);
        snapshot
            .delta()?
            .get_timestamp(engine.as_ref())
            .map_err(|error| SharingError::internal(format!("commit timestamp: {error}")))
    }

    fn latest_blocking(
        &self,
        table: &Table,
        url: &Url,
        engine: &dyn Engine,
    ) -> Result<SnapshotRef> {
        let table_id = table.id.as_str();
        let cached = self
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(table_id)
            .cloned()
            .filter(|snapshot| snapshot.table_root() == url);
        let snapshot = match cached {
            Some(previous) => Snapshot::builder_from(previous).build(engine),
            None => Snapshot::builder_for(url.as_str()).build(engine),
        }
        .map_err(|error| load_error(table, &error.to_string()))?;
        self.latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(table_id.to_string(), snapshot.clone());
        self.snapshots
            .insert((table_id.to_string(), snapshot.version()), snapshot.clone());
        Ok(snapshot)
    }

    fn version_blocking(
        &self,
        table_id: &str,
        url: &Url,
        engine: &dyn Engine,
        latest: &SnapshotRef,
        version: u64,
    ) -> Result<SnapshotRef> {
        if version == latest.version() {
            return Ok(latest.clone());
        }
        if version > latest.version() {
            return Err(SharingError::invalid(format!(
                "Cannot load table version {version} as the latest version is {}",
                latest.version()
            )));
        }
        if let Some(snapshot) = self.snapshots.get(&(table_id.to_string(), version)) {
            return Ok(snapshot);
        }
        let snapshot = Snapshot::builder_for(url.as_str())
            .at_version(version)
            .build(engine)
            .map_err(|error| {
                SharingError::invalid(format!("Cannot load table version {version}: {error}"))
            })?;
        self.snapshots
            .insert((table_id.to_string(), version), snapshot.clone());
        Ok(snapshot)
    }
}

/// Bucket and normalised location of a Delta table entry.
pub fn table_location(table: &Table) -> Result<(String, String)> {
    match (&table.bucket, &table.location) {
        (Some(bucket), Some(location)) => Ok((bucket.clone(), location.clone())),
        _ => Err(SharingError::new(
            ErrorKind::Unsupported,
            format!("table '{}' is not a Delta table in a bucket", table.name),
        )),
    }
}

/// The URL the kernel reads a table at; the object store is rooted at the bucket.
pub fn table_url(bucket: &str, location: &str) -> Result<Url> {
    let mut url = Url::parse(&format!("s3://{bucket}/"))
        .map_err(|error| SharingError::internal(format!("table url: {error}")))?;
    let mut segments = String::new();
    for segment in location.split('/').filter(|segment| !segment.is_empty()) {
        segments
            .push_str(&percent_encoding::utf8_percent_encode(segment, PATH_SEGMENT).to_string());
        segments.push('/');
    }
    url.set_path(&segments);
    Ok(url)
}

/// Characters escaped in a segment of a table URL's path.
pub(crate) const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

fn describe(snapshot: SnapshotRef, bucket: String, location: String) -> Result<TableSnapshot> {
    let configuration = snapshot.table_configuration();
    let protocol = serde_json::to_value(configuration.protocol())
        .map_err(|error| SharingError::internal(format!("protocol: {error}")))?;
    let metadata = serde_json::to_value(configuration.metadata())
        .map_err(|error| SharingError::internal(format!("metadata: {error}")))?;
    let column_mapping = configuration.column_mapping_mode() != ColumnMappingMode::None;
    let needs = TableNeeds::from_protocol(
        &protocol,
        column_mapping,
        metadata["configuration"]["delta.enableDeletionVectors"] == "true",
    );
    let partition_columns = configuration.metadata().partition_columns().to_vec();
    let mut physical_names = HashMap::new();
    if column_mapping {
        for field in snapshot.schema().fields() {
            let physical = field.physical_name(configuration.column_mapping_mode());
            physical_names.insert(field.name().to_string(), physical.to_string());
        }
    }
    Ok(TableSnapshot {
        version: snapshot.version(),
        source: SnapshotSource::Delta(snapshot),
        bucket,
        location,
        protocol,
        metadata,
        needs,
        partition_columns,
        physical_names,
    })
}

/// `table_error` when only the table's root is known.
fn iceberg_error(root: &str, error: SharingError) -> SharingError {
    match error.kind {
        ErrorKind::Internal | ErrorKind::NotFound => SharingError::new(
            ErrorKind::TableUnreadable,
            format!(
                "the Iceberg table at '{root}' cannot be read: {}",
                error.message
            ),
        ),
        _ => error,
    }
}

/// An Iceberg table's own files are broken: a clear error for that table, not a hidden one.
fn table_error(table: &Table, error: SharingError) -> SharingError {
    match error.kind {
        ErrorKind::Internal => SharingError::new(
            ErrorKind::TableUnreadable,
            format!("table '{}' cannot be read: {}", table.name, error.message),
        ),
        ErrorKind::NotFound => SharingError::new(
            ErrorKind::TableUnreadable,
            format!("table '{}' cannot be read: {}", table.name, error.message),
        ),
        _ => error,
    }
}

/// A Delta table's log cannot be loaded: a clear error naming the table, never a hidden
/// internal one (clients would retry it for minutes). A log with no commit left is 404.
fn load_error(table: &Table, message: &str) -> SharingError {
    let location = format!(
        "{}/{}_delta_log/",
        table.bucket.as_deref().unwrap_or_default(),
        table.location.as_deref().unwrap_or_default()
    );
    let missing = [
        "not found",
        "No files in log segment",
        "No table version found",
    ];
    if missing.iter().any(|marker| message.contains(marker)) {
        SharingError::not_found(format!(
            "table '{}' has no readable Delta log at {location} (was it deleted or moved?): \
             {message}",
            table.name
        ))
    } else {
        SharingError::new(
            ErrorKind::TableUnreadable,
            format!(
                "table '{}' cannot be read: log replay of {location} failed: {message}",
                table.name
            ),
        )
    }
}

/// `NNNNNNNNNNNNNNNNNNNN.json` (a commit, or a compacted range) or a checkpoint part.
fn is_log_entry(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() > 21
        && bytes[..20].iter().all(u8::is_ascii_digit)
        && bytes[20] == b'.'
        && (name.ends_with(".json") || name.contains(".checkpoint"))
}

fn timestamp_error(timestamp: i64, message: &str) -> SharingError {
    SharingError::invalid(format!(
        "The provided timestamp ({}) is not within the table's history: {message}",
        rfc3339(timestamp)
    ))
}

/// Time travel past the latest commit, in the words of the reference server's kernel path.
fn timestamp_after_latest_version(timestamp: i64, version: u64, latest_ms: i64) -> SharingError {
    SharingError::invalid(format!(
        "The provided timestamp {timestamp} ms ({}) is after the latest available version \
         {version}. Please use a timestamp less than or equal to {latest_ms} ms ({}).",
        rfc3339(timestamp),
        rfc3339(latest_ms)
    ))
}

/// A `startingTimestamp` past the latest commit, in Delta's words.
fn timestamp_after_latest_commit(timestamp: i64, latest_ms: i64) -> SharingError {
    let latest = rfc3339(latest_ms);
    SharingError::invalid(format!(
        "The provided timestamp ({}) is after the latest version available to this table \
         ({latest}). Please use a timestamp before or at {latest}.",
        rfc3339(timestamp)
    ))
}

fn rfc3339(timestamp_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp_ms) * 1_000_000)
        .ok()
        .and_then(|time| {
            time.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| timestamp_ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r12_log_entries_are_commits_and_checkpoints() {
        for name in [
            "00000000000000000000.json",
            "00000000000000000010.checkpoint.parquet",
            "00000000000000000010.checkpoint.0000000001.0000000002.parquet",
            "00000000000000000001.00000000000000000009.compacted.json",
        ] {
            assert!(is_log_entry(name), "{name}");
        }
        for name in [
            "_last_checkpoint",
            "00000000000000000000.crc",
            "0.json",
            "x.json",
        ] {
            assert!(!is_log_entry(name), "{name}");
        }
    }
}
