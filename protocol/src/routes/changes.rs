//! Version ranges of Delta and Iceberg tables, read commit by commit: the change data feed
//! (`GET .../changes`) and streaming queries (`POST .../query` with `startingVersion`).
//!
//! This module owns the whole answer of a range: resolving it, the checks made before the
//! 200, pages, the `endStreamAction` line, and the memory bound.
//!
//! *Memory.* The `_delta_log/` of a Delta table is listed once per request (commit names,
//! sizes and times only). A commit is read and parsed only when its lines are written, and
//! dropped before the next one is read, so an answer holds one commit's actions and the
//! chunks in flight (`CHUNKS_IN_FLIGHT_MAX` of `CHUNK_BYTES`), never the whole range. The
//! checks that must come before the status (change data recorded in every `metaData` change
//! of the range; for parquet streaming, no reader version above 1 inside the range) read the
//! commits once more beforehand, keeping nothing but the first failure: each line is parsed
//! into a struct that keeps only `metaData` and `protocol` and skips every other action. They
//! run for the first page only: later pages read part of the same pinned range, whose commits
//! never change, in the format the token pins, so a page costs O(its own commits).
//! Iceberg ranges are built one snapshot at a time the same way (a first walk checks every
//! snapshot's changes, so a refused snapshot is an error status, not a cut stream).
//!
//! *Lines.* Each line carries the commit's own version and timestamp (the in-commit
//! timestamp when the commit has one, else the commit file's modification time). Per commit,
//! the change data feed returns its `cdc` actions (as `cdf` lines) when it has any, otherwise
//! its `add`/`remove` actions with `dataChange=true`; a MERGE that changed no rows returns
//! nothing. A streaming query returns `add`/`remove` with `dataChange=true`. `metaData`
//! actions of versions after the start are returned by streaming queries, and by the change
//! data feed only when `includeHistoricalMetadata` is true; `protocol` actions of versions
//! after the start only with `includeHistoricalProtocol` in the delta format.
//!
//! *Pages.* With `maxFiles` N a page holds at most N file lines (`metaData`/`protocol` lines
//! do not count). Every page repeats lines 1-2 and `Delta-Table-Version` of the first one and
//! ends with an `endStreamAction` carrying `nextPageToken` while files remain (none on the
//! last page). The token (`RangePage`, sealed with the node secret) pins the table, the
//! resolved start and end, the latest version at page 1 (lines 1-2 describe it or the
//! start), the next position (a commit version and the index of its next action), a digest
//! of the request's parameters and an expiry: a commit made after page 1 never enters the
//! range. An `endStreamAction` also ends every answer of a client that announced
//! `includeendstreamaction=true`; such a client learns of an error after the 200 from its
//! `errorMessage`, any other client from a cut stream.

use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use delta_kernel::Engine;
use http::Response;

use serde_json::{json, Map, Value};
use url::Url;

use crate::body::ResponseBody;
use crate::capabilities::{choose_format, ResponseFormat};
use crate::catalog::Table;
use crate::error::{ErrorKind, Result, SharingError};
use crate::files::{relative_path, DeletionVectorRef, FileIdHash};
use crate::ndjson::lines::{end_stream_line, metadata_line, protocol_line, FileLineContext};
use crate::ndjson::{blocking_body, echo_file_id_hash, ndjson_response, ChunkSender};
use crate::page_token::{check_query_page, parameters_digest, query_page_expiry_ms};
use crate::routes::query::{TableRequest, TableRoutes};
use crate::routes::query_value;
use crate::routes::request::{capabilities, page_size, parse_timestamp, QueryRequest};
use crate::tables::delta::KernelEngine;
use crate::tables::iceberg::{self, ChangeKind, IcebergTable};
use crate::tables::{table_url, SnapshotSource, TableSnapshot, Tables, VersionSelector};

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

impl RangeBound {
    fn digest_value(bound: Option<RangeBound>) -> Value {
        match bound {
            Some(RangeBound::Version(version)) => json!({ "v": version }),
            Some(RangeBound::Timestamp(timestamp)) => json!({ "t": timestamp }),
            None => Value::Null,
        }
    }
}

/// The query parameters of `GET .../changes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangesParams {
    pub start: RangeBound,
    pub end: Option<RangeBound>,
    pub include_historical_metadata: bool,
    pub include_historical_protocol: bool,
    /// Page size (`maxFiles`).
    pub max_files: Option<u64>,
    pub page_token: Option<String>,
}

impl ChangesParams {
    /// Parses and checks the parameters with the reference server's wording.
    pub fn parse(query: &[(String, String)]) -> Result<ChangesParams> {
        let start = range_bound(query, "starting")?.ok_or_else(|| {
            SharingError::invalid("No startingVersion or startingTimestamp provided for CDF read")
        })?;
        let end = range_bound(query, "ending")?;
        let include_historical_metadata = bool_parameter(query, "includeHistoricalMetadata")?;
        let include_historical_protocol = bool_parameter(query, "includeHistoricalProtocol")?;
        if let (RangeBound::Version(start), Some(RangeBound::Version(end))) = (start, end) {
            check_range_order(start, end)?;
        }
        let max_files = match query_value(query, "maxFiles") {
            None => None,
            Some(text) => match text.trim().parse::<i64>() {
                Ok(max_files) => Some(page_size(max_files)?),
                Err(_) => {
                    return Err(SharingError::invalid(format!(
                        "Not a numeric value: {text}"
                    )))
                }
            },
        };
        let page_token = query_value(query, "pageToken")
            .filter(|token| !token.is_empty())
            .map(str::to_string);
        Ok(ChangesParams {
            start,
            end,
            include_historical_metadata,
            include_historical_protocol,
            max_files,
            page_token,
        })
    }

    /// A digest of the parameters every page must repeat (all but `maxFiles` and
    /// `pageToken`, as the reference server's checksum).
    fn parameters_checksum(&self) -> String {
        parameters_digest(&json!([
            "changes",
            RangeBound::digest_value(Some(self.start)),
            RangeBound::digest_value(self.end),
            self.include_historical_metadata,
            self.include_historical_protocol,
        ]))
    }
}

/// A boolean query parameter (case-insensitive: Python sends `True`); absent is false.
fn bool_parameter(query: &[(String, String)], name: &str) -> Result<bool> {
    match query_value(query, name) {
        None => Ok(false),
        Some(text) if text.trim().eq_ignore_ascii_case("true") => Ok(true),
        Some(text) if text.trim().eq_ignore_ascii_case("false") => Ok(false),
        Some(text) => Err(SharingError::invalid(format!(
            "{name} is not a valid boolean: {text}"
        ))),
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

/// What a page token of a range pins (sealed with the node secret, like `QueryPage`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct RangePage {
    #[serde(rename = "t")]
    table_id: String,
    /// The resolved start of page 1 (`Delta-Table-Version` of every page).
    #[serde(rename = "s")]
    start: u64,
    /// The resolved end of page 1 (at most `latest`).
    #[serde(rename = "n")]
    end: u64,
    /// The latest version when page 1 was answered.
    #[serde(rename = "l")]
    latest: u64,
    /// The commit the next page starts in.
    #[serde(rename = "v")]
    next_version: u64,
    /// Index of the next page's first action in that commit's actions.
    #[serde(rename = "i")]
    next_index: usize,
    #[serde(rename = "c")]
    parameters_checksum: String,
    /// The response format of page 1 (`ResponseFormat::name`): later pages must have it.
    #[serde(rename = "f")]
    format: String,
    /// Expiry, ms since the epoch.
    #[serde(rename = "x")]
    expires_ms: i64,
}

/// Opens a range page token after the reference server's checks (with its wording).
fn open_range_page(
    secret: &[u8],
    token: &str,
    table_id: &str,
    parameters_checksum: &str,
) -> Result<RangePage> {
    let page: RangePage = crate::page_token::open(secret, token)
        .filter(|page: &RangePage| {
            page.start <= page.end
                && page.end <= page.latest
                && (page.start..=page.end).contains(&page.next_version)
        })
        .ok_or_else(|| SharingError::invalid("Error decoding the page token"))?;
    check_query_page(
        &page.table_id,
        page.expires_ms,
        &page.parameters_checksum,
        table_id,
        parameters_checksum,
    )?;
    Ok(page)
}

/// Pages of one range answer (`maxFiles` given): what the next token pins.
struct RangePaging {
    page_files_max: u64,
    table_id: String,
    start: u64,
    end: u64,
    latest: u64,
    parameters_checksum: String,
    format: ResponseFormat,
    token_secret: Vec<u8>,
}

impl RangePaging {
    fn next_page_token(&self, next_version: u64, next_index: usize) -> String {
        let page = RangePage {
            table_id: self.table_id.clone(),
            start: self.start,
            end: self.end,
            latest: self.latest,
            next_version,
            next_index,
            parameters_checksum: self.parameters_checksum.clone(),
            format: self.format.name().to_string(),
            expires_ms: query_page_expiry_ms(),
        };
        crate::page_token::seal(&self.token_secret, &page)
    }
}

/// A range request of either route, parsed.
struct RangeRequest {
    kind: FeedKind,
    start: RangeBound,
    end: Option<RangeBound>,
    include_historical_metadata: bool,
    include_historical_protocol: bool,
    max_files: Option<u64>,
    page_token: Option<String>,
    parameters_checksum: String,
}

/// One commit of the range with its actions in log order (read when it is written, dropped
/// after).
struct Commit {
    version: u64,
    timestamp_ms: i64,
    actions: Vec<Value>,
}

/// A commit file of the listed log.
struct LogCommit {
    version: u64,
    location: Url,
    last_modified: i64,
}

/// Where the commits of a range come from.
enum RangeLog {
    Delta {
        engine: Arc<KernelEngine>,
        /// The commits from the first one this answer writes to the end (names only).
        commits: Vec<LogCommit>,
    },
    Iceberg(Arc<IcebergTable>),
}

/// A resolved range, ready to encode.
struct Feed {
    kind: FeedKind,
    start: u64,
    end: u64,
    latest: u64,
    /// Where this answer starts (page 1: the start and 0).
    next_version: u64,
    next_index: usize,
    include_historical_metadata: bool,
    /// Protocol changes inside the range become lines (delta format).
    include_historical_protocol: bool,
    /// The snapshot lines 1 and 2 describe.
    head: TableSnapshot,
    log: RangeLog,
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
        let range = RangeRequest {
            kind: FeedKind::ChangeData,
            start: params.start,
            end: params.end,
            include_historical_metadata: params.include_historical_metadata,
            include_historical_protocol: params.include_historical_protocol,
            max_files: params.max_files,
            parameters_checksum: params.parameters_checksum(),
            page_token: params.page_token,
        };
        self.version_range(request, range).await
    }

    /// `POST .../query` with `startingVersion` (the body already checked by
    /// `QueryRequest::selector`: not negative, not after `endingVersion`, history shared,
    /// page size, no refresh token).
    pub async fn streaming_query(
        &self,
        request: TableRequest<'_>,
        starting_version: i64,
        query: &QueryRequest,
    ) -> Result<Response<ResponseBody>> {
        let start = u64::try_from(starting_version)
            .map_err(|_| SharingError::invalid("startingVersion cannot be negative"))?;
        let end = match query.ending_version {
            Some(end) => {
                Some(RangeBound::Version(u64::try_from(end).map_err(|_| {
                    SharingError::invalid("endingVersion cannot be negative")
                })?))
            }
            None => None,
        };
        let range = RangeRequest {
            kind: FeedKind::Streaming,
            start: RangeBound::Version(start),
            end,
            include_historical_metadata: true,
            include_historical_protocol: query.include_historical_protocol,
            max_files: query.max_files.map(page_size).transpose()?,
            page_token: query.page_token.clone().filter(|token| !token.is_empty()),
            parameters_checksum: query.parameters_checksum(),
        };
        self.version_range(request, range).await
    }

    async fn version_range(
        &self,
        request: TableRequest<'_>,
        range: RangeRequest,
    ) -> Result<Response<ResponseBody>> {
        let capabilities = capabilities(request.headers);
        let id_hash_header = FileIdHash::requested(request.headers)?;
        let page = match &range.page_token {
            Some(token) => Some(open_range_page(
                &self.token_secret,
                token,
                &request.table.id,
                &range.parameters_checksum,
            )?),
            None => None,
        };
        let table = request.table.clone();
        let tables = self.tables.clone();
        let asked = capabilities.clone();
        let include_historical_protocol = range.include_historical_protocol;
        let kind = range.kind;
        let (start, end, include_historical_metadata) =
            (range.start, range.end, range.include_historical_metadata);
        let (feed, format) = tokio::task::spawn_blocking(move || {
            let later_page_format = page.as_ref().map(|page| page.format.clone());
            let mut feed = resolve_blocking(
                &tables,
                &table,
                kind,
                start,
                end,
                include_historical_metadata,
                page,
            )?;
            let format = choose_format(&asked, &feed.head.needs)?;
            feed.include_historical_protocol =
                include_historical_protocol && format == ResponseFormat::Delta;
            match later_page_format {
                // Page 1 checked the whole pinned range in this format; commits do not change.
                Some(first) if first == format.name() => {}
                Some(_) => {
                    return Err(SharingError::invalid(
                        "Query parameter mismatch detected for the next page query: the \
                         response format differs from the first page's",
                    ))
                }
                None => check_range_blocking(&tables, &feed, format)?,
            }
            Ok::<_, SharingError>((feed, format))
        })
        .await
        .map_err(|error| SharingError::internal(format!("replay task: {error}")))??;
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
        let paging = range.max_files.map(|page_files_max| RangePaging {
            page_files_max,
            table_id: request.table.id.clone(),
            start: feed.start,
            end: feed.end,
            latest: feed.latest,
            parameters_checksum: range.parameters_checksum.clone(),
            format,
            token_secret: self.token_secret.clone(),
        });
        let end_stream_wanted = capabilities.include_end_stream_action || paging.is_some();
        let signal_errors_in_stream = capabilities.include_end_stream_action;
        let start_version = feed.start;

        let presigner = self.presigner.clone();
        let tables = self.tables.clone();
        let body = blocking_body(
            head.into_bytes(),
            self.line_buffers.clone(),
            signal_errors_in_stream,
            "version range",
            move |out| {
                let context = FileLineContext::new(format, &feed.head, &presigner, id_hash, None)?;
                encode_feed(
                    &tables,
                    &feed,
                    &context,
                    history_shared,
                    paging.as_ref(),
                    end_stream_wanted,
                    out,
                )
            },
        );
        let mut response = ndjson_response(
            body,
            start_version,
            format,
            capabilities.include_end_stream_action,
        );
        echo_file_id_hash(&mut response, id_hash_header);
        Ok(response)
    }
}

/// Resolves the range (page 1) or takes it from the page token (later pages), and lists the
/// commits this answer writes. Blocking.
fn resolve_blocking(
    tables: &Tables,
    table: &Table,
    kind: FeedKind,
    start: RangeBound,
    end: Option<RangeBound>,
    include_historical_metadata: bool,
    page: Option<RangePage>,
) -> Result<Feed> {
    let head_is_latest = kind == FeedKind::ChangeData && !include_historical_metadata;
    let (start, end, latest, next_version, next_index, head) = match page {
        Some(page) => {
            // The range of page 1, whatever was committed since.
            let head_version = if head_is_latest {
                page.latest
            } else {
                page.start
            };
            let head = tables.snapshot_blocking(table, &VersionSelector::Version(head_version))?;
            (
                page.start,
                page.end,
                page.latest,
                page.next_version,
                page.next_index,
                head,
            )
        }
        None => {
            let latest = tables.snapshot_blocking(table, &VersionSelector::Latest)?;
            let (start, end) = resolve_range(tables, table, kind, start, end, latest.version)?;
            let at_start = if start == latest.version {
                latest.clone()
            } else {
                tables.snapshot_blocking(table, &VersionSelector::Version(start))?
            };
            if kind == FeedKind::ChangeData
                && matches!(at_start.source, SnapshotSource::Delta(_))
                && !change_data_enabled(&at_start.metadata)
            {
                return Err(not_recorded(start, end, start));
            }
            let latest_version = latest.version;
            let head = if head_is_latest { latest } else { at_start };
            (start, end, latest_version, start, 0, head)
        }
    };
    let log = match &head.source {
        SnapshotSource::Iceberg { table: iceberg, .. } => RangeLog::Iceberg(iceberg.clone()),
        SnapshotSource::Delta(_) => {
            let engine = tables.engine(&head.bucket);
            let table_root = table_url(&head.bucket, &head.location)?;
            let commits = list_commits_blocking(engine.as_ref(), &table_root, next_version, end)?;
            RangeLog::Delta { engine, commits }
        }
    };
    Ok(Feed {
        kind,
        start,
        end,
        latest,
        next_version,
        next_index,
        include_historical_metadata,
        include_historical_protocol: false,
        head,
        log,
    })
}

/// The start and end versions a request names, after the reference server's checks.
fn resolve_range(
    tables: &Tables,
    table: &Table,
    kind: FeedKind,
    start: RangeBound,
    end: Option<RangeBound>,
    latest_version: u64,
) -> Result<(u64, u64)> {
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
    Ok((
        start,
        end_asked.unwrap_or(latest_version).min(latest_version),
    ))
}

fn not_recorded(start: u64, end: u64, version: u64) -> SharingError {
    SharingError::invalid(format!(
        "Error getting change data for range [{start}, {end}] as change data was not recorded \
         for version [{version}]"
    ))
}

/// The parts of a log action the checks before the status read; every other action is
/// skipped by the parser without being kept.
#[derive(serde::Deserialize)]
struct CheckedAction {
    #[serde(rename = "metaData")]
    metadata: Option<Value>,
    protocol: Option<Value>,
}

/// The checks that must pass before the status, over the whole range (made for page 1 only:
/// later pages read part of the same pinned, immutable commits in the same format). Reads each
/// commit and keeps nothing. Blocking.
fn check_range_blocking(tables: &Tables, feed: &Feed, format: ResponseFormat) -> Result<()> {
    let change_data = feed.kind == FeedKind::ChangeData;
    let parquet_streaming = feed.kind == FeedKind::Streaming && format == ResponseFormat::Parquet;
    match &feed.log {
        RangeLog::Iceberg(_) => {
            // Builds each snapshot's changes once, so a refused snapshot is a status.
            feed.log
                .visit_commits(tables, feed.next_version, feed.end, |_| {
                    Ok(ControlFlow::Continue(()))
                })
        }
        RangeLog::Delta { .. } if !(change_data || parquet_streaming) => Ok(()),
        RangeLog::Delta { engine, commits } => {
            for commit in commits {
                let bytes = read_commit_bytes(engine.as_ref(), commit)?;
                for line in commit_lines(&bytes) {
                    let action: CheckedAction = serde_json::from_slice(line)
                        .map_err(|error| invalid_commit(commit.version, &error))?;
                    if let Some(metadata) = action.metadata.filter(|_| change_data) {
                        if !change_data_enabled(&metadata) {
                            return Err(not_recorded(feed.start, feed.end, commit.version));
                        }
                    }
                    if let Some(protocol) = action.protocol.filter(|_| parquet_streaming) {
                        check_parquet_reader_version(&protocol, commit.version)?;
                    }
                }
            }
            Ok(())
        }
    }
}

/// Parquet-format streaming readers cannot follow a table whose reader version rises inside
/// the range: 400 `UNSUPPORTED_OPERATION` in the reference server's words.
fn check_parquet_reader_version(protocol: &Value, version: u64) -> Result<()> {
    let reader_version = protocol["minReaderVersion"].as_i64();
    if let Some(reader_version) = reader_version.filter(|reader_version| *reader_version > 1) {
        let writer_version = protocol["minWriterVersion"].as_i64().unwrap_or(0);
        return Err(SharingError::new(
            ErrorKind::Unsupported,
            format!(
                "Delta protocol version ({reader_version},{writer_version}) is too new for this \
                 version of Delta Sharing's parquet response format (reader version 1), at \
                 table version {version}; ask for responseformat=delta"
            ),
        ));
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

fn log_error(error: &(dyn std::error::Error + 'static)) -> SharingError {
    crate::store::library_error(error, |message| {
        SharingError::internal(format!("the table's log cannot be read: {message}"))
    })
}

fn invalid_commit(version: u64, error: &dyn std::fmt::Display) -> SharingError {
    SharingError::internal(format!("commit {version} is not valid JSON: {error}"))
}

/// Lists the commits `start..=end` of the table at `table_root` (names and times only; every
/// one must be there). Blocking.
fn list_commits_blocking(
    engine: &dyn Engine,
    table_root: &Url,
    start: u64,
    end: u64,
) -> Result<Vec<LogCommit>> {
    let log_root = table_root
        .join("_delta_log/")
        .map_err(|error| log_error(&error))?;
    // Listing starts strictly after the offset: the bare version sorts just before its file.
    let first = log_root
        .join(&format!("{start:020}"))
        .map_err(|error| log_error(&error))?;
    let storage = engine.storage_handler();
    let mut commits = Vec::new();
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
                commits.push(LogCommit {
                    version,
                    location: meta.location,
                    last_modified: meta.last_modified,
                });
            }
        }
    }
    commits.sort_by_key(|commit| commit.version);
    commits.dedup_by_key(|commit| commit.version);
    for (expected, commit) in (start..=end).zip(&commits) {
        if commit.version != expected {
            return Err(SharingError::internal(format!(
                "commit {expected} is missing from the table's log"
            )));
        }
    }
    if commits.len() as u64 != end - start + 1 {
        return Err(SharingError::internal(format!(
            "commits {start} to {end} are not all in the table's log"
        )));
    }
    Ok(commits)
}

fn read_commit_bytes(engine: &dyn Engine, commit: &LogCommit) -> Result<Bytes> {
    engine
        .storage_handler()
        .read_files(vec![(commit.location.clone(), None)])
        .map_err(|error| log_error(&error))?
        .next()
        .ok_or_else(|| SharingError::internal(format!("commit {} is empty", commit.version)))?
        .map_err(|error| log_error(&error))
}

/// The non-blank lines of a commit file.
fn commit_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
}

/// Reads and parses one commit. Blocking.
fn read_commit_blocking(engine: &dyn Engine, commit: &LogCommit) -> Result<Commit> {
    let bytes = read_commit_bytes(engine, commit)?;
    let mut actions = Vec::new();
    for line in commit_lines(&bytes) {
        let action: Value =
            serde_json::from_slice(line).map_err(|error| invalid_commit(commit.version, &error))?;
        actions.push(action);
    }
    let in_commit_timestamp = actions
        .iter()
        .find_map(|action| action["commitInfo"]["inCommitTimestamp"].as_i64());
    Ok(Commit {
        version: commit.version,
        timestamp_ms: in_commit_timestamp.unwrap_or(commit.last_modified),
        actions,
    })
}

impl RangeLog {
    /// Calls `visit` with each commit `from..=end` in order, one at a time (each is dropped
    /// before the next is read), until it breaks. Blocking.
    fn visit_commits(
        &self,
        tables: &Tables,
        from: u64,
        end: u64,
        mut visit: impl FnMut(Commit) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        match self {
            RangeLog::Delta { engine, commits } => {
                for commit in commits
                    .iter()
                    .filter(|commit| (from..=end).contains(&commit.version))
                {
                    let commit = read_commit_blocking(engine.as_ref(), commit)?;
                    if visit(commit)?.is_break() {
                        break;
                    }
                }
                Ok(())
            }
            RangeLog::Iceberg(table) => iceberg_commits(tables, table, from, end, visit),
        }
    }
}

/// The versions `from..=end` of an Iceberg table as commits of file actions, one at a time:
/// the files each snapshot added and removed (compactions, which change no rows, are left
/// out), and a `metaData` action where the table's Delta metadata changed. A snapshot that
/// needs row-level changes is refused. Blocking.
fn iceberg_commits(
    tables: &Tables,
    table: &IcebergTable,
    from: u64,
    end: u64,
    mut visit: impl FnMut(Commit) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let store = tables.store().bucket(&table.bucket);
    let mut previous_metadata: Option<Value> = None;
    for version in table.versions() {
        if version.version > end {
            break;
        }
        let metadata = table.delta_metadata(version)?;
        let metadata_changed = previous_metadata
            .as_ref()
            .is_some_and(|previous| previous["schemaString"] != metadata["schemaString"]);
        if version.version < from {
            previous_metadata = Some(metadata);
            continue;
        }
        let timestamp_ms = version.timestamp_ms().unwrap_or(0);
        let mut actions = Vec::new();
        if metadata_changed {
            actions.push(json!({ "metaData": metadata.clone() }));
        }
        previous_metadata = Some(metadata);
        let changes = tables.block_on(iceberg::snapshot_changes(store.as_ref(), table, version))?;
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
        drop(changes);
        let commit = Commit {
            version: version.version,
            timestamp_ms,
            actions,
        };
        if visit(commit)?.is_break() {
            break;
        }
    }
    Ok(())
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

/// Writes the lines of the range (or of one page of it) after the head, one commit at a
/// time, then the `endStreamAction` when it is wanted, and ends the body; runs on the
/// replay pool.
fn encode_feed(
    tables: &Tables,
    feed: &Feed,
    context: &FileLineContext<'_>,
    history_shared: bool,
    paging: Option<&RangePaging>,
    end_stream_wanted: bool,
    out: &mut ChunkSender,
) -> Result<()> {
    let metadata_wanted = feed.kind == FeedKind::Streaming || feed.include_historical_metadata;
    let mut page_files: u64 = 0;
    let mut min_expiration_ms: Option<i64> = None;
    let mut next_page_token = None;
    feed.log
        .visit_commits(tables, feed.next_version, feed.end, |commit| {
            let has_cdc = feed.kind == FeedKind::ChangeData
                && commit
                    .actions
                    .iter()
                    .any(|action| action.get("cdc").is_some());
            let skip_files = feed.kind == FeedKind::ChangeData && is_no_op_merge(&commit);
            let first = if commit.version == feed.next_version {
                feed.next_index
            } else {
                0
            };
            for (index, action) in commit.actions.iter().enumerate().skip(first) {
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
                    if let Some(paging) = paging {
                        if page_files == paging.page_files_max {
                            next_page_token = Some(paging.next_page_token(commit.version, index));
                            return Ok(ControlFlow::Break(()));
                        }
                    }
                    let (line, expiration_ms) = change_file_line(context, kind, file, &commit)?;
                    page_files += 1;
                    min_expiration_ms =
                        Some(min_expiration_ms.map_or(expiration_ms, |m| m.min(expiration_ms)));
                    line
                };
                let _ = serde_json::to_writer((&mut out.chunk).writer(), &line);
                out.chunk.put_u8(b'\n');
                if !out.flush_when_full() {
                    // The client has gone.
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
    if !out.is_open() {
        return Ok(());
    }
    if end_stream_wanted {
        let line = end_stream_line(next_page_token.as_deref(), None, min_expiration_ms);
        let _ = serde_json::to_writer((&mut out.chunk).writer(), &line);
        out.chunk.put_u8(b'\n');
    }
    out.finish();
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
/// the commit's version and timestamp, and the line's smallest URL expiry.
fn change_file_line(
    context: &FileLineContext<'_>,
    kind: &str,
    file: &Value,
    commit: &Commit,
) -> Result<(Value, i64)> {
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
            Ok((Value::Object(line), expiration))
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
            let line = json!({"file": {
                "id": id,
                "expirationTimestamp": expiration,
                "version": commit.version,
                "timestamp": commit.timestamp_ms,
                "deltaSingleAction": Value::Object(single),
            }});
            Ok((line, expiration))
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

    /// Issue 12: a range page token pins the range and the position, and is refused with the
    /// reference server's words on another table, other parameters, another key, garbage, a
    /// token of another kind and once expired.
    #[test]
    fn r12_range_page_tokens_pin_the_range_and_check_parameters() {
        let paging = RangePaging {
            page_files_max: 2,
            table_id: "t1".into(),
            start: 3,
            end: 7,
            latest: 9,
            parameters_checksum: "c1".into(),
            format: ResponseFormat::Delta,
            token_secret: b"k".to_vec(),
        };
        let token = paging.next_page_token(5, 12);
        let page = open_range_page(b"k", &token, "t1", "c1").unwrap();
        assert_eq!(
            (
                page.start,
                page.end,
                page.latest,
                page.next_version,
                page.next_index
            ),
            (3, 7, 9, 5, 12)
        );
        assert_eq!(page.format, "delta");
        let refused = |secret: &[u8], token: &str, table: &str, checksum: &str| {
            open_range_page(secret, token, table, checksum)
                .unwrap_err()
                .message
        };
        assert_eq!(
            refused(b"k", &token, "t2", "c1"),
            "The table specified in the page token does not match the table being queried"
        );
        assert_eq!(
            refused(b"k", &token, "t1", "c2"),
            "Query parameter mismatch detected for the next page query"
        );
        for (secret, token) in [
            (&b"other"[..], token.as_str()),
            (b"k", "garbage"),
            (b"k", &token[..token.len() - 2]),
        ] {
            assert_eq!(
                refused(secret, token, "t1", "c1"),
                "Error decoding the page token"
            );
        }
        // A snapshot query's page token is not a range token.
        let query_page = crate::page_token::seal(
            b"k",
            &json!({"t": "t1", "v": 3, "o": 0, "i": 1, "r": 0, "c": "c1", "e": i64::MAX}),
        );
        assert_eq!(
            refused(b"k", &query_page, "t1", "c1"),
            "Error decoding the page token"
        );
        let expired = crate::page_token::seal(
            b"k",
            &RangePage {
                expires_ms: 1000,
                ..page.clone()
            },
        );
        assert_eq!(
            refused(b"k", &expired, "t1", "c1"),
            "The page token has expired"
        );
        // A position outside the pinned range cannot be sealed by a client anyway; refused.
        let outside = crate::page_token::seal(
            b"k",
            &RangePage {
                next_version: 8,
                ..page
            },
        );
        assert_eq!(
            refused(b"k", &outside, "t1", "c1"),
            "Error decoding the page token"
        );
    }

    /// Issue 12: the digest of `/changes` covers every parameter but the page ones.
    #[test]
    fn r12_changes_checksum_covers_every_parameter_but_the_page() {
        let checksum = |pairs: &[(&str, &str)]| {
            ChangesParams::parse(&query(pairs))
                .unwrap()
                .parameters_checksum()
        };
        let first = checksum(&[
            ("startingVersion", "1"),
            ("endingVersion", "5"),
            ("maxFiles", "2"),
        ]);
        assert_eq!(
            first,
            checksum(&[
                ("startingVersion", "1"),
                ("endingVersion", "5"),
                ("maxFiles", "3"),
                ("pageToken", "x"),
            ])
        );
        for changed in [
            &[("startingVersion", "2"), ("endingVersion", "5")][..],
            &[("startingVersion", "1"), ("endingVersion", "4")],
            &[("startingVersion", "1")],
            &[
                ("startingTimestamp", "2024-01-01T00:00:00Z"),
                ("endingVersion", "5"),
            ],
            &[
                ("startingVersion", "1"),
                ("endingVersion", "5"),
                ("includeHistoricalMetadata", "true"),
            ],
            &[
                ("startingVersion", "1"),
                ("endingVersion", "5"),
                ("includeHistoricalProtocol", "true"),
            ],
        ] {
            assert_ne!(first, checksum(changed), "{changed:?}");
        }
        let parsed = ChangesParams::parse(&query(&[
            ("startingVersion", "0"),
            ("maxFiles", "7"),
            ("pageToken", "p"),
            ("includeHistoricalProtocol", "TRUE"),
        ]))
        .unwrap();
        assert_eq!(parsed.max_files, Some(7));
        assert_eq!(parsed.page_token.as_deref(), Some("p"));
        assert!(parsed.include_historical_protocol);
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
