//! The Delta format: snapshots of Delta tables read with `delta_kernel` (0.30) through the
//! node's object store, cached per table and version, and the share-time check that a path
//! holds a Delta log.
//!
//! The latest snapshot is refreshed incrementally (only commits after the cached version are
//! read) whenever the table's `_delta_log/` folder was written through this node since the
//! latest snapshot was read (the storage node counts writes per watched folder), so a new
//! commit is seen at once and an unchanged table costs no lookup at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use delta_kernel::history_manager::{first_version_after, latest_version_as_of, HistoryCommitType};
use delta_kernel::snapshot::{Snapshot, SnapshotRef};
use delta_kernel::table_features::ColumnMappingMode;
use delta_kernel::Engine;
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
use delta_kernel_default_engine::DefaultEngine;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use super::{
    table_location, table_url, timestamp_after_latest_commit, timestamp_after_latest_version,
    timestamp_error, FolderWatch, SnapshotSource, TableSnapshot, Tables, VersionSelector,
};
use crate::capabilities::TableNeeds;
use crate::catalog::{SourceType, Table};
use crate::error::{ErrorKind, Result, SharingError};
use crate::store::library_error;

pub type KernelEngine = DefaultEngine<TokioMultiThreadExecutor>;

/// Snapshots kept per table and version.
const SNAPSHOTS_CACHED_MAX: u64 = 1024;

/// What the node keeps of Delta tables.
pub(super) struct DeltaState {
    engines: Mutex<HashMap<String, Arc<KernelEngine>>>,
    /// (table id, version) → snapshot.
    snapshots: moka::sync::Cache<(String, u64), SnapshotRef>,
    /// table id → newest snapshot seen.
    latest: Mutex<HashMap<String, SnapshotRef>>,
    /// table id → newest snapshot seen, described (what the latest fast path serves).
    latest_described: Mutex<HashMap<String, LatestSnapshot>>,
}

impl Default for DeltaState {
    fn default() -> Self {
        DeltaState {
            engines: Mutex::new(HashMap::new()),
            snapshots: moka::sync::Cache::new(SNAPSHOTS_CACHED_MAX),
            latest: Mutex::new(HashMap::new()),
            latest_described: Mutex::new(HashMap::new()),
        }
    }
}

/// The newest snapshot of a table and the write counter of its `_delta_log/` folder as it
/// was before that snapshot was read: while the counter has not moved, it is still the latest.
#[derive(Clone)]
struct LatestSnapshot {
    described: Arc<TableSnapshot>,
    log_writes: FolderWatch,
}

impl Tables {
    /// The kernel engine reading `bucket`.
    pub fn engine(&self, bucket: &str) -> Arc<KernelEngine> {
        let mut engines = self
            .delta
            .engines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        engines
            .entry(bucket.to_string())
            .or_insert_with(|| {
                let store = self.store.bucket(bucket);
                Arc::new(
                    DefaultEngine::builder(store)
                        .with_task_executor(self.executor.clone())
                        .build(),
                )
            })
            .clone()
    }

    /// The cached latest snapshot of `table`, if it is still the latest (see
    /// `latest_or_gate`); `None` for a table that is not Delta.
    pub async fn latest_if_current(&self, table: &Table) -> Option<Arc<TableSnapshot>> {
        if table.source_type != SourceType::Delta {
            return None;
        }
        self.latest_or_gate(table).await.ok()
    }

    /// The cached latest snapshot of `table` if it is still the latest: nothing was written
    /// into its `_delta_log/` through this node since it was read, or (a store others write
    /// to) it was looked at within the freshness bound: no lookup at all. Otherwise one
    /// metadata lookup (Delta writes every version as `_delta_log/<version>.json`, so a
    /// missing next commit file means no newer version), one per table at a time: when it
    /// finds a newer version the caller gets the gate still held, builds the latest snapshot
    /// under it, and the requests waiting meanwhile take what it stored.
    pub async fn latest_or_gate(
        &self,
        table: &Table,
    ) -> std::result::Result<Arc<TableSnapshot>, tokio::sync::OwnedMutexGuard<()>> {
        if let Some(latest) = self.cached_latest(table) {
            if latest.log_writes.unchanged() {
                return Ok(latest.described);
            }
        }
        let gate = self.latest_gate(&table.id).await;
        match self.looked_up_latest(table).await {
            Some(current) => Ok(current),
            None => Err(gate),
        }
    }

    fn cached_latest(&self, table: &Table) -> Option<LatestSnapshot> {
        let (bucket, location) = table_location(table).ok()?;
        self.delta
            .latest_described
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&table.id)
            .cloned()
            .filter(|latest| {
                latest.described.bucket == bucket && latest.described.location == location
            })
    }

    /// The cached latest snapshot, if still the latest, for a caller holding the table's gate:
    /// the lookup a request ahead of it made may have refreshed it.
    async fn looked_up_latest(&self, table: &Table) -> Option<Arc<TableSnapshot>> {
        let (bucket, location) = table_location(table).ok()?;
        let latest = self.cached_latest(table)?;
        if latest.log_writes.unchanged() {
            return Some(latest.described);
        }
        let lookup = latest.log_writes.mark();
        let version = latest.described.version;
        let next = object_store::path::Path::from(format!(
            "{location}_delta_log/{:020}.json",
            version + 1
        ));
        match self.store.bucket(&bucket).head(&next).await {
            Err(object_store::Error::NotFound { .. }) => {
                let mut described = self
                    .delta
                    .latest_described
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(entry) = described.get_mut(&table.id) {
                    if entry.described.version == version {
                        entry.log_writes.saw(lookup);
                    }
                }
                Some(latest.described)
            }
            _ => None,
        }
    }

    /// Resolves a snapshot of the Delta table `table`. Blocking.
    pub(super) fn delta_snapshot_blocking(
        &self,
        table: &Table,
        selector: &VersionSelector,
    ) -> Result<TableSnapshot> {
        let (bucket, location) = table_location(table)?;
        let engine = self.engine(&bucket);
        let url = table_url(&bucket, &location)?;
        let log_writes = FolderWatch::start(
            self.store.as_ref(),
            &bucket,
            &format!("{location}_delta_log/"),
        );
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
            self.delta
                .latest_described
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(
                    table.id.clone(),
                    LatestSnapshot {
                        described: Arc::new(described.clone()),
                        log_writes,
                    },
                );
        }
        Ok(described)
    }

    /// `version_at_or_after_blocking` of a Delta table.
    pub(super) fn delta_version_at_or_after_blocking(
        &self,
        table: &Table,
        timestamp: i64,
    ) -> Result<u64> {
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

    fn latest_blocking(
        &self,
        table: &Table,
        url: &Url,
        engine: &dyn Engine,
    ) -> Result<SnapshotRef> {
        let table_id = table.id.as_str();
        let cached = self
            .delta
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
        .map_err(|error| load_error(table, &error))?;
        self.delta
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(table_id.to_string(), snapshot.clone());
        self.delta
            .snapshots
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
        if let Some(snapshot) = self.delta.snapshots.get(&(table_id.to_string(), version)) {
            return Ok(snapshot);
        }
        let snapshot = Snapshot::builder_for(url.as_str())
            .at_version(version)
            .build(engine)
            .map_err(|error| {
                library_error(&error, |message| {
                    SharingError::invalid(format!("Cannot load table version {version}: {message}"))
                })
            })?;
        self.delta
            .snapshots
            .insert((table_id.to_string(), version), snapshot.clone());
        Ok(snapshot)
    }
}

/// Checks that `root` (a key prefix ending with `/`, or empty) holds a Delta table: its
/// `_delta_log/` has a commit or a checkpoint. The listing stops at the first one.
pub async fn find_delta_log(store: &dyn ObjectStore, root: &str) -> Result<()> {
    let log = format!("{root}_delta_log/");
    let prefix = object_store::path::Path::parse(&log)
        .map_err(|error| SharingError::invalid(format!("'{log}' is not a usable key: {error}")))?;
    let mut listing = store.list(Some(&prefix));
    while let Some(object) = listing
        .try_next()
        .await
        .map_err(super::iceberg::store_error)?
    {
        if object.location.filename().is_some_and(is_log_entry) {
            return Ok(());
        }
    }
    Err(SharingError::not_found(format!(
        "{log} holds no Delta commit or checkpoint"
    )))
}

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

/// A Delta table's log cannot be loaded: a clear error naming the table, never a hidden
/// internal one (clients would retry it for minutes). A log with no commit left is 404.
fn load_error(table: &Table, error: &(dyn std::error::Error + 'static)) -> SharingError {
    library_error(error, |message| broken_log_error(table, &message))
}

fn broken_log_error(table: &Table, message: &str) -> SharingError {
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
