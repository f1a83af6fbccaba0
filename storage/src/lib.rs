//! The storage node: drives grouped into erasure sets, objects split into Reed-Solomon
//! shards with bitrot hashes, quorum reads and writes, healing, multipart uploads and
//! listing (`Node`), and the S3 API on top of it (`s3`).
//!
//! Invariants: a read never returns bytes whose hash was not verified; a crash never leaves
//! a visible partial object; a conditional write is decided under the same per-key lock
//! that commits it.

pub mod error;
pub mod node;
pub mod s3;

pub use error::StorageError;
pub use node::*;
