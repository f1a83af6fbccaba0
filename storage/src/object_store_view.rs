//! `NodeObjectStore`: an `object_store::ObjectStore` rooted at one bucket of a `Node`, so that
//! `delta_kernel` (and anything else speaking `object_store`) reads and writes the node's
//! objects in process, without an HTTP hop. A `Path` is an object key, byte for byte (its
//! percent-encoded form), and the store's root is the bucket.
//!
//! Invariants:
//! - `get` streams the node's body as it is read; no whole object is buffered.
//! - Listings come out in key (UTF-8 byte) order and page through `Node::list_objects`
//!   lazily, at most `LIST_PAGE_KEYS` keys per call, so memory does not grow with the bucket.
//! - Conditional writes (`PutMode::Create`, `PutMode::Update`, `CopyMode::Create`) are
//!   decided by the node under its per-key lock, never by a check-then-write here.
//! - Node errors map to one `object_store` kind each (`to_object_store_error`), the node's
//!   error kept as the source.
//! - ETags are in the S3 form (quoted), the same string the S3 API sends for the object.
//!
//! Multipart uploads (`put_multipart_opts`) coalesce the caller's parts, in call order, into
//! node parts of at least `NODE_PART_BYTES_MIN` (the node refuses smaller parts except the
//! last), so at most one node part is buffered besides the parts in flight. An upload that
//! never fills one node part becomes a single `put_object` at `complete`; the node's upload
//! is only created once the first node part is sent.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use object_store::list::{PaginatedListOptions, PaginatedListResult, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, CopyMode, CopyOptions, GetOptions, GetRange, GetResult,
    GetResultPayload, ListResult, MultipartId, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use crate::error::StorageError;
use crate::node::{
    ByteStream, CompletePart, ListRequest, Node, ObjectInfo, PutOptions as NodePutOptions,
    WriteCondition,
};

/// Keys asked of `Node::list_objects` per call (the S3 page size).
pub const LIST_PAGE_KEYS: usize = 1000;
/// Smallest node part other than the last: the node's (and S3's) multipart minimum.
pub const NODE_PART_BYTES_MIN: usize = 5 * 1024 * 1024;
/// Highest node part number (the node's and S3's limit).
const NODE_PART_NUMBER_MAX: u32 = 10_000;
/// Deletes in flight at once in `delete_stream`.
const DELETES_IN_FLIGHT_MAX: usize = 10;
/// Tries of a suffix read whose object changed between the size probe and the read.
const SUFFIX_READ_ATTEMPTS_MAX: usize = 3;
/// The name errors carry as their store.
const STORE_NAME: &str = "NodeObjectStore";

/// An `ObjectStore` over one bucket of a `Node`.
#[derive(Clone)]
pub struct NodeObjectStore {
    node: Arc<Node>,
    bucket: String,
    /// Keys per `Node::list_objects` call; 1..=`LIST_PAGE_KEYS`.
    list_page_keys: usize,
}

impl NodeObjectStore {
    /// A view of `bucket` (which need not exist yet: calls fail with `NotFound` until it does).
    pub fn new(node: Arc<Node>, bucket: impl Into<String>) -> NodeObjectStore {
        NodeObjectStore {
            node,
            bucket: bucket.into(),
            list_page_keys: LIST_PAGE_KEYS,
        }
    }

    /// Lists `keys` per node call (clamped to 1..=`LIST_PAGE_KEYS`); for tests of paging.
    pub fn with_list_page_keys(mut self, keys: usize) -> NodeObjectStore {
        self.list_page_keys = keys.clamp(1, LIST_PAGE_KEYS);
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Objects under `prefix` (segment-wise) strictly after `after`, paged lazily.
    fn list_after(
        &self,
        prefix: Option<&Path>,
        after: Option<String>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let node = Arc::clone(&self.node);
        let bucket = self.bucket.clone();
        let prefix = key_prefix(prefix);
        let max_keys = self.list_page_keys;
        // `None` once the last page has been fetched.
        let start: Option<Option<String>> = Some(after);
        stream::try_unfold(start, move |cursor| {
            let node = Arc::clone(&node);
            let bucket = bucket.clone();
            let prefix = prefix.clone();
            async move {
                let Some(after) = cursor else {
                    return Ok::<_, object_store::Error>(None);
                };
                let request = ListRequest::flat(&prefix, after, max_keys);
                let page = node
                    .list_objects(&bucket, request)
                    .await
                    .map_err(|error| to_object_store_error(error, &prefix))?;
                let next = next_cursor(page.is_truncated, page.next_after, &prefix)?;
                let metas: Vec<object_store::Result<ObjectMeta>> =
                    listed_files(&page.objects).map(listed_meta).collect();
                Ok(Some((stream::iter(metas), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    /// Reads the object, or the asked range of it, streaming.
    async fn get_body(
        &self,
        location: &Path,
        options: &GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.as_ref();
        let node_range = match &options.range {
            None => None,
            // `end > start` was checked by `GetRange::is_valid`.
            Some(GetRange::Bounded(bounds)) => Some((bounds.start, Some(bounds.end - 1))),
            Some(GetRange::Offset(first)) => Some((*first, None)),
            Some(GetRange::Suffix(suffix_bytes)) => {
                return self.get_suffix(location, options, *suffix_bytes).await;
            }
        };
        let result = self
            .node
            .get_object(&self.bucket, key, node_range)
            .await
            .map_err(|error| to_object_store_error(error, key))?;
        finish_get(location, options, result)
    }

    /// The last `suffix_bytes` bytes: the size is probed first, and the read is retried when
    /// another version of the object was read than the one probed.
    async fn get_suffix(
        &self,
        location: &Path,
        options: &GetOptions,
        suffix_bytes: u64,
    ) -> object_store::Result<GetResult> {
        let key = location.as_ref();
        for _ in 0..SUFFIX_READ_ATTEMPTS_MAX {
            let probe = self.head_info(location).await?;
            if probe.size == 0 || suffix_bytes == 0 {
                return empty_result(location, options, &probe);
            }
            let first = probe.size.saturating_sub(suffix_bytes);
            let result = self
                .node
                .get_object(&self.bucket, key, Some((first, None)))
                .await
                .map_err(|error| to_object_store_error(error, key))?;
            if result.info.etag == probe.etag {
                return finish_get(location, options, result);
            }
        }
        Err(generic(format!(
            "{key}: object kept changing during a suffix read"
        )))
    }

    async fn head_info(&self, location: &Path) -> object_store::Result<ObjectInfo> {
        let key = location.as_ref();
        self.node
            .head_object(&self.bucket, key)
            .await
            .map_err(|error| to_object_store_error(error, key))
    }
}

impl fmt::Display for NodeObjectStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "NodeObjectStore({})", self.bucket)
    }
}

impl fmt::Debug for NodeObjectStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("NodeObjectStore")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ObjectStore for NodeObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let key = location.as_ref();
        let (kind, condition) = match opts.mode {
            PutMode::Overwrite => (WriteKind::Overwrite, WriteCondition::default()),
            PutMode::Create => (
                WriteKind::Create,
                WriteCondition {
                    if_none_match_any: true,
                    if_match: None,
                },
            ),
            PutMode::Update(version) => {
                let Some(e_tag) = version.e_tag else {
                    return Err(generic(format!(
                        "{key}: a conditional update needs the ETag of the version to replace"
                    )));
                };
                let condition = WriteCondition {
                    if_none_match_any: false,
                    if_match: Some(unquote(&e_tag).to_string()),
                };
                (WriteKind::Update, condition)
            }
        };
        // Tags are not kept by the node; the trait says to ignore them.
        let mut options = node_put_options(&opts.attributes, "put_opts")?;
        options.condition = condition;
        let body: ByteStream = Box::pin(stream::iter(payload.into_iter().map(Ok)));
        let info = self
            .node
            .put_object(&self.bucket, key, body, options)
            .await
            .map_err(|error| write_error(error, key, kind))?;
        Ok(put_result(&info))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let options = node_put_options(&opts.attributes, "put_multipart_opts")?;
        Ok(Box::new(NodeMultipartUpload {
            target: UploadTarget {
                node: Arc::clone(&self.node),
                bucket: self.bucket.clone(),
                key: location.to_string(),
                options,
                upload_id: tokio::sync::OnceCell::new(),
                parts_done: Mutex::new(Vec::new()),
            }
            .into(),
            pending: Vec::new(),
            pending_bytes: 0,
            parts_started: 0,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.version.is_some() {
            return Err(object_store::Error::NotSupported {
                source: "the node keeps no object versions".into(),
            });
        }
        if let Some(range) = &options.range {
            range
                .is_valid()
                .map_err(|error| generic_with(location.as_ref(), error))?;
        }
        if options.head {
            let info = self.head_info(location).await?;
            return empty_result(location, &options, &info);
        }
        self.get_body(location, &options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let node = Arc::clone(&self.node);
        let bucket = self.bucket.clone();
        locations
            .map(move |location| {
                let node = Arc::clone(&node);
                let bucket = bucket.clone();
                async move {
                    let location = location?;
                    // Deleting a missing key succeeds, as on S3.
                    node.delete_object(&bucket, location.as_ref())
                        .await
                        .map_err(|error| to_object_store_error(error, location.as_ref()))?;
                    Ok(location)
                }
            })
            .buffered(DELETES_IN_FLIGHT_MAX)
            .boxed()
    }

    /// In key order.
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.list_after(prefix, None)
    }

    /// In key order; `offset` goes to the node as its exclusive `after`.
    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.list_after(prefix, Some(offset.to_string()))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = key_prefix(prefix);
        let mut objects = Vec::new();
        let mut common_prefixes = Vec::new();
        let mut after = None;
        loop {
            let request = ListRequest {
                prefix: prefix.clone(),
                delimiter: Some("/".into()),
                after,
                max_keys: self.list_page_keys,
            };
            let page = self
                .node
                .list_objects(&self.bucket, request)
                .await
                .map_err(|error| to_object_store_error(error, &prefix))?;
            for object in listed_files(&page.objects) {
                objects.push(listed_meta(object)?);
            }
            for common in &page.common_prefixes {
                common_prefixes.push(Path::parse(common)?);
            }
            match next_cursor(page.is_truncated, page.next_after, &prefix)? {
                Some(next) => after = next,
                None => break,
            }
        }
        Ok(ListResult {
            common_prefixes,
            objects,
            extensions: Default::default(),
        })
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let (kind, creating) = match options.mode {
            CopyMode::Create => (WriteKind::Create, true),
            CopyMode::Overwrite => (WriteKind::Overwrite, false),
        };
        let target_options = NodePutOptions {
            condition: WriteCondition {
                if_none_match_any: creating,
                if_match: None,
            },
            ..NodePutOptions::default()
        };
        self.node
            .copy_object(
                &self.bucket,
                from.as_ref(),
                &self.bucket,
                to.as_ref(),
                target_options,
            )
            .await
            .map_err(|error| match error {
                StorageError::NoSuchKey { .. } => to_object_store_error(error, from.as_ref()),
                other => write_error(other, to.as_ref(), kind),
            })?;
        Ok(())
    }
}

/// Pages are exactly the node's listing pages; the page token is the last key or common
/// prefix returned (the node's exclusive `after`).
#[async_trait]
impl PaginatedListStore for NodeObjectStore {
    async fn list_paginated(
        &self,
        prefix: Option<&str>,
        opts: PaginatedListOptions,
    ) -> object_store::Result<PaginatedListResult> {
        let prefix = prefix.unwrap_or_default().to_string();
        let after = match (opts.page_token, opts.offset) {
            (Some(token), Some(offset)) => Some(token.max(offset)),
            (token, offset) => token.or(offset),
        };
        let request = ListRequest {
            prefix: prefix.clone(),
            delimiter: opts.delimiter.map(|delimiter| delimiter.into_owned()),
            after,
            max_keys: opts
                .max_keys
                .unwrap_or(self.list_page_keys)
                .clamp(1, LIST_PAGE_KEYS),
        };
        let page = self
            .node
            .list_objects(&self.bucket, request)
            .await
            .map_err(|error| to_object_store_error(error, &prefix))?;
        let objects = listed_files(&page.objects)
            .map(listed_meta)
            .collect::<object_store::Result<Vec<_>>>()?;
        let common_prefixes = page
            .common_prefixes
            .iter()
            .map(Path::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let page_token = next_cursor(page.is_truncated, page.next_after, &prefix)?.flatten();
        Ok(PaginatedListResult {
            result: ListResult {
                common_prefixes,
                objects,
                extensions: Default::default(),
            },
            page_token,
        })
    }
}

/// The node's multipart API as is: part `i` is node part `i + 1`, so parts follow the node's
/// rules (every part but the last at least `NODE_PART_BYTES_MIN`, at most 10,000 parts).
#[async_trait]
impl MultipartStore for NodeObjectStore {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        self.create_multipart_opts(path, PutMultipartOptions::default())
            .await
    }

    async fn create_multipart_opts(
        &self,
        path: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<MultipartId> {
        let options = node_put_options(&opts.attributes, "create_multipart_opts")?;
        let key = path.as_ref();
        self.node
            .create_multipart(&self.bucket, key, options)
            .await
            .map_err(|error| to_object_store_error(error, key))
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        let key = path.as_ref();
        let part_number = u32::try_from(part_idx)
            .ok()
            .and_then(|index| index.checked_add(1))
            .filter(|number| *number <= NODE_PART_NUMBER_MAX)
            .ok_or_else(|| generic(format!("{key}: part index {part_idx} is out of range")))?;
        let body: ByteStream = Box::pin(stream::iter(data.into_iter().map(Ok)));
        let part = self
            .node
            .upload_part(&self.bucket, key, id, part_number, body, BTreeMap::new())
            .await
            .map_err(|error| to_object_store_error(error, key))?;
        Ok(PartId {
            content_id: part.etag,
        })
    }

    /// An empty part list makes an empty object (the node needs at least one part).
    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        let key = path.as_ref();
        if parts.is_empty() {
            let put = self.put_opts(path, PutPayload::new(), PutOptions::default());
            let result = put.await?;
            self.abort_multipart(path, id).await?;
            return Ok(result);
        }
        let mut complete = Vec::with_capacity(parts.len());
        for (index, part) in parts.into_iter().enumerate() {
            let part_number =
                u32::try_from(index + 1).map_err(|_| generic(format!("{key}: too many parts")))?;
            complete.push(CompletePart {
                part_number,
                etag: part.content_id,
            });
        }
        let info = self
            .node
            .complete_multipart(&self.bucket, key, id, complete, WriteCondition::default())
            .await
            .map_err(|error| to_object_store_error(error, key))?;
        Ok(put_result(&info))
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        let key = path.as_ref();
        self.node
            .abort_multipart(&self.bucket, key, id)
            .await
            .map_err(|error| to_object_store_error(error, key))
    }
}

/// One `put_multipart_opts` upload: caller parts coalesced into node parts (see the module
/// doc).
struct NodeMultipartUpload {
    target: Arc<UploadTarget>,
    /// Caller bytes not yet in a node part, in call order; under `NODE_PART_BYTES_MIN`.
    pending: Vec<Bytes>,
    pending_bytes: usize,
    /// Node parts handed out so far (numbered from 1).
    parts_started: u32,
}

/// What the part futures share with the upload.
struct UploadTarget {
    node: Arc<Node>,
    bucket: String,
    key: String,
    options: NodePutOptions,
    /// The node's upload, created by the first node part.
    upload_id: tokio::sync::OnceCell<String>,
    /// Node parts uploaded so far, in completion order.
    parts_done: Mutex<Vec<CompletePart>>,
}

impl UploadTarget {
    async fn upload_part(&self, part_number: u32, chunks: Vec<Bytes>) -> object_store::Result<()> {
        let upload_id = self
            .upload_id
            .get_or_try_init(|| async {
                self.node
                    .create_multipart(&self.bucket, &self.key, self.options.clone())
                    .await
            })
            .await
            .map_err(|error| to_object_store_error(error, &self.key))?;
        let body: ByteStream = Box::pin(stream::iter(chunks.into_iter().map(Ok)));
        let part = self
            .node
            .upload_part(
                &self.bucket,
                &self.key,
                upload_id,
                part_number,
                body,
                BTreeMap::new(),
            )
            .await
            .map_err(|error| to_object_store_error(error, &self.key))?;
        self.parts_done_lock().push(CompletePart {
            part_number,
            etag: part.etag,
        });
        Ok(())
    }

    fn parts_done_lock(&self) -> std::sync::MutexGuard<'_, Vec<CompletePart>> {
        self.parts_done
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl NodeMultipartUpload {
    /// Hands the pending bytes out as the next node part.
    fn start_part(&mut self) -> UploadPart {
        let chunks = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        if self.parts_started >= NODE_PART_NUMBER_MAX {
            let key = self.target.key.clone();
            return Box::pin(async move {
                Err(generic(format!(
                    "{key}: more than {NODE_PART_NUMBER_MAX} parts"
                )))
            });
        }
        self.parts_started += 1;
        let part_number = self.parts_started;
        let target = Arc::clone(&self.target);
        Box::pin(async move { target.upload_part(part_number, chunks).await })
    }
}

impl fmt::Debug for NodeMultipartUpload {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("NodeMultipartUpload")
            .field("bucket", &self.target.bucket)
            .field("key", &self.target.key)
            .field("pending_bytes", &self.pending_bytes)
            .field("parts_started", &self.parts_started)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for NodeMultipartUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.pending_bytes += data.content_length();
        self.pending.extend(data);
        if self.pending_bytes < NODE_PART_BYTES_MIN {
            return Box::pin(futures::future::ready(Ok(())));
        }
        self.start_part()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let target = Arc::clone(&self.target);
        let key = target.key.as_str();
        if self.parts_started == 0 {
            let chunks = std::mem::take(&mut self.pending);
            self.pending_bytes = 0;
            let body: ByteStream = Box::pin(stream::iter(chunks.into_iter().map(Ok)));
            let info = target
                .node
                .put_object(&target.bucket, key, body, target.options.clone())
                .await
                .map_err(|error| to_object_store_error(error, key))?;
            return Ok(put_result(&info));
        }
        if !self.pending.is_empty() {
            self.start_part().await?;
        }
        let mut parts = std::mem::take(&mut *target.parts_done_lock());
        if parts.len() != self.parts_started as usize {
            return Err(generic(format!(
                "{key}: complete called with {} of {} parts uploaded",
                parts.len(),
                self.parts_started
            )));
        }
        parts.sort_by_key(|part| part.part_number);
        let Some(upload_id) = target.upload_id.get() else {
            return Err(generic(format!("{key}: no upload was created")));
        };
        let info = target
            .node
            .complete_multipart(
                &target.bucket,
                key,
                upload_id,
                parts,
                WriteCondition::default(),
            )
            .await
            .map_err(|error| to_object_store_error(error, key))?;
        Ok(put_result(&info))
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.pending.clear();
        self.pending_bytes = 0;
        let target = &self.target;
        match target.upload_id.get() {
            Some(upload_id) => target
                .node
                .abort_multipart(&target.bucket, &target.key, upload_id)
                .await
                .map_err(|error| to_object_store_error(error, &target.key)),
            None => Ok(()),
        }
    }
}

/// The one mapping of node errors to `object_store` kinds, the node error kept as source.
/// `PreconditionFailed` of a create-only write is mapped by `write_error`.
pub fn to_object_store_error(error: StorageError, path: &str) -> object_store::Error {
    let path = path.to_string();
    match error {
        StorageError::NoSuchKey { .. }
        | StorageError::NoSuchBucket(_)
        | StorageError::NoSuchUpload(_) => object_store::Error::NotFound {
            path,
            source: Box::new(error),
        },
        StorageError::BucketExists(_) => object_store::Error::AlreadyExists {
            path,
            source: Box::new(error),
        },
        StorageError::PreconditionFailed => object_store::Error::Precondition {
            path,
            source: Box::new(error),
        },
        other => object_store::Error::Generic {
            store: STORE_NAME,
            source: Box::new(other),
        },
    }
}

/// The condition a write was made under, for `write_error`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Overwrite,
    /// `PutMode::Create`, `CopyMode::Create`: the key must not exist.
    Create,
    /// `PutMode::Update`: the key must exist with the given ETag.
    Update,
}

/// A failed write: a create-only write that found the key answers `AlreadyExists`, and an
/// update of a missing key `Precondition`, as the trait asks.
fn write_error(error: StorageError, key: &str, kind: WriteKind) -> object_store::Error {
    match (error, kind) {
        (error @ StorageError::PreconditionFailed, WriteKind::Create) => {
            object_store::Error::AlreadyExists {
                path: key.to_string(),
                source: Box::new(error),
            }
        }
        (error @ StorageError::NoSuchKey { .. }, WriteKind::Update) => {
            object_store::Error::Precondition {
                path: key.to_string(),
                source: Box::new(error),
            }
        }
        (other, _) => to_object_store_error(other, key),
    }
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE_NAME,
        source: message.into(),
    }
}

fn generic_with(
    key: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE_NAME,
        source: format!("{key}: {error}").into(),
    }
}

/// Checks the conditions on the version actually read and wraps its body.
fn finish_get(
    location: &Path,
    options: &GetOptions,
    result: crate::node::GetResult,
) -> object_store::Result<GetResult> {
    let meta = object_meta(location.clone(), &result.info);
    options.check_preconditions(&meta)?;
    let range = match result.range {
        Some(range) => range.first..range.last + 1,
        None => 0..result.info.size,
    };
    let key = location.to_string();
    let body = result
        .body
        .map_err(move |error| object_store::Error::Generic {
            store: STORE_NAME,
            source: format!("{key}: {error}").into(),
        })
        .boxed();
    Ok(GetResult {
        payload: GetResultPayload::Stream(body),
        meta,
        range,
        attributes: attributes_of(&result.info),
        extensions: Default::default(),
    })
}

/// A result without bytes (`head`, empty suffixes), for the version `info` describes.
fn empty_result(
    location: &Path,
    options: &GetOptions,
    info: &ObjectInfo,
) -> object_store::Result<GetResult> {
    let meta = object_meta(location.clone(), info);
    options.check_preconditions(&meta)?;
    let range = match &options.range {
        Some(range) => range
            .as_range(info.size)
            .map_err(|error| generic_with(location.as_ref(), error))?,
        None => 0..info.size,
    };
    Ok(GetResult {
        payload: GetResultPayload::Stream(stream::empty().boxed()),
        meta,
        range,
        attributes: attributes_of(info),
        extensions: Default::default(),
    })
}

/// The node prefix of an `object_store` prefix: whole segments, so `foo` lists `foo/...`
/// and never `foo.bar/...`.
fn key_prefix(prefix: Option<&Path>) -> String {
    match prefix {
        Some(prefix) if !prefix.as_ref().is_empty() => format!("{prefix}/"),
        _ => String::new(),
    }
}

/// The next page's `after`: `Some(after)` while truncated, `None` at the end.
fn next_cursor(
    is_truncated: bool,
    next_after: Option<String>,
    prefix: &str,
) -> object_store::Result<Option<Option<String>>> {
    if !is_truncated {
        return Ok(None);
    }
    match next_after {
        Some(after) => Ok(Some(Some(after))),
        // Without a continuation the next call would start over: fail rather than loop.
        None => Err(generic(format!(
            "listing {prefix:?}: truncated page without a continuation key"
        ))),
    }
}

/// The listed objects an `ObjectStore` can name: a key ending in `/` is a directory marker,
/// which a `Path` cannot express (object_store has no directory objects), so it is left out.
fn listed_files(objects: &[ObjectInfo]) -> impl Iterator<Item = &ObjectInfo> {
    objects.iter().filter(|object| !object.key.ends_with('/'))
}

fn listed_meta(info: &ObjectInfo) -> object_store::Result<ObjectMeta> {
    Ok(object_meta(Path::parse(&info.key)?, info))
}

fn object_meta(location: Path, info: &ObjectInfo) -> ObjectMeta {
    let modified = info.modified;
    let last_modified =
        DateTime::<Utc>::from_timestamp(modified.unix_timestamp(), modified.nanosecond())
            .unwrap_or_default();
    ObjectMeta {
        location,
        last_modified,
        size: info.size,
        e_tag: Some(format!("\"{}\"", info.etag)),
        version: None,
    }
}

fn put_result(info: &ObjectInfo) -> PutResult {
    PutResult {
        e_tag: Some(format!("\"{}\"", info.etag)),
        version: None,
        extensions: Default::default(),
    }
}

fn unquote(e_tag: &str) -> &str {
    let e_tag = e_tag.strip_prefix("W/").unwrap_or(e_tag);
    e_tag
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(e_tag)
}

/// The attributes the node keeps: content type and user metadata. Any other attribute is
/// refused, as the trait asks, rather than silently dropped.
fn node_put_options(
    attributes: &Attributes,
    operation: &str,
) -> object_store::Result<NodePutOptions> {
    let mut options = NodePutOptions::default();
    for (attribute, value) in attributes {
        match attribute {
            Attribute::ContentType => options.content_type = Some(value.to_string()),
            Attribute::Metadata(name) => {
                options
                    .user_metadata
                    .insert(name.to_string(), value.to_string());
            }
            other => {
                return Err(object_store::Error::NotImplemented {
                    operation: format!("{operation} with attribute {other:?}"),
                    implementer: STORE_NAME.to_string(),
                })
            }
        }
    }
    Ok(options)
}

fn attributes_of(info: &ObjectInfo) -> Attributes {
    let mut attributes = Attributes::new();
    if let Some(content_type) = &info.content_type {
        attributes.insert(Attribute::ContentType, content_type.clone().into());
    }
    for (name, value) in &info.user_metadata {
        attributes.insert(
            Attribute::Metadata(name.clone().into()),
            value.clone().into(),
        );
    }
    attributes
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lakeshare_engine::io::ThreadPoolIo;
    use object_store::integration;
    use object_store::{DynObjectStore, ObjectStoreExt};

    use super::*;
    use crate::node::StorageConfig;

    const BUCKET: &str = "view-tests";

    /// A node on four temp drives (one erasure set) with `BUCKET` made.
    struct Fixture {
        _drives: tempfile::TempDir,
        store: NodeObjectStore,
    }

    async fn fixture() -> Fixture {
        let drives = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (1..=4)
            .map(|index| drives.path().join(format!("d{index}")))
            .collect();
        for path in &paths {
            std::fs::create_dir_all(path).unwrap();
        }
        let config = StorageConfig {
            scanner_interval: Duration::ZERO,
            ..StorageConfig::new(paths)
        };
        let node = Node::open(config, Arc::new(ThreadPoolIo)).await.unwrap();
        node.make_bucket(BUCKET).await.unwrap();
        Fixture {
            _drives: drives,
            store: NodeObjectStore::new(node, BUCKET),
        }
    }

    fn pattern(len: usize) -> Bytes {
        (0..len)
            .map(|index| (index as u8).wrapping_mul(31) ^ (index >> 13) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    async fn keys(stream: BoxStream<'static, object_store::Result<ObjectMeta>>) -> Vec<String> {
        stream
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap()
    }

    // ---- object_store's own conformance checks -------------------------------------------

    #[tokio::test]
    async fn conformance_put_get_delete_list() {
        let fixture = fixture().await;
        integration::put_get_delete_list(&fixture.store).await;
    }

    #[tokio::test]
    async fn conformance_get_opts_and_put_opts() {
        let fixture = fixture().await;
        integration::get_opts(&fixture.store).await;
        integration::put_opts(&fixture.store, true).await;
    }

    #[tokio::test]
    async fn conformance_attributes() {
        let fixture = fixture().await;
        // Refused as NotImplemented: the node keeps no Cache-Control and the like.
        integration::put_get_attributes(&fixture.store).await;
    }

    #[tokio::test]
    async fn conformance_listing() {
        let fixture = fixture().await;
        let store: &DynObjectStore = &fixture.store;
        integration::list_uses_directories_correctly(store).await;
        integration::list_with_delimiter(store).await;
        integration::list_with_offset_exclusivity(store).await;
        integration::list_paginated(store, &fixture.store).await;
    }

    #[tokio::test]
    async fn conformance_copy_and_rename() {
        let fixture = fixture().await;
        let store: &DynObjectStore = &fixture.store;
        integration::rename_and_copy(store).await;
        integration::copy_if_not_exists(store).await;
        integration::copy_rename_nonexistent_object(store).await;
        let missing = integration::get_nonexistent_object(store, None).await;
        assert!(matches!(missing, Err(object_store::Error::NotFound { .. })));
    }

    #[tokio::test]
    async fn conformance_multipart_upload() {
        let fixture = fixture().await;
        integration::stream_get(&fixture.store).await;
        integration::multipart_out_of_order(&fixture.store).await;
        integration::multipart_race_condition(&fixture.store, true).await;
    }

    #[tokio::test]
    async fn conformance_multipart_store() {
        let fixture = fixture().await;
        integration::multipart(&fixture.store, &fixture.store).await;
        integration::multipart_with_opts(&fixture.store, &fixture.store).await;
        integration::multipart_put_part_out_of_order(&fixture.store, &fixture.store).await;
    }

    // ---- our own checks -------------------------------------------------------------------

    #[tokio::test]
    async fn list_pages_lazily_in_key_order_across_prefixes() {
        let fixture = fixture().await;
        let store = fixture.store.clone().with_list_page_keys(3);
        let mut expected = vec![
            "_delta_log/00000000000000000000.json",
            "_delta_log/00000000000000000001.checkpoint.parquet",
            "_delta_log/00000000000000000001.json",
            "_delta_log/_last_checkpoint",
            "a b/c",
            "a.b/c",
            "a/b",
            "a/c/d",
            "a0",
            "part=1/x.parquet",
            "part=10/x.parquet",
            "part=2/x.parquet",
            "z",
        ];
        for key in expected.iter().rev() {
            store.put(&Path::from(*key), "x".into()).await.unwrap();
        }
        expected.sort_unstable();
        assert_eq!(keys(store.list(None)).await, expected);

        let log = Path::from("_delta_log");
        assert_eq!(keys(store.list(Some(&log))).await, expected[..4]);

        // Exclusive offset, inside and outside the prefix, across page boundaries.
        let offset = Path::from("_delta_log/00000000000000000001.checkpoint.parquet");
        assert_eq!(
            keys(store.list_with_offset(Some(&log), &offset)).await,
            expected[2..4]
        );
        assert_eq!(
            keys(store.list_with_offset(None, &Path::from("a"))).await,
            expected[4..]
        );
        assert_eq!(
            keys(store.list_with_offset(None, &Path::from("a/b"))).await,
            expected[7..]
        );
        assert!(keys(store.list_with_offset(None, &Path::from("z")))
            .await
            .is_empty());

        // The stream asks for pages only as it is polled.
        let mut stream = store.list(None);
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.location.as_ref(), expected[0]);
        assert_eq!(first.size, 1);
        assert!(first.e_tag.is_some_and(|tag| tag.starts_with('"')));
    }

    #[tokio::test]
    async fn delimiter_listing_pages_through_prefixes_and_objects() {
        let fixture = fixture().await;
        let store = fixture.store.clone().with_list_page_keys(2);
        for key in ["t/a/1", "t/a/2", "t/b/1", "t/c", "t/d", "t/e/1", "t/f", "u"] {
            store.put(&Path::from(key), "x".into()).await.unwrap();
        }
        let listed = store
            .list_with_delimiter(Some(&Path::from("t")))
            .await
            .unwrap();
        let prefixes: Vec<_> = listed.common_prefixes.iter().map(Path::as_ref).collect();
        assert_eq!(prefixes, ["t/a", "t/b", "t/e"]);
        let objects: Vec<_> = listed
            .objects
            .iter()
            .map(|meta| meta.location.as_ref())
            .collect();
        assert_eq!(objects, ["t/c", "t/d", "t/f"]);
    }

    #[tokio::test]
    async fn ranges_of_a_3_mib_object_stream_the_right_bytes() {
        let fixture = fixture().await;
        let store = &fixture.store;
        let location = Path::from("big/object.bin");
        let data = pattern(3 * 1024 * 1024 + 17);
        let size = data.len() as u64;
        store.put(&location, data.clone().into()).await.unwrap();

        let whole = store.get(&location).await.unwrap();
        assert_eq!(whole.range, 0..size);
        let mut chunk_count = 0;
        let mut read = Vec::new();
        let mut body = whole.into_stream();
        while let Some(chunk) = body.next().await {
            read.extend_from_slice(&chunk.unwrap());
            chunk_count += 1;
        }
        assert_eq!(read, data);
        assert!(chunk_count > 1, "the body came as one chunk: not streamed");

        let step = 512 * 1024 + 3;
        let mut start = 0;
        while start < size {
            let end = (start + step).min(size);
            let bytes = store.get_range(&location, start..end).await.unwrap();
            assert_eq!(bytes, data.slice(start as usize..end as usize));
            start = end;
        }

        let ranges = [0..1, size - 10..size, 1_000_000..2_500_000, 5..5_000];
        let parts = store.get_ranges(&location, &ranges).await.unwrap();
        for (range, bytes) in ranges.iter().zip(parts) {
            assert_eq!(bytes, data.slice(range.start as usize..range.end as usize));
        }

        let suffix = GetOptions::new().with_range(Some(GetRange::Suffix(100_000)));
        let result = store.get_opts(&location, suffix).await.unwrap();
        assert_eq!(result.range, size - 100_000..size);
        let bytes = result.bytes().await.unwrap();
        assert_eq!(bytes, data.slice(data.len() - 100_000..));

        let offset = GetOptions::new().with_range(Some(GetRange::Offset(size - 5)));
        let bytes = store.get_opts(&location, offset).await.unwrap();
        assert_eq!(bytes.bytes().await.unwrap(), data.slice(data.len() - 5..));

        let head = store.head(&location).await.unwrap();
        assert_eq!(head.size, size);
        assert_eq!(head.location, location);
    }

    #[tokio::test]
    async fn create_conflicts_and_missing_things_map_to_their_kinds() {
        let fixture = fixture().await;
        let store = &fixture.store;
        let location = Path::from("_delta_log/00000000000000000000.json");
        let create = || PutOptions::from(PutMode::Create);
        store
            .put_opts(&location, "first".into(), create())
            .await
            .unwrap();
        let conflict = store
            .put_opts(&location, "second".into(), create())
            .await
            .unwrap_err();
        assert!(
            matches!(conflict, object_store::Error::AlreadyExists { .. }),
            "{conflict}"
        );
        let kept = store.get(&location).await.unwrap().bytes().await.unwrap();
        assert_eq!(kept, "first");

        let missing = store.get(&Path::from("nope")).await.unwrap_err();
        assert!(matches!(missing, object_store::Error::NotFound { .. }));

        let stale = PutMode::Update(object_store::UpdateVersion {
            e_tag: Some("\"0123\"".into()),
            version: None,
        });
        let refused = store
            .put_opts(&location, "third".into(), stale.into())
            .await
            .unwrap_err();
        assert!(matches!(refused, object_store::Error::Precondition { .. }));

        let no_bucket = NodeObjectStore::new(Arc::clone(store.node()), "no-such-bucket");
        let error = no_bucket.head(&location).await.unwrap_err();
        assert!(
            matches!(error, object_store::Error::NotFound { .. }),
            "{error}"
        );
        let error = no_bucket.list(None).next().await.unwrap().unwrap_err();
        assert!(
            matches!(error, object_store::Error::NotFound { .. }),
            "{error}"
        );
        let error = no_bucket.put(&location, "x".into()).await.unwrap_err();
        assert!(
            matches!(error, object_store::Error::NotFound { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn multipart_upload_coalesces_small_parts_into_node_parts() {
        let fixture = fixture().await;
        let store = &fixture.store;
        let location = Path::from("coalesced.bin");
        let part_bytes = 3 * 1024 * 1024;
        let parts: Vec<Bytes> = (0..3).map(|index| pattern(part_bytes + index)).collect();
        let mut upload = store.put_multipart(&location).await.unwrap();
        // The first call fills no node part, the second does.
        upload.put_part(parts[0].clone().into()).await.unwrap();
        let uploads = store
            .node()
            .list_multipart_uploads(BUCKET, "")
            .await
            .unwrap();
        assert!(
            uploads.is_empty(),
            "a node upload before one node part was full"
        );
        upload.put_part(parts[1].clone().into()).await.unwrap();
        upload.put_part(parts[2].clone().into()).await.unwrap();
        let uploads = store
            .node()
            .list_multipart_uploads(BUCKET, "")
            .await
            .unwrap();
        assert_eq!(uploads.len(), 1);
        assert!(matches!(
            store.head(&location).await,
            Err(object_store::Error::NotFound { .. })
        ));
        upload.complete().await.unwrap();

        let read = store.get(&location).await.unwrap().bytes().await.unwrap();
        assert_eq!(read, parts.concat());
        let uploads = store
            .node()
            .list_multipart_uploads(BUCKET, "")
            .await
            .unwrap();
        assert!(uploads.is_empty());
    }
}
