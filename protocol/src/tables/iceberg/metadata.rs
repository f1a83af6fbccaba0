//! Iceberg table metadata JSON (format v1 and v2), parsed into one normalised form, and the
//! stable mapping from main-branch snapshots to Delta Sharing versions.
//!
//! Version mapping (the invariant the sharing routes rely on):
//! - Version 0 is the table before its first snapshot (no files).
//! - A snapshot's version is its `sequence-number` when every retained snapshot on the main
//!   branch has one and they increase strictly along the branch (every v2 table written
//!   as v2). Sequence numbers never change, so versions are stable under expiry; they may
//!   skip numbers (commits to other branches use numbers too).
//! - Otherwise (v1 tables, or v2 tables upgraded from v1 whose oldest snapshots have no
//!   sequence number) a snapshot's version is its 1-based position in the main branch's
//!   retained ancestry. Caveat: expiring the oldest snapshots renumbers these versions.
//! - Version N selects the newest main-branch snapshot whose version is at most N.

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::{Result, SharingError};

use super::schema::Schema;

/// Parsed table metadata, v1 and v2 normalised to the v2 shape.
#[derive(Clone, Debug)]
pub struct TableMetadata {
    pub format_version: u8,
    pub table_uuid: Option<String>,
    /// The table location URI, e.g. `s3://bucket/warehouse/db/table`.
    pub location: String,
    pub last_updated_ms: Option<i64>,
    pub last_column_id: Option<i32>,
    pub schemas: Vec<Schema>,
    pub current_schema_id: i32,
    pub partition_specs: Vec<PartitionSpec>,
    pub default_spec_id: i32,
    pub properties: HashMap<String, String>,
    pub current_snapshot_id: Option<i64>,
    pub snapshots: Vec<Snapshot>,
    /// Oldest known timestamps from the metadata and snapshot logs (ms).
    pub earliest_log_ms: Option<i64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionSpec {
    #[serde(default)]
    pub spec_id: i32,
    pub fields: Vec<PartitionField>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionField {
    pub source_id: i32,
    /// Absent in some v1 metadata: assigned 1000, 1001, ... in spec order.
    #[serde(default)]
    pub field_id: Option<i32>,
    pub name: String,
    pub transform: String,
}

/// One snapshot from the metadata.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    pub snapshot_id: i64,
    #[serde(default)]
    pub parent_snapshot_id: Option<i64>,
    /// Absent in v1: 0.
    #[serde(default)]
    pub sequence_number: i64,
    pub timestamp_ms: i64,
    #[serde(default)]
    pub manifest_list: Option<String>,
    /// v1 snapshots may list manifests directly instead of a manifest list.
    #[serde(default)]
    pub manifests: Option<Vec<String>>,
    #[serde(default)]
    pub summary: HashMap<String, String>,
    #[serde(default)]
    pub schema_id: Option<i32>,
}

impl Snapshot {
    /// `append`, `replace`, `overwrite` or `delete`; empty when the summary has none.
    pub fn operation(&self) -> &str {
        self.summary
            .get("operation")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// A Delta Sharing version of the table: a main-branch snapshot, or the empty table
/// before the first snapshot (`snapshot` is `None`, `version` is 0).
#[derive(Clone, Debug, PartialEq)]
pub struct TableVersion {
    pub version: u64,
    pub snapshot: Option<Snapshot>,
}

impl TableVersion {
    /// Commit time in ms since the epoch; `None` for the empty version 0.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.snapshot.as_ref().map(|snapshot| snapshot.timestamp_ms)
    }
}

impl TableMetadata {
    /// Parses metadata JSON. `file` names the metadata file in errors.
    pub fn parse(bytes: &[u8], file: &str) -> Result<TableMetadata> {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            return Err(SharingError::new(
                crate::error::ErrorKind::Unsupported,
                format!("Iceberg metadata {file} is gzip-compressed, which is not supported"),
            ));
        }
        let raw: RawMetadata = serde_json::from_slice(bytes)
            .map_err(|error| broken(file, format!("not Iceberg table metadata: {error}")))?;
        raw.normalise(file)
    }

    pub fn schema(&self, schema_id: i32) -> Option<&Schema> {
        self.schemas
            .iter()
            .find(|schema| schema.schema_id == schema_id)
    }

    pub fn current_schema(&self) -> Result<&Schema> {
        self.schema(self.current_schema_id).ok_or_else(|| {
            SharingError::internal(format!(
                "Iceberg metadata of {} has no schema with the current id {}",
                self.location, self.current_schema_id
            ))
        })
    }

    pub fn partition_spec(&self, spec_id: i32) -> Option<&PartitionSpec> {
        self.partition_specs
            .iter()
            .find(|spec| spec.spec_id == spec_id)
    }

    pub fn snapshot(&self, snapshot_id: i64) -> Option<&Snapshot> {
        self.snapshots
            .iter()
            .find(|snapshot| snapshot.snapshot_id == snapshot_id)
    }

    /// Main-branch versions, oldest first: the retained ancestors of the current snapshot.
    pub fn main_versions(&self) -> Vec<TableVersion> {
        let by_id: HashMap<i64, &Snapshot> = self
            .snapshots
            .iter()
            .map(|snapshot| (snapshot.snapshot_id, snapshot))
            .collect();
        let mut ancestry = Vec::new();
        let mut next = self.current_snapshot_id;
        while let Some(id) = next {
            // A cycle would be broken metadata; stop rather than loop.
            if ancestry.len() > self.snapshots.len() {
                break;
            }
            let Some(snapshot) = by_id.get(&id) else {
                break;
            };
            ancestry.push(*snapshot);
            next = snapshot.parent_snapshot_id;
        }
        ancestry.reverse();
        let by_sequence = ancestry.windows(2).all(|pair| {
            pair[0].sequence_number > 0 && pair[0].sequence_number < pair[1].sequence_number
        }) && ancestry.iter().all(|snapshot| snapshot.sequence_number > 0);
        ancestry
            .into_iter()
            .enumerate()
            .map(|(position, snapshot)| TableVersion {
                version: if by_sequence {
                    snapshot.sequence_number.unsigned_abs()
                } else {
                    position as u64 + 1
                },
                snapshot: Some(snapshot.clone()),
            })
            .collect()
    }

    /// Whether the oldest retained main-branch snapshot is the table's first one, so
    /// versions below it are the empty table rather than expired history.
    pub fn history_starts_empty(&self, versions: &[TableVersion]) -> bool {
        match versions.first().and_then(|first| first.snapshot.as_ref()) {
            None => true,
            Some(snapshot) => snapshot.parent_snapshot_id.is_none(),
        }
    }

    /// The oldest timestamp the metadata knows: best-effort table creation time.
    pub fn created_ms(&self) -> Option<i64> {
        let snapshots = self.snapshots.iter().map(|snapshot| snapshot.timestamp_ms);
        snapshots
            .chain(self.earliest_log_ms)
            .chain(self.last_updated_ms)
            .min()
    }
}

fn broken(file: &str, message: String) -> SharingError {
    SharingError::internal(format!("Iceberg metadata {file}: {message}"))
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMetadata {
    format_version: u8,
    #[serde(default)]
    table_uuid: Option<String>,
    location: String,
    #[serde(default)]
    last_updated_ms: Option<i64>,
    #[serde(default)]
    last_column_id: Option<i32>,
    #[serde(default)]
    schema: Option<Schema>,
    #[serde(default)]
    schemas: Option<Vec<Schema>>,
    #[serde(default)]
    current_schema_id: Option<i32>,
    #[serde(default)]
    partition_spec: Option<Vec<PartitionField>>,
    #[serde(default)]
    partition_specs: Option<Vec<PartitionSpec>>,
    #[serde(default)]
    default_spec_id: Option<i32>,
    #[serde(default)]
    properties: HashMap<String, String>,
    #[serde(default)]
    current_snapshot_id: Option<i64>,
    #[serde(default)]
    snapshots: Vec<Snapshot>,
    #[serde(default)]
    snapshot_log: Vec<LogEntry>,
    #[serde(default)]
    metadata_log: Vec<LogEntry>,
    #[serde(default)]
    refs: HashMap<String, RawRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LogEntry {
    timestamp_ms: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRef {
    snapshot_id: i64,
    #[serde(rename = "type")]
    ref_type: String,
}

impl RawMetadata {
    fn normalise(self, file: &str) -> Result<TableMetadata> {
        if !(1..=2).contains(&self.format_version) {
            return Err(SharingError::new(
                crate::error::ErrorKind::Unsupported,
                format!(
                    "Iceberg metadata {file} has format version {}; versions 1 and 2 are served",
                    self.format_version
                ),
            ));
        }
        let (schemas, current_schema_id) = match (self.schemas, self.schema) {
            (Some(schemas), _) if !schemas.is_empty() => {
                let current = self
                    .current_schema_id
                    .or_else(|| schemas.last().map(|schema| schema.schema_id))
                    .unwrap_or(0);
                (schemas, current)
            }
            (_, Some(schema)) => {
                let id = schema.schema_id;
                (vec![schema], id)
            }
            _ => return Err(broken(file, "no schema".into())),
        };
        let (mut partition_specs, default_spec_id) =
            match (self.partition_specs, self.partition_spec) {
                (Some(specs), _) if !specs.is_empty() => {
                    let default = self.default_spec_id.unwrap_or(0);
                    (specs, default)
                }
                (_, Some(fields)) => (vec![PartitionSpec { spec_id: 0, fields }], 0),
                _ => (
                    vec![PartitionSpec {
                        spec_id: 0,
                        fields: Vec::new(),
                    }],
                    0,
                ),
            };
        for spec in &mut partition_specs {
            for (position, field) in spec.fields.iter_mut().enumerate() {
                if field.field_id.is_none() {
                    field.field_id = Some(1000 + position as i32);
                }
            }
        }
        // `refs.main` is the main branch; v1 and older v2 writers only set the current id,
        // where -1 means no snapshot.
        let main_ref = self
            .refs
            .get("main")
            .filter(|reference| reference.ref_type == "branch")
            .map(|reference| reference.snapshot_id);
        let current_snapshot_id = main_ref.or(self.current_snapshot_id).filter(|id| *id != -1);
        let earliest_log_ms = self
            .snapshot_log
            .iter()
            .chain(&self.metadata_log)
            .map(|entry| entry.timestamp_ms)
            .min();
        Ok(TableMetadata {
            format_version: self.format_version,
            table_uuid: self.table_uuid,
            location: self.location,
            last_updated_ms: self.last_updated_ms,
            last_column_id: self.last_column_id,
            schemas,
            current_schema_id,
            partition_specs,
            default_spec_id,
            properties: self.properties,
            current_snapshot_id,
            snapshots: self.snapshots,
            earliest_log_ms,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn v2_metadata_json() -> serde_json::Value {
        json!({
            "format-version": 2,
            "table-uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1",
            "location": "s3://bucket/warehouse/t",
            "last-sequence-number": 7,
            "last-updated-ms": 1700000300000i64,
            "last-column-id": 3,
            "current-schema-id": 1,
            "schemas": [
                {"type": "struct", "schema-id": 0, "fields": [
                    {"id": 1, "name": "id", "required": true, "type": "long"},
                    {"id": 2, "name": "name", "required": false, "type": "string"},
                    {"id": 3, "name": "day", "required": false, "type": "date"}]},
                {"type": "struct", "schema-id": 1, "fields": [
                    {"id": 1, "name": "id", "required": true, "type": "long"},
                    {"id": 2, "name": "full_name", "required": false, "type": "string"},
                    {"id": 3, "name": "day", "required": false, "type": "date"}]}
            ],
            "default-spec-id": 0,
            "partition-specs": [{"spec-id": 0, "fields": [
                {"name": "day", "transform": "identity", "source-id": 3, "field-id": 1000}]}],
            "last-partition-id": 1000,
            "default-sort-order-id": 0,
            "sort-orders": [{"order-id": 0, "fields": []}],
            "properties": {"owner": "me"},
            "current-snapshot-id": 30,
            "refs": {"main": {"snapshot-id": 30, "type": "branch"},
                     "side": {"snapshot-id": 25, "type": "branch"}},
            "snapshots": [
                {"snapshot-id": 10, "sequence-number": 1, "timestamp-ms": 1700000100000i64,
                 "manifest-list": "s3://bucket/warehouse/t/metadata/snap-10.avro",
                 "summary": {"operation": "append"}, "schema-id": 0},
                {"snapshot-id": 20, "parent-snapshot-id": 10, "sequence-number": 2,
                 "timestamp-ms": 1700000200000i64,
                 "manifest-list": "s3://bucket/warehouse/t/metadata/snap-20.avro",
                 "summary": {"operation": "append"}, "schema-id": 0},
                {"snapshot-id": 25, "parent-snapshot-id": 20, "sequence-number": 3,
                 "timestamp-ms": 1700000250000i64,
                 "manifest-list": "s3://bucket/warehouse/t/metadata/snap-25.avro",
                 "summary": {"operation": "append"}, "schema-id": 0},
                {"snapshot-id": 30, "parent-snapshot-id": 20, "sequence-number": 5,
                 "timestamp-ms": 1700000300000i64,
                 "manifest-list": "s3://bucket/warehouse/t/metadata/snap-30.avro",
                 "summary": {"operation": "delete"}, "schema-id": 1}
            ],
            "snapshot-log": [],
            "metadata-log": [{"timestamp-ms": 1700000000000i64,
                              "metadata-file": "s3://bucket/warehouse/t/metadata/v1.json"}]
        })
    }

    pub(crate) fn v1_metadata_json() -> serde_json::Value {
        json!({
            "format-version": 1,
            "table-uuid": "5f0c0a1e-0000-4000-8000-000000000001",
            "location": "s3://bucket/warehouse/v1",
            "last-updated-ms": 1600000300000i64,
            "last-column-id": 2,
            "schema": {"type": "struct", "fields": [
                {"id": 1, "name": "id", "required": false, "type": "int"},
                {"id": 2, "name": "category", "required": false, "type": "string"}]},
            "partition-spec": [
                {"name": "category", "transform": "identity", "source-id": 2}],
            "properties": {},
            "current-snapshot-id": 200,
            "snapshots": [
                {"snapshot-id": 100, "timestamp-ms": 1600000100000i64,
                 "manifest-list": "s3://bucket/warehouse/v1/metadata/snap-100.avro",
                 "summary": {"operation": "append"}},
                {"snapshot-id": 200, "parent-snapshot-id": 100,
                 "timestamp-ms": 1600000200000i64,
                 "manifests": ["s3://bucket/warehouse/v1/metadata/m-200.avro"],
                 "summary": {"operation": "append"}}
            ]
        })
    }

    fn parse(json: serde_json::Value) -> TableMetadata {
        TableMetadata::parse(json.to_string().as_bytes(), "m.json").unwrap()
    }

    #[test]
    fn v2_versions_are_sequence_numbers_of_the_main_branch() {
        let metadata = parse(v2_metadata_json());
        let versions: Vec<(u64, i64)> = metadata
            .main_versions()
            .iter()
            .map(|v| (v.version, v.snapshot.as_ref().unwrap().snapshot_id))
            .collect();
        // Snapshot 25 is on the side branch: not a main-branch version.
        assert_eq!(versions, vec![(1, 10), (2, 20), (5, 30)]);
        assert_eq!(
            metadata.current_schema().unwrap().fields[1].name,
            "full_name"
        );
        assert_eq!(metadata.partition_specs[0].fields[0].source_id, 3);
        assert_eq!(metadata.created_ms(), Some(1700000000000));
        assert!(metadata.history_starts_empty(&metadata.main_versions()));
    }

    #[test]
    fn v1_versions_are_positions_and_fields_are_normalised() {
        let metadata = parse(v1_metadata_json());
        let versions: Vec<u64> = metadata.main_versions().iter().map(|v| v.version).collect();
        assert_eq!(versions, vec![1, 2]);
        assert_eq!(metadata.schemas.len(), 1);
        assert_eq!(metadata.partition_specs[0].fields[0].field_id, Some(1000));
        let latest = metadata.snapshot(200).unwrap();
        assert_eq!(latest.manifest_list, None);
        assert_eq!(latest.manifests.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn expired_ancestors_break_the_chain_and_mixed_sequences_use_positions() {
        let mut json = v2_metadata_json();
        // Expire snapshot 10 and give 20 no sequence number (written before an upgrade).
        json["snapshots"].as_array_mut().unwrap().remove(0);
        json["snapshots"][0]["sequence-number"] = json!(0);
        let metadata = parse(json);
        let versions = metadata.main_versions();
        assert_eq!(
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(!metadata.history_starts_empty(&versions));
    }

    #[test]
    fn no_snapshot_and_broken_json_and_future_formats() {
        let mut json = v2_metadata_json();
        json["current-snapshot-id"] = json!(-1);
        json.as_object_mut().unwrap().remove("refs");
        assert!(parse(json).main_versions().is_empty());

        let error =
            TableMetadata::parse(b"{\"format-version\": 2", "v9.metadata.json").unwrap_err();
        assert!(
            error.message.contains("v9.metadata.json"),
            "{}",
            error.message
        );

        let mut json = v2_metadata_json();
        json["format-version"] = json!(3);
        let error = TableMetadata::parse(json.to_string().as_bytes(), "x").unwrap_err();
        assert_eq!(error.kind, crate::error::ErrorKind::Unsupported);
    }
}
