//! Iceberg tables read through an `ObjectStore` view of one bucket and translated to the
//! Delta Sharing world: the current metadata file, snapshots as versions, the Delta
//! protocol and metadata of a version, its data files as Delta-style files, and the file
//! changes a snapshot made.
//!
//! Invariants:
//! - Every object read or served lies under the table root in the table's bucket. Locations
//!   in metadata are URIs: `s3://` (or `s3a://`, `s3n://`) URIs must name the same bucket;
//!   other schemes (a table written through `file://`) are accepted only under the table's
//!   own `location`, which is mapped onto the root. Anything else is an error.
//! - A version is served only when it is exact: a snapshot with live row-level delete files
//!   (position or equality deletes) and data files in formats other than Parquet are
//!   refused with `Unsupported`, never served without their deletes.
//! - Broken metadata (bad JSON, unreadable Avro, a missing manifest) is an error of that
//!   table only, with a message naming the file.
//! - Manifests are read one at a time: memory is one manifest's bytes plus one entry.
//!
//! `metadata` documents how snapshots map to versions.

pub mod loaded;
pub mod manifest;
pub mod metadata;
pub mod schema;
pub mod stats;

use std::collections::HashSet;
use std::ops::ControlFlow;

use futures::TryStreamExt;
use md5::Digest;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{json, Value};

use crate::capabilities::TableNeeds;
use crate::error::{ErrorKind, Result, SharingError};

use manifest::{ManifestEntry, ManifestFile};
pub use metadata::{Snapshot, TableMetadata, TableVersion};
use schema::{Primitive, Schema};
use stats::StatsLayout;

/// A loaded Iceberg table: its current metadata and where it came from.
#[derive(Clone, Debug)]
pub struct IcebergTable {
    pub bucket: String,
    /// Table root key inside the bucket, ending with `/`.
    pub root: String,
    /// Key of the metadata file this was parsed from.
    pub metadata_key: String,
    pub metadata: TableMetadata,
    column_mapping: bool,
    /// Main-branch versions, oldest first.
    versions: Vec<TableVersion>,
    /// Versions below the oldest retained one are the empty table (not expired history).
    starts_empty: bool,
}

/// One data file of a version, ready for a file line.
#[derive(Clone, Debug, PartialEq)]
pub struct IcebergDataFile {
    /// Object key inside the table's bucket.
    pub key: String,
    /// The path exactly as the manifest names it: stable, for file ids.
    pub file_path: String,
    pub size_bytes: u64,
    pub record_count: u64,
    /// Partition column (as in `partition_columns`) → Delta partition value string.
    pub partition_values: Vec<(String, Option<String>)>,
    /// Delta stats JSON string.
    pub stats: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Add,
    Remove,
}

/// A file added or removed by one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct FileChange {
    pub kind: ChangeKind,
    pub file: IcebergDataFile,
    /// False for `replace` snapshots (compaction): rows did not change.
    pub data_change: bool,
}

/// Finds the current metadata file under `root` (`PATH/`, holding `metadata/`):
/// `metadata/version-hint.text` (a version number N for `vN.metadata.json`, or a file
/// name), else the highest-numbered `*.metadata.json` (`00003-<uuid>.metadata.json`,
/// `v3.metadata.json`). Returns its key; `NotFound` when there is none.
pub async fn find_metadata_key(store: &dyn ObjectStore, root: &str) -> Result<String> {
    let root = normalised_root(root);
    let metadata_dir = format!("{root}metadata/");
    if let Some(hint) = read_optional(store, &format!("{metadata_dir}version-hint.text")).await? {
        let hint = String::from_utf8_lossy(&hint).trim().to_string();
        let name = match hint.parse::<u64>() {
            Ok(version) => format!("v{version}.metadata.json"),
            Err(_) => hint.rsplit('/').next().unwrap_or_default().to_string(),
        };
        let key = format!("{metadata_dir}{name}");
        if !name.is_empty() && exists(store, &key).await? {
            return Ok(key);
        }
    }
    let prefix = object_path(&metadata_dir)?;
    let mut best: Option<(u64, String)> = None;
    let mut listing = store.list(Some(&prefix));
    while let Some(object) = listing.try_next().await.map_err(store_error)? {
        let key = object.location.as_ref().to_string();
        let Some(name) = key.strip_prefix(&metadata_dir) else {
            continue;
        };
        if name.contains('/') {
            continue;
        }
        if let Some(number) = metadata_file_number(name) {
            let candidate = (number, key);
            if best.as_ref().is_none_or(|current| candidate > *current) {
                best = Some(candidate);
            }
        }
    }
    best.map(|(_, key)| key).ok_or_else(|| {
        SharingError::not_found(format!(
            "no Iceberg metadata under {root}: neither metadata/version-hint.text nor \
             metadata/*.metadata.json"
        ))
    })
}

/// Loads the current metadata of the Iceberg table at `root` in the store's bucket.
pub async fn load_table(store: &dyn ObjectStore, bucket: &str, root: &str) -> Result<IcebergTable> {
    let metadata_key = find_metadata_key(store, root).await?;
    let bytes = read_required(store, &metadata_key, "metadata file").await?;
    IcebergTable::from_metadata_bytes(bucket, root, &metadata_key, &bytes)
}

/// Visits the data files of `version` in manifest order until `visit` breaks. Refuses a
/// version with live row-level delete files before visiting any file.
pub async fn data_files(
    store: &dyn ObjectStore,
    table: &IcebergTable,
    version: &TableVersion,
    mut visit: impl FnMut(IcebergDataFile) -> ControlFlow<()>,
) -> Result<()> {
    if version.snapshot.is_none() {
        return Ok(());
    }
    let manifests = check_servable(store, table, version).await?;
    let translator = table.file_translator(version)?;
    for manifest in manifests
        .iter()
        .filter(|m| m.content == manifest::CONTENT_DATA)
    {
        let bytes = read_required(
            store,
            &table.object_key(&manifest.manifest_path)?,
            "manifest",
        )
        .await?;
        let spec_id = table.manifest_spec(manifest, &bytes)?;
        let mut stopped = false;
        manifest::for_each_entry(&bytes, &manifest.manifest_path, |entry| {
            if entry.status == manifest::STATUS_DELETED {
                return Ok(ControlFlow::Continue(()));
            }
            let file = translator.translate(table, spec_id, &entry)?;
            let flow = visit(file);
            stopped = flow.is_break();
            Ok(flow)
        })?;
        if stopped {
            break;
        }
    }
    Ok(())
}

/// Checks that `version` can be served exactly (no live row-level delete files, a schema
/// that translates) and returns its manifests. Reads only the delete manifests.
pub async fn check_servable(
    store: &dyn ObjectStore,
    table: &IcebergTable,
    version: &TableVersion,
) -> Result<Vec<ManifestFile>> {
    let Some(snapshot) = &version.snapshot else {
        return Ok(Vec::new());
    };
    table.file_translator(version)?;
    let manifests = table.manifest_files(store, snapshot).await?;
    for manifest in manifests
        .iter()
        .filter(|m| m.content != manifest::CONTENT_DATA)
    {
        let bytes = read_required(
            store,
            &table.object_key(&manifest.manifest_path)?,
            "manifest",
        )
        .await?;
        manifest::for_each_entry(&bytes, &manifest.manifest_path, |entry| {
            if entry.status == manifest::STATUS_DELETED {
                return Ok(ControlFlow::Continue(()));
            }
            Err(table.row_level_error(snapshot, entry.data_file.content))
        })?;
    }
    Ok(manifests)
}

/// The files `version`'s snapshot added and removed (file level). Row-level delete files
/// added by it are refused ("needs row-level changes").
pub async fn snapshot_changes(
    store: &dyn ObjectStore,
    table: &IcebergTable,
    version: &TableVersion,
) -> Result<Vec<FileChange>> {
    let Some(snapshot) = &version.snapshot else {
        return Ok(Vec::new());
    };
    let data_change = snapshot.operation() != "replace";
    let translator = table.file_translator(version)?;
    let mut changes = Vec::new();
    for manifest in table.manifest_files(store, snapshot).await? {
        // Entries added or deleted by a snapshot live only in manifests it wrote.
        if manifest
            .added_snapshot_id
            .is_some_and(|id| id != snapshot.snapshot_id)
        {
            continue;
        }
        let bytes = read_required(
            store,
            &table.object_key(&manifest.manifest_path)?,
            "manifest",
        )
        .await?;
        let spec_id = table.manifest_spec(&manifest, &bytes)?;
        manifest::for_each_entry(&bytes, &manifest.manifest_path, |entry| {
            let by_this_snapshot = entry
                .snapshot_id
                .or(manifest.added_snapshot_id)
                .is_some_and(|id| id == snapshot.snapshot_id);
            let kind = match entry.status {
                manifest::STATUS_ADDED if by_this_snapshot => ChangeKind::Add,
                manifest::STATUS_DELETED if by_this_snapshot => ChangeKind::Remove,
                _ => return Ok(ControlFlow::Continue(())),
            };
            if entry.data_file.content != manifest::CONTENT_DATA {
                if kind == ChangeKind::Remove {
                    // Delete files retired together with the files they applied to.
                    return Ok(ControlFlow::Continue(()));
                }
                return Err(table.row_level_error(snapshot, entry.data_file.content));
            }
            let file = translator.translate(table, spec_id, &entry)?;
            changes.push(FileChange {
                kind,
                file,
                data_change,
            });
            Ok(ControlFlow::Continue(()))
        })?;
    }
    Ok(changes)
}

impl IcebergTable {
    /// Parses metadata already read from `metadata_key`.
    pub fn from_metadata_bytes(
        bucket: &str,
        root: &str,
        metadata_key: &str,
        bytes: &[u8],
    ) -> Result<IcebergTable> {
        let metadata = TableMetadata::parse(bytes, metadata_key)?;
        metadata.current_schema()?;
        if let Some(current) = metadata.current_snapshot_id {
            if metadata.snapshot(current).is_none() {
                return Err(SharingError::internal(format!(
                    "Iceberg metadata {metadata_key}: current snapshot {current} is not listed"
                )));
            }
        }
        let column_mapping = schema::needs_column_mapping(&metadata.schemas);
        let versions = metadata.main_versions();
        let starts_empty = metadata.history_starts_empty(&versions);
        Ok(IcebergTable {
            bucket: bucket.to_string(),
            root: normalised_root(root),
            metadata_key: metadata_key.to_string(),
            metadata,
            column_mapping,
            versions,
            starts_empty,
        })
    }

    /// Main-branch versions, oldest first (without the empty version 0).
    pub fn versions(&self) -> &[TableVersion] {
        &self.versions
    }

    /// The current version: the current snapshot's, or 0 for a table without snapshots.
    pub fn latest_version(&self) -> u64 {
        self.versions.last().map_or(0, |latest| latest.version)
    }

    pub fn latest(&self) -> TableVersion {
        self.versions.last().cloned().unwrap_or(TableVersion {
            version: 0,
            snapshot: None,
        })
    }

    /// The table as of `version`: the newest main-branch snapshot whose version is at most
    /// `version`. Versions after the latest, and versions older than the retained history,
    /// are `InvalidParameter`.
    pub fn resolve_version(&self, version: u64) -> Result<TableVersion> {
        let latest = self.latest_version();
        if version > latest {
            return Err(SharingError::invalid(format!(
                "Cannot load table version {version} as the latest version is {latest}"
            )));
        }
        match self.versions.iter().rev().find(|v| v.version <= version) {
            Some(found) => Ok(found.clone()),
            None if self.starts_empty => Ok(TableVersion {
                version,
                snapshot: None,
            }),
            None => Err(SharingError::invalid(format!(
                "Cannot load table version {version}: the oldest retained version is {}",
                self.versions.first().map_or(0, |v| v.version)
            ))),
        }
    }

    /// The table as of `timestamp_ms`: the newest main-branch snapshot committed at or
    /// before it. A time before the first retained snapshot is `InvalidParameter`.
    pub fn resolve_timestamp(&self, timestamp_ms: i64) -> Result<TableVersion> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.timestamp_ms().is_some_and(|at| at <= timestamp_ms))
            .cloned()
            .ok_or_else(|| {
                SharingError::invalid(format!(
                    "The provided timestamp ({timestamp_ms} ms) is before the earliest version \
                     available"
                ))
            })
    }

    /// The first main-branch version committed at or after `timestamp_ms`. A time after the
    /// latest commit is `InvalidParameter`.
    pub fn version_at_or_after(&self, timestamp_ms: i64) -> Result<u64> {
        self.versions
            .iter()
            .find(|v| v.timestamp_ms().is_some_and(|at| at >= timestamp_ms))
            .map(|v| v.version)
            .ok_or_else(|| {
                SharingError::invalid(format!(
                    "The provided timestamp ({timestamp_ms} ms) is after the latest version \
                     available"
                ))
            })
    }

    /// Whether the Delta form carries Iceberg field ids as column mapping ids (a column
    /// was renamed, or a name re-used). Decided over every schema the metadata keeps, so
    /// it is the same for every version.
    pub fn needs_column_mapping(&self) -> bool {
        self.column_mapping
    }

    /// The schema `version` was written with (the current schema for version 0 or when
    /// the snapshot names none).
    pub fn schema_of(&self, version: &TableVersion) -> Result<&Schema> {
        let schema_id = version.snapshot.as_ref().and_then(|s| s.schema_id);
        match schema_id.and_then(|id| self.metadata.schema(id)) {
            Some(schema) => Ok(schema),
            None => self.metadata.current_schema(),
        }
    }

    /// The Delta protocol (the inner object): reader 1 / writer 2; reader 2 / writer 5
    /// with column mapping; reader 3 / writer 7 with the `timestampNtz` feature (and
    /// `columnMapping` when needed) when the schema has a timestamp without zone.
    pub fn delta_protocol(&self, version: &TableVersion) -> Value {
        let timestamp_ntz = self
            .schema_of(version)
            .is_ok_and(|schema| schema.has_timestamp_ntz());
        if timestamp_ntz {
            let mut features = vec!["timestampNtz"];
            if self.column_mapping {
                features.push("columnMapping");
            }
            let mut writer_features = features.clone();
            writer_features.push("changeDataFeed");
            return json!({
                "minReaderVersion": 3,
                "minWriterVersion": 7,
                "readerFeatures": features,
                "writerFeatures": writer_features,
            });
        }
        // Writer 4 carries the change data feed: every version's changes are exact at the
        // file level (`/changes`).
        if self.column_mapping {
            json!({"minReaderVersion": 2, "minWriterVersion": 5})
        } else {
            json!({"minReaderVersion": 1, "minWriterVersion": 4})
        }
    }

    /// What a client must support to read `version` in the Delta form.
    pub fn table_needs(&self, version: &TableVersion) -> TableNeeds {
        TableNeeds::from_protocol(&self.delta_protocol(version), self.column_mapping, false)
    }

    /// The Delta metadata (the inner object: id, format, schemaString, partitionColumns,
    /// configuration, createdTime) of `version`.
    pub fn delta_metadata(&self, version: &TableVersion) -> Result<Value> {
        let schema = self.schema_of(version)?;
        let schema_string = schema::delta_schema_string(schema, self.column_mapping)?;
        let mut configuration = serde_json::Map::new();
        configuration.insert("delta.enableChangeDataFeed".into(), json!("true"));
        if self.column_mapping {
            configuration.insert("delta.columnMapping.mode".into(), json!("id"));
            let max_id = self
                .metadata
                .last_column_id
                .unwrap_or_else(|| max_field_id(&self.metadata.schemas));
            configuration.insert(
                "delta.columnMapping.maxColumnId".into(),
                json!(max_id.to_string()),
            );
        }
        let mut metadata = json!({
            "id": self.table_id(),
            "format": {"provider": "parquet", "options": {}},
            "schemaString": schema_string,
            "partitionColumns": self.partition_columns(version),
            "configuration": configuration,
        });
        if let Some(created_ms) = self.metadata.created_ms() {
            metadata["createdTime"] = json!(created_ms);
        }
        Ok(metadata)
    }

    /// Delta partition columns of `version`: the source columns of the identity fields of
    /// the default partition spec, when every spec the table ever had partitions by the
    /// same identity columns (otherwise none: files are served unpartitioned, and the data
    /// files still hold those columns). Only top-level columns of types Delta partitions
    /// by are used.
    pub fn partition_columns(&self, version: &TableVersion) -> Vec<String> {
        self.partition_sources(version)
            .into_iter()
            .map(|(_, name, _)| name)
            .collect()
    }

    /// The object key in the table's bucket of a location URI from the metadata.
    pub fn object_key(&self, uri: &str) -> Result<String> {
        let outside = |why: &str| {
            SharingError::new(
                ErrorKind::Unsupported,
                format!(
                    "Iceberg location {uri} {why} (table root {}/{})",
                    self.bucket, self.root
                ),
            )
        };
        let key = if let Some(rest) = ["s3://", "s3a://", "s3n://"]
            .iter()
            .find_map(|scheme| uri.strip_prefix(scheme))
        {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket != self.bucket {
                return Err(outside("is in another bucket"));
            }
            key.to_string()
        } else {
            let location = self.metadata.location.trim_end_matches('/');
            match uri
                .strip_prefix(location)
                .and_then(|rest| rest.strip_prefix('/'))
            {
                Some(relative) => format!("{}{relative}", self.root),
                None => return Err(outside("is not inside the table location")),
            }
        };
        if !key.starts_with(&self.root) || key.split('/').any(|part| part == "..") {
            return Err(outside("is outside the table root"));
        }
        Ok(key)
    }

    /// The Delta table id: the Iceberg `table-uuid`, or (v1 tables may lack one) a UUID
    /// derived from the bucket and root, so it is stable across commits.
    pub fn table_id(&self) -> String {
        if let Some(uuid) = &self.metadata.table_uuid {
            return uuid.clone();
        }
        let digest = md5::Md5::digest(format!("iceberg:{}/{}", self.bucket, self.root));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest);
        uuid::Builder::from_md5_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string()
    }

    /// Identity partition sources of `version`: (source id, column name, type).
    fn partition_sources(&self, version: &TableVersion) -> Vec<(i32, String, Primitive)> {
        let Ok(schema) = self.schema_of(version) else {
            return Vec::new();
        };
        let identity_sources = |spec: &metadata::PartitionSpec| -> Vec<i32> {
            spec.fields
                .iter()
                .filter(|field| field.transform == "identity")
                .map(|field| field.source_id)
                .collect()
        };
        let Some(default_spec) = self.metadata.partition_spec(self.metadata.default_spec_id) else {
            return Vec::new();
        };
        let default_sources = identity_sources(default_spec);
        let expected: HashSet<i32> = default_sources.iter().copied().collect();
        let consistent =
            self.metadata.partition_specs.iter().all(|spec| {
                identity_sources(spec).into_iter().collect::<HashSet<i32>>() == expected
            });
        if !consistent {
            return Vec::new();
        }
        default_sources
            .into_iter()
            .filter_map(|source_id| {
                let field = schema.fields.iter().find(|field| field.id == source_id)?;
                let schema::IcebergType::Primitive(primitive) = &field.field_type else {
                    return None;
                };
                let partitionable = !matches!(
                    primitive,
                    Primitive::Uuid
                        | Primitive::Fixed(_)
                        | Primitive::Binary
                        | Primitive::Time
                        | Primitive::Other(_)
                );
                partitionable.then(|| (source_id, field.name.clone(), primitive.clone()))
            })
            .collect()
    }

    async fn manifest_files(
        &self,
        store: &dyn ObjectStore,
        snapshot: &Snapshot,
    ) -> Result<Vec<ManifestFile>> {
        if let Some(list) = &snapshot.manifest_list {
            let bytes = read_required(store, &self.object_key(list)?, "manifest list").await?;
            return manifest::read_manifest_list(&bytes, list);
        }
        let Some(manifests) = &snapshot.manifests else {
            return Err(SharingError::internal(format!(
                "Iceberg snapshot {} in {} has neither a manifest list nor manifests",
                snapshot.snapshot_id, self.metadata_key
            )));
        };
        Ok(manifests
            .iter()
            .map(|path| ManifestFile {
                manifest_path: path.clone(),
                content: manifest::CONTENT_DATA,
                partition_spec_id: None,
                added_snapshot_id: None,
            })
            .collect())
    }

    fn manifest_spec(&self, manifest: &ManifestFile, bytes: &[u8]) -> Result<i32> {
        if let Some(spec_id) = manifest.partition_spec_id {
            return Ok(spec_id);
        }
        Ok(manifest::manifest_spec_id(bytes, &manifest.manifest_path)?
            .unwrap_or(self.metadata.default_spec_id))
    }

    fn row_level_error(&self, snapshot: &Snapshot, content: i32) -> SharingError {
        let kind = match content {
            manifest::CONTENT_POSITION_DELETES => "position delete files",
            manifest::CONTENT_EQUALITY_DELETES => "equality delete files",
            _ => "delete files",
        };
        SharingError::new(
            ErrorKind::Unsupported,
            format!(
                "Iceberg snapshot {} of {}/{} has {kind} (row-level deletes), which Delta \
                 Sharing cannot serve; it needs row-level changes",
                snapshot.snapshot_id, self.bucket, self.root
            ),
        )
    }

    fn file_translator(&self, version: &TableVersion) -> Result<FileTranslator> {
        let schema = self.schema_of(version)?;
        Ok(FileTranslator {
            layout: StatsLayout::new(schema, &self.metadata.properties),
            partition_sources: self.partition_sources(version),
        })
    }
}

/// What turns manifest entries of one version into `IcebergDataFile`s.
struct FileTranslator {
    layout: StatsLayout,
    partition_sources: Vec<(i32, String, Primitive)>,
}

impl FileTranslator {
    fn translate(
        &self,
        table: &IcebergTable,
        spec_id: i32,
        entry: &ManifestEntry,
    ) -> Result<IcebergDataFile> {
        let data_file = &entry.data_file;
        if !data_file.file_format.eq_ignore_ascii_case("parquet") {
            return Err(SharingError::new(
                ErrorKind::Unsupported,
                format!(
                    "Iceberg data file {} is {}; Delta Sharing serves Parquet only",
                    data_file.file_path, data_file.file_format
                ),
            ));
        }
        let mut partition_values = Vec::with_capacity(self.partition_sources.len());
        if !self.partition_sources.is_empty() {
            let spec = table.metadata.partition_spec(spec_id).ok_or_else(|| {
                SharingError::internal(format!(
                    "Iceberg data file {} uses partition spec {spec_id}, which {} lacks",
                    data_file.file_path, table.metadata_key
                ))
            })?;
            for (source_id, column, primitive) in &self.partition_sources {
                let position = spec
                    .fields
                    .iter()
                    .position(|f| f.transform == "identity" && f.source_id == *source_id);
                let value = position.and_then(|position| {
                    let name = &spec.fields[position].name;
                    data_file
                        .partition
                        .iter()
                        .find(|(field_name, _)| field_name == name)
                        .or_else(|| data_file.partition.get(position))
                        .map(|(_, value)| value)
                });
                let Some(value) = value else {
                    return Err(SharingError::internal(format!(
                        "Iceberg data file {} has no partition value for {column}",
                        data_file.file_path
                    )));
                };
                let scalar = stats::scalar_from_avro(value, primitive).map_err(|message| {
                    SharingError::internal(format!(
                        "Iceberg data file {}: {message}",
                        data_file.file_path
                    ))
                })?;
                let text = scalar.as_ref().and_then(stats::partition_string);
                partition_values.push((column.clone(), text));
            }
        }
        Ok(IcebergDataFile {
            key: table.object_key(&data_file.file_path)?,
            file_path: data_file.file_path.clone(),
            size_bytes: data_file.file_size_in_bytes.max(0).unsigned_abs(),
            record_count: data_file.metrics.record_count.max(0).unsigned_abs(),
            partition_values,
            stats: self.layout.delta_stats(&data_file.metrics),
        })
    }
}

fn normalised_root(root: &str) -> String {
    let trimmed = root.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

/// The number in `00003-<uuid>.metadata.json`, `v3.metadata.json` or `v3.gz.metadata.json`.
fn metadata_file_number(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".metadata.json")?;
    let stem = stem.strip_prefix('v').unwrap_or(stem);
    let digits: &str = stem
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or_default();
    if digits.is_empty() {
        return None;
    }
    digits.parse().ok()
}

fn max_field_id(schemas: &[Schema]) -> i32 {
    schemas
        .iter()
        .flat_map(|schema| schema.struct_paths().into_keys())
        .chain(
            schemas
                .iter()
                .flat_map(|schema| schema.fields.iter().map(|f| f.id)),
        )
        .max()
        .unwrap_or(0)
}

fn object_path(key: &str) -> Result<Path> {
    Path::parse(key).map_err(|error| {
        SharingError::new(
            ErrorKind::Unsupported,
            format!("Iceberg object key {key:?} is not usable: {error}"),
        )
    })
}

pub(crate) fn store_error(error: object_store::Error) -> SharingError {
    crate::store::object_error(error)
}

async fn read_optional(store: &dyn ObjectStore, key: &str) -> Result<Option<bytes::Bytes>> {
    match store.get(&object_path(key)?).await {
        Ok(result) => Ok(Some(result.bytes().await.map_err(store_error)?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(other) => Err(store_error(other)),
    }
}

async fn read_required(store: &dyn ObjectStore, key: &str, what: &str) -> Result<bytes::Bytes> {
    read_optional(store, key)
        .await?
        .ok_or_else(|| SharingError::internal(format!("Iceberg {what} {key} is missing")))
}

async fn exists(store: &dyn ObjectStore, key: &str) -> Result<bool> {
    match store.head(&object_path(key)?).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(other) => Err(store_error(other)),
    }
}

#[cfg(test)]
mod tests;
