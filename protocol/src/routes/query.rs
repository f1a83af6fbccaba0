//! The table routes of the sharing API: `version`, `metadata` and `query`, for tables of
//! every format.
//!
//! Requests are validated with the reference server's wording before any log is read. A
//! query streams: headers and the protocol and metadata lines go out as soon as the
//! snapshot is known, then file lines are written into buffers of `CHUNK_BYTES` and sent one
//! by one through a bounded channel, so memory does not grow with the number of files.
//! Asynchronous queries (`asyncquery=true`, `POST .../queries/{id}`) are started and answered
//! here, their state kept in `async_queries`.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Response};

use serde_json::Value;
use time::OffsetDateTime;

use crate::body::{empty_body, full_body, ResponseBody};
use crate::capabilities::{choose_format, ResponseFormat};
use crate::catalog::{SourceType, Table};
use crate::error::{Result, SharingError};
use crate::files::{ActiveFiles, FileIdHash, FileLists, FileRow, KeptPerFile, ListOrder};
use crate::ndjson::line_buffers::LineBuffers;
use crate::ndjson::lines::{
    end_stream_line, metadata_line, protocol_line, set_table_size, FileLineContext,
};
use crate::ndjson::{
    blocking_body, echo_file_id_hash, ndjson_response, set_header, ChunkSender,
    TABLE_VERSION_HEADER,
};
use crate::page_token::{check_query_page, page_token_expired, query_page_expiry_ms};
use crate::predicate::{
    live_records, might_match, parse_predicate, FileFacts, LimitTracker, PartitionValues, Predicate,
};
use crate::presign::Presigner;
use crate::routes::async_queries::{
    query_not_found, AsyncQueries, AsyncQuery, QueryOwner, QueryState,
};
use crate::routes::query_value;
use crate::routes::request::{capabilities, parse_long, parse_timestamp, QueryRequest};
use crate::tables::{SnapshotSource, TableSnapshot, Tables, VersionSelector};

/// Files of a cached list answered on the core thread, without a hand-over.
pub const INLINE_FILES_MAX: usize = 256;

/// A table request, resolved to its catalog entry.
pub struct TableRequest<'a> {
    pub share: &'a str,
    pub schema: &'a str,
    pub table: &'a Table,
    pub headers: &'a HeaderMap,
    pub query: &'a [(String, String)],
    /// The id of the bearer token the request came with.
    pub token_id: &'a str,
}

impl TableRequest<'_> {
    fn qualified_name(&self) -> String {
        format!("{}.{}.{}", self.share, self.schema, self.table.name)
    }

    fn require_history(&self) -> Result<()> {
        if self.table.history_shared {
            Ok(())
        } else {
            Err(SharingError::invalid(format!(
                "Reading table by version or timestamp is not supported because history sharing \
                 is not enabled on table: {}",
                self.qualified_name()
            )))
        }
    }
}

/// Serves the table routes.
pub struct TableRoutes {
    pub(crate) tables: Arc<Tables>,
    lists: Arc<FileLists>,
    pub(crate) presigner: Arc<Presigner>,
    /// Keys refresh tokens.
    pub(crate) token_secret: Vec<u8>,
    pub(crate) line_buffers: Arc<LineBuffers>,
    async_queries: AsyncQueries,
}

/// How long a refresh token can be used (the reference server's TTL).
pub const REFRESH_TOKEN_SECONDS: i64 = 3600;

/// What a refresh token pins: the table and the snapshot version of the first query.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct RefreshPosition {
    #[serde(rename = "t")]
    table_id: String,
    #[serde(rename = "v")]
    version: u64,
    /// Expiry, ms since the epoch.
    #[serde(rename = "e")]
    expires_ms: i64,
}

impl TableRoutes {
    /// `token_secret` keys refresh tokens (the node secret).
    pub fn new(
        tables: Arc<Tables>,
        lists: Arc<FileLists>,
        presigner: Arc<Presigner>,
        token_secret: Vec<u8>,
    ) -> Self {
        TableRoutes {
            tables,
            lists,
            presigner,
            token_secret,
            line_buffers: Arc::default(),
            async_queries: AsyncQueries::default(),
        }
    }

    /// `GET .../version` (and the legacy `HEAD` on the table).
    pub async fn version(&self, request: TableRequest<'_>) -> Result<Response<ResponseBody>> {
        let starting = query_value(request.query, "startingTimestamp");
        let table = request.table.clone();
        let version = match starting {
            Some(text) => {
                request.require_history()?;
                let timestamp = parse_timestamp(text, "startingTimestamp")?;
                self.blocking(move |tables| tables.version_at_or_after_blocking(&table, timestamp))
                    .await?
            }
            None => latest_snapshot(&self.tables, &table).await?.version,
        };
        let mut response = Response::new(empty_body());
        set_header(&mut response, TABLE_VERSION_HEADER, &version.to_string());
        Ok(response)
    }

    /// `GET .../metadata?version=|timestamp=`: exactly the protocol and metaData lines.
    pub async fn metadata(&self, request: TableRequest<'_>) -> Result<Response<ResponseBody>> {
        let version = query_value(request.query, "version");
        let timestamp = query_value(request.query, "timestamp");
        let selector = match (version, timestamp) {
            (Some(_), Some(_)) => {
                return Err(SharingError::invalid(
                    "Please only provide one of: version,timestamp",
                ))
            }
            (Some(text), None) => {
                request.require_history()?;
                let version = parse_long(&Value::String(text.to_string()))?;
                if version < 0 {
                    return Err(SharingError::invalid("version cannot be negative"));
                }
                VersionSelector::Version(version as u64)
            }
            (None, Some(text)) => {
                request.require_history()?;
                VersionSelector::AsOfTimestamp(parse_timestamp(text, "timestamp")?)
            }
            (None, None) => VersionSelector::Latest,
        };
        let capabilities = capabilities(request.headers);
        let snapshot = self.resolve(request.table, selector).await?;
        let format = choose_format(&capabilities, &snapshot.needs)?;
        let mut metadata = metadata_line(format, &snapshot, request.table.history_shared, None);
        let cached = self.lists.cached_files(&snapshot);
        set_table_size(
            &mut metadata,
            snapshot.known_size(cached.as_deref().map(ActiveFiles::size)),
        );
        let mut body = String::new();
        body.push_str(&protocol_line(format, &snapshot).to_string());
        body.push('\n');
        body.push_str(&metadata.to_string());
        body.push('\n');
        Ok(ndjson_response(
            full_body(body),
            snapshot.version,
            format,
            false,
        ))
    }

    /// `POST .../query`.
    pub async fn query(
        &self,
        request: TableRequest<'_>,
        body: Bytes,
    ) -> Result<Response<ResponseBody>> {
        let query = QueryRequest::parse(&body)?;
        let selector = query.selector(|| request.require_history())?;
        if let Some(starting_version) = query.starting_version {
            return self
                .streaming_query(request, starting_version, &query)
                .await;
        }
        // Later pages of a query that was answered at once come here, not to `queries/{id}`:
        // they are answered as they are.
        if capabilities(request.headers).async_query && query.page_token.is_none() {
            let Some(key) = query.idempotency_key.clone() else {
                return Err(SharingError::invalid(
                    "idempotency_key is required for async query.",
                ));
            };
            return self.start_async_query(request, query, selector, key).await;
        }
        self.answer_query(request, query, selector, None).await
    }

    /// The first request of an asynchronous query: answered in full when its file list is
    /// already cached, otherwise with a `queryStatus` line while the list is built.
    async fn start_async_query(
        &self,
        request: TableRequest<'_>,
        query: QueryRequest,
        selector: VersionSelector,
        idempotency_key: String,
    ) -> Result<Response<ResponseBody>> {
        let owner = QueryOwner {
            token_id: request.token_id.to_string(),
            table_id: request.table.id.clone(),
        };
        if let Some(started) = self.async_queries.find_by_key(&owner, &idempotency_key) {
            return self.answer_async_query(request, &started, None, None).await;
        }
        let snapshot_selector = match &query.refresh_token {
            Some(token) => VersionSelector::Version(self.open_refresh_token(token, request.table)?),
            None => selector,
        };
        if snapshot_selector == VersionSelector::Latest {
            if let Some(current) = self.tables.latest_if_current(request.table).await {
                if self.lists.cached_files(&current).is_some() {
                    let current = TableSnapshot::clone(&current);
                    return self
                        .answer_query(request, query, selector, Some(current))
                        .await;
                }
            }
        }
        let started = self.async_queries.register(owner, idempotency_key, query);
        let tables = self.tables.clone();
        let lists = self.lists.clone();
        let table = request.table.clone();
        let background = started.clone();
        tokio::spawn(async move {
            let outcome = async {
                let snapshot = resolve_snapshot(&tables, &table, snapshot_selector).await?;
                let listed = snapshot.clone();
                run_blocking(&tables, move |_| lists.build_file_list(&listed)).await?;
                Ok(snapshot)
            }
            .await;
            background.finish(outcome);
        });
        Ok(query_pending_response(&started.id))
    }

    /// `POST .../queries/{id}`: the state of an asynchronous query, then its pages.
    pub async fn query_status(
        &self,
        request: TableRequest<'_>,
        query_id: &str,
        body: Bytes,
    ) -> Result<Response<ResponseBody>> {
        let poll = if body.iter().all(u8::is_ascii_whitespace) {
            QueryRequest::default()
        } else {
            QueryRequest::parse(&body)?
        };
        let owner = QueryOwner {
            token_id: request.token_id.to_string(),
            table_id: request.table.id.clone(),
        };
        let started = self
            .async_queries
            .find(&owner, query_id)
            .ok_or_else(|| query_not_found(query_id))?;
        self.answer_async_query(request, &started, poll.max_files, poll.page_token)
            .await
    }

    /// An asynchronous query's answer now: pending, its error, or the page asked for.
    async fn answer_async_query(
        &self,
        request: TableRequest<'_>,
        started: &AsyncQuery,
        max_files: Option<i64>,
        page_token: Option<String>,
    ) -> Result<Response<ResponseBody>> {
        match started.state() {
            QueryState::Pending => Ok(query_pending_response(&started.id)),
            QueryState::Failed(kind, message) => Err(SharingError::new(kind, message)),
            QueryState::Ready(snapshot) => {
                let mut query = started.request.clone();
                if max_files.is_some() {
                    query.max_files = max_files;
                }
                if page_token.is_some() {
                    // The refresh token went out with the first page.
                    query.include_refresh_token = false;
                    query.refresh_token = None;
                    query.page_token = page_token;
                }
                let selector = query.selector(|| request.require_history())?;
                self.answer_query(request, query, selector, Some(*snapshot))
                    .await
            }
        }
    }

    /// A snapshot query's answer; `pinned` is the snapshot an asynchronous query resolved.
    async fn answer_query(
        &self,
        request: TableRequest<'_>,
        query: QueryRequest,
        selector: VersionSelector,
        pinned: Option<TableSnapshot>,
    ) -> Result<Response<ResponseBody>> {
        let capabilities = capabilities(request.headers);
        let id_hash_header = FileIdHash::requested(request.headers)?;
        let history_shared = request.table.history_shared;
        let parameters_checksum = query.parameters_checksum();
        let page = match &query.page_token {
            Some(token) => {
                Some(self.open_page_token(token, request.table, &parameters_checksum)?)
            }
            None => None,
        };
        let pinned = pinned.filter(|pinned| {
            page.as_ref()
                .is_none_or(|page| page.version == pinned.version)
        });
        let snapshot = match pinned {
            Some(pinned) => pinned,
            None => {
                let snapshot_selector = match (&page, &query.refresh_token) {
                    (Some(page), _) => VersionSelector::Version(page.version),
                    (None, Some(token)) => {
                        VersionSelector::Version(self.open_refresh_token(token, request.table)?)
                    }
                    (None, None) => selector,
                };
                self.resolve(request.table, snapshot_selector).await?
            }
        };
        if let Some(page) = &page {
            if !self.lists.serves_order(&snapshot, page.order_id) {
                return Err(page_token_expired());
            }
        }
        let format = choose_format(&capabilities, &snapshot.needs)?;
        let mut cached = self.lists.cached_files(&snapshot);
        if matches!(snapshot.source, SnapshotSource::Iceberg { .. }) && cached.is_none() {
            // An Iceberg version's files are listed (and checked) before the answer starts,
            // so a broken manifest or a row-level delete is an error status, not a cut stream.
            let listed = snapshot.clone();
            let lists = self.lists.clone();
            self.blocking(move |_| lists.build_file_list(&listed))
                .await?;
            cached = self.lists.cached_files(&snapshot);
        }
        let id_hash = id_hash_header.unwrap_or(FileIdHash::default_for(format));
        let version = snapshot.version;
        let line_version = (selector != VersionSelector::Latest).then_some(version);
        let refresh_token = (query.include_refresh_token || query.refresh_token.is_some())
            .then(|| self.refresh_token(request.table, version));
        let end_stream = EndStream {
            wanted: capabilities.include_end_stream_action
                || refresh_token.is_some()
                || query.max_files.is_some(),
            refresh_token,
        };
        let paging = query.max_files.map(|max_files| Paging {
            page_files_max: max_files as u64,
            table_id: request.table.id.clone(),
            parameters_checksum,
            token_secret: self.token_secret.clone(),
        });
        let start = page
            .as_ref()
            .map_or(PageStart::default(), |page| PageStart {
                index: page.next_index,
                records_so_far: page.records_so_far,
                order: ListOrder::Exactly(page.order_id),
            });

        let mut head = String::new();
        head.push_str(&protocol_line(format, &snapshot).to_string());
        head.push('\n');
        let mut metadata = metadata_line(format, &snapshot, history_shared, None);
        if paging.is_none() && page.is_none() {
            // Only whole answers: every page must repeat the first page's lines 1 and 2 (the
            // Spark connector compares them), and the first may come before the list exists.
            set_table_size(
                &mut metadata,
                snapshot.known_size(cached.as_deref().map(ActiveFiles::size)),
            );
        }
        head.push_str(&metadata.to_string());
        head.push('\n');
        let plan = StreamPlan {
            format,
            id_hash,
            line_version,
            start,
            paging,
            end_stream,
        };
        let small_cached_list = cached.as_ref().is_some_and(|files| {
            plan.start.order.accepts(files.order_id())
                && files.len().saturating_sub(start.index) <= INLINE_FILES_MAX
        });
        let body = if small_cached_list {
            // A few files from memory: written here, no hand-over to another thread.
            let mut out = ChunkSender::in_memory(head.as_bytes(), self.line_buffers.clone());
            stream_files(
                &self.lists,
                &self.presigner,
                &snapshot,
                &query,
                &plan,
                cached,
                &mut out,
            )?;
            full_body(out.chunk.freeze())
        } else {
            let lists = self.lists.clone();
            let presigner = self.presigner.clone();
            blocking_body(
                head.into_bytes(),
                self.line_buffers.clone(),
                capabilities.include_end_stream_action,
                "query",
                move |out| stream_files(&lists, &presigner, &snapshot, &query, &plan, cached, out),
            )
        };
        let mut response = ndjson_response(
            body,
            version,
            format,
            capabilities.include_end_stream_action,
        );
        echo_file_id_hash(&mut response, id_hash_header);
        Ok(response)
    }

    /// The position a page token names, after the reference server's checks.
    fn open_page_token(
        &self,
        token: &str,
        table: &Table,
        parameters_checksum: &str,
    ) -> Result<QueryPage> {
        let page: QueryPage = crate::page_token::open(&self.token_secret, token)
            .ok_or_else(|| SharingError::invalid("Error decoding the page token"))?;
        check_query_page(
            &page.table_id,
            page.expires_ms,
            &page.parameters_checksum,
            &table.id,
            parameters_checksum,
        )?;
        Ok(page)
    }

    fn refresh_token(&self, table: &Table, version: u64) -> String {
        let expires_ms =
            (OffsetDateTime::now_utc().unix_timestamp() + REFRESH_TOKEN_SECONDS) * 1000;
        let position = RefreshPosition {
            table_id: table.id.clone(),
            version,
            expires_ms,
        };
        crate::page_token::seal(&self.token_secret, &position)
    }

    /// The version a refresh token pins, after the reference server's checks.
    fn open_refresh_token(&self, token: &str, table: &Table) -> Result<u64> {
        let position: RefreshPosition = crate::page_token::open(&self.token_secret, token)
            .ok_or_else(|| SharingError::invalid("Error decoding refresh token"))?;
        if position.table_id != table.id {
            return Err(SharingError::invalid(
                "The table specified in the refresh token does not match the table being queried.",
            ));
        }
        if position.expires_ms <= OffsetDateTime::now_utc().unix_timestamp() * 1000 {
            return Err(SharingError::invalid(
                "The refresh token has expired. Please restart the query.",
            ));
        }
        Ok(position.version)
    }

    /// The snapshot a request asks for: the latest from the fast path when it is still
    /// current, otherwise from the replay pool.
    pub(crate) async fn resolve(
        &self,
        table: &Table,
        selector: VersionSelector,
    ) -> Result<TableSnapshot> {
        resolve_snapshot(&self.tables, table, selector).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Tables) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        run_blocking(&self.tables, work).await
    }
}

/// The snapshot of `table` that `selector` names: the latest from `latest_snapshot`,
/// others from the replay pool.
async fn resolve_snapshot(
    tables: &Arc<Tables>,
    table: &Table,
    selector: VersionSelector,
) -> Result<TableSnapshot> {
    if selector == VersionSelector::Latest {
        return latest_snapshot(tables, table)
            .await
            .map(Arc::unwrap_or_clone);
    }
    if table.source_type == SourceType::Iceberg {
        return tables.iceberg_snapshot(table, &selector).await;
    }
    let table = table.clone();
    run_blocking(tables, move |tables| {
        tables.snapshot_blocking(&table, &selector)
    })
    .await
}

/// The latest snapshot of `table`: the cached one while it is current, otherwise looked up
/// and, when a new version is found, built on the replay pool, once per table at a time
/// (`Tables::latest_or_gate`).
async fn latest_snapshot(tables: &Arc<Tables>, table: &Table) -> Result<Arc<TableSnapshot>> {
    if table.source_type == SourceType::Iceberg {
        let latest = tables
            .iceberg_snapshot(table, &VersionSelector::Latest)
            .await?;
        return Ok(Arc::new(latest));
    }
    match tables.latest_or_gate(table).await {
        Ok(current) => Ok(current),
        Err(one_build) => {
            let table = table.clone();
            let built = run_blocking(tables, move |tables| {
                let _one_build = one_build;
                tables.snapshot_blocking(&table, &VersionSelector::Latest)
            })
            .await?;
            Ok(Arc::new(built))
        }
    }
}

/// Runs blocking table work on the replay pool.
async fn run_blocking<T: Send + 'static>(
    tables: &Arc<Tables>,
    work: impl FnOnce(&Tables) -> Result<T> + Send + 'static,
) -> Result<T> {
    let tables = tables.clone();
    tokio::task::spawn_blocking(move || work(&tables))
        .await
        .map_err(|error| SharingError::internal(format!("replay task: {error}")))?
}

/// The one-line answer of an asynchronous query that is still running. The reference
/// server sends version 0 and the parquet format with it; the finished answer carries both.
fn query_pending_response(query_id: &str) -> Response<ResponseBody> {
    let line = serde_json::json!({"queryStatus": {"queryId": query_id, "status": "pending"}});
    let mut body = line.to_string();
    body.push('\n');
    ndjson_response(
        full_body(Bytes::from(body)),
        0,
        ResponseFormat::Parquet,
        false,
    )
}

/// Whether a query ends with an `endStreamAction` line, and what it carries.
struct EndStream {
    wanted: bool,
    refresh_token: Option<String>,
}

/// What a query page token pins: the table, the snapshot version of the first page, where
/// the next page starts in the version's file list, and the request's other parameters.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct QueryPage {
    #[serde(rename = "t")]
    table_id: String,
    #[serde(rename = "v")]
    version: u64,
    /// The order of the list the index points into (`files::ActiveFiles::order_id`).
    #[serde(rename = "o")]
    order_id: u64,
    /// Index in the version's active-file list of the next page's first candidate.
    #[serde(rename = "i")]
    next_index: usize,
    /// Records counted against `limitHint` by earlier pages.
    #[serde(rename = "r")]
    records_so_far: u64,
    #[serde(rename = "c")]
    parameters_checksum: String,
    /// Expiry, ms since the epoch.
    #[serde(rename = "e")]
    expires_ms: i64,
}

/// Where a page starts.
#[derive(Clone, Copy, Debug)]
struct PageStart {
    index: usize,
    records_so_far: u64,
    order: ListOrder,
}

impl Default for PageStart {
    fn default() -> Self {
        PageStart {
            index: 0,
            records_so_far: 0,
            order: ListOrder::Any,
        }
    }
}

/// Pagination of one query (`maxFiles` given).
struct Paging {
    page_files_max: u64,
    table_id: String,
    parameters_checksum: String,
    token_secret: Vec<u8>,
}

impl Paging {
    fn next_page_token(
        &self,
        version: u64,
        order_id: u64,
        next_index: usize,
        records_so_far: u64,
    ) -> String {
        let page = QueryPage {
            table_id: self.table_id.clone(),
            version,
            order_id,
            next_index,
            records_so_far,
            parameters_checksum: self.parameters_checksum.clone(),
            expires_ms: query_page_expiry_ms(),
        };
        crate::page_token::seal(&self.token_secret, &page)
    }
}

/// How a query's file lines are written.
struct StreamPlan {
    format: ResponseFormat,
    id_hash: FileIdHash,
    line_version: Option<u64>,
    start: PageStart,
    paging: Option<Paging>,
    end_stream: EndStream,
}

impl StreamPlan {
    /// What writes the file lines of `snapshot` for this plan.
    fn line_context<'a>(
        &self,
        snapshot: &'a TableSnapshot,
        presigner: &'a Presigner,
    ) -> Result<FileLineContext<'a>> {
        FileLineContext::new(
            self.format,
            snapshot,
            presigner,
            self.id_hash,
            self.line_version,
        )
    }
}

/// The values the lines of `context` take from a cached list: the file ids, and the URL
/// signatures unless a predicate may skip most files (those it keeps are signed one by one).
fn kept_for_lines<'a>(
    context: &'a FileLineContext<'_>,
    predicate: Option<&Predicate>,
) -> KeptPerFile<'a> {
    KeptPerFile {
        ids: Some(context.id_hash),
        signer: predicate.is_none().then(|| context.url_signer()),
    }
}

/// Writes the file lines of one page (or of the whole snapshot) and the end of the stream.
/// From `cached` (the version's list, already looked up) when it has the page's order;
/// otherwise the list is walked or built on the replay pool (blocking).
fn stream_files(
    lists: &FileLists,
    presigner: &Presigner,
    snapshot: &TableSnapshot,
    query: &QueryRequest,
    plan: &StreamPlan,
    cached: Option<Arc<ActiveFiles>>,
    out: &mut ChunkSender,
) -> Result<()> {
    let cached = cached.filter(|files| plan.start.order.accepts(files.order_id()));
    let predicate = query
        .json_predicate_hints
        .as_deref()
        .and_then(parse_predicate);
    let has_hints = predicate.is_some() || !query.predicate_hints.is_empty();
    let mut limit =
        LimitTracker::for_request(query.limit_hint.map(|limit| limit.max(0) as u64), has_hints);
    if let Some(tracker) = &mut limit {
        tracker.admit(plan.start.records_so_far);
    }
    let version = snapshot.version;
    let mut min_expiration_ms: Option<i64> = None;
    let mut page_files: u64 = 0;
    let mut failure = None;
    let mut next_page_token = None;
    if limit.is_none() && plan.paging.is_none() {
        if let Some(files) = &cached {
            let expiration =
                write_lines_in_parallel(files, snapshot, presigner, plan, predicate.as_ref(), out)?;
            return finish_stream(plan, None, expiration, out);
        }
    }
    let context = plan.line_context(snapshot, presigner)?;
    let order_used = Cell::new(0);
    let kept = kept_for_lines(&context, predicate.as_ref());
    let visit = |index, file: &FileRow<'_>| {
        let stats = if predicate.is_some() || limit.is_some() {
            parse_stats(file)
        } else {
            None
        };
        if let Some(predicate) = &predicate {
            if !file_might_match(predicate, snapshot, file, stats.as_ref()) {
                return ControlFlow::Continue(());
            }
        }
        if let Some(paging) = &plan.paging {
            if page_files == paging.page_files_max {
                let records = limit.as_ref().map_or(0, LimitTracker::records_so_far);
                if limit.as_ref().is_none_or(|tracker| !tracker.is_reached()) {
                    next_page_token =
                        Some(paging.next_page_token(version, order_used.get(), index, records));
                }
                return ControlFlow::Break(());
            }
        }
        if let Some(tracker) = &mut limit {
            let cardinality = file
                .deletion_vector
                .as_ref()
                .map(|dv| dv.cardinality.max(0) as u64);
            if !tracker.admit(live_records(stats.as_ref(), cardinality)) {
                return ControlFlow::Break(());
            }
        }
        match context.write_file_line(file, &mut out.chunk) {
            Ok(expiration_ms) => {
                min_expiration_ms =
                    Some(min_expiration_ms.map_or(expiration_ms, |m| m.min(expiration_ms)));
            }
            Err(error) => {
                failure = Some(error);
                return ControlFlow::Break(());
            }
        }
        page_files += 1;
        if out.flush_when_full() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    };
    match &cached {
        Some(files) => {
            order_used.set(files.order_id());
            files.visit_from(plan.start.index, kept, visit)?;
        }
        None => lists.visit_active_files(
            snapshot,
            plan.start.index,
            plan.start.order,
            &order_used,
            kept,
            visit,
        )?,
    }
    if let Some(error) = failure {
        return Err(error);
    }
    finish_stream(plan, next_page_token.as_deref(), min_expiration_ms, out)
}

/// Writes the `endStreamAction` line when it is wanted and ends the body.
fn finish_stream(
    plan: &StreamPlan,
    next_page_token: Option<&str>,
    min_expiration_ms: Option<i64>,
    out: &mut ChunkSender,
) -> Result<()> {
    if !out.is_open() {
        return Ok(());
    }
    if plan.end_stream.wanted {
        let line = end_stream_line(
            next_page_token,
            plan.end_stream.refresh_token.as_deref(),
            min_expiration_ms,
        );
        let _ = serde_json::to_writer((&mut out.chunk).writer(), &line);
        out.chunk.put_u8(b'\n');
    }
    out.finish();
    Ok(())
}

fn parse_stats(file: &FileRow<'_>) -> Option<Value> {
    file.stats
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
}

/// Whether `file` may hold rows matching `predicate` (never false when it could).
fn file_might_match(
    predicate: &Predicate,
    snapshot: &TableSnapshot,
    file: &FileRow<'_>,
    stats: Option<&Value>,
) -> bool {
    let partition_values = RowPartitionValues(&file.partition_values);
    let facts = FileFacts::new(&snapshot.partition_columns, &partition_values)
        .with_stats(stats)
        .with_physical_names(&snapshot.physical_names);
    might_match(predicate, &facts)
}

/// Bytes of a typical file line (buffer sizing only).
const LINE_BYTES_TYPICAL: usize = 800;
/// Files per segment when a cached list is written by several threads.
const PARALLEL_SEGMENT_FILES: usize = 4096;
/// Threads writing the lines of one response from a cached list.
const PARALLEL_WRITERS: usize = 2;
/// Written segments waiting, per writer.
const SEGMENTS_IN_FLIGHT: usize = 2;

type Segment = Result<(BytesMut, Option<i64>)>;

/// Writes the lines of a cached list from `plan.start` on with `PARALLEL_WRITERS` threads,
/// each writing every n-th segment of `PARALLEL_SEGMENT_FILES` files; segments are sent in
/// list order, so the response is the one a single writer would produce. Only for requests
/// whose lines do not depend on earlier files (no limit, no pages). Returns the smallest URL
/// expiry written.
fn write_lines_in_parallel(
    files: &ActiveFiles,
    snapshot: &TableSnapshot,
    presigner: &Presigner,
    plan: &StreamPlan,
    predicate: Option<&Predicate>,
    out: &mut ChunkSender,
) -> Result<Option<i64>> {
    let start = plan.start.index;
    let segments = files
        .len()
        .saturating_sub(start)
        .div_ceil(PARALLEL_SEGMENT_FILES);
    if segments <= 1 {
        let context = plan.line_context(snapshot, presigner)?;
        let (lines, expiration_ms) = write_segment(
            &out.line_buffers,
            files,
            start,
            files.len(),
            &context,
            snapshot,
            predicate,
        )?;
        out.send_segment(lines);
        return Ok(expiration_ms);
    }
    let line_buffers = Arc::clone(&out.line_buffers);
    let line_buffers = line_buffers.as_ref();
    std::thread::scope(|scope| {
        let mut receivers = Vec::with_capacity(PARALLEL_WRITERS);
        for writer in 0..PARALLEL_WRITERS {
            let (sender, receiver) = std::sync::mpsc::sync_channel::<Segment>(SEGMENTS_IN_FLIGHT);
            receivers.push(receiver);
            scope.spawn(move || {
                let context = match plan.line_context(snapshot, presigner) {
                    Ok(context) => context,
                    Err(error) => {
                        let _ = sender.send(Err(error));
                        return;
                    }
                };
                for segment in (writer..segments).step_by(PARALLEL_WRITERS) {
                    let first = start + segment * PARALLEL_SEGMENT_FILES;
                    let end = (first + PARALLEL_SEGMENT_FILES).min(files.len());
                    let written = write_segment(
                        line_buffers,
                        files,
                        first,
                        end,
                        &context,
                        snapshot,
                        predicate,
                    );
                    let failed = written.is_err();
                    if sender.send(written).is_err() || failed {
                        return;
                    }
                }
            });
        }
        let mut min_expiration_ms: Option<i64> = None;
        for segment in 0..segments {
            let (lines, expiration_ms) = receivers[segment % PARALLEL_WRITERS]
                .recv()
                .map_err(|_| SharingError::internal("a line writer stopped"))??;
            if let Some(expiration_ms) = expiration_ms {
                min_expiration_ms =
                    Some(min_expiration_ms.map_or(expiration_ms, |m| m.min(expiration_ms)));
            }
            if !out.send_segment(lines) {
                break;
            }
        }
        Ok(min_expiration_ms)
    })
}

/// The lines of files `first..end` of a cached list, and their smallest URL expiry.
fn write_segment(
    line_buffers: &LineBuffers,
    files: &ActiveFiles,
    first: usize,
    end: usize,
    context: &FileLineContext<'_>,
    snapshot: &TableSnapshot,
    predicate: Option<&Predicate>,
) -> Segment {
    let mut lines = line_buffers.take(LINE_BYTES_TYPICAL * (end - first));
    let mut min_expiration_ms: Option<i64> = None;
    let mut failure = None;
    files.visit_from(first, kept_for_lines(context, predicate), |index, file| {
        if index >= end {
            return ControlFlow::Break(());
        }
        if let Some(predicate) = predicate {
            if !file_might_match(predicate, snapshot, file, parse_stats(file).as_ref()) {
                return ControlFlow::Continue(());
            }
        }
        match context.write_file_line(file, &mut lines) {
            Ok(expiration_ms) => {
                min_expiration_ms =
                    Some(min_expiration_ms.map_or(expiration_ms, |m| m.min(expiration_ms)));
                ControlFlow::Continue(())
            }
            Err(error) => {
                failure = Some(error);
                ControlFlow::Break(())
            }
        }
    })?;
    match failure {
        Some(error) => Err(error),
        None => Ok((lines, min_expiration_ms)),
    }
}

/// A file row's partition values as the predicate evaluator reads them.
struct RowPartitionValues<'a, 'b>(&'a [(&'b str, Option<&'b str>)]);

impl PartitionValues for RowPartitionValues<'_, '_> {
    fn partition_value(&self, physical_name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(key, _)| *key == physical_name)
            .map(|(_, value)| *value)
    }
}
