//! `Node`: the object layer over all erasure sets of this node. This is the API the S3 layer
//! and (later) the sharing protocol use; everything below it is private to `storage`.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use lakeshare_engine::io::DriveIo;
use time::OffsetDateTime;

use crate::error::Result;

/// A stream of body bytes, in and out.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync + 'static>>;

/// How the node is laid out.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Drive folders, already brace-expanded, in command-line order.
    pub drives: Vec<PathBuf>,
    /// Parity per set; `None` means MinIO's default for the set size.
    pub parity: Option<usize>,
    /// Shard bytes at or below which an object's data is kept inline in its metadata.
    pub inline_bytes_max: usize,
}

#[derive(Clone, Debug)]
pub struct BucketInfo {
    pub name: String,
    pub created: OffsetDateTime,
}

/// What a write must find at commit time; checked under the per-key lock.
#[derive(Clone, Debug, Default)]
pub struct WriteCondition {
    /// `If-None-Match: *`: the key must not exist.
    pub if_none_match_any: bool,
    /// `If-Match: "etag"` (or `*`): the key must exist with this ETag.
    pub if_match: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    /// `x-amz-meta-*` without the prefix.
    pub user_metadata: BTreeMap<String, String>,
    /// S3 checksums already verified by the S3 layer, e.g. `("CRC32", base64)`.
    pub checksums: BTreeMap<String, String>,
    pub condition: WriteCondition,
}

#[derive(Clone, Debug)]
pub struct ObjectInfo {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    pub modified: OffsetDateTime,
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    pub checksums: BTreeMap<String, String>,
    /// Number of multipart parts (0 for a single PUT).
    pub parts: u32,
}

/// An inclusive byte range, already resolved against the object size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

pub struct GetResult {
    pub info: ObjectInfo,
    /// The range served, if one was asked.
    pub range: Option<ByteRange>,
    pub body: ByteStream,
}

#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Exclusive: keys strictly after this (start-after, marker or continuation).
    pub after: Option<String>,
    pub max_keys: usize,
}

#[derive(Clone, Debug, Default)]
pub struct ListResult {
    pub objects: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    /// The last key or common prefix returned, for the next page's `after`.
    pub next_after: Option<String>,
}

#[derive(Clone, Debug)]
pub struct MultipartUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub struct PartInfo {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
    pub modified: OffsetDateTime,
    pub checksums: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct CompletePart {
    pub part_number: u32,
    /// Without quotes.
    pub etag: String,
}

#[derive(Clone, Debug, Default)]
pub struct HealReport {
    pub objects_scanned: u64,
    pub objects_healed: u64,
    pub shards_rebuilt: u64,
    pub objects_failed: u64,
}

/// Where drives, sets and the I/O back-end stand, for the start-up log and health checks.
#[derive(Clone, Debug)]
pub struct Topology {
    pub set_count: usize,
    pub drives_per_set: usize,
    pub parity: usize,
    pub deployment_id: String,
}

/// The object layer over all erasure sets. Shared by all cores (`Arc<Node>`).
pub struct Node {
    _private: (),
}

impl Node {
    /// Opens (formatting fresh drives) and checks every drive's stamp.
    pub async fn open(_config: StorageConfig, _io: DriveIo) -> Result<Arc<Node>> {
        todo!()
    }
    pub fn topology(&self) -> Topology {
        todo!()
    }

    pub async fn make_bucket(&self, _bucket: &str) -> Result<()> {
        todo!()
    }
    pub async fn delete_bucket(&self, _bucket: &str) -> Result<()> {
        todo!()
    }
    pub async fn bucket_info(&self, _bucket: &str) -> Result<BucketInfo> {
        todo!()
    }
    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        todo!()
    }

    pub async fn put_object(
        &self,
        _bucket: &str,
        _key: &str,
        _body: ByteStream,
        _options: PutOptions,
    ) -> Result<ObjectInfo> {
        todo!()
    }
    pub async fn head_object(&self, _bucket: &str, _key: &str) -> Result<ObjectInfo> {
        todo!()
    }
    /// `range` is resolved against the size by the callee: `(first, Some(last))`,
    /// `(first, None)` = to the end; suffix ranges are resolved by the caller via `head`.
    pub async fn get_object(
        &self,
        _bucket: &str,
        _key: &str,
        _range: Option<(u64, Option<u64>)>,
    ) -> Result<GetResult> {
        todo!()
    }
    /// Deleting a missing key succeeds.
    pub async fn delete_object(&self, _bucket: &str, _key: &str) -> Result<()> {
        todo!()
    }
    pub async fn copy_object(
        &self,
        _source_bucket: &str,
        _source_key: &str,
        _target_bucket: &str,
        _target_key: &str,
        _options: PutOptions,
    ) -> Result<ObjectInfo> {
        todo!()
    }
    pub async fn list_objects(&self, _bucket: &str, _request: ListRequest) -> Result<ListResult> {
        todo!()
    }

    pub async fn create_multipart(
        &self,
        _bucket: &str,
        _key: &str,
        _options: PutOptions,
    ) -> Result<String> {
        todo!()
    }
    pub async fn upload_part(
        &self,
        _bucket: &str,
        _key: &str,
        _upload_id: &str,
        _part_number: u32,
        _body: ByteStream,
        _checksums: BTreeMap<String, String>,
    ) -> Result<PartInfo> {
        todo!()
    }
    pub async fn complete_multipart(
        &self,
        _bucket: &str,
        _key: &str,
        _upload_id: &str,
        _parts: Vec<CompletePart>,
        _condition: WriteCondition,
    ) -> Result<ObjectInfo> {
        todo!()
    }
    pub async fn abort_multipart(&self, _bucket: &str, _key: &str, _upload_id: &str) -> Result<()> {
        todo!()
    }
    pub async fn list_parts(
        &self,
        _bucket: &str,
        _key: &str,
        _upload_id: &str,
    ) -> Result<Vec<PartInfo>> {
        todo!()
    }
    pub async fn list_multipart_uploads(
        &self,
        _bucket: &str,
        _prefix: &str,
    ) -> Result<Vec<MultipartUpload>> {
        todo!()
    }

    /// Heals every object under `bucket`/`prefix` (all buckets when `bucket` is `None`).
    pub async fn heal(&self, _bucket: Option<&str>, _prefix: &str) -> Result<HealReport> {
        todo!()
    }

    /// The node's own state (shares, tokens): written at maximum parity in a system area
    /// that S3 cannot reach.
    pub async fn put_system(&self, _key: &str, _data: Bytes) -> Result<()> {
        todo!()
    }
    pub async fn get_system(&self, _key: &str) -> Result<Option<Bytes>> {
        todo!()
    }
    pub async fn delete_system(&self, _key: &str) -> Result<()> {
        todo!()
    }
    pub async fn list_system(&self, _prefix: &str) -> Result<Vec<String>> {
        todo!()
    }
}
