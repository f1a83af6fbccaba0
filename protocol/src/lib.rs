//! Delta Sharing on top of the storage node: the sharing catalog (shares, schemas, tables,
//! tokens) kept in the node's system area, the admin API that edits it, and the sharing
//! routes recipients call with bearer tokens.
//!
//! Layers, each importing only those below it:
//! - `admin`: the admin API that edits the catalog (it names the sharing endpoint of
//!   `routes` in the profiles it makes);
//! - `routes`: the sharing API (`SharingService`: authentication, list routes, the table
//!   routes `version`, `metadata`, `query`, `changes`, asynchronous `queries/{id}`);
//! - `ndjson`: the lines of both response formats and how an answer streams;
//! - `files`: the active-file lists of table versions, their cache and the values kept per
//!   file (ids, URL signatures);
//! - `tables`: the table formats (Delta, Iceberg) behind one snapshot type;
//! - `store`: the seam to the place tables and the catalog live;
//! - the foundation: `catalog` (handed the formats' share-time path check as a
//!   `TableRootCheck`), `presign`, `predicate`, `capabilities`, `page_token`, `names`,
//!   `error`, `body`.
//!
//! Protocol code sees storage only through `store::SharingStore` (table files as
//! `object_store`, write counters, the system area with compare-and-swap): it does not depend
//! on the storage crate. The binary calls `open` and nothing else to assemble it.

pub mod admin;
pub mod body;
pub mod capabilities;
pub mod catalog;
pub mod error;
pub mod files;
pub mod names;
pub mod ndjson;
pub mod page_token;
pub mod predicate;
pub mod presign;
pub mod routes;
pub mod store;
pub mod tables;

use std::sync::Arc;

pub use admin::AdminApi;
pub use catalog::Catalog;
pub use error::{ErrorKind, SharingError};
pub use routes::{SharingConfig, SharingService};

use files::FileLists;
use presign::{Presigner, SharingCredential};
use routes::query::TableRoutes;
use store::SharingStore;
use tables::{FormatRootCheck, Tables};

/// How the sharing layer of a node is set up.
pub struct SharingOptions {
    /// The endpoint recipients reach the node at (profiles and presigned URLs name it).
    pub public_endpoint: String,
    /// Lifetime of presigned file URLs.
    pub presign_expiry_seconds: u64,
    /// Budget of the active-file list cache (`--cache-size`).
    pub file_lists_bytes_max: u64,
    /// Threads of the replay pool (log replays block).
    pub replay_threads: usize,
    /// Sign file URLs for this endpoint with this credential (a remote store's own), instead
    /// of for the node with the read-only credential derived from the catalog secret.
    pub presign_for: Option<(String, SharingCredential)>,
}

/// The sharing layer of a node, assembled.
pub struct Sharing {
    pub catalog: Arc<Catalog>,
    /// The sharing routes (bearer tokens).
    pub service: Arc<SharingService>,
    /// The admin API the S3 route table serves (SigV4, root only).
    pub admin: Arc<AdminApi>,
    /// The credential presigned file URLs are signed with (the node's read-only one, unless
    /// `presign_for` named another).
    pub url_credential: SharingCredential,
}

/// Opens the catalog in the store's system area and assembles the sharing layer on it.
pub async fn open(store: Arc<dyn SharingStore>, options: SharingOptions) -> error::Result<Sharing> {
    let catalog = Catalog::open(store.clone(), Arc::new(FormatRootCheck)).await?;
    let secret = catalog.snapshot().secret().to_vec();
    let (url_base, url_credential) = match options.presign_for {
        Some((endpoint, credential)) => (endpoint, credential),
        None => (
            options.public_endpoint.clone(),
            SharingCredential::derive(&secret),
        ),
    };
    let presigner = Arc::new(Presigner::new(
        url_credential.clone(),
        &url_base,
        options.presign_expiry_seconds,
    ));
    let tables = Tables::new(store, options.replay_threads)?;
    let lists = FileLists::new(tables.clone(), options.file_lists_bytes_max);
    let service = Arc::new(SharingService::new(
        catalog.clone(),
        TableRoutes::new(tables, lists, presigner, secret),
    ));
    let admin = Arc::new(AdminApi::new(
        catalog.clone(),
        SharingConfig {
            public_endpoint: options.public_endpoint,
        },
    ));
    Ok(Sharing {
        catalog,
        service,
        admin,
        url_credential,
    })
}
