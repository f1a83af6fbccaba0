//! The one seam between the sharing layer and the place its tables and catalog live: a local
//! storage node today (the binary's `NodeSharingStore`), a remote object store tomorrow.
//!
//! The sharing layer sees only this: table files of a bucket as an `object_store::ObjectStore`,
//! whether a bucket exists, a write counter for a folder when the store is written through
//! this process (so an unchanged table costs no lookup), and the system area, where documents
//! are read with a version and written only if that version is still current
//! (compare-and-swap), so two nodes changing the catalog at the same moment never lose a change.
//!
//! Errors cross the seam as `StoreError` (the kind the protocol answers with, and a message);
//! an `ObjectStore` of a bucket reports them as `object_store::Error::Generic` with a
//! `StoreError` source when the kind matters (a store that is unavailable is a 503, not a 500).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;

use crate::error::{ErrorKind, Result, SharingError};

/// What a store reports; the protocol maps it into its own answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The bucket or object does not exist.
    NotFound,
    /// The store cannot answer now (quorum lost, unreachable, 503); a retry may succeed.
    Unavailable,
    /// Anything else.
    Internal,
}

impl From<StoreError> for SharingError {
    fn from(error: StoreError) -> Self {
        let kind = match error.kind {
            StoreErrorKind::NotFound => ErrorKind::NotFound,
            StoreErrorKind::Unavailable => ErrorKind::Unavailable,
            StoreErrorKind::Internal => ErrorKind::Internal,
        };
        SharingError::new(kind, error.message)
    }
}

/// A system document as read: its bytes and the version a conditional write must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub bytes: Bytes,
    pub version: String,
}

/// What a conditional write of a system document requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// The document must not exist yet.
    Absent,
    /// The document must still be at this version.
    Version(String),
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Stored; the document's new version.
    Stored(String),
    /// The document was not as expected (another writer came first); nothing was written.
    Conflict,
}

/// Where the sharing layer's tables and catalog live.
#[async_trait::async_trait]
pub trait SharingStore: Send + Sync + 'static {
    /// The table files of `bucket`.
    fn bucket(&self, bucket: &str) -> Arc<dyn ObjectStore>;

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, StoreError>;

    /// A counter this process bumps on every write under `folder/` of `bucket`, when every
    /// write reaches the store through this process; `None` when others may write to it
    /// (changes must then be looked up).
    fn write_counter(&self, bucket: &str, folder: &str) -> Option<Arc<AtomicU64>>;

    /// For folders without a write counter: how long what was read stays current before it
    /// is looked up again (a new commit is served within this). Zero: look up every time.
    fn freshness_bound(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// The system document `key`, if it exists.
    async fn read_system(&self, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// Writes the system document `key` if it is as `expected`.
    async fn write_system(
        &self,
        key: &str,
        bytes: Bytes,
        expected: Expected,
    ) -> Result<Written, StoreError>;
}

/// The first `StoreError` in `error`'s source chain: a table library (delta_kernel, parquet)
/// reports the store's failure wrapped in its own errors.
pub fn store_error_within<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a StoreError> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(store) = error.downcast_ref::<StoreError>() {
            return Some(store);
        }
        // delta_kernel keeps an object_store error without naming it as the source.
        current = match error.downcast_ref::<delta_kernel::KernelError>() {
            Some(delta_kernel::KernelError::ObjectStore(inner)) => Some(inner),
            Some(delta_kernel::KernelError::Backtraced { source, .. }) => Some(source.as_ref()),
            _ => error.source(),
        };
    }
    None
}

/// A table library's error as the protocol answers it: an unavailable store found in its
/// source chain stays a 503 (a retry may succeed), anything else is `otherwise(message)`.
pub fn library_error(
    error: &(dyn std::error::Error + 'static),
    otherwise: impl FnOnce(String) -> SharingError,
) -> SharingError {
    match store_error_within(error) {
        Some(store) if store.kind == StoreErrorKind::Unavailable => SharingError::new(
            ErrorKind::Unavailable,
            format!("the table store cannot be read now: {store}"),
        ),
        _ => otherwise(error.to_string()),
    }
}

/// An `object_store` error as the protocol answers it: a missing object is 404, a
/// `StoreError` keeps its kind, anything else is internal.
pub fn object_error(error: object_store::Error) -> SharingError {
    match error {
        object_store::Error::NotFound { path, .. } => {
            SharingError::not_found(format!("{path} not found"))
        }
        object_store::Error::Generic { source, .. } => match source.downcast::<StoreError>() {
            Ok(store) => SharingError::from(*store),
            Err(source) => SharingError::internal(source.to_string()),
        },
        other => SharingError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable_store() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(StoreError {
                kind: StoreErrorKind::Unavailable,
                message: "the remote store did not answer: connection refused".into(),
            }),
        }
    }

    #[test]
    fn an_unavailable_store_inside_a_kernel_error_stays_a_503() {
        let kernel = delta_kernel::KernelError::from(unreachable_store());
        let answered = library_error(&kernel, SharingError::internal);
        assert_eq!(
            answered.kind,
            ErrorKind::Unavailable,
            "{}",
            answered.message
        );
        assert!(
            answered.message.contains("connection refused"),
            "{}",
            answered.message
        );
    }

    #[test]
    fn other_library_errors_keep_the_callers_kind() {
        let kernel = delta_kernel::KernelError::generic("checkpoint is not parquet");
        let answered = library_error(&kernel, SharingError::internal);
        assert_eq!(answered.kind, ErrorKind::Internal);
        assert!(answered.message.contains("checkpoint is not parquet"));
    }
}
