//! The one mapping from storage error kinds to S3 wire errors (code, status, message).
//!
//! Invariant: every `StorageError` kind maps to exactly one S3 code here, and internal
//! details (`Internal`) are logged, never sent to the client.

use http::StatusCode;
use s3s::{S3Error, S3ErrorCode};

use crate::error::StorageError;

/// S3 code for a read that could not reach enough drives (MinIO's name).
pub const INSUFFICIENT_READ_QUORUM: &str = "InsufficientReadQuorum";
/// S3 code for a write that could not reach enough drives (MinIO's name).
pub const INSUFFICIENT_WRITE_QUORUM: &str = "InsufficientWriteQuorum";
/// S3 code for a write refused because a drive has no space left.
pub const STORAGE_FULL: &str = "XLakeshareStorageFull";

/// Turns a storage error into the S3 error the client sees.
pub fn to_s3_error(error: StorageError) -> S3Error {
    let message = error.to_string();
    let (code, status, message) = match error {
        StorageError::NoSuchBucket(_) => (S3ErrorCode::NoSuchBucket, 404, message),
        StorageError::BucketExists(_) => (S3ErrorCode::BucketAlreadyOwnedByYou, 409, message),
        StorageError::BucketNotEmpty(_) => (S3ErrorCode::BucketNotEmpty, 409, message),
        StorageError::InvalidBucketName(_) => (S3ErrorCode::InvalidBucketName, 400, message),
        StorageError::NoSuchKey { .. } => (S3ErrorCode::NoSuchKey, 404, message),
        StorageError::InvalidObjectName(ref detail) => {
            let code = if detail.contains("long") {
                S3ErrorCode::KeyTooLongError
            } else {
                S3ErrorCode::InvalidArgument
            };
            (code, 400, message)
        }
        StorageError::NoSuchUpload(_) => (S3ErrorCode::NoSuchUpload, 404, message),
        StorageError::InvalidPart(_) => (S3ErrorCode::InvalidPart, 400, message),
        StorageError::InvalidPartOrder => (S3ErrorCode::InvalidPartOrder, 400, message),
        StorageError::EntityTooSmall { .. } => (S3ErrorCode::EntityTooSmall, 400, message),
        StorageError::PreconditionFailed => (
            S3ErrorCode::PreconditionFailed,
            412,
            "At least one of the pre-conditions you specified did not hold".to_owned(),
        ),
        StorageError::InvalidArgument(_) => (S3ErrorCode::InvalidArgument, 400, message),
        StorageError::BadDigest(_) => (S3ErrorCode::BadDigest, 400, message),
        StorageError::ReadQuorum(_) => (custom(INSUFFICIENT_READ_QUORUM), 503, message),
        StorageError::WriteQuorum(_) => (custom(INSUFFICIENT_WRITE_QUORUM), 503, message),
        StorageError::DriveFull(_) => (custom(STORAGE_FULL), 507, message),
        StorageError::Body(_) => (S3ErrorCode::IncompleteBody, 400, message),
        StorageError::Internal(_) => {
            tracing::error!(%message, "internal storage error");
            (
                S3ErrorCode::InternalError,
                500,
                "We encountered an internal error, please try again.".to_owned(),
            )
        }
    };
    wire_error(code, status, message)
}

/// Builds an S3 error with an explicit status (custom codes have none by default).
pub fn wire_error(code: S3ErrorCode, status: u16, message: impl Into<String>) -> S3Error {
    let mut error = S3Error::with_message(code, message.into());
    if let Ok(status) = StatusCode::from_u16(status) {
        error.set_status_code(status);
    }
    error
}

fn custom(code: &str) -> S3ErrorCode {
    S3ErrorCode::Custom(code.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(error: StorageError) -> (String, u16) {
        let error = to_s3_error(error);
        let status = error.status_code().map(|s| s.as_u16()).unwrap_or(0);
        (error.code().as_str().to_owned(), status)
    }

    #[test]
    fn each_kind_maps_to_its_code_and_status() {
        let cases: Vec<(StorageError, &str, u16)> = vec![
            (StorageError::NoSuchBucket("b".into()), "NoSuchBucket", 404),
            (
                StorageError::BucketExists("b".into()),
                "BucketAlreadyOwnedByYou",
                409,
            ),
            (
                StorageError::BucketNotEmpty("b".into()),
                "BucketNotEmpty",
                409,
            ),
            (
                StorageError::InvalidBucketName("B".into()),
                "InvalidBucketName",
                400,
            ),
            (
                StorageError::NoSuchKey {
                    bucket: "b".into(),
                    key: "k".into(),
                },
                "NoSuchKey",
                404,
            ),
            (
                StorageError::InvalidObjectName("key too long".into()),
                "KeyTooLongError",
                400,
            ),
            (
                StorageError::InvalidObjectName("contains ..".into()),
                "InvalidArgument",
                400,
            ),
            (StorageError::NoSuchUpload("u".into()), "NoSuchUpload", 404),
            (StorageError::InvalidPart("1".into()), "InvalidPart", 400),
            (StorageError::InvalidPartOrder, "InvalidPartOrder", 400),
            (
                StorageError::EntityTooSmall {
                    part_number: 1,
                    size: 3,
                },
                "EntityTooSmall",
                400,
            ),
            (StorageError::PreconditionFailed, "PreconditionFailed", 412),
            (
                StorageError::InvalidArgument("x".into()),
                "InvalidArgument",
                400,
            ),
            (StorageError::BadDigest("x".into()), "BadDigest", 400),
            (
                StorageError::ReadQuorum("b/k".into()),
                INSUFFICIENT_READ_QUORUM,
                503,
            ),
            (
                StorageError::WriteQuorum("b/k".into()),
                INSUFFICIENT_WRITE_QUORUM,
                503,
            ),
            (StorageError::DriveFull("d1".into()), STORAGE_FULL, 507),
            (
                StorageError::Internal("secret detail".into()),
                "InternalError",
                500,
            ),
        ];
        for (error, code, status) in cases {
            assert_eq!(mapped(error), (code.to_owned(), status));
        }
    }

    #[test]
    fn internal_detail_is_not_sent() {
        let error = to_s3_error(StorageError::Internal("secret detail".into()));
        assert!(!error.message().unwrap_or_default().contains("secret"));
    }

    #[test]
    fn quorum_message_names_the_object() {
        let error = to_s3_error(StorageError::ReadQuorum("b/k".into()));
        assert!(error.message().unwrap_or_default().contains("b/k"));
    }
}
