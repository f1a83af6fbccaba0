//! Delta Sharing on top of the storage node: the sharing catalog (shares, schemas, tables,
//! tokens) kept in the node's system area, the admin API that edits it, and the sharing
//! routes recipients call with bearer tokens.
//!
//! Protocol code reads tables only through the storage layer's object API, never a drive.

pub mod admin;
pub mod body;
pub mod capabilities;
pub mod catalog;
pub mod delta;
pub mod error;
pub mod iceberg;
pub mod names;
pub mod page_token;
pub mod predicate;
pub mod presign;
pub mod sharing;

pub use admin::AdminApi;
pub use catalog::Catalog;
pub use error::{ErrorKind, SharingError};
pub use sharing::{SharingConfig, SharingService};
