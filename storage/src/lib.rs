//! The storage node: drives grouped into erasure sets, objects split into Reed-Solomon
//! shards with bitrot hashes, quorum reads and writes, healing, multipart uploads and
//! listing (`Node`), and the S3 API on top of it (`s3`).
//!
//! Layers, each using only those below it: `drive` (one drive's I/O through the engine's
//! `DriveIo`, checked paths, health) → `meta`, `bitrot`, `erasure` (what is stored) → `set`
//! (one erasure set's objects) → `sets`, `buckets`, `list`, `heal` → `node` → `s3`,
//! `object_store_view`. `object` is the data model they share.
//!
//! Invariants: a read never returns bytes whose hash was not verified; a crash never leaves
//! a visible partial object; a conditional write is decided under the same per-key lock
//! that commits it; no path built from a request leaves its drive.

mod bitrot;
mod buckets;
mod drive;
pub mod drives;
pub mod env;
mod erasure;
pub mod error;
mod format;
mod heal;
mod health;
mod list;
mod locks;
mod meta;
pub mod node;
mod object;
pub mod object_store_view;
pub mod s3;
mod set;
mod sets;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
mod watch;

pub use drives::expand_drive_args;
pub use error::StorageError;
pub use node::*;
