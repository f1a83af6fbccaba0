//! Tables built in memory: hand-written metadata JSON and Avro manifests written with
//! `apache-avro`, read through `object_store`'s in-memory store.

use std::ops::ControlFlow;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{json, Value};

use super::manifest::testing::{manifest, manifest_list, TestFile};
use super::manifest::{STATUS_ADDED, STATUS_DELETED, STATUS_EXISTING};
use super::metadata::tests::{v1_metadata_json, v2_metadata_json};
use super::*;

const ROOT: &str = "warehouse/t/";
const DAY_2024_01_01: i32 = 19723;

async fn put(store: &InMemory, key: &str, bytes: Vec<u8>) {
    store
        .put(&Path::parse(key).unwrap(), PutPayload::from(bytes))
        .await
        .unwrap();
}

fn uri(key: &str) -> String {
    format!("s3://bucket/{key}")
}

async fn load(store: &InMemory) -> IcebergTable {
    load_table(store, "bucket", ROOT).await.unwrap()
}

/// The v2 table from `metadata::tests`: snapshot 10 appends a.parquet, 20 appends
/// b.parquet, 30 (after renaming `name` to `full_name`) deletes a.parquet.
async fn v2_table() -> InMemory {
    let store = InMemory::new();
    put(
        &store,
        "warehouse/t/metadata/00002-abc.metadata.json",
        v2_metadata_json().to_string().into_bytes(),
    )
    .await;
    let a = uri("warehouse/t/data/day=2024-01-01/a.parquet");
    let b = uri("warehouse/t/data/day=2024-01-02/b.parquet");
    let mut file_a = TestFile::data(&a, STATUS_ADDED, 10, DAY_2024_01_01);
    file_a.lower = vec![(1, 1i64.to_le_bytes().to_vec()), (2, b"ann".to_vec())];
    file_a.upper = vec![(1, 5i64.to_le_bytes().to_vec()), (2, b"bob".to_vec())];
    file_a.nulls = vec![(1, 0), (2, 3)];
    put(
        &store,
        "warehouse/t/metadata/m10.avro",
        manifest(&[file_a], false),
    )
    .await;
    let file_b = TestFile::data(&b, STATUS_ADDED, 20, DAY_2024_01_01 + 1);
    put(
        &store,
        "warehouse/t/metadata/m20.avro",
        manifest(&[file_b], false),
    )
    .await;
    let removed = TestFile::data(&a, STATUS_DELETED, 30, DAY_2024_01_01);
    put(
        &store,
        "warehouse/t/metadata/m30.avro",
        manifest(&[removed], false),
    )
    .await;
    // Existing entry of b in a manifest rewritten by snapshot 30.
    let kept = TestFile::data(&b, STATUS_EXISTING, 20, DAY_2024_01_01 + 1);
    put(
        &store,
        "warehouse/t/metadata/m30b.avro",
        manifest(&[kept], false),
    )
    .await;

    let m10 = uri("warehouse/t/metadata/m10.avro");
    let m20 = uri("warehouse/t/metadata/m20.avro");
    let m30 = uri("warehouse/t/metadata/m30.avro");
    let m30b = uri("warehouse/t/metadata/m30b.avro");
    let lists = [
        ("snap-10.avro", vec![(m10.as_str(), 0, 10)]),
        (
            "snap-20.avro",
            vec![(m10.as_str(), 0, 10), (m20.as_str(), 0, 20)],
        ),
        (
            "snap-30.avro",
            vec![(m30.as_str(), 0, 30), (m30b.as_str(), 0, 30)],
        ),
    ];
    for (name, manifests) in lists {
        let key = format!("warehouse/t/metadata/{name}");
        put(&store, &key, manifest_list(&manifests)).await;
    }
    store
}

async fn collect_files(
    store: &InMemory,
    table: &IcebergTable,
    version: u64,
) -> Vec<IcebergDataFile> {
    let version = table.resolve_version(version).unwrap();
    let mut files = Vec::new();
    data_files(store, table, &version, |file| {
        files.push(file);
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    files
}

#[tokio::test]
async fn metadata_is_found_by_hint_or_highest_number() {
    let store = InMemory::new();
    let error = find_metadata_key(&store, ROOT).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);
    assert!(error.message.contains("warehouse/t/"), "{}", error.message);

    for name in [
        "00001-x.metadata.json",
        "00010-y.metadata.json",
        "00009-z.metadata.json",
    ] {
        put(
            &store,
            &format!("warehouse/t/metadata/{name}"),
            b"{}".to_vec(),
        )
        .await;
    }
    put(&store, "warehouse/t/metadata/snap-99.avro", Vec::new()).await;
    put(
        &store,
        "warehouse/t/metadata/sub/00099-q.metadata.json",
        Vec::new(),
    )
    .await;
    assert_eq!(
        find_metadata_key(&store, "warehouse/t").await.unwrap(),
        "warehouse/t/metadata/00010-y.metadata.json"
    );

    put(
        &store,
        "warehouse/t/metadata/v3.metadata.json",
        b"{}".to_vec(),
    )
    .await;
    put(
        &store,
        "warehouse/t/metadata/version-hint.text",
        b"3\n".to_vec(),
    )
    .await;
    assert_eq!(
        find_metadata_key(&store, ROOT).await.unwrap(),
        "warehouse/t/metadata/v3.metadata.json"
    );

    put(
        &store,
        "warehouse/t/metadata/version-hint.text",
        b"00001-x.metadata.json".to_vec(),
    )
    .await;
    assert_eq!(
        find_metadata_key(&store, ROOT).await.unwrap(),
        "warehouse/t/metadata/00001-x.metadata.json"
    );

    // A hint naming a missing file falls back to the listing.
    put(
        &store,
        "warehouse/t/metadata/version-hint.text",
        b"7".to_vec(),
    )
    .await;
    assert_eq!(
        find_metadata_key(&store, ROOT).await.unwrap(),
        "warehouse/t/metadata/00010-y.metadata.json"
    );
}

#[tokio::test]
async fn versions_resolve_by_number_and_time() {
    let table = load(&v2_table().await).await;
    assert_eq!(table.latest_version(), 5);
    assert_eq!(
        table.metadata_key,
        "warehouse/t/metadata/00002-abc.metadata.json"
    );
    let id = |v: TableVersion| v.snapshot.map(|s| s.snapshot_id);
    assert_eq!(id(table.resolve_version(0).unwrap()), None);
    assert_eq!(table.resolve_version(0).unwrap().version, 0);
    assert_eq!(id(table.resolve_version(1).unwrap()), Some(10));
    // 3 and 4 are not main-branch versions: the table as of them is version 2.
    assert_eq!(id(table.resolve_version(4).unwrap()), Some(20));
    assert_eq!(table.resolve_version(4).unwrap().version, 2);
    assert_eq!(id(table.resolve_version(5).unwrap()), Some(30));
    let error = table.resolve_version(6).unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidParameter);

    assert_eq!(
        id(table.resolve_timestamp(1700000200000).unwrap()),
        Some(20)
    );
    assert_eq!(
        id(table.resolve_timestamp(1700000299999).unwrap()),
        Some(20)
    );
    assert_eq!(id(table.resolve_timestamp(i64::MAX).unwrap()), Some(30));
    let error = table.resolve_timestamp(1700000099999).unwrap_err();
    assert!(error.message.contains("before"), "{}", error.message);

    assert_eq!(table.version_at_or_after(0).unwrap(), 1);
    assert_eq!(table.version_at_or_after(1700000100001).unwrap(), 2);
    assert_eq!(table.version_at_or_after(1700000300000).unwrap(), 5);
    assert!(table.version_at_or_after(1700000300001).is_err());
}

#[tokio::test]
async fn expired_history_is_not_served_as_empty() {
    let mut json = v2_metadata_json();
    json["snapshots"].as_array_mut().unwrap().remove(0);
    let table = IcebergTable::from_metadata_bytes("bucket", ROOT, "m", json.to_string().as_bytes())
        .unwrap();
    assert_eq!(table.versions().len(), 2);
    assert!(table.resolve_version(1).is_err());
    assert_eq!(table.resolve_version(2).unwrap().version, 2);
}

#[tokio::test]
async fn delta_protocol_and_metadata_carry_column_mapping_after_a_rename() {
    let table = load(&v2_table().await).await;
    assert!(table.needs_column_mapping());
    let latest = table.latest();
    assert_eq!(
        table.delta_protocol(&latest),
        json!({"minReaderVersion": 2, "minWriterVersion": 5})
    );
    assert!(table.table_needs(&latest).column_mapping);
    let metadata = table.delta_metadata(&latest).unwrap();
    assert_eq!(
        metadata["id"],
        json!("9c12d441-03fe-4693-9a96-a0705ddf69c1")
    );
    assert_eq!(
        metadata["format"],
        json!({"provider": "parquet", "options": {}})
    );
    assert_eq!(metadata["partitionColumns"], json!(["day"]));
    assert_eq!(metadata["createdTime"], json!(1700000000000i64));
    assert_eq!(
        metadata["configuration"],
        json!({"delta.enableChangeDataFeed": "true", "delta.columnMapping.mode": "id",
            "delta.columnMapping.maxColumnId": "3"})
    );
    let schema: Value = serde_json::from_str(metadata["schemaString"].as_str().unwrap()).unwrap();
    assert_eq!(schema["fields"][1]["name"], json!("full_name"));
    assert_eq!(
        schema["fields"][1]["metadata"]["delta.columnMapping.id"],
        json!(2)
    );

    // Version 2 was written with the schema before the rename.
    let old = table.resolve_version(2).unwrap();
    let metadata = table.delta_metadata(&old).unwrap();
    let schema: Value = serde_json::from_str(metadata["schemaString"].as_str().unwrap()).unwrap();
    assert_eq!(schema["fields"][1]["name"], json!("name"));
}

#[tokio::test]
async fn tables_without_renames_use_plain_protocols() {
    let mut json = v2_metadata_json();
    json["schemas"].as_array_mut().unwrap().pop();
    json["current-schema-id"] = json!(0);
    for snapshot in json["snapshots"].as_array_mut().unwrap() {
        snapshot["schema-id"] = json!(0);
    }
    let table = IcebergTable::from_metadata_bytes("bucket", ROOT, "m", json.to_string().as_bytes())
        .unwrap();
    assert!(!table.needs_column_mapping());
    let latest = table.latest();
    assert_eq!(
        table.delta_protocol(&latest),
        json!({"minReaderVersion": 1, "minWriterVersion": 4})
    );
    assert_eq!(
        table.delta_metadata(&latest).unwrap()["configuration"],
        json!({"delta.enableChangeDataFeed": "true"})
    );
    assert!(table.table_needs(&latest).parquet_expressible());

    // A timestamp without zone needs the timestampNtz feature.
    json["schemas"][0]["fields"][2]["type"] = json!("timestamp");
    json["partition-specs"][0]["fields"] = json!([]);
    let table = IcebergTable::from_metadata_bytes("bucket", ROOT, "m", json.to_string().as_bytes())
        .unwrap();
    assert_eq!(
        table.delta_protocol(&table.latest()),
        json!({"minReaderVersion": 3, "minWriterVersion": 7,
               "readerFeatures": ["timestampNtz"],
               "writerFeatures": ["timestampNtz", "changeDataFeed"]})
    );
}

#[tokio::test]
async fn data_files_of_each_version() {
    let store = v2_table().await;
    let table = load(&store).await;
    assert!(collect_files(&store, &table, 0).await.is_empty());

    let files = collect_files(&store, &table, 2).await;
    let keys: Vec<&str> = files.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "warehouse/t/data/day=2024-01-01/a.parquet",
            "warehouse/t/data/day=2024-01-02/b.parquet"
        ]
    );
    let a = &files[0];
    assert_eq!(
        a.file_path,
        uri("warehouse/t/data/day=2024-01-01/a.parquet")
    );
    assert_eq!(a.size_bytes, 1234);
    assert_eq!(a.record_count, 10);
    assert_eq!(
        a.partition_values,
        vec![("day".to_string(), Some("2024-01-01".to_string()))]
    );
    // Version 2 names column 2 `name`; the string bounds are short enough to be exact.
    let stats: Value = serde_json::from_str(&a.stats).unwrap();
    assert_eq!(
        stats,
        json!({"numRecords": 10, "minValues": {"id": 1, "name": "ann"},
               "maxValues": {"id": 5, "name": "bob"}, "nullCount": {"id": 0, "name": 3}})
    );

    // Version 5 deleted a.parquet; b.parquet lives on as an existing entry.
    let files = collect_files(&store, &table, 5).await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].key, "warehouse/t/data/day=2024-01-02/b.parquet");
    assert_eq!(
        files[0].partition_values,
        vec![("day".to_string(), Some("2024-01-02".to_string()))]
    );

    // Stopping early visits no more files.
    let mut seen = 0;
    data_files(&store, &table, &table.resolve_version(2).unwrap(), |_| {
        seen += 1;
        ControlFlow::Break(())
    })
    .await
    .unwrap();
    assert_eq!(seen, 1);
}

#[tokio::test]
async fn changes_of_append_and_delete_snapshots() {
    let store = v2_table().await;
    let table = load(&store).await;
    let changes = snapshot_changes(&store, &table, &table.resolve_version(2).unwrap())
        .await
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ChangeKind::Add);
    assert!(changes[0].data_change);
    assert!(changes[0].file.key.ends_with("b.parquet"));

    let changes = snapshot_changes(&store, &table, &table.latest())
        .await
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ChangeKind::Remove);
    assert!(changes[0].file.key.ends_with("a.parquet"));
}

#[tokio::test]
async fn row_level_delete_files_are_refused_with_their_kind() {
    let store = v2_table().await;
    let mut deletes = TestFile::data(
        &uri("warehouse/t/data/deletes.parquet"),
        STATUS_ADDED,
        30,
        DAY_2024_01_01,
    );
    deletes.content = manifest::CONTENT_EQUALITY_DELETES;
    put(
        &store,
        "warehouse/t/metadata/d30.avro",
        manifest(&[deletes], false),
    )
    .await;
    let m30 = uri("warehouse/t/metadata/m30b.avro");
    let d30 = uri("warehouse/t/metadata/d30.avro");
    put(
        &store,
        "warehouse/t/metadata/snap-30.avro",
        manifest_list(&[(m30.as_str(), 0, 30), (d30.as_str(), 1, 30)]),
    )
    .await;
    let table = load(&store).await;
    let mut visited = 0;
    let error = data_files(&store, &table, &table.latest(), |_| {
        visited += 1;
        ControlFlow::Continue(())
    })
    .await
    .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unsupported);
    assert!(
        error.message.contains("equality delete"),
        "{}",
        error.message
    );
    assert_eq!(visited, 0, "no file is served before the refusal");

    let error = snapshot_changes(&store, &table, &table.latest())
        .await
        .unwrap_err();
    assert!(
        error.message.contains("row-level changes"),
        "{}",
        error.message
    );

    // Older versions without delete files are still served.
    assert_eq!(collect_files(&store, &table, 2).await.len(), 2);
}

#[tokio::test]
async fn broken_or_missing_manifests_are_errors_naming_the_file() {
    let store = v2_table().await;
    let table = load(&store).await;
    let mut bytes = manifest(&[TestFile::data("x", STATUS_ADDED, 20, 0)], false);
    bytes.truncate(bytes.len() / 2);
    put(&store, "warehouse/t/metadata/m20.avro", bytes).await;
    let version = table.resolve_version(2).unwrap();
    let error = data_files(&store, &table, &version, |_| ControlFlow::Continue(()))
        .await
        .unwrap_err();
    assert!(error.message.contains("m20.avro"), "{}", error.message);

    store
        .delete(&Path::parse("warehouse/t/metadata/m10.avro").unwrap())
        .await
        .unwrap();
    let version = table.resolve_version(1).unwrap();
    let error = data_files(&store, &table, &version, |_| ControlFlow::Continue(()))
        .await
        .unwrap_err();
    assert!(error.message.contains("m10.avro"), "{}", error.message);
    assert!(error.message.contains("missing"), "{}", error.message);

    put(
        &store,
        "warehouse/t/metadata/00003-bad.metadata.json",
        b"{not json".to_vec(),
    )
    .await;
    let error = load_table(&store, "bucket", ROOT).await.unwrap_err();
    assert!(
        error.message.contains("00003-bad.metadata.json"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn v1_tables_with_inline_manifests() {
    let store = InMemory::new();
    let root = "warehouse/v1/";
    put(
        &store,
        "warehouse/v1/metadata/v2.metadata.json",
        v1_metadata_json().to_string().into_bytes(),
    )
    .await;
    put(
        &store,
        "warehouse/v1/metadata/version-hint.text",
        b"2".to_vec(),
    )
    .await;
    let path = "s3://bucket/warehouse/v1/data/category=x/f.parquet";
    let schema = r#"{"type": "record", "name": "manifest_entry", "fields": [
        {"name": "status", "type": "int"},
        {"name": "snapshot_id", "type": "long"},
        {"name": "data_file", "type": {"type": "record", "name": "r2", "fields": [
            {"name": "file_path", "type": "string"},
            {"name": "file_format", "type": "string"},
            {"name": "partition", "type": {"type": "record", "name": "r102", "fields": [
                {"name": "category", "type": ["null", "string"]}]}},
            {"name": "record_count", "type": "long"},
            {"name": "file_size_in_bytes", "type": "long"},
            {"name": "block_size_in_bytes", "type": "long"}]}}]}"#;
    let schema = apache_avro::Schema::parse_str(schema).unwrap();
    let mut writer = apache_avro::Writer::new(&schema, Vec::new());
    use apache_avro::types::Value as Avro;
    writer
        .append(Avro::Record(vec![
            ("status".into(), Avro::Int(STATUS_ADDED)),
            ("snapshot_id".into(), Avro::Long(200)),
            (
                "data_file".into(),
                Avro::Record(vec![
                    ("file_path".into(), Avro::String(path.into())),
                    ("file_format".into(), Avro::String("PARQUET".into())),
                    (
                        "partition".into(),
                        Avro::Record(vec![(
                            "category".into(),
                            Avro::Union(1, Box::new(Avro::String("x".into()))),
                        )]),
                    ),
                    ("record_count".into(), Avro::Long(4)),
                    ("file_size_in_bytes".into(), Avro::Long(99)),
                    ("block_size_in_bytes".into(), Avro::Long(67108864)),
                ]),
            ),
        ]))
        .unwrap();
    put(
        &store,
        "warehouse/v1/metadata/m-200.avro",
        writer.into_inner().unwrap(),
    )
    .await;

    let table = load_table(&store, "bucket", root).await.unwrap();
    assert_eq!(table.metadata_key, "warehouse/v1/metadata/v2.metadata.json");
    assert_eq!(table.latest_version(), 2);
    let latest = table.latest();
    assert_eq!(table.partition_columns(&latest), ["category"]);
    let mut files = Vec::new();
    data_files(&store, &table, &latest, |file| {
        files.push(file);
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].key, "warehouse/v1/data/category=x/f.parquet");
    assert_eq!(
        files[0].partition_values,
        [("category".to_string(), Some("x".to_string()))]
    );
    assert_eq!(
        files[0].stats,
        r#"{"numRecords":4,"minValues":{},"maxValues":{},"nullCount":{}}"#
    );
    let changes = snapshot_changes(&store, &table, &latest).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ChangeKind::Add);
}

#[test]
fn locations_map_to_keys_under_the_root_only() {
    let mut json = v2_metadata_json();
    json["location"] = json!("file:///tmp/wh/t/");
    let table = IcebergTable::from_metadata_bytes("bucket", ROOT, "m", json.to_string().as_bytes())
        .unwrap();
    assert_eq!(
        table
            .object_key("s3a://bucket/warehouse/t/data/x.parquet")
            .unwrap(),
        "warehouse/t/data/x.parquet"
    );
    assert_eq!(
        table.object_key("file:///tmp/wh/t/data/x.parquet").unwrap(),
        "warehouse/t/data/x.parquet"
    );
    for outside in [
        "s3://other/warehouse/t/data/x.parquet",
        "s3://bucket/warehouse/u/data/x.parquet",
        "s3://bucket/warehouse/t/../u/x.parquet",
        "file:///tmp/wh/u/x.parquet",
        "gs://bucket/warehouse/t/data/x.parquet",
    ] {
        let error = table.object_key(outside).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unsupported, "{outside}");
    }
}

#[test]
fn partition_columns_need_the_same_identity_fields_in_every_spec() {
    let mut json = v2_metadata_json();
    json["partition-specs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"spec-id": 1, "fields": [
            {"name": "day_bucket", "transform": "bucket[4]", "source-id": 3, "field-id": 1001},
            {"name": "day", "transform": "identity", "source-id": 3, "field-id": 1000}]}));
    json["default-spec-id"] = json!(1);
    let table = IcebergTable::from_metadata_bytes("bucket", ROOT, "m", json.to_string().as_bytes())
        .unwrap();
    assert_eq!(table.partition_columns(&table.latest()), ["day"]);

    json["partition-specs"][1]["fields"][1]["transform"] = json!("void");
    let table = IcebergTable::from_metadata_bytes("bucket", ROOT, "m", json.to_string().as_bytes())
        .unwrap();
    assert!(table.partition_columns(&table.latest()).is_empty());
}

#[test]
fn tables_without_uuid_get_a_stable_id_and_a_missing_current_snapshot_is_an_error() {
    let json = v1_metadata_json();
    let mut without_uuid = json.clone();
    without_uuid.as_object_mut().unwrap().remove("table-uuid");
    let bytes = without_uuid.to_string();
    let first = IcebergTable::from_metadata_bytes("bucket", ROOT, "a", bytes.as_bytes()).unwrap();
    let second = IcebergTable::from_metadata_bytes("bucket", ROOT, "b", bytes.as_bytes()).unwrap();
    let other = IcebergTable::from_metadata_bytes("bucket", "x/", "a", bytes.as_bytes()).unwrap();
    assert_eq!(first.table_id(), second.table_id());
    assert_ne!(first.table_id(), other.table_id());
    assert_eq!(first.table_id().len(), 36);

    let mut dangling = json;
    dangling["current-snapshot-id"] = json!(999);
    let error = IcebergTable::from_metadata_bytes(
        "bucket",
        ROOT,
        "v9.json",
        dangling.to_string().as_bytes(),
    )
    .unwrap_err();
    assert!(error.message.contains("999"), "{}", error.message);
}

#[test]
fn unpartitioned_manifests_have_an_empty_partition_record() {
    let schema = r#"{"type": "record", "name": "manifest_entry", "fields": [
        {"name": "status", "type": "int"},
        {"name": "snapshot_id", "type": ["null", "long"]},
        {"name": "data_file", "type": {"type": "record", "name": "r2", "fields": [
            {"name": "content", "type": "int"},
            {"name": "file_path", "type": "string"},
            {"name": "file_format", "type": "string"},
            {"name": "partition", "type": {"type": "record", "name": "r102", "fields": []}},
            {"name": "record_count", "type": "long"},
            {"name": "file_size_in_bytes", "type": "long"}]}}]}"#;
    let schema = apache_avro::Schema::parse_str(schema).unwrap();
    let mut writer = apache_avro::Writer::new(&schema, Vec::new());
    use apache_avro::types::Value as Avro;
    writer
        .append(Avro::Record(vec![
            ("status".into(), Avro::Int(STATUS_EXISTING)),
            ("snapshot_id".into(), Avro::Union(0, Box::new(Avro::Null))),
            (
                "data_file".into(),
                Avro::Record(vec![
                    ("content".into(), Avro::Int(0)),
                    ("file_path".into(), Avro::String("p".into())),
                    ("file_format".into(), Avro::String("PARQUET".into())),
                    ("partition".into(), Avro::Record(Vec::new())),
                    ("record_count".into(), Avro::Long(1)),
                    ("file_size_in_bytes".into(), Avro::Long(2)),
                ]),
            ),
        ]))
        .unwrap();
    let bytes = writer.into_inner().unwrap();
    let mut entries = Vec::new();
    manifest::for_each_entry(&bytes, "m", |entry| {
        entries.push(entry);
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].data_file.partition.is_empty());
    assert_eq!(entries[0].snapshot_id, None);
}
