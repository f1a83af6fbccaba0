//! Iceberg manifest lists and manifests (Avro object container files), format v1 and v2,
//! read into the few fields sharing needs.
//!
//! Fields are looked up by name in the writer's schema, so v1 files (no `content`, no
//! sequence numbers, `added_data_files_count`) and v2 files read alike: a missing `content`
//! is data (0). A manifest is decoded one entry at a time, so memory is one manifest's
//! bytes plus one entry. Every error names the file.

use std::collections::HashMap;
use std::ops::ControlFlow;

use apache_avro::types::Value as AvroValue;
use apache_avro::Reader;

use crate::error::{Result, SharingError};

use super::stats::FileMetrics;

/// Manifest content: data files.
pub const CONTENT_DATA: i32 = 0;
/// Manifest content (lists) and data file content (entries): position deletes.
pub const CONTENT_POSITION_DELETES: i32 = 1;
/// Data file content: equality deletes.
pub const CONTENT_EQUALITY_DELETES: i32 = 2;

/// Entry status.
pub const STATUS_EXISTING: i32 = 0;
pub const STATUS_ADDED: i32 = 1;
pub const STATUS_DELETED: i32 = 2;

/// One manifest named by a manifest list.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestFile {
    pub manifest_path: String,
    /// 0 data, 1 deletes.
    pub content: i32,
    pub partition_spec_id: Option<i32>,
    pub added_snapshot_id: Option<i64>,
}

/// One manifest entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestEntry {
    pub status: i32,
    /// `None` in v2 means inherited from the manifest's `added_snapshot_id`.
    pub snapshot_id: Option<i64>,
    pub data_file: DataFileRecord,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DataFileRecord {
    /// 0 data, 1 position deletes, 2 equality deletes.
    pub content: i32,
    pub file_path: String,
    pub file_format: String,
    /// Partition tuple: (partition field name, value) in spec order.
    pub partition: Vec<(String, AvroValue)>,
    pub file_size_in_bytes: i64,
    pub metrics: FileMetrics,
}

/// Reads a manifest list.
pub fn read_manifest_list(bytes: &[u8], file: &str) -> Result<Vec<ManifestFile>> {
    let reader = Reader::new(bytes).map_err(|error| broken(file, &error))?;
    let mut manifests = Vec::new();
    for record in reader {
        let record = record.map_err(|error| broken(file, &error))?;
        let fields = as_record(&record).ok_or_else(|| shape(file, "manifest list entry"))?;
        manifests.push(ManifestFile {
            manifest_path: string_field(fields, "manifest_path")
                .ok_or_else(|| shape(file, "manifest_path"))?,
            content: int_field(fields, "content").unwrap_or(i64::from(CONTENT_DATA)) as i32,
            partition_spec_id: int_field(fields, "partition_spec_id").map(|id| id as i32),
            added_snapshot_id: int_field(fields, "added_snapshot_id"),
        });
    }
    Ok(manifests)
}

/// The `partition-spec-id` a manifest declares in its header, if any.
pub fn manifest_spec_id(bytes: &[u8], file: &str) -> Result<Option<i32>> {
    let reader = Reader::new(bytes).map_err(|error| broken(file, &error))?;
    Ok(reader
        .user_metadata()
        .get("partition-spec-id")
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .and_then(|text| text.trim().parse().ok()))
}

/// Decodes the entries of one manifest in order, calling `visit` for each until it breaks.
pub fn for_each_entry(
    bytes: &[u8],
    file: &str,
    mut visit: impl FnMut(ManifestEntry) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let reader = Reader::new(bytes).map_err(|error| broken(file, &error))?;
    for record in reader {
        let record = record.map_err(|error| broken(file, &error))?;
        let entry = entry_from(&record).ok_or_else(|| shape(file, "manifest entry"))?;
        if visit(entry)?.is_break() {
            break;
        }
    }
    Ok(())
}

fn entry_from(record: &AvroValue) -> Option<ManifestEntry> {
    let fields = as_record(record)?;
    let data_file = as_record(field(fields, "data_file")?)?;
    let partition = match field(data_file, "partition") {
        Some(value) => as_record(value)?.to_vec(),
        None => Vec::new(),
    };
    Some(ManifestEntry {
        status: int_field(fields, "status")? as i32,
        snapshot_id: int_field(fields, "snapshot_id"),
        data_file: DataFileRecord {
            content: int_field(data_file, "content").unwrap_or(i64::from(CONTENT_DATA)) as i32,
            file_path: string_field(data_file, "file_path")?,
            file_format: string_field(data_file, "file_format")?,
            partition,
            file_size_in_bytes: int_field(data_file, "file_size_in_bytes")?,
            metrics: FileMetrics {
                record_count: int_field(data_file, "record_count")?,
                null_value_counts: count_map(field(data_file, "null_value_counts"))?,
                nan_value_counts: count_map(field(data_file, "nan_value_counts"))?,
                lower_bounds: bytes_map(field(data_file, "lower_bounds"))?,
                upper_bounds: bytes_map(field(data_file, "upper_bounds"))?,
            },
        },
    })
}

fn broken(file: &str, error: &apache_avro::Error) -> SharingError {
    SharingError::internal(format!(
        "Iceberg manifest {file} is not readable Avro: {error}"
    ))
}

fn shape(file: &str, what: &str) -> SharingError {
    SharingError::internal(format!(
        "Iceberg manifest {file}: {what} is missing or mistyped"
    ))
}

/// Unwraps unions (`["null", T]`): a null union is `None`.
fn plain(value: &AvroValue) -> Option<&AvroValue> {
    match value {
        AvroValue::Union(_, inner) => plain(inner),
        AvroValue::Null => None,
        other => Some(other),
    }
}

fn as_record(value: &AvroValue) -> Option<&[(String, AvroValue)]> {
    match plain(value)? {
        AvroValue::Record(fields) => Some(fields),
        _ => None,
    }
}

fn field<'a>(fields: &'a [(String, AvroValue)], name: &str) -> Option<&'a AvroValue> {
    fields
        .iter()
        .find(|(field_name, _)| field_name == name)
        .and_then(|(_, value)| plain(value))
}

fn int_field(fields: &[(String, AvroValue)], name: &str) -> Option<i64> {
    match field(fields, name)? {
        AvroValue::Int(number) => Some(i64::from(*number)),
        AvroValue::Long(number) => Some(*number),
        _ => None,
    }
}

fn string_field(fields: &[(String, AvroValue)], name: &str) -> Option<String> {
    match field(fields, name)? {
        AvroValue::String(text) | AvroValue::Enum(_, text) => Some(text.clone()),
        _ => None,
    }
}

/// An Iceberg `map<int, T>`: an Avro array of `{key, value}` records (the usual form), or
/// an Avro map with decimal string keys. Absent is empty; `None` is a shape error.
fn map_pairs(value: Option<&AvroValue>) -> Option<Vec<(i32, &AvroValue)>> {
    let Some(value) = value else {
        return Some(Vec::new());
    };
    match value {
        AvroValue::Array(items) => items
            .iter()
            .map(|item| {
                let pair = as_record(item)?;
                let key = int_field(pair, "key")? as i32;
                Some((
                    key,
                    pair.iter()
                        .find(|(name, _)| name == "value")
                        .map(|(_, v)| v)?,
                ))
            })
            .collect(),
        AvroValue::Map(entries) => entries
            .iter()
            .map(|(key, value)| Some((key.parse().ok()?, value)))
            .collect(),
        _ => None,
    }
}

fn count_map(value: Option<&AvroValue>) -> Option<HashMap<i32, i64>> {
    let mut counts = HashMap::new();
    for (key, value) in map_pairs(value)? {
        match plain(value) {
            Some(AvroValue::Long(count)) => counts.insert(key, *count),
            Some(AvroValue::Int(count)) => counts.insert(key, i64::from(*count)),
            None => continue,
            Some(_) => return None,
        };
    }
    Some(counts)
}

fn bytes_map(value: Option<&AvroValue>) -> Option<HashMap<i32, Vec<u8>>> {
    let mut bounds = HashMap::new();
    for (key, value) in map_pairs(value)? {
        match plain(value) {
            Some(AvroValue::Bytes(bytes)) | Some(AvroValue::Fixed(_, bytes)) => {
                bounds.insert(key, bytes.clone())
            }
            None => continue,
            Some(_) => return None,
        };
    }
    Some(bounds)
}

/// Writers of Iceberg-shaped Avro files for tests (this module's and the table's).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use apache_avro::{Schema as AvroSchema, Writer};

    pub(crate) struct TestFile {
        pub path: String,
        pub status: i32,
        pub snapshot_id: Option<i64>,
        pub content: i32,
        pub partition_day: Option<i32>,
        pub record_count: i64,
        pub lower: Vec<(i32, Vec<u8>)>,
        pub upper: Vec<(i32, Vec<u8>)>,
        pub nulls: Vec<(i32, i64)>,
    }

    impl TestFile {
        pub(crate) fn data(path: &str, status: i32, snapshot_id: i64, day: i32) -> TestFile {
            TestFile {
                path: path.into(),
                status,
                snapshot_id: Some(snapshot_id),
                content: CONTENT_DATA,
                partition_day: Some(day),
                record_count: 10,
                lower: Vec::new(),
                upper: Vec::new(),
                nulls: Vec::new(),
            }
        }
    }

    const MANIFEST_LIST_V2: &str = r#"{"type": "record", "name": "manifest_file", "fields": [
        {"name": "manifest_path", "type": "string", "field-id": 500},
        {"name": "manifest_length", "type": "long", "field-id": 501},
        {"name": "partition_spec_id", "type": "int", "field-id": 502},
        {"name": "content", "type": "int", "field-id": 517},
        {"name": "sequence_number", "type": "long", "field-id": 515},
        {"name": "min_sequence_number", "type": "long", "field-id": 516},
        {"name": "added_snapshot_id", "type": "long", "field-id": 503}]}"#;

    /// A v2 manifest list: (path, content, added snapshot id).
    pub(crate) fn manifest_list(manifests: &[(&str, i32, i64)]) -> Vec<u8> {
        let schema = AvroSchema::parse_str(MANIFEST_LIST_V2).expect("schema");
        let mut writer = Writer::new(&schema, Vec::new());
        for (path, content, snapshot_id) in manifests {
            let record = AvroValue::Record(vec![
                ("manifest_path".into(), AvroValue::String(path.to_string())),
                ("manifest_length".into(), AvroValue::Long(100)),
                ("partition_spec_id".into(), AvroValue::Int(0)),
                ("content".into(), AvroValue::Int(*content)),
                ("sequence_number".into(), AvroValue::Long(1)),
                ("min_sequence_number".into(), AvroValue::Long(1)),
                ("added_snapshot_id".into(), AvroValue::Long(*snapshot_id)),
            ]);
            writer.append(record).expect("append");
        }
        writer.into_inner().expect("flush")
    }

    fn manifest_schema(v2: bool) -> String {
        let map = |name: &str, id: u32, value: &str| {
            format!(
                r#"{{"name": "{name}", "field-id": {id}, "default": null, "type": ["null",
                {{"type": "array", "logicalType": "map", "items": {{"type": "record",
                  "name": "k{id}_v{id}", "fields": [
                    {{"name": "key", "type": "int", "field-id": {}}},
                    {{"name": "value", "type": "{value}", "field-id": {}}}]}}}}]}}"#,
                id * 10,
                id * 10 + 1
            )
        };
        let content = if v2 {
            r#"{"name": "content", "type": "int", "field-id": 134},"#
        } else {
            ""
        };
        let snapshot = if v2 {
            r#"{"name": "snapshot_id", "type": ["null", "long"], "field-id": 1},"#
        } else {
            r#"{"name": "snapshot_id", "type": "long", "field-id": 1},"#
        };
        format!(
            r#"{{"type": "record", "name": "manifest_entry", "fields": [
            {{"name": "status", "type": "int", "field-id": 0}},
            {snapshot}
            {{"name": "data_file", "field-id": 2, "type": {{"type": "record", "name": "r2",
              "fields": [
                {content}
                {{"name": "file_path", "type": "string", "field-id": 100}},
                {{"name": "file_format", "type": "string", "field-id": 101}},
                {{"name": "partition", "field-id": 102, "type": {{"type": "record",
                  "name": "r102", "fields": [{{"name": "day", "field-id": 1000,
                  "type": ["null", {{"type": "int", "logicalType": "date"}}]}}]}}}},
                {{"name": "record_count", "type": "long", "field-id": 103}},
                {{"name": "file_size_in_bytes", "type": "long", "field-id": 104}},
                {},
                {},
                {}]}}}}]}}"#,
            map("null_value_counts", 110, "long"),
            map("lower_bounds", 125, "bytes"),
            map("upper_bounds", 128, "bytes"),
        )
    }

    /// A manifest (v2 unless `v1`) holding `files`, partitioned by a date `day`.
    pub(crate) fn manifest(files: &[TestFile], v1: bool) -> Vec<u8> {
        let schema = AvroSchema::parse_str(&manifest_schema(!v1)).expect("schema");
        let mut writer = Writer::new(&schema, Vec::new());
        writer
            .add_user_metadata("partition-spec-id".into(), "0")
            .expect("metadata");
        for file in files {
            let pairs = |items: &[(i32, AvroValue)]| {
                AvroValue::Union(
                    1,
                    Box::new(AvroValue::Array(
                        items
                            .iter()
                            .map(|(key, value)| {
                                AvroValue::Record(vec![
                                    ("key".into(), AvroValue::Int(*key)),
                                    ("value".into(), value.clone()),
                                ])
                            })
                            .collect(),
                    )),
                )
            };
            let bytes = |items: &[(i32, Vec<u8>)]| {
                let items: Vec<(i32, AvroValue)> = items
                    .iter()
                    .map(|(key, value)| (*key, AvroValue::Bytes(value.clone())))
                    .collect();
                pairs(&items)
            };
            let nulls: Vec<(i32, AvroValue)> = file
                .nulls
                .iter()
                .map(|(key, count)| (*key, AvroValue::Long(*count)))
                .collect();
            let day = match file.partition_day {
                Some(day) => AvroValue::Union(1, Box::new(AvroValue::Date(day))),
                None => AvroValue::Union(0, Box::new(AvroValue::Null)),
            };
            let mut data_file = Vec::new();
            if !v1 {
                data_file.push(("content".to_string(), AvroValue::Int(file.content)));
            }
            data_file.extend([
                (
                    "file_path".to_string(),
                    AvroValue::String(file.path.clone()),
                ),
                (
                    "file_format".to_string(),
                    AvroValue::String("PARQUET".into()),
                ),
                (
                    "partition".to_string(),
                    AvroValue::Record(vec![("day".into(), day)]),
                ),
                (
                    "record_count".to_string(),
                    AvroValue::Long(file.record_count),
                ),
                ("file_size_in_bytes".to_string(), AvroValue::Long(1234)),
                ("null_value_counts".to_string(), pairs(&nulls)),
                ("lower_bounds".to_string(), bytes(&file.lower)),
                ("upper_bounds".to_string(), bytes(&file.upper)),
            ]);
            let snapshot_id = match (v1, file.snapshot_id) {
                (true, id) => AvroValue::Long(id.unwrap_or(0)),
                (false, Some(id)) => AvroValue::Union(1, Box::new(AvroValue::Long(id))),
                (false, None) => AvroValue::Union(0, Box::new(AvroValue::Null)),
            };
            let record = AvroValue::Record(vec![
                ("status".into(), AvroValue::Int(file.status)),
                ("snapshot_id".into(), snapshot_id),
                ("data_file".into(), AvroValue::Record(data_file)),
            ]);
            writer.append(record).expect("append");
        }
        writer.into_inner().expect("flush")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn manifest_lists_read_paths_content_and_snapshots() {
        let bytes = manifest_list(&[("s3://b/t/metadata/m0.avro", 0, 7), ("m1", 1, 8)]);
        let manifests = read_manifest_list(&bytes, "list.avro").unwrap();
        assert_eq!(manifests.len(), 2);
        assert_eq!(manifests[0].manifest_path, "s3://b/t/metadata/m0.avro");
        assert_eq!(manifests[1].content, CONTENT_POSITION_DELETES);
        assert_eq!(manifests[1].added_snapshot_id, Some(8));
        assert_eq!(manifests[0].partition_spec_id, Some(0));
    }

    #[test]
    fn v1_and_v2_manifests_read_alike() {
        for v1 in [false, true] {
            let mut file = TestFile::data("s3://b/t/data/a.parquet", STATUS_ADDED, 5, 19723);
            file.lower = vec![(1, 3i64.to_le_bytes().to_vec())];
            file.nulls = vec![(1, 0), (2, 4)];
            let bytes = manifest(&[file], v1);
            assert_eq!(manifest_spec_id(&bytes, "m").unwrap(), Some(0));
            let mut entries = Vec::new();
            for_each_entry(&bytes, "m.avro", |entry| {
                entries.push(entry);
                Ok(ControlFlow::Continue(()))
            })
            .unwrap();
            assert_eq!(entries.len(), 1);
            let entry = &entries[0];
            assert_eq!(entry.status, STATUS_ADDED);
            assert_eq!(entry.snapshot_id, Some(5));
            assert_eq!(entry.data_file.content, CONTENT_DATA);
            assert_eq!(entry.data_file.file_format, "PARQUET");
            assert_eq!(entry.data_file.metrics.record_count, 10);
            assert_eq!(entry.data_file.metrics.null_value_counts[&2], 4);
            assert_eq!(
                entry.data_file.metrics.lower_bounds[&1],
                3i64.to_le_bytes().to_vec()
            );
            assert_eq!(entry.data_file.partition[0].0, "day");
        }
    }

    #[test]
    fn visiting_stops_on_break() {
        let files = [
            TestFile::data("a", STATUS_ADDED, 1, 0),
            TestFile::data("b", STATUS_ADDED, 1, 0),
        ];
        let bytes = manifest(&files, false);
        let mut seen = 0;
        for_each_entry(&bytes, "m", |_| {
            seen += 1;
            Ok(ControlFlow::Break(()))
        })
        .unwrap();
        assert_eq!(seen, 1);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_errors_naming_the_file() {
        let bytes = manifest(&[TestFile::data("a", STATUS_ADDED, 1, 0)], false);
        let truncated = &bytes[..bytes.len() - 20];
        let error = for_each_entry(truncated, "metadata/m-broken.avro", |_| {
            Ok(ControlFlow::Continue(()))
        })
        .unwrap_err();
        assert!(error.message.contains("m-broken.avro"), "{}", error.message);

        let error = read_manifest_list(b"not avro at all", "snap-1.avro").unwrap_err();
        assert!(error.message.contains("snap-1.avro"), "{}", error.message);

        // Readable Avro without the fields of a manifest.
        let list = manifest_list(&[("m", 0, 1)]);
        let error = for_each_entry(&list, "list-as-manifest.avro", |_| {
            Ok(ControlFlow::Continue(()))
        })
        .unwrap_err();
        assert!(
            error.message.contains("list-as-manifest.avro"),
            "{}",
            error.message
        );
    }
}
