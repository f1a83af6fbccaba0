//! The active files of a table version and the values kept per file: the compact columnar
//! list (`list`), the cache of lists and the walk that builds one while it streams (`cache`),
//! and file ids (`ids`). Lists are format-neutral: Delta replays and Iceberg manifests both
//! become the same scan rows.

pub mod cache;
pub mod ids;
pub mod list;

pub use cache::{FileLists, ListOrder, FILE_LISTS_BYTES_DEFAULT};
pub use ids::FileIdHash;
pub use list::{relative_path, ActiveFiles, DeletionVectorRef, FileRow, KeptPerFile, UrlSigner};
