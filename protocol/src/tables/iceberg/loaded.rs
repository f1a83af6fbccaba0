//! Iceberg tables as the node keeps them loaded: the current metadata of each shared table
//! root, loaded again only after its `metadata/` folder was written through this node, and
//! the `TableSnapshot` of a version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::IcebergTable;
use crate::catalog::Table;
use crate::error::{ErrorKind, Result, SharingError};
use crate::tables::{
    table_location, timestamp_after_latest_version, FolderWatch, SnapshotSource, TableSnapshot,
    Tables, VersionSelector,
};

/// table root `bucket/location` → its loaded Iceberg metadata.
#[derive(Default)]
pub(crate) struct IcebergState {
    tables: Mutex<HashMap<String, LoadedIceberg>>,
}

/// A loaded Iceberg table and the write counter of its `metadata/` folder as it was before
/// the table was loaded: while it has not moved, the loaded metadata is current.
struct LoadedIceberg {
    table: Arc<IcebergTable>,
    metadata_writes: FolderWatch,
}

impl Tables {
    /// The current metadata of an Iceberg table: loaded again only after its `metadata/`
    /// folder was written through this node.
    pub async fn iceberg_table(&self, table: &Table) -> Result<Arc<IcebergTable>> {
        let (bucket, location) = table_location(table)?;
        let root = format!("{bucket}/{location}");
        if let Some(table) = self.iceberg_unchanged(&root) {
            return Ok(table);
        }
        // One load per table at a time; those waiting take what it loaded.
        let _one_load = self.latest_gate(&root).await;
        if let Some(table) = self.iceberg_unchanged(&root) {
            return Ok(table);
        }
        let metadata_writes = FolderWatch::start(
            self.store.as_ref(),
            &bucket,
            &format!("{location}metadata/"),
        );
        let store = self.store.bucket(&bucket);
        let loaded = super::load_table(store.as_ref(), &bucket, &location)
            .await
            .map_err(|error| table_error(table, error))?;
        let loaded = Arc::new(loaded);
        self.iceberg
            .tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(
                root,
                LoadedIceberg {
                    table: loaded.clone(),
                    metadata_writes,
                },
            );
        Ok(loaded)
    }

    fn iceberg_unchanged(&self, root: &str) -> Option<Arc<IcebergTable>> {
        let loaded = self
            .iceberg
            .tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loaded.get(root).and_then(|loaded| {
            loaded
                .metadata_writes
                .unchanged()
                .then(|| loaded.table.clone())
        })
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
}

/// `table_error` when only the table's root is known.
pub(crate) fn iceberg_error(root: &str, error: SharingError) -> SharingError {
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
