//! The table formats behind one seam: a shared table (Delta or Iceberg) is resolved to a
//! `TableSnapshot` (latest, by version, by timestamp) with its protocol, metadata and what a
//! client needs to read it; everything above this module sees only that, plus
//! `SnapshotSource` where a format's own reader must be called (the file lists, the change
//! feed). `delta` reads Delta logs with `delta_kernel`; `iceberg` reads Iceberg metadata and
//! manifests. Both read through the storage node's `ObjectStore` view and cache what they
//! loaded, refreshed when the node's write counter of the table's log folder moves.
//!
//! `delta_kernel` handlers block, so every call into it runs on the replay pool
//! (`spawn_blocking`, or `block_on` inside its runtime), never on a core thread.

pub mod delta;
pub mod iceberg;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use delta_kernel::snapshot::SnapshotRef;
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
use delta_kernel_default_engine::executor::TaskExecutor;
use object_store::ObjectStore;
use serde_json::Value;
use url::Url;

use crate::capabilities::TableNeeds;
use crate::catalog::{SourceType, Table, TableRootCheck};
use crate::error::{ErrorKind, Result, SharingError};
use crate::store::SharingStore;
use iceberg::{IcebergTable, TableVersion};

/// The shared tables of a node, in every format. One per node.
pub struct Tables {
    store: Arc<dyn SharingStore>,
    executor: Arc<TokioMultiThreadExecutor>,
    delta: delta::DeltaState,
    iceberg: iceberg::loaded::IcebergState,
    /// One lookup of a table's latest version at a time (`latest_gate`).
    latest_gates: LatestGates,
}

/// Per table, the gate its latest-version lookups pass one at a time: requests that find the
/// cached latest version past the freshness bound wait for the one lookup (or build) in
/// flight and then take what it found, so a table's store sees one lookup per bound, not
/// one per waiting request.
#[derive(Default)]
struct LatestGates(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl LatestGates {
    fn gate(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone()
    }
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
    /// (`.crc`) file the kernel read, or `listed`, the size of the version's cached file list.
    pub fn known_size(&self, listed: Option<TableSize>) -> Option<TableSize> {
        if let SnapshotSource::Delta(kernel) = &self.source {
            if let Some(stats) = kernel.get_file_stats_if_present() {
                return Some(TableSize {
                    files_bytes: u64::try_from(stats.table_size_bytes()).ok()?,
                    files: u64::try_from(stats.num_files()).ok()?,
                });
            }
        }
        listed
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

/// The size of a table version, sent in `metaData` (`size`, `numFiles`) when it is known
/// without listing the files again; Spark plans with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSize {
    pub files_bytes: u64,
    pub files: u64,
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

impl Tables {
    pub fn new(store: Arc<dyn SharingStore>, replay_threads: usize) -> Result<Arc<Tables>> {
        let executor =
            TokioMultiThreadExecutor::new_owned_runtime(Some(replay_threads.max(1)), None)
                .map_err(|error| SharingError::internal(format!("replay pool: {error}")))?;
        Ok(Arc::new(Tables {
            store,
            executor: Arc::new(executor),
            delta: delta::DeltaState::default(),
            iceberg: iceberg::loaded::IcebergState::default(),
            latest_gates: LatestGates::default(),
        }))
    }

    /// Waits for the gate of `key`'s latest-version lookups (see `LatestGates`).
    pub async fn latest_gate(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.latest_gates.gate(key).lock_owned().await
    }

    pub fn store(&self) -> &Arc<dyn SharingStore> {
        &self.store
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
        self.delta_snapshot_blocking(table, selector)
    }

    /// The earliest version whose commit is at or after `timestamp` (the `/version` route).
    pub fn version_at_or_after_blocking(&self, table: &Table, timestamp: i64) -> Result<u64> {
        if table.source_type == SourceType::Iceberg {
            let loaded = self.block_on(self.iceberg_table(table))?;
            return loaded.version_at_or_after(timestamp);
        }
        self.delta_version_at_or_after_blocking(table, timestamp)
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
}

/// What a cached value saw of its folder: the write counter (`SharingStore::write_counter`)
/// when the store counts writes, else when the folder was last looked at.
#[derive(Clone)]
pub(crate) struct FolderWatch {
    counter: Option<Arc<AtomicU64>>,
    seen: u64,
    looked_at: Instant,
    /// How long an uncounted folder is taken as unchanged (`SharingStore::freshness_bound`).
    recheck: Duration,
}

/// A lookup of a folder: the counter and the time when it started.
#[derive(Clone, Copy)]
pub(crate) struct LookupMark {
    counter: Option<u64>,
    at: Instant,
}

impl FolderWatch {
    /// The watch of `folder/` of `bucket` as it is now, before the value is read.
    pub(crate) fn start(store: &dyn SharingStore, bucket: &str, folder: &str) -> FolderWatch {
        let counter = store.write_counter(bucket, folder);
        let seen = counter
            .as_ref()
            .map_or(0, |counter| counter.load(Ordering::Acquire));
        FolderWatch {
            counter,
            seen,
            looked_at: Instant::now(),
            recheck: store.freshness_bound(),
        }
    }

    /// Nothing was written since (a counting store), or it was looked at less than the
    /// store's freshness bound ago (a store others write to).
    pub(crate) fn unchanged(&self) -> bool {
        match &self.counter {
            Some(counter) => counter.load(Ordering::Acquire) == self.seen,
            None => self.looked_at.elapsed() < self.recheck,
        }
    }

    /// Marks the start of a lookup, to record with `saw` when it found nothing new.
    pub(crate) fn mark(&self) -> LookupMark {
        LookupMark {
            counter: self
                .counter
                .as_ref()
                .map(|counter| counter.load(Ordering::Acquire)),
            at: Instant::now(),
        }
    }

    pub(crate) fn saw(&mut self, mark: LookupMark) {
        if let Some(counter) = mark.counter {
            self.seen = self.seen.max(counter);
        }
        self.looked_at = self.looked_at.max(mark.at);
    }
}

/// The share-time check of a table's path: it must hold a table of its format.
pub struct FormatRootCheck;

#[async_trait::async_trait]
impl TableRootCheck for FormatRootCheck {
    async fn check(
        &self,
        store: &dyn ObjectStore,
        source_type: SourceType,
        location: &str,
    ) -> Result<()> {
        match source_type {
            SourceType::Iceberg => iceberg::find_metadata_key(store, location).await.map(drop),
            SourceType::Delta => delta::find_delta_log(store, location).await,
            SourceType::Uniform => Ok(()),
        }
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

pub(crate) fn timestamp_error(timestamp: i64, message: &str) -> SharingError {
    SharingError::invalid(format!(
        "The provided timestamp ({}) is not within the table's history: {message}",
        rfc3339(timestamp)
    ))
}

/// Time travel past the latest commit, in the words of the reference server's kernel path.
pub(crate) fn timestamp_after_latest_version(
    timestamp: i64,
    version: u64,
    latest_ms: i64,
) -> SharingError {
    SharingError::invalid(format!(
        "The provided timestamp {timestamp} ms ({}) is after the latest available version \
         {version}. Please use a timestamp less than or equal to {latest_ms} ms ({}).",
        rfc3339(timestamp),
        rfc3339(latest_ms)
    ))
}

/// A `startingTimestamp` past the latest commit, in Delta's words.
pub(crate) fn timestamp_after_latest_commit(timestamp: i64, latest_ms: i64) -> SharingError {
    let latest = rfc3339(latest_ms);
    SharingError::invalid(format!(
        "The provided timestamp ({}) is after the latest version available to this table \
         ({latest}). Please use a timestamp before or at {latest}.",
        rfc3339(timestamp)
    ))
}

pub(crate) fn rfc3339(timestamp_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp_ms) * 1_000_000)
        .ok()
        .and_then(|time| {
            time.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| timestamp_ms.to_string())
}
