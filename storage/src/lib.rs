//! The storage node: drives grouped into erasure sets, objects split into Reed-Solomon
//! shards with bitrot hashes, quorum reads and writes, healing, multipart uploads and
//! listing (`Node`), and the S3 API on top of it (`s3`).
//!
//! Invariants: a read never returns bytes whose hash was not verified; a crash never leaves
//! a visible partial object; a conditional write is decided under the same per-key lock
//! that commits it.

mod bitrot;
pub mod drives;
mod erasure;
pub mod error;
mod format;
mod fsio;
mod heal;
mod health;
mod list;
mod locks;
mod meta;
mod multipart;
pub mod node;
pub mod object_store_view;
pub mod s3;
mod set;
#[cfg(test)]
mod tests;
mod watch;

pub use drives::expand_drive_args;
pub use error::StorageError;
pub use node::*;
