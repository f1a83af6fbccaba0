//! The sharing layer's store on a storage node (`NodeSharingStore`): table files through the
//! node's `ObjectStore` view, bucket records, the node's per-folder write counters (every
//! write reaches the drives through this process) and the system area, whose documents are
//! written with the node's own `If-Match`/`If-None-Match` (decided under the key's lock).
//!
//! Storage keeps its own detailed errors; only what the seam exposes crosses it: a lost quorum
//! or a full drive is `Unavailable` (503), a missing key `NotFound`, the rest `Internal`.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use lakeshare_protocol::store::{
    Expected, SharingStore, StoreError, StoreErrorKind, Versioned, Written,
};
use lakeshare_storage::object_store_view::NodeObjectStore;
use lakeshare_storage::{Node, StorageError, WriteCondition};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// A storage node as the sharing layer's store.
pub struct NodeSharingStore {
    node: Arc<Node>,
}

impl NodeSharingStore {
    pub fn new(node: Arc<Node>) -> Arc<NodeSharingStore> {
        Arc::new(NodeSharingStore { node })
    }
}

#[async_trait::async_trait]
impl SharingStore for NodeSharingStore {
    fn bucket(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(SeamErrors {
            inner: NodeObjectStore::new(self.node.clone(), bucket.to_string()),
            map: node_error,
        })
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, StoreError> {
        match self.node.bucket_info(bucket).await {
            Ok(_) => Ok(true),
            Err(StorageError::NoSuchBucket(_)) => Ok(false),
            Err(error) => Err(store_error(error)),
        }
    }

    fn write_counter(&self, bucket: &str, folder: &str) -> Option<Arc<AtomicU64>> {
        Some(self.node.watch_folder(bucket, folder))
    }

    async fn read_system(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let stored = self
            .node
            .get_system_versioned(key)
            .await
            .map_err(store_error)?;
        Ok(stored.map(|(bytes, etag)| Versioned {
            bytes,
            version: etag,
        }))
    }

    async fn write_system(
        &self,
        key: &str,
        bytes: Bytes,
        expected: Expected,
    ) -> Result<Written, StoreError> {
        let condition = match expected {
            Expected::Absent => WriteCondition {
                if_none_match_any: true,
                if_match: None,
            },
            Expected::Version(etag) => WriteCondition {
                if_none_match_any: false,
                if_match: Some(etag),
            },
        };
        match self.node.put_system_if(key, bytes, condition).await {
            Ok(etag) => Ok(Written::Stored(etag)),
            // A document that is gone was changed too: read again.
            Err(StorageError::PreconditionFailed | StorageError::NoSuchKey { .. }) => {
                Ok(Written::Conflict)
            }
            Err(error) => Err(store_error(error)),
        }
    }
}

fn store_error(error: StorageError) -> StoreError {
    let kind = match &error {
        StorageError::ReadQuorum(_) | StorageError::WriteQuorum(_) | StorageError::DriveFull(_) => {
            StoreErrorKind::Unavailable
        }
        StorageError::NoSuchBucket(_) | StorageError::NoSuchKey { .. } => StoreErrorKind::NotFound,
        _ => StoreErrorKind::Internal,
    };
    StoreError {
        kind,
        message: error.to_string(),
    }
}

/// An `ObjectStore` whose errors cross the seam as `map` makes them (`StoreError`s where the
/// kind matters).
#[derive(Debug)]
pub(crate) struct SeamErrors<S> {
    pub(crate) inner: S,
    pub(crate) map: fn(object_store::Error) -> object_store::Error,
}

impl<S: fmt::Display> fmt::Display for SeamErrors<S> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(formatter)
    }
}

/// A node error inside an `object_store` error, as a `StoreError`.
fn node_error(error: object_store::Error) -> object_store::Error {
    match error {
        object_store::Error::Generic { store, source } => match source.downcast::<StorageError>() {
            Ok(storage) => object_store::Error::Generic {
                store,
                source: Box::new(store_error(*storage)),
            },
            Err(source) => object_store::Error::Generic { store, source },
        },
        other => other,
    }
}

#[async_trait::async_trait]
impl<S: ObjectStore> ObjectStore for SeamErrors<S> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner
            .put_opts(location, payload, opts)
            .await
            .map_err(self.map)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner
            .put_multipart_opts(location, opts)
            .await
            .map_err(self.map)
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut result = self
            .inner
            .get_opts(location, options)
            .await
            .map_err(self.map)?;
        if let GetResultPayload::Stream(stream) = result.payload {
            result.payload = GetResultPayload::Stream(stream.map_err(self.map).boxed());
        }
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner
            .get_ranges(location, ranges)
            .await
            .map_err(self.map)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner
            .delete_stream(locations)
            .map_err(self.map)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix).map_err(self.map).boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner
            .list_with_offset(prefix, offset)
            .map_err(self.map)
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner
            .list_with_delimiter(prefix)
            .await
            .map_err(self.map)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner
            .copy_opts(from, to, options)
            .await
            .map_err(self.map)
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner
            .rename_opts(from, to, options)
            .await
            .map_err(self.map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakeshare_engine::io::{IoBackend, IoChoice};
    use lakeshare_protocol::catalog::ShareRequest;
    use lakeshare_protocol::tables::FormatRootCheck;
    use lakeshare_protocol::Catalog;
    use lakeshare_storage::StorageConfig;

    async fn node(root: &std::path::Path) -> Arc<Node> {
        let drives = (1..=4)
            .map(|index| root.join(format!("d{index}")))
            .collect();
        let config = StorageConfig {
            scanner_interval: std::time::Duration::ZERO,
            ..StorageConfig::new(drives)
        };
        Node::open(config, IoBackend::new(IoChoice::Auto).unwrap().io)
            .await
            .unwrap()
    }

    /// Two catalogs over one store, as two sharing nodes over one object store.
    async fn two_catalogs(store: &Arc<NodeSharingStore>) -> (Arc<Catalog>, Arc<Catalog>) {
        let open = || Catalog::open(store.clone(), Arc::new(FormatRootCheck));
        (open().await.unwrap(), open().await.unwrap())
    }

    fn share(name: &str) -> ShareRequest {
        ShareRequest {
            name: name.into(),
            ..ShareRequest::default()
        }
    }

    /// Two catalogs over one store (as two sharing nodes over one object store): a change
    /// made by one while the other holds an older copy is kept, never overwritten.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn r13_catalog_changes_on_two_nodes_are_never_lost() {
        let root = tempfile::tempdir().unwrap();
        let store = NodeSharingStore::new(node(root.path()).await);
        let (first, second) = two_catalogs(&store).await;
        assert_eq!(first.snapshot().secret(), second.snapshot().secret());

        first.create_share(share("from-first")).await.unwrap();
        // `second` still holds the empty catalog: its write must not replace the first's.
        second.create_share(share("from-second")).await.unwrap();
        first.reload().await.unwrap();
        for catalog in [&first, &second] {
            let names: Vec<String> = catalog
                .snapshot()
                .shares()
                .iter()
                .map(|share| share.name.clone())
                .collect();
            assert_eq!(names, ["from-first", "from-second"]);
        }

        // Many changes at once, spread over both: every one applied.
        let mut changes = Vec::new();
        for index in 0..24 {
            let catalog = if index % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            changes.push(tokio::spawn(async move {
                catalog.create_share(share(&format!("s{index}"))).await
            }));
        }
        for change in changes {
            change.await.unwrap().unwrap();
        }
        second.reload().await.unwrap();
        assert_eq!(second.snapshot().shares().len(), 26);
        let token = first.create_token("s3", None, None).await.unwrap();
        second.delete_share("s3").await.unwrap();
        first.reload().await.unwrap();
        assert!(first.snapshot().share("s3").is_none());
        assert!(
            first
                .snapshot()
                .authenticate(&token.secret, time::OffsetDateTime::now_utc())
                .is_err(),
            "the token of a removed share still authenticates"
        );
    }

    /// Issue 13: `table share update --add/--remove` sent the whole table list the CLI had
    /// read from a node's copy, so an add made on another node in between was lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn r13_tables_added_and_removed_on_two_nodes_are_all_kept() {
        use lakeshare_protocol::catalog::{parse_table_spec, SchemaTable, TableName};
        use object_store::ObjectStoreExt as _;

        let root = tempfile::tempdir().unwrap();
        let node = node(root.path()).await;
        node.make_bucket("lake").await.unwrap();
        let store = NodeSharingStore::new(node);
        for table in ["keep", "drop", "x", "y"] {
            store
                .bucket("lake")
                .put(
                    &Path::from(format!("{table}/_delta_log/00000000000000000000.json")),
                    Bytes::from_static(b"{}\n").into(),
                )
                .await
                .unwrap();
        }
        let (first, second) = two_catalogs(&store).await;
        let table = |name: &str| parse_table_spec(&format!("{name}:delta:lake:{name}/")).unwrap();
        let add = |name: &str| ShareRequest {
            add_tables: vec![SchemaTable {
                schema: "s".into(),
                table: table(name),
            }],
            ..ShareRequest::default()
        };
        first
            .create_share(ShareRequest {
                name: "p".into(),
                schemas: Some(vec![lakeshare_protocol::catalog::Schema {
                    name: "s".into(),
                    description: None,
                    tables: vec![table("keep"), table("drop")],
                }]),
                ..ShareRequest::default()
            })
            .await
            .unwrap();
        second.reload().await.unwrap();
        // Each node changes the share from the copy it holds; neither change may be lost.
        first.update_share("p", add("x")).await.unwrap();
        second.update_share("p", add("y")).await.unwrap();
        let remove = ShareRequest {
            remove_tables: vec![TableName {
                schema: "s".into(),
                table: "drop".into(),
            }],
            ..ShareRequest::default()
        };
        second.update_share("p", remove.clone()).await.unwrap();
        first.reload().await.unwrap();
        let names: Vec<String> = first.snapshot().share("p").unwrap().schemas[0]
            .tables
            .iter()
            .map(|table| table.name.clone())
            .collect();
        assert_eq!(names, ["keep", "x", "y"]);
        // Adding a table the share holds, or removing one it lacks, is refused whole.
        let again = first.update_share("p", add("x")).await.unwrap_err();
        assert_eq!(
            again.kind.status(),
            http::StatusCode::CONFLICT,
            "{}",
            again.message
        );
        let gone = first.update_share("p", remove).await.unwrap_err();
        assert_eq!(
            gone.kind.status(),
            http::StatusCode::NOT_FOUND,
            "{}",
            gone.message
        );
    }
}
