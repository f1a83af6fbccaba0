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
