//! The object model storage speaks: what a write is given (`PutOptions`, `WriteCondition`),
//! what a read answers (`ObjectInfo`, `GetResult`, `ByteRange`, `ByteStream`), listings,
//! multipart uploads and heal reports. It sits below the erasure sets and the node, which
//! both use it; it holds no logic beyond plain data.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use time::OffsetDateTime;

/// A stream of body bytes, in and out.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync + 'static>>;

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

impl ListRequest {
    /// One page of a listing without a delimiter: up to `max_keys` keys under `prefix`
    /// strictly after `after`.
    pub fn flat(prefix: &str, after: Option<String>, max_keys: usize) -> ListRequest {
        ListRequest {
            prefix: prefix.to_owned(),
            delimiter: None,
            after,
            max_keys,
        }
    }
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

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealReport {
    pub objects_scanned: u64,
    pub objects_healed: u64,
    pub shards_rebuilt: u64,
    /// Objects with a shard or metadata copy that could not be rebuilt (a drive that failed
    /// the write, or too few good shards left).
    pub objects_failed: u64,
    /// Bucket folders and records made again on drives that lacked them.
    pub buckets_healed: u64,
    /// Bucket folders or records that could not be made on an online drive.
    pub buckets_failed: u64,
    /// Blank replacement drives stamped back into their slots by this heal.
    pub drives_adopted: u64,
}
