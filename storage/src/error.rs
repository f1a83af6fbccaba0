//! Storage errors: detailed inside, a few kinds at the edge. The S3 layer maps each kind to
//! one S3 error code in one place (`s3::error`).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    #[error("bucket {0} already exists")]
    BucketExists(String),
    #[error("bucket {0} is not empty")]
    BucketNotEmpty(String),
    #[error("invalid bucket name {0:?}")]
    InvalidBucketName(String),
    #[error("object {bucket}/{key} does not exist")]
    NoSuchKey { bucket: String, key: String },
    #[error("invalid object name: {0}")]
    InvalidObjectName(String),
    #[error("upload {0} does not exist")]
    NoSuchUpload(String),
    #[error("invalid part: {0}")]
    InvalidPart(String),
    #[error("part list not in ascending order")]
    InvalidPartOrder,
    #[error("part {part_number} is {size} bytes, below the 5 MiB minimum")]
    EntityTooSmall { part_number: u32, size: u64 },
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("bad digest: {0}")]
    BadDigest(String),
    #[error("not enough drives to read {0} (read quorum lost)")]
    ReadQuorum(String),
    #[error("not enough drives to write {0} (write quorum lost)")]
    WriteQuorum(String),
    #[error("drive full: {0}")]
    DriveFull(String),
    #[error("request body: {0}")]
    Body(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
