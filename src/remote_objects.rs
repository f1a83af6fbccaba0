//! The objects of a remote store, served on a sharing node's own port: the file URLs of a
//! sharing node over a remote store name the node, which checks their signature (s3s, the
//! read-only credential, the shared-object filter) and streams each file from the store, so
//! recipients need no route to the store.
//!
//! Invariants: a body streams at the reader's pace with the store's `Content-Length`, so a
//! store that fails mid-object cuts the answer short of its length, never ends it early as if
//! whole; preconditions and ranges are decided by the storage crate's rules (`conditions`),
//! the same as on a storage node; a store that cannot answer is a 503, not a 404 or 500.

use std::sync::Arc;
use std::time::SystemTime;

use futures::TryStreamExt as _;
use lakeshare_protocol::store::SharingStore;
use lakeshare_storage::s3::conditions::{
    content_range, invalid_range, resolve_range, ReadConditions,
};
use lakeshare_storage::s3::error::wire_error;
use object_store::path::Path;
use object_store::{Attribute, GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt};
use s3s::dto::{
    ETag, GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput, Range, StreamingBlob,
    Timestamp,
};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use time::OffsetDateTime;

use crate::front::PresignedHead;
use crate::remote_store::RemoteSharingStore;

/// GET and HEAD of the remote store's objects; every other S3 operation is `NotImplemented`.
pub struct RemoteObjects {
    store: Arc<RemoteSharingStore>,
}

impl RemoteObjects {
    pub fn new(store: Arc<RemoteSharingStore>) -> RemoteObjects {
        RemoteObjects { store }
    }

    fn object(&self, bucket: &str, key: &str) -> S3Result<(Arc<dyn ObjectStore>, Path)> {
        let path = Path::parse(key).map_err(|error| {
            wire_error(
                S3ErrorCode::InvalidArgument,
                400,
                format!("the key {key:?} cannot be read from the remote store: {error}"),
            )
        })?;
        Ok((self.store.bucket(bucket), path))
    }
}

/// An object read from the store, its preconditions checked.
struct Fetched {
    result: GetResult,
    etag: String,
    modified: OffsetDateTime,
}

impl RemoteObjects {
    /// Reads `key` of `bucket` (its headers only with `head`, the bytes of `range` if given)
    /// and checks `conditions` before any byte of the body is taken.
    async fn fetch(
        &self,
        bucket: &str,
        key: &str,
        conditions: &ReadConditions,
        range: Option<&Range>,
        head: bool,
    ) -> S3Result<Fetched> {
        let (store, path) = self.object(bucket, key)?;
        let options = GetOptions {
            range: range.map(get_range),
            head,
            ..GetOptions::default()
        };
        let result = match store.get_opts(&path, options).await {
            Ok(result) => result,
            Err(error) => {
                return Err(match range {
                    Some(range) => ranged_read_error(store.as_ref(), &path, range, error).await,
                    None => read_error(error),
                })
            }
        };
        let modified = OffsetDateTime::from(SystemTime::from(result.meta.last_modified));
        let etag = unquoted_etag(&result);
        conditions.check(&etag, modified)?;
        Ok(Fetched {
            result,
            etag,
            modified,
        })
    }
}

#[async_trait::async_trait]
impl s3s::S3 for RemoteObjects {
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let head_only = req.extensions.get::<PresignedHead>().is_some();
        let input = req.input;
        let range = input.range.filter(|_| !head_only);
        let Fetched {
            result,
            etag,
            modified,
        } = self
            .fetch(
                &input.bucket,
                &input.key,
                &ReadConditions::of_get(&input),
                range.as_ref(),
                head_only,
            )
            .await?;
        let size = result.meta.size;
        let served = result.range.clone();
        let content_type = content_type(&result);
        let content_range = range.map(|_| {
            content_range(
                lakeshare_storage::ByteRange {
                    first: served.start,
                    last: served.end.saturating_sub(1),
                },
                size,
            )
        });
        let content_length = if head_only {
            size
        } else {
            served.end - served.start
        };
        // s3s wants a `Sync` body; the stream is only ever polled by one task.
        let body = sync_wrapper::SyncStream::new(result.into_stream().map_err(remote_body_error));
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            accept_ranges: Some("bytes".to_owned()),
            content_length: Some(content_length as i64),
            content_range,
            content_type,
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(Timestamp::from(modified)),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let conditions = ReadConditions::of_head(&input);
        let Fetched {
            result,
            etag,
            modified,
        } = self
            .fetch(&input.bucket, &input.key, &conditions, None, true)
            .await?;
        Ok(S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".to_owned()),
            content_length: Some(result.meta.size as i64),
            content_type: content_type(&result),
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(Timestamp::from(modified)),
            ..Default::default()
        }))
    }
}

fn get_range(range: &Range) -> GetRange {
    match *range {
        Range::Int {
            first,
            last: Some(last),
        } => GetRange::Bounded(first..last.saturating_add(1)),
        Range::Int { first, last: None } => GetRange::Offset(first),
        Range::Suffix { length } => GetRange::Suffix(length),
    }
}

fn unquoted_etag(result: &GetResult) -> String {
    result
        .meta
        .e_tag
        .as_deref()
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned()
}

fn content_type(result: &GetResult) -> Option<String> {
    result
        .attributes
        .get(&Attribute::ContentType)
        .map(|value| value.to_string())
}

/// A ranged read that failed: `InvalidRange` when the object is there and the range lies
/// outside it (the store's 416 reaches `object_store` as a generic error), else as any read.
async fn ranged_read_error(
    store: &dyn ObjectStore,
    path: &Path,
    range: &Range,
    error: object_store::Error,
) -> S3Error {
    if let object_store::Error::NotFound { .. } = error {
        return read_error(error);
    }
    match store.head(path).await {
        Ok(meta) if resolve_range(range, meta.size).is_none() => invalid_range(),
        _ => read_error(error),
    }
}

fn read_error(error: object_store::Error) -> S3Error {
    match error {
        object_store::Error::NotFound { .. } => wire_error(
            S3ErrorCode::NoSuchKey,
            404,
            "The specified key does not exist.",
        ),
        object_store::Error::Generic { source, .. } => wire_error(
            S3ErrorCode::ServiceUnavailable,
            503,
            format!("the object cannot be read from the store now: {source}"),
        ),
        other => {
            tracing::error!(error = %other, "reading an object from the remote store failed");
            wire_error(
                S3ErrorCode::InternalError,
                500,
                format!("reading the object from the store failed: {other}"),
            )
        }
    }
}

/// The store failed in the middle of a body: the answer is cut short of its length.
fn remote_body_error(error: object_store::Error) -> std::io::Error {
    tracing::warn!(%error, "the remote store failed in the middle of an object");
    std::io::Error::other(error)
}
