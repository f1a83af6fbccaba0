//! Version ranges of Delta tables read commit by commit: the change data feed
//! (`GET .../changes`) and streaming queries (`POST .../query` with `startingVersion`).
//!
//! The commits `_delta_log/<v>.json` of the inclusive range are listed and read through the
//! kernel engine's storage handler (the node's object store), so each line carries the
//! commit's own version and timestamp (the in-commit timestamp when the commit has one, else
//! the commit file's modification time). All parameter and range checks, and for the change
//! data feed the check that change data was recorded at the start and in every metadata
//! change of the range, happen before the response starts; the file lines are then
//! encoded on the replay pool into chunks sent through a bounded channel.
//!
//! Per commit, the change data feed returns its `cdc` actions (as `cdf` lines) when it has
//! any, otherwise its `add`/`remove` actions with `dataChange=true`; a MERGE that changed no
//! rows returns nothing. A streaming query returns `add`/`remove` with `dataChange=true`.
//! `metaData` actions of versions after the start are returned by streaming queries, and by
//! the change data feed only when `includeHistoricalMetadata` is true.

use bytes::{BufMut, Bytes, BytesMut};
use delta_kernel::Engine;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use serde_json::{json, Map, Value};
use url::Url;

use crate::body::ResponseBody;
use crate::capabilities::{choose_format, ResponseFormat};
use crate::catalog::Table;
use crate::error::{ErrorKind, Result, SharingError};
use crate::files::{relative_path, DeletionVectorRef, FileIdHash};
use crate::ndjson::lines::{metadata_line, protocol_line, FileLineContext};
use crate::ndjson::{ndjson_response, CHUNKS_IN_FLIGHT_MAX, CHUNK_BYTES};
use crate::routes::query::{TableRequest, TableRoutes};
use crate::routes::query_value;
use crate::routes::request::{capabilities, parse_timestamp};
use crate::tables::iceberg::{self, ChangeKind, IcebergTable};
use crate::tables::{table_url, SnapshotSource, TableSnapshot, Tables, VersionSelector};
use lakeshare_storage::object_store_view::NodeObjectStore;

/// Which version-range read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedKind {
    /// `GET .../changes`.
    ChangeData,
    /// `POST .../query` with `startingVersion`.
    Streaming,
}

/// One end of a range as the request names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeBound {
    Version(u64),
    /// Milliseconds since the epoch.
    Timestamp(i64),
}

/// The query parameters of `GET .../changes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangesParams {
    pub start: RangeBound,
    pub end: Option<RangeBound>,
    pub include_historical_metadata: bool,
}

impl ChangesParams {
    /// Parses and checks the parameters with the reference server's wording.
    pub fn parse(query: &[(String, String)]) -> Result<ChangesParams> {
        let start = range_bound(query, "starting")?.ok_or_else(|| {
            SharingError::invalid("No startingVersion or startingTimestamp provided for CDF read")
        })?;
        let end = range_bound(query, "ending")?;
        let include_historical_metadata = match query_value(query, "includeHistoricalMetadata") {
            None => false,
            Some(text) if text.trim().eq_ignore_ascii_case("true") => true,
            Some(text) if text.trim().eq_ignore_ascii_case("false") => false,
            Some(text) => {
                return Err(SharingError::invalid(format!(
                    "includeHistoricalMetadata is not a valid boolean: {text}"
                )))
            }
        };
        if let (RangeBound::Version(start), Some(RangeBound::Version(end))) = (start, end) {
            check_range_order(start, end)?;
        }
        // Pages of change feeds are not served yet: every answer is whole (a client that
        // asked for pages gets no endStreamAction, which the protocol allows); the page size
        // is still checked so bad input gets the reference's 400.
        if let Some(text) = query_value(query, "maxFiles") {
            match text.trim().parse::<i64>() {
                Ok(max_files) if max_files <= 0 => {
                    return Err(SharingError::invalid("maxFiles must be positive"))
                }
                Ok(max_files) if max_files > i64::from(i32::MAX) => {
                    return Err(SharingError::invalid(format!(
                        "Not an int32 value: {max_files}"
                    )))
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(SharingError::invalid(format!(
                        "Not a numeric value: {text}"
                    )))
                }
            }
        }
        Ok(ChangesParams {
            start,
            end,
            include_historical_metadata,
        })
    }
}

/// `startingVersion`/`startingTimestamp` (or the `ending` pair): at most one of them.
fn range_bound(query: &[(String, String)], which: &str) -> Result<Option<RangeBound>> {
    let version_name = format!("{which}Version");
    let timestamp_name = format!("{which}Timestamp");
    match (
        query_value(query, &version_name),
        query_value(query, &timestamp_name),
    ) {
        (Some(_), Some(_)) => Err(SharingError::invalid(format!(
            "Multiple {which} arguments provided for CDF read. Please provide one of either \
             {timestamp_name} or {version_name}."
        ))),
        (Some(text), None) => {
            let version: i64 = text.trim().parse().map_err(|_| {
                SharingError::invalid(format!("{version_name} is not a valid number."))
            })?;
            let version = u64::try_from(version).map_err(|_| {
                SharingError::invalid(format!("{version_name} cannot be negative."))
            })?;
            Ok(Some(RangeBound::Version(version)))
        }
        (None, Some(text)) => Ok(Some(RangeBound::Timestamp(parse_timestamp(
            text,
            &timestamp_name,
        )?))),
        (None, None) => Ok(None),
    }
}

fn check_range_order(start: u64, end: u64) -> Result<()> {
    if end < start {
        return Err(SharingError::invalid(format!(
            "CDF range from start {start} to end {end} was invalid. End cannot be before start."
        )));
    }
    Ok(())
}

/// One commit of the range with its actions in log order.
struct Commit {
    version: u64,
    timestamp_ms: i64,
    actions: Vec<Value>,
}

/// A resolved range, ready to encode.
struct Feed {
    kind: FeedKind,
    start: u64,
    include_historical_metadata: bool,
    /// Protocol changes inside the range become lines (streaming, delta format).
    include_historical_protocol: bool,
    /// The snapshot lines 1 and 2 describe.
    head: TableSnapshot,
    commits: Vec<Commit>,
}

impl TableRoutes {
    /// `GET .../changes`.
    pub async fn changes(&self, request: TableRequest<'_>) -> Result<Response<ResponseBody>> {
        if !request.table.history_shared {
            return Err(SharingError::invalid(format!(
                "cdf is not enabled on table {}.{}.{}",
                request.share, request.schema, request.table.name
            )));
        }
        let params = ChangesParams::parse(request.query)?;
        self.version_range(
            request,
            FeedKind::ChangeData,
            params.start,
            params.end,
            params.include_historical_metadata,
            false,
        )
        .await
    }

    /// `POST .../query` with `startingVersion` (already checked: not negative, not after
    /// `endingVersion`, history shared).
    pub async fn streaming_query(
        &self,
        request: TableRequest<'_>,
        starting_version: i64,
        ending_version: Option<i64>,
        include_historical_protocol: bool,
    ) -> Result<Response<ResponseBody>> {
        let start = u64::try_from(starting_version)
            .map_err(|_| SharingError::invalid("startingVersion cannot be negative"))?;
        let end = match ending_version {
            Some(end) => {
                Some(RangeBound::Version(u64::try_from(end).map_err(|_| {
                    SharingError::invalid("endingVersion cannot be negative")
                })?))
            }
            None => None,
        };
        self.version_range(
            request,
            FeedKind::Streaming,
            RangeBound::Version(start),
            end,
            true,
            include_historical_protocol,
        )
        .await
    }

    async fn version_range(
        &self,
        request: TableRequest<'_>,
        kind: FeedKind,
        start: RangeBound,
        end: Option<RangeBound>,
        include_historical_metadata: bool,
        include_historical_protocol: bool,
    ) -> Result<Response<ResponseBody>> {
        let capabilities = capabilities(request.headers);
        let id_hash_header = match request.headers.get("fileidhash") {
            Some(value) => Some(FileIdHash::parse_header(value.to_str().unwrap_or(""))?),
            None => None,
        };
        let table = request.table.clone();
        let tables = self.tables.clone();
        let mut feed = tokio::task::spawn_blocking(move || {
            resolve_blocking(
                &tables,
                &table,
                kind,
                start,
                end,
                include_historical_metadata,
            )
        })
        .await
        .map_err(|error| SharingError::internal(format!("replay task: {error}")))??;
        let format = choose_format(&capabilities, &feed.head.needs)?;
        feed.include_historical_protocol =
            include_historical_protocol && format == ResponseFormat::Delta;
        if format == ResponseFormat::Parquet && feed.kind == FeedKind::Streaming {
            check_reader_version_in_range(&feed)?;
        }
        let id_hash = id_hash_header.unwrap_or(FileIdHash::default_for(format));
        let history_shared = request.table.history_shared;
        let mut head = String::new();
        head.push_str(&protocol_line(format, &feed.head).to_string());
        head.push('\n');
        let head_version = feed.head.version;
        head.push_str(
            &metadata_line(format, &feed.head, history_shared, Some(head_version)).to_string(),
        );
        head.push('\n');
        let start_version = feed.start;

        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT_MAX);
        let presigner = self.presigner.clone();
        tokio::task::spawn_blocking(move || {
            let result = FileLineContext::new(format, &feed.head, &presigner, id_hash, None)
                .and_then(|context| encode_feed(&feed, &context, history_shared, head, &sender));
            if let Err(error) = result {
                tracing::warn!(%error, "version range stream failed");
                let _ = sender.blocking_send(Err(std::io::Error::other(error.to_string())));
            }
        });
        let stream = futures::stream::poll_fn(move |context| receiver.poll_recv(context));
        let body = StreamBody::new(futures::StreamExt::map(stream, |chunk| {
            chunk.map(http_body::Frame::data)
        }))
        .boxed();
        let mut response = ndjson_response(body, start_version, format, false);
        if let Some(id_hash) = id_hash_header {
            response.headers_mut().insert(
                "fileidhash",
                HeaderValue::from_static(id_hash.header_value()),
            );
        }
        Ok(response)
    }
}

/// Resolves the range, checks it, and reads its commits. Blocking.
fn resolve_blocking(
    tables: &Tables,
    table: &Table,
    kind: FeedKind,
    start: RangeBound,
    end: Option<RangeBound>,
    include_historical_metadata: bool,
) -> Result<Feed> {
    let latest = tables.snapshot_blocking(table, &VersionSelector::Latest)?;
    let latest_version = latest.version;
    let start = match start {
        RangeBound::Version(version) => version,
        RangeBound::Timestamp(timestamp) => {
            tables.version_at_or_after_blocking(table, timestamp)?
        }
    };
    let end_asked = match end {
        None => None,
        Some(RangeBound::Version(version)) => Some(version),
        Some(RangeBound::Timestamp(timestamp)) => Some(
            tables
                .snapshot_blocking(table, &VersionSelector::UpToTimestamp(timestamp))?
                .version,
        ),
    };
    match kind {
        FeedKind::ChangeData => {
            if let Some(end) = end_asked {
                check_range_order(start, end)?;
            }
            if start > latest_version {
                return Err(SharingError::invalid(format!(
                    "Provided Start version({start}) for reading change data is invalid. Start \
                     version cannot be greater than the latest version of the table\
                     ({latest_version})."
                )));
            }
        }
        FeedKind::Streaming => {
            if start > latest_version {
                return Err(SharingError::invalid(format!(
                    "startingVersion({start}) cannot be greater than the latest version of the \
                     table({latest_version})"
                )));
            }
            if end_asked.is_some_and(|end| end > latest_version) {
                return Err(SharingError::invalid(format!(
                    "End version cannot be greater than the latest version of the \
                     table({latest_version})."
                )));
            }
        }
    }
    let end = end_asked.unwrap_or(latest_version).min(latest_version);
    let at_start = if start == latest_version {
        latest.clone()
    } else {
        tables.snapshot_blocking(table, &VersionSelector::Version(start))?
    };
    let commits = match &latest.source {
        SnapshotSource::Iceberg { table: iceberg, .. } => {
            iceberg_commits(tables, iceberg, start, end)?
        }
        SnapshotSource::Delta(_) => delta_commits(tables, &latest, &at_start, kind, start, end)?,
    };
    let head = match kind {
        FeedKind::ChangeData if !include_historical_metadata => latest,
        _ => at_start,
    };
    Ok(Feed {
        kind,
        start,
        include_historical_metadata,
        include_historical_protocol: false,
        head,
        commits,
    })
}

/// The commits `start..=end` of a Delta table; for a change data feed, every version in the
/// range must have recorded change data. Blocking.
fn delta_commits(
    tables: &Tables,
    latest: &TableSnapshot,
    at_start: &TableSnapshot,
    kind: FeedKind,
    start: u64,
    end: u64,
) -> Result<Vec<Commit>> {
    let not_recorded = |version: u64| {
        SharingError::invalid(format!(
            "Error getting change data for range [{start}, {end}] as change data was not \
             recorded for version [{version}]"
        ))
    };
    if kind == FeedKind::ChangeData && !change_data_enabled(&at_start.metadata) {
        return Err(not_recorded(start));
    }
    let engine = tables.engine(&latest.bucket);
    let table_root = table_url(&latest.bucket, &latest.location)?;
    let commits = read_commits_blocking(engine.as_ref(), &table_root, start, end)?;
    if kind == FeedKind::ChangeData {
        for commit in &commits {
            let disabled = commit.actions.iter().any(|action| {
                action
                    .get("metaData")
                    .is_some_and(|metadata| !change_data_enabled(metadata))
            });
            if disabled {
                return Err(not_recorded(commit.version));
            }
        }
    }
    Ok(commits)
}

/// The versions `start..=end` of an Iceberg table as commits of file actions: the files
/// each snapshot added and removed (compactions, which change no rows, are left out), and a
/// `metaData` action where the table's Delta metadata changed. A snapshot that needs
/// row-level changes is refused. Blocking.
fn iceberg_commits(
    tables: &Tables,
    table: &IcebergTable,
    start: u64,
    end: u64,
) -> Result<Vec<Commit>> {
    let store = NodeObjectStore::new(tables.node().clone(), table.bucket.clone());
    let mut commits = Vec::new();
    let mut previous_metadata: Option<Value> = None;
    for version in table.versions() {
        if version.version > end {
            break;
        }
        let metadata = table.delta_metadata(version)?;
        let metadata_changed = previous_metadata
            .as_ref()
            .is_some_and(|previous| previous["schemaString"] != metadata["schemaString"]);
        previous_metadata = Some(metadata.clone());
        if version.version < start {
            continue;
        }
        let timestamp_ms = version.timestamp_ms().unwrap_or(0);
        let mut actions = Vec::new();
        if metadata_changed {
            actions.push(json!({ "metaData": metadata }));
        }
        let changes = tables.block_on(iceberg::snapshot_changes(&store, table, version))?;
        for change in changes.iter().filter(|change| change.data_change) {
            let file = &change.file;
            let partition_values: serde_json::Map<String, Value> = file
                .partition_values
                .iter()
                .map(|(column, value)| (column.clone(), json!(value)))
                .collect();
            let mut action = json!({
                "path": relative_path(&file.key, &table.root)?,
                "partitionValues": partition_values,
                "size": file.size_bytes,
                "modificationTime": timestamp_ms,
                "dataChange": true,
            });
            let kind = match change.kind {
                ChangeKind::Add => {
                    action["stats"] = json!(file.stats);
                    "add"
                }
                ChangeKind::Remove => {
                    action["deletionTimestamp"] = json!(timestamp_ms);
                    "remove"
                }
            };
            actions.push(json!({ kind: action }));
        }
        commits.push(Commit {
            version: version.version,
            timestamp_ms,
            actions,
        });
    }
    Ok(commits)
}

/// Parquet-format streaming readers cannot follow a table whose reader version rises inside
/// the range: 400 `UNSUPPORTED_OPERATION` in the reference server's words.
fn check_reader_version_in_range(feed: &Feed) -> Result<()> {
    for commit in &feed.commits {
        for action in &commit.actions {
            let protocol = &action["protocol"];
            let reader_version = protocol["minReaderVersion"].as_i64();
            if let Some(reader_version) = reader_version.filter(|version| *version > 1) {
                let writer_version = protocol["minWriterVersion"].as_i64().unwrap_or(0);
                return Err(SharingError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "Delta protocol version ({reader_version},{writer_version}) is too new \
                         for this version of Delta Sharing's parquet response format (reader \
                         version 1), at table version {}; ask for responseformat=delta",
                        commit.version
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn change_data_enabled(metadata: &Value) -> bool {
    metadata["configuration"]["delta.enableChangeDataFeed"]
        .as_str()
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// The version of a commit file name (`00000000000000000012.json`).
fn commit_version(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads the commits `start..=end` of the table at `table_root`. Blocking.
fn read_commits_blocking(
    engine: &dyn Engine,
    table_root: &Url,
    start: u64,
    end: u64,
) -> Result<Vec<Commit>> {
    let log_error = |error: &dyn std::fmt::Display| {
        SharingError::internal(format!("the table's log cannot be read: {error}"))
    };
    let log_root = table_root
        .join("_delta_log/")
        .map_err(|error| log_error(&error))?;
    // Listing starts strictly after the offset: the bare version sorts just before its file.
    let first = log_root
        .join(&format!("{start:020}"))
        .map_err(|error| log_error(&error))?;
    let storage = engine.storage_handler();
    let mut files = Vec::new();
    for meta in storage
        .list_from(&first)
        .map_err(|error| log_error(&error))?
    {
        let meta = meta.map_err(|error| log_error(&error))?;
        let in_log = meta
            .location
            .as_str()
            .strip_prefix(log_root.as_str())
            .is_some_and(|name| !name.contains('/'));
        let version = meta
            .location
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .and_then(commit_version);
        if let (true, Some(version)) = (in_log, version) {
            if (start..=end).contains(&version) {
                files.push((version, meta));
            }
        }
    }
    files.sort_by_key(|(version, _)| *version);
    files.dedup_by_key(|(version, _)| *version);
    let mut commits = Vec::with_capacity(files.len());
    for (expected, (version, meta)) in (start..=end).zip(&files) {
        if *version != expected {
            return Err(SharingError::internal(format!(
                "commit {expected} is missing from the table's log"
            )));
        }
        let bytes = storage
            .read_files(vec![(meta.location.clone(), None)])
            .map_err(|error| log_error(&error))?
            .next()
            .ok_or_else(|| SharingError::internal(format!("commit {version} is empty")))?
            .map_err(|error| log_error(&error))?;
        let mut actions = Vec::new();
        for line in bytes.split(|byte| *byte == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let action: Value = serde_json::from_slice(line).map_err(|error| {
                SharingError::internal(format!("commit {version} is not valid JSON: {error}"))
            })?;
            actions.push(action);
        }
        let in_commit_timestamp = actions
            .iter()
            .find_map(|action| action["commitInfo"]["inCommitTimestamp"].as_i64());
        commits.push(Commit {
            version: *version,
            timestamp_ms: in_commit_timestamp.unwrap_or(meta.last_modified),
            actions,
        });
    }
    if commits.len() as u64 != end - start + 1 {
        return Err(SharingError::internal(format!(
            "commits {start} to {end} are not all in the table's log"
        )));
    }
    Ok(commits)
}

/// A MERGE that inserted, updated and deleted nothing (its file actions are not changes).
fn is_no_op_merge(commit: &Commit) -> bool {
    commit.actions.iter().any(|action| {
        let info = &action["commitInfo"];
        info["operation"] == "MERGE"
            && [
                "numTargetRowsInserted",
                "numTargetRowsUpdated",
                "numTargetRowsDeleted",
            ]
            .iter()
            .all(|metric| metric_is_zero(&info["operationMetrics"][metric]))
    })
}

fn metric_is_zero(value: &Value) -> bool {
    match value {
        Value::String(text) => text.trim() == "0",
        Value::Number(number) => number.as_i64() == Some(0),
        _ => false,
    }
}

/// Writes the head and every line of the range into chunks; runs on the replay pool.
fn encode_feed(
    feed: &Feed,
    context: &FileLineContext<'_>,
    history_shared: bool,
    head: String,
    sender: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<()> {
    let mut chunk = BytesMut::with_capacity(CHUNK_BYTES * 2);
    chunk.put_slice(head.as_bytes());
    let metadata_wanted = feed.kind == FeedKind::Streaming || feed.include_historical_metadata;
    for commit in &feed.commits {
        let has_cdc = feed.kind == FeedKind::ChangeData
            && commit
                .actions
                .iter()
                .any(|action| action.get("cdc").is_some());
        let skip_files = feed.kind == FeedKind::ChangeData && is_no_op_merge(commit);
        for action in &commit.actions {
            let line = if let Some(protocol) = action.get("protocol") {
                if !(feed.include_historical_protocol && commit.version > feed.start) {
                    continue;
                }
                json!({"protocol": {"deltaProtocol": protocol, "version": commit.version}})
            } else if let Some(metadata) = action.get("metaData") {
                if !(metadata_wanted && commit.version > feed.start) {
                    continue;
                }
                let mut historical = feed.head.clone();
                historical.metadata = metadata.clone();
                metadata_line(
                    context.format,
                    &historical,
                    history_shared,
                    Some(commit.version),
                )
            } else {
                let Some((kind, file)) = file_action(action, has_cdc) else {
                    continue;
                };
                if skip_files {
                    continue;
                }
                change_file_line(context, kind, file, commit)?
            };
            let _ = serde_json::to_writer((&mut chunk).writer(), &line);
            chunk.put_u8(b'\n');
            if chunk.len() >= CHUNK_BYTES
                && sender.blocking_send(Ok(chunk.split().freeze())).is_err()
            {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        let _ = sender.blocking_send(Ok(chunk.freeze()));
    }
    Ok(())
}

/// The file action a line is made of: `cdc` only when the commit has any (change data
/// feed), else `add`/`remove` with `dataChange=true`.
fn file_action(action: &Value, cdc_only: bool) -> Option<(&'static str, &Value)> {
    if cdc_only {
        return action.get("cdc").map(|file| ("cdc", file));
    }
    for kind in ["add", "remove"] {
        if let Some(file) = action.get(kind) {
            return (file["dataChange"] == true).then_some((kind, file));
        }
    }
    None
}

/// An `add`/`cdf`/`remove` line (parquet) or a `file` line wrapping the action (delta), with
/// the commit's version and timestamp.
fn change_file_line(
    context: &FileLineContext<'_>,
    kind: &str,
    file: &Value,
    commit: &Commit,
) -> Result<Value> {
    let path = file["path"]
        .as_str()
        .ok_or_else(|| SharingError::internal(format!("a {kind} action has no path")))?;
    let url = context.presign_file(path)?;
    let id = context.id_hash.file_id(path);
    let mut expiration = url.expiration_timestamp_ms;
    let deletion_vector = file.get("deletionVector").filter(|dv| dv.is_object());
    match context.format {
        ResponseFormat::Parquet => {
            if deletion_vector.is_some() {
                return Err(SharingError::new(
                    ErrorKind::Unsupported,
                    "Deletion Vector property disabled: a file has a deletion vector and the \
                     response format is parquet",
                ));
            }
            let mut fields = Map::new();
            fields.insert("url".into(), json!(url.url));
            fields.insert("id".into(), json!(id));
            let partition_values = match &file["partitionValues"] {
                Value::Object(values) => Value::Object(values.clone()),
                _ => json!({}),
            };
            fields.insert("partitionValues".into(), partition_values);
            fields.insert("size".into(), json!(file["size"].as_i64().unwrap_or(0)));
            if kind == "add" {
                if let Some(stats) = file["stats"].as_str() {
                    fields.insert("stats".into(), json!(stats));
                }
            }
            fields.insert("version".into(), json!(commit.version));
            fields.insert("timestamp".into(), json!(commit.timestamp_ms));
            fields.insert("expirationTimestamp".into(), json!(expiration));
            let line_kind = if kind == "cdc" { "cdf" } else { kind };
            let mut line = Map::new();
            line.insert(line_kind.into(), Value::Object(fields));
            Ok(Value::Object(line))
        }
        ResponseFormat::Delta => {
            let mut action = file.clone();
            action["path"] = json!(url.url);
            if let Some(dv) = deletion_vector {
                let reference = DeletionVectorRef {
                    storage_type: dv["storageType"].as_str().unwrap_or(""),
                    path_or_inline_dv: dv["pathOrInlineDv"].as_str().unwrap_or(""),
                    offset: dv["offset"]
                        .as_i64()
                        .and_then(|offset| i32::try_from(offset).ok()),
                    size_in_bytes: dv["sizeInBytes"]
                        .as_i64()
                        .and_then(|size| i32::try_from(size).ok())
                        .unwrap_or(0),
                    cardinality: dv["cardinality"].as_i64().unwrap_or(0),
                };
                let (descriptor, dv_expiry) = context.deletion_vector(&reference)?;
                if let Some(dv_expiry) = dv_expiry {
                    expiration = expiration.min(dv_expiry);
                }
                action["deletionVector"] = descriptor;
            }
            let mut single = Map::new();
            single.insert(kind.into(), action);
            Ok(json!({"file": {
                "id": id,
                "expirationTimestamp": expiration,
                "version": commit.version,
                "timestamp": commit.timestamp_ms,
                "deltaSingleAction": Value::Object(single),
            }}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn changes_page_sizes_are_checked() {
        for (value, wording) in [
            ("0", "maxFiles must be positive"),
            ("-3", "maxFiles must be positive"),
            ("4294967296", "Not an int32 value"),
            ("ten", "Not a numeric value"),
        ] {
            let error =
                ChangesParams::parse(&query(&[("startingVersion", "0"), ("maxFiles", value)]))
                    .unwrap_err();
            assert!(
                error.message.contains(wording),
                "{value}: {}",
                error.message
            );
        }
        assert!(
            ChangesParams::parse(&query(&[("startingVersion", "0"), ("maxFiles", "10")])).is_ok()
        );
    }

    #[test]
    fn changes_parameters_use_the_reference_wording() {
        let parsed = ChangesParams::parse(&query(&[
            ("startingVersion", "1"),
            ("endingVersion", "3"),
            ("includeHistoricalMetadata", "True"),
        ]))
        .unwrap();
        assert_eq!(parsed.start, RangeBound::Version(1));
        assert_eq!(parsed.end, Some(RangeBound::Version(3)));
        assert!(parsed.include_historical_metadata);
        let message = |pairs: &[(&str, &str)]| ChangesParams::parse(&query(pairs)).unwrap_err();
        assert!(message(&[])
            .message
            .contains("No startingVersion or startingTimestamp provided"));
        assert!(message(&[
            ("startingVersion", "1"),
            ("startingTimestamp", "2024-01-01T00:00:00Z")
        ])
        .message
        .contains("Multiple starting arguments provided for CDF read"));
        assert!(message(&[
            ("startingVersion", "1"),
            ("endingVersion", "1"),
            ("endingTimestamp", "2024-01-01T00:00:00Z")
        ])
        .message
        .contains("Please provide one of either endingTimestamp or endingVersion."));
        assert_eq!(
            message(&[("startingVersion", "x")]).message,
            "startingVersion is not a valid number."
        );
        assert_eq!(
            message(&[("startingVersion", "2"), ("endingVersion", "1")]).message,
            "CDF range from start 2 to end 1 was invalid. End cannot be before start."
        );
        assert!(message(&[("startingTimestamp", "soon")])
            .message
            .contains("Invalid startingTimestamp"));
    }

    #[test]
    fn commit_names_and_file_actions() {
        assert_eq!(commit_version("00000000000000000012.json"), Some(12));
        assert_eq!(
            commit_version("00000000000000000012.checkpoint.parquet"),
            None
        );
        assert_eq!(commit_version("12.json"), None);
        let add = json!({"add": {"path": "a", "dataChange": true}});
        let compaction = json!({"add": {"path": "b", "dataChange": false}});
        let cdc = json!({"cdc": {"path": "c", "dataChange": false}});
        assert_eq!(file_action(&add, false).map(|(kind, _)| kind), Some("add"));
        assert!(file_action(&compaction, false).is_none());
        assert!(file_action(&add, true).is_none());
        assert_eq!(file_action(&cdc, true).map(|(kind, _)| kind), Some("cdc"));
        let merge = Commit {
            version: 1,
            timestamp_ms: 0,
            actions: vec![
                json!({"commitInfo": {"operation": "MERGE", "operationMetrics": {
                "numTargetRowsInserted": "0", "numTargetRowsUpdated": "0",
                "numTargetRowsDeleted": "0"}}}),
            ],
        };
        assert!(is_no_op_merge(&merge));
    }
}
