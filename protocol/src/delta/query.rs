//! The table routes of the sharing API for Delta tables: `version`, `metadata` and `query`.
//!
//! Requests are validated with the reference server's wording before any log is read. A
//! query streams: headers and the protocol and metadata lines go out as soon as the
//! snapshot is known, then file lines are written into buffers of `CHUNK_BYTES` and sent one
//! by one through a bounded channel, so memory does not grow with the number of files.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::body::{empty_body, full_body, ResponseBody};
use crate::capabilities::{choose_format, Capabilities, ResponseFormat, CAPABILITIES_HEADER};
use crate::catalog::{SourceType, Table};
use crate::delta::files::{ActiveFiles, FileRow, KeptPerFile};
use crate::delta::line_buffers::LineBuffers;
use crate::delta::lines::{
    end_stream_line, metadata_line, protocol_line, set_table_size, FileIdHash, FileLineContext,
};
use crate::delta::{
    page_token_expired, DeltaTables, ListOrder, SnapshotSource, TableSnapshot, VersionSelector,
};
use crate::error::{ErrorKind, Result, SharingError};
use crate::predicate::{
    live_records, might_match, parse_predicate, FileFacts, LimitTracker, PartitionValues, Predicate,
};
use crate::presign::Presigner;
use crate::sharing::query_value;

/// Bytes gathered before a chunk is sent.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Files of a cached list answered on the core thread, without a hand-over.
pub const INLINE_FILES_MAX: usize = 256;
/// Chunks in flight between the replay pool and the connection.
pub const CHUNKS_IN_FLIGHT_MAX: usize = 4;
pub const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson; charset=utf-8";
pub const TABLE_VERSION_HEADER: &str = "delta-table-version";

/// A table request, resolved to its catalog entry.
pub struct TableRequest<'a> {
    pub share: &'a str,
    pub schema: &'a str,
    pub table: &'a Table,
    pub headers: &'a HeaderMap,
    pub query: &'a [(String, String)],
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

/// Serves the table routes of Delta tables.
pub struct DeltaRoutes {
    pub(crate) tables: Arc<DeltaTables>,
    pub(crate) presigner: Arc<Presigner>,
    /// Keys refresh tokens.
    pub(crate) token_secret: Vec<u8>,
    pub(crate) line_buffers: Arc<LineBuffers>,
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

impl DeltaRoutes {
    /// `token_secret` keys refresh tokens (the node secret).
    pub fn new(tables: Arc<DeltaTables>, presigner: Arc<Presigner>, token_secret: Vec<u8>) -> Self {
        DeltaRoutes {
            tables,
            presigner,
            token_secret,
            line_buffers: Arc::default(),
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
            None => match self.tables.latest_if_current(&table).await {
                Some(current) => current.version,
                None => self.resolve(&table, VersionSelector::Latest).await?.version,
            },
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
        let cached = self.tables.cached_files(&snapshot);
        set_table_size(&mut metadata, snapshot.known_size(cached.as_deref()));
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
        let capabilities = capabilities(request.headers);
        let id_hash_header = match request.headers.get("fileidhash") {
            Some(value) => Some(FileIdHash::parse_header(value.to_str().unwrap_or(""))?),
            None => None,
        };
        let history_shared = request.table.history_shared;
        let parameters_checksum = query.parameters_checksum();
        let page = match &query.page_token {
            Some(token) => {
                Some(self.open_page_token(token, request.table, &parameters_checksum)?)
            }
            None => None,
        };
        let snapshot_selector = match (&page, &query.refresh_token) {
            (Some(page), _) => VersionSelector::Version(page.version),
            (None, Some(token)) => {
                VersionSelector::Version(self.open_refresh_token(token, request.table)?)
            }
            (None, None) => selector,
        };
        let snapshot = self.resolve(request.table, snapshot_selector).await?;
        if let Some(page) = &page {
            if !self.tables.serves_order(&snapshot, page.order_id) {
                return Err(page_token_expired());
            }
        }
        let format = choose_format(&capabilities, &snapshot.needs)?;
        let mut cached = self.tables.cached_files(&snapshot);
        if matches!(snapshot.source, SnapshotSource::Iceberg { .. }) && cached.is_none() {
            // An Iceberg version's files are listed (and checked) before the answer starts,
            // so a broken manifest or a row-level delete is an error status, not a cut stream.
            let listed = snapshot.clone();
            self.blocking(move |tables| {
                tables.visit_active_files(
                    &listed,
                    usize::MAX,
                    ListOrder::Any,
                    &Cell::new(0),
                    KeptPerFile::default(),
                    |_, _| ControlFlow::Break(()),
                )
            })
            .await?;
            cached = self.tables.cached_files(&snapshot);
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
            set_table_size(&mut metadata, snapshot.known_size(cached.as_deref()));
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
                &self.tables,
                &self.presigner,
                &snapshot,
                &query,
                &plan,
                cached,
                &mut out,
            )?;
            full_body(out.chunk.freeze())
        } else {
            let (sender, mut receiver) =
                tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT_MAX);
            let tables = self.tables.clone();
            let presigner = self.presigner.clone();
            let line_buffers = self.line_buffers.clone();
            let signal_errors_in_stream = capabilities.include_end_stream_action;
            tokio::task::spawn_blocking(move || {
                let mut out = ChunkSender::new(sender, head.as_bytes(), line_buffers);
                let result = stream_files(
                    &tables, &presigner, &snapshot, &query, &plan, cached, &mut out,
                );
                if let Err(error) = result {
                    tracing::warn!(%error, "query stream failed");
                    if signal_errors_in_stream {
                        out.end_with_error(&error);
                    } else {
                        out.fail(error.to_string());
                    }
                }
            });
            let stream = futures::stream::poll_fn(move |context| receiver.poll_recv(context));
            StreamBody::new(futures::StreamExt::map(stream, |chunk| {
                chunk.map(http_body::Frame::data)
            }))
            .boxed()
        };
        let mut response = ndjson_response(
            body,
            version,
            format,
            capabilities.include_end_stream_action,
        );
        if let Some(id_hash) = id_hash_header {
            set_header(&mut response, "fileidhash", id_hash.header_value());
        }
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
        if page.table_id != table.id {
            return Err(SharingError::invalid(
                "The table specified in the page token does not match the table being queried",
            ));
        }
        if page.expires_ms <= OffsetDateTime::now_utc().unix_timestamp() * 1000 {
            return Err(page_token_expired());
        }
        if page.parameters_checksum != parameters_checksum {
            return Err(SharingError::invalid(
                "Query parameter mismatch detected for the next page query",
            ));
        }
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
        if table.source_type == SourceType::Iceberg {
            return self.tables.iceberg_snapshot(table, &selector).await;
        }
        if selector == VersionSelector::Latest {
            if let Some(current) = self.tables.latest_if_current(table).await {
                return Ok(TableSnapshot::clone(&current));
            }
        }
        let table = table.clone();
        self.blocking(move |tables| tables.snapshot_blocking(&table, &selector))
            .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&DeltaTables) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let tables = self.tables.clone();
        tokio::task::spawn_blocking(move || work(&tables))
            .await
            .map_err(|error| SharingError::internal(format!("replay task: {error}")))?
    }
}

/// Whether a query ends with an `endStreamAction` line, and what it carries.
struct EndStream {
    wanted: bool,
    refresh_token: Option<String>,
}

/// How long a page token can be used (the reference server's TTL: 3 days).
pub const PAGE_TOKEN_SECONDS: i64 = 3 * 24 * 3600;

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
            expires_ms: (OffsetDateTime::now_utc().unix_timestamp() + PAGE_TOKEN_SECONDS) * 1000,
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

/// Response chunks on their way to the connection: lines are written into a buffer that is
/// sent once it holds `CHUNK_BYTES`, or come as whole segments in pooled buffers. In memory
/// mode (small answers written on the core thread) the buffer just grows and becomes the
/// whole body.
pub(crate) struct ChunkSender {
    pub(crate) chunk: BytesMut,
    sink: Sink,
    line_buffers: Arc<LineBuffers>,
}

enum Sink {
    Channel(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>),
    Memory,
    /// The body has ended (or the client has gone).
    Closed,
}

impl ChunkSender {
    pub(crate) fn new(
        sender: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
        head: &[u8],
        line_buffers: Arc<LineBuffers>,
    ) -> Self {
        let mut chunk = BytesMut::with_capacity(CHUNK_BYTES * 2);
        chunk.put_slice(head);
        ChunkSender {
            chunk,
            sink: Sink::Channel(sender),
            line_buffers,
        }
    }

    fn in_memory(head: &[u8], line_buffers: Arc<LineBuffers>) -> Self {
        ChunkSender {
            chunk: BytesMut::from(head),
            sink: Sink::Memory,
            line_buffers,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        !matches!(self.sink, Sink::Closed)
    }

    /// Sends the buffer once it is full; false when the client has gone.
    pub(crate) fn flush_when_full(&mut self) -> bool {
        if self.chunk.len() < CHUNK_BYTES || matches!(self.sink, Sink::Memory) {
            return self.is_open();
        }
        let pending = self.chunk.split().freeze();
        self.send(pending)
    }

    /// Sends what is buffered, then `lines` (a buffer of `line_buffers`) as they are; false
    /// when the client has gone.
    fn send_segment(&mut self, lines: BytesMut) -> bool {
        if let Sink::Memory = self.sink {
            self.chunk.put_slice(&lines);
            self.line_buffers.give_back(lines);
            return true;
        }
        if !self.chunk.is_empty() {
            let pending = self.chunk.split().freeze();
            if !self.send(pending) {
                return false;
            }
        }
        let segment = self.line_buffers.chunk(lines);
        self.send(segment)
    }

    fn send(&mut self, chunk: Bytes) -> bool {
        match &self.sink {
            Sink::Closed => false,
            Sink::Memory => {
                self.chunk.put_slice(&chunk);
                true
            }
            Sink::Channel(sender) => {
                if sender.blocking_send(Ok(chunk)).is_err() {
                    self.sink = Sink::Closed;
                    return false;
                }
                true
            }
        }
    }

    /// Sends what is buffered and ends the body (in memory mode the buffer is the body).
    pub(crate) fn finish(&mut self) {
        if let Sink::Channel(sender) = std::mem::replace(&mut self.sink, Sink::Closed) {
            if !self.chunk.is_empty() {
                let _ = sender.blocking_send(Ok(self.chunk.split().freeze()));
            }
        }
    }

    /// Ends the body with an `endStreamAction` carrying the error (for clients that announced
    /// `includeendstreamaction`): the lines already sent stay, the client learns why the
    /// answer stops. Internal errors are named only by their status.
    pub(crate) fn end_with_error(&mut self, error: &SharingError) {
        let message = match error.kind {
            ErrorKind::Internal => "internal error".to_string(),
            _ => error.message.clone(),
        };
        let line = serde_json::json!({"endStreamAction": {
            "errorMessage": message,
            "httpStatusErrorCode": error.kind.status().as_u16(),
        }});
        let _ = serde_json::to_writer((&mut self.chunk).writer(), &line);
        self.chunk.put_u8(b'\n');
        self.finish();
    }

    /// Ends the body with an error (the connection is reset mid-stream).
    pub(crate) fn fail(&mut self, message: String) {
        if let Sink::Channel(sender) = std::mem::replace(&mut self.sink, Sink::Closed) {
            let _ = sender.blocking_send(Err(std::io::Error::other(message)));
        }
    }
}

/// Writes the file lines of one page (or of the whole snapshot) and the end of the stream.
/// From `cached` (the version's list, already looked up) when it has the page's order;
/// otherwise the list is walked or built on the replay pool (blocking).
fn stream_files(
    tables: &DeltaTables,
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
        None => tables.visit_active_files(
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

/// The body of `POST .../query`, parsed leniently like the reference server (numbers may be
/// strings; unknown fields are ignored).
#[derive(Clone, Debug, Default)]
pub struct QueryRequest {
    pub predicate_hints: Vec<String>,
    pub json_predicate_hints: Option<String>,
    pub limit_hint: Option<i64>,
    pub version: Option<i64>,
    pub timestamp: Option<String>,
    pub starting_version: Option<i64>,
    pub ending_version: Option<i64>,
    pub max_files: Option<i64>,
    pub page_token: Option<String>,
    pub include_refresh_token: bool,
    pub refresh_token: Option<String>,
    pub include_historical_protocol: bool,
    pub idempotency_key: Option<String>,
}

impl QueryRequest {
    pub fn parse(body: &[u8]) -> Result<QueryRequest> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(SharingError::malformed(
                "No content to map due to end-of-input",
            ));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| SharingError::malformed(format!("invalid request json: {error}")))?;
        let Value::Object(fields) = value else {
            return Err(SharingError::malformed(
                "the request body must be a JSON object",
            ));
        };
        let mut request = QueryRequest::default();
        for (name, value) in &fields {
            if value.is_null() {
                continue;
            }
            match name.as_str() {
                "predicateHints" => {
                    let Value::Array(items) = value else {
                        return Err(SharingError::malformed(
                            "Expected an array for repeated field predicateHints",
                        ));
                    };
                    request.predicate_hints = items
                        .iter()
                        .map(|item| item.as_str().map(str::to_string).unwrap_or_default())
                        .collect();
                }
                "jsonPredicateHints" => {
                    request.json_predicate_hints = Some(string_field(name, value)?)
                }
                "limitHint" => request.limit_hint = Some(parse_long(value)?),
                "version" => request.version = Some(parse_long(value)?),
                "timestamp" => request.timestamp = Some(string_field(name, value)?),
                "startingVersion" => request.starting_version = Some(parse_long(value)?),
                "endingVersion" => request.ending_version = Some(parse_long(value)?),
                "maxFiles" => request.max_files = Some(parse_long(value)?),
                "pageToken" => request.page_token = Some(string_field(name, value)?),
                "includeRefreshToken" => request.include_refresh_token = parse_bool(name, value)?,
                "includeHistoricalProtocol" => {
                    request.include_historical_protocol = parse_bool(name, value)?
                }
                "refreshToken" => request.refresh_token = Some(string_field(name, value)?),
                "idempotencyKey" | "idempotency_key" => {
                    request.idempotency_key = Some(string_field(name, value)?)
                }
                _ => {}
            }
        }
        Ok(request)
    }

    /// A digest of the body parameters every page of a query must repeat: the reference
    /// server's set (everything but `maxFiles`, `pageToken` and the refresh and idempotency
    /// fields). The capabilities header is not part of it: the Spark connector asks for
    /// `includeendstreamaction` on later pages only.
    pub(crate) fn parameters_checksum(&self) -> String {
        let parameters = serde_json::json!([
            self.predicate_hints,
            self.json_predicate_hints,
            self.limit_hint,
            self.version,
            self.timestamp,
            self.starting_version,
            self.ending_version,
            self.include_historical_protocol,
        ]);
        let digest = ring::digest::digest(&ring::digest::SHA256, parameters.to_string().as_bytes());
        hex::encode(&digest.as_ref()[..16])
    }

    /// The snapshot asked for, after the reference server's parameter checks; a request for
    /// a version, a timestamp or a range calls `require_history` before its timestamp is
    /// parsed (a table without shared history refuses even a malformed timestamp so).
    pub fn selector(
        &self,
        require_history: impl FnOnce() -> Result<()>,
    ) -> Result<VersionSelector> {
        let given = [
            self.version.is_some(),
            self.timestamp.is_some(),
            self.starting_version.is_some(),
        ];
        if given.iter().filter(|given| **given).count() > 1 {
            return Err(SharingError::invalid(
                "Please only provide one of: version,timestamp,startingVersion",
            ));
        }
        let specific_version = given.iter().any(|given| *given);
        for (asked, field) in [
            (self.include_refresh_token, "includeRefreshToken"),
            (self.refresh_token.is_some(), "refreshToken"),
        ] {
            if asked && specific_version {
                return Err(SharingError::invalid(format!(
                    "{field} cannot be used when querying a specific version."
                )));
            }
            if asked && self.page_token.is_some() {
                return Err(SharingError::invalid(format!(
                    "{field} must be used in the first page request."
                )));
            }
        }
        if let Some(max_files) = self.max_files {
            if max_files <= 0 {
                return Err(SharingError::invalid("maxFiles must be positive"));
            }
            if max_files > i64::from(i32::MAX) {
                return Err(SharingError::invalid(format!(
                    "Not an int32 value: {max_files}"
                )));
            }
        }
        if let Some(version) = self.version {
            if version < 0 {
                return Err(SharingError::invalid("table version cannot be negative"));
            }
        }
        if specific_version {
            require_history()?;
        }
        if let Some(version) = self.version {
            return Ok(VersionSelector::Version(version as u64));
        }
        if let Some(version) = self.starting_version {
            if version < 0 {
                return Err(SharingError::invalid("startingVersion cannot be negative"));
            }
            if let Some(end) = self.ending_version {
                if version > end {
                    return Err(SharingError::invalid(format!(
                        "startingVersion({version}) must be smaller than or equal to \
                         endingVersion({end})"
                    )));
                }
            }
        }
        if let Some(text) = &self.timestamp {
            return Ok(VersionSelector::AsOfTimestamp(parse_timestamp(
                text,
                "timestamp",
            )?));
        }
        Ok(VersionSelector::Latest)
    }
}

pub fn capabilities(headers: &HeaderMap) -> Capabilities {
    Capabilities::parse(
        headers
            .get(CAPABILITIES_HEADER)
            .and_then(|value| value.to_str().ok()),
    )
}

/// An NDJSON response with the protocol's headers.
pub fn ndjson_response(
    body: ResponseBody,
    version: u64,
    format: ResponseFormat,
    end_stream_action: bool,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    set_header(
        &mut response,
        header::CONTENT_TYPE.as_str(),
        NDJSON_CONTENT_TYPE,
    );
    set_header(&mut response, TABLE_VERSION_HEADER, &version.to_string());
    let mut capabilities = format!("responseformat={}", format.name());
    if end_stream_action {
        capabilities.push_str(";includeendstreamaction=true");
    }
    set_header(&mut response, CAPABILITIES_HEADER, &capabilities);
    response
}

fn set_header(response: &mut Response<ResponseBody>, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        http::header::HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        response.headers_mut().insert(name, value);
    }
}

/// ISO-8601 with an offset (`2022-01-01T00:00:00Z`), or the legacy `yyyy-mm-dd hh:mm:ss[.f]`
/// taken as UTC; milliseconds since the epoch.
pub fn parse_timestamp(text: &str, parameter: &str) -> Result<i64> {
    let trimmed = text.trim();
    let parsed = OffsetDateTime::parse(trimmed, &Rfc3339).or_else(|_| {
        let legacy = time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        time::PrimitiveDateTime::parse(trimmed, legacy).map(|time| time.assume_utc())
    });
    match parsed {
        Ok(time) => Ok((time.unix_timestamp_nanos() / 1_000_000) as i64),
        Err(_) => Err(SharingError::invalid(format!(
            "Invalid {parameter}: {text}"
        ))),
    }
}

fn parse_long(value: &Value) -> Result<i64> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .ok_or_else(|| SharingError::invalid(format!("Not a numeric value: {number}"))),
        Value::String(text) => text
            .trim()
            .parse()
            .map_err(|_| SharingError::invalid(format!("Not a numeric value: {text}"))),
        other => Err(SharingError::malformed(format!(
            "Not a numeric value: {other}"
        ))),
    }
}

fn parse_bool(name: &str, value: &Value) -> Result<bool> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        Value::String(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(SharingError::malformed(format!(
            "Expected a boolean for {name} but got {other}"
        ))),
    }
}

fn string_field(name: &str, value: &Value) -> Result<String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(SharingError::malformed(format!(
            "Expected a string for {name} but got {other}"
        ))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_bodies_parse_leniently() {
        let request =
            QueryRequest::parse(br#"{"version":"3","limitHint":5,"idempotency_key":"k"}"#).unwrap();
        assert_eq!(request.version, Some(3));
        assert_eq!(
            request.selector(|| Ok(())).unwrap(),
            VersionSelector::Version(3)
        );
        assert!(QueryRequest::parse(b"")
            .unwrap_err()
            .message
            .contains("end-of-input"));
        assert!(QueryRequest::parse(br#"{"version":"x3"}"#)
            .unwrap_err()
            .message
            .contains("Not a numeric value: x3"));
        assert!(QueryRequest::parse(br#"{"predicateHints":"a"}"#).is_err());
        assert_eq!(
            QueryRequest::parse(b"{}")
                .unwrap()
                .selector(|| Ok(()))
                .unwrap(),
            VersionSelector::Latest
        );
    }

    #[test]
    fn conflicting_parameters_use_the_reference_wording() {
        let both =
            QueryRequest::parse(br#"{"version":1,"timestamp":"2024-01-01T00:00:00Z"}"#).unwrap();
        assert!(both
            .selector(|| Ok(()))
            .unwrap_err()
            .message
            .contains("Please only provide one of"));
        let negative = QueryRequest::parse(br#"{"version":-1}"#).unwrap();
        assert!(negative
            .selector(|| Ok(()))
            .unwrap_err()
            .message
            .contains("cannot be negative"));
        let refresh = QueryRequest::parse(br#"{"version":1,"includeRefreshToken":true}"#).unwrap();
        assert!(refresh.selector(|| Ok(())).is_err());
        let zero = QueryRequest::parse(br#"{"maxFiles":0}"#).unwrap();
        assert!(zero
            .selector(|| Ok(()))
            .unwrap_err()
            .message
            .contains("maxFiles must be positive"));
    }

    /// Issue 12: the Spark connector's later pages repeat the body without the refresh
    /// fields (and add `includeendstreamaction` to the header, which the digest never sees).
    #[test]
    fn r12_page_checksum_covers_the_body_parameters() {
        let first = QueryRequest::parse(
            br#"{"predicateHints":[],"limitHint":9,"maxFiles":5,"includeRefreshToken":true}"#,
        )
        .unwrap();
        let next = QueryRequest::parse(
            br#"{"predicateHints":[],"limitHint":9,"maxFiles":7,"pageToken":"t"}"#,
        )
        .unwrap();
        assert_eq!(first.parameters_checksum(), next.parameters_checksum());
        for changed in [
            &br#"{"limitHint":8,"pageToken":"t"}"#[..],
            br#"{"predicateHints":["a = 1"],"limitHint":9,"pageToken":"t"}"#,
            br#"{"limitHint":9,"jsonPredicateHints":"{}","pageToken":"t"}"#,
            br#"{"limitHint":9,"version":3,"pageToken":"t"}"#,
            br#"{"limitHint":9,"timestamp":"2024-01-01T00:00:00Z","pageToken":"t"}"#,
        ] {
            let changed = QueryRequest::parse(changed).unwrap();
            assert_ne!(first.parameters_checksum(), changed.parameters_checksum());
        }
    }

    /// Issue 12: the reference server's words for refresh tokens where they cannot be used,
    /// and history sharing checked before a timestamp is parsed.
    #[test]
    fn r12_refresh_and_history_errors_use_the_reference_wording() {
        let message = |body: &[u8]| {
            QueryRequest::parse(body)
                .unwrap()
                .selector(|| Err(SharingError::invalid("no history")))
                .unwrap_err()
                .message
        };
        assert_eq!(
            message(br#"{"startingVersion":1,"refreshToken":"r"}"#),
            "refreshToken cannot be used when querying a specific version."
        );
        assert_eq!(
            message(br#"{"pageToken":"p","refreshToken":"r"}"#),
            "refreshToken must be used in the first page request."
        );
        assert_eq!(
            message(br#"{"version":1,"includeRefreshToken":true}"#),
            "includeRefreshToken cannot be used when querying a specific version."
        );
        assert_eq!(
            message(br#"{"pageToken":"p","includeRefreshToken":true}"#),
            "includeRefreshToken must be used in the first page request."
        );
        assert_eq!(message(br#"{"timestamp":"abc"}"#), "no history");
        assert_eq!(message(br#"{"startingVersion":0}"#), "no history");
        let invalid = QueryRequest::parse(br#"{"timestamp":"abc"}"#)
            .unwrap()
            .selector(|| Ok(()))
            .unwrap_err();
        assert!(invalid.message.contains("Invalid timestamp"));
    }

    #[test]
    fn timestamps_accept_iso_and_legacy_forms() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z", "t").unwrap(), 1000);
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:01-08:00", "t").unwrap(),
            28_801_000
        );
        assert_eq!(parse_timestamp("1970-01-01 00:00:01.5", "t").unwrap(), 1500);
        assert!(parse_timestamp("yesterday", "startingTimestamp")
            .unwrap_err()
            .message
            .contains("Invalid startingTimestamp"));
    }
}
