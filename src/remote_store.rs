//! The sharing layer's store on a remote S3 store (`--backend`): Ceph RGW, MinIO/AIStor, AWS
//! S3 or another lakeshare node. Table files are read through `object_store`'s S3 client
//! (path-style, the store's endpoint); the catalog is a document in `--backend-bucket`, written
//! with `If-None-Match: *` when new and `If-Match: <ETag>` after (the ETag sent unquoted: RGW
//! 16 compares the raw header with its unquoted ETag and refuses the quoted form).
//!
//! Nothing is counted locally (`write_counter` is `None`): other clients write to the store,
//! so a table's latest snapshot is looked up again (one `HEAD` of the next commit) when it is
//! older than `FRESHNESS_BOUND`: a new commit is served by every node within a second. A store that does not answer,
//! or answers 5xx, is `Unavailable` (503 to clients), never a wrong answer.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use bytes::Bytes;
use lakeshare_protocol::store::{
    Expected, SharingStore, StoreError, StoreErrorKind, Versioned, Written,
};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig,
    UpdateVersion,
};

use crate::config::BackendConfig;
use crate::sharing_store::SeamErrors;

/// A table's latest snapshot is looked up again (one `HEAD` of its next commit) at most this
/// often: a commit written by any client is served by every node within it.
const FRESHNESS_BOUND: Duration = Duration::from_secs(1);

/// A store that does not accept a connection within this is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A store that sends nothing for this long in an answer (headers or body) has stalled. There
/// is no bound on a whole request: a large object streams for as long as it keeps coming.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Retries of a failed request (unreachable, 5xx, throttled), all within `RETRY_TIMEOUT`:
/// a store that is down is a 503 to clients within seconds, not after object_store's default
/// ten retries over three minutes.
const RETRIES_MAX: usize = 2;
const RETRY_TIMEOUT: Duration = Duration::from_secs(5);

/// A remote S3 store as the sharing layer's store.
pub struct RemoteSharingStore {
    config: BackendConfig,
    buckets: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl RemoteSharingStore {
    /// Checks that a client can be built from `config` (the endpoint, the credentials): it is
    /// what every bucket's client is built from, so `bucket` cannot fail afterwards.
    pub fn new(config: BackendConfig) -> Result<Arc<RemoteSharingStore>, StoreError> {
        let store = RemoteSharingStore {
            config,
            buckets: Mutex::new(HashMap::new()),
        };
        store.bucket_store(&store.config.bucket.clone())?;
        Ok(Arc::new(store))
    }

    fn client(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.config.endpoint)
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(bucket)
            .with_region(&self.config.region)
            .with_access_key_id(&self.config.access_key)
            .with_secret_access_key(&self.config.secret_key)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(self.config.endpoint.starts_with("http://"))
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_timeout_disabled()
                    .with_read_timeout(READ_TIMEOUT),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: RETRIES_MAX,
                retry_timeout: RETRY_TIMEOUT,
            })
            .build()
            .map_err(|error| StoreError {
                kind: StoreErrorKind::Internal,
                message: format!("remote store client for bucket '{bucket}': {error}"),
            })?;
        Ok(Arc::new(SeamErrors {
            inner: store,
            map: remote_error,
        }))
    }

    fn bucket_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(store) = buckets.get(bucket) {
            return Ok(store.clone());
        }
        let store = self.client(bucket)?;
        buckets.insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    fn system_path(key: &str) -> Path {
        Path::from(format!("lakeshare.sys/{key}"))
    }
}

#[async_trait::async_trait]
impl SharingStore for RemoteSharingStore {
    fn bucket(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        match self.bucket_store(bucket) {
            Ok(store) => store,
            // The builder fails only on a malformed configuration, which `new` refused.
            Err(error) => panic!("{error}"),
        }
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, StoreError> {
        let store = self.bucket_store(bucket)?;
        let probe = Path::from("lakeshare-bucket-probe");
        match store.list_with_delimiter(Some(&probe)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) if error.to_string().contains("NoSuchBucket") => Ok(false),
            Err(error) => Err(unavailable(&error)),
        }
    }

    fn write_counter(&self, _bucket: &str, _folder: &str) -> Option<Arc<AtomicU64>> {
        None
    }

    fn freshness_bound(&self) -> Duration {
        FRESHNESS_BOUND
    }

    async fn read_system(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let store = self.bucket_store(&self.config.bucket)?;
        match store.get(&Self::system_path(key)).await {
            Ok(result) => {
                let version = unquoted(result.meta.e_tag.as_deref().unwrap_or_default());
                let bytes = result.bytes().await.map_err(|error| unavailable(&error))?;
                Ok(Some(Versioned { bytes, version }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(unavailable(&error)),
        }
    }

    async fn write_system(
        &self,
        key: &str,
        bytes: Bytes,
        expected: Expected,
    ) -> Result<Written, StoreError> {
        let store = self.bucket_store(&self.config.bucket)?;
        let path = Self::system_path(key);
        let mode = match expected {
            Expected::Absent => PutMode::Create,
            Expected::Version(etag) => PutMode::Update(UpdateVersion {
                e_tag: Some(unquoted(&etag)),
                version: None,
            }),
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match store.put_opts(&path, bytes.clone().into(), options).await {
            Ok(result) => match result.e_tag {
                Some(etag) => Ok(Written::Stored(unquoted(&etag))),
                None => self.stored_if_ours(key, &bytes).await,
            },
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(Written::Conflict),
            // RGW 16 answers some losing `If-Match` writers 500: read what is stored.
            Err(_) => self.stored_if_ours(key, &bytes).await,
        }
    }
}

impl RemoteSharingStore {
    /// After a write whose outcome is unknown: stored if the document now holds our bytes.
    async fn stored_if_ours(&self, key: &str, bytes: &Bytes) -> Result<Written, StoreError> {
        match self.read_system(key).await? {
            Some(stored) if stored.bytes == *bytes => Ok(Written::Stored(stored.version)),
            _ => Ok(Written::Conflict),
        }
    }
}

fn unquoted(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}

fn unavailable(error: &object_store::Error) -> StoreError {
    StoreError {
        kind: StoreErrorKind::Unavailable,
        message: format!("the remote store did not answer: {error}"),
    }
}

/// A remote store's failure (unreachable, 5xx, throttled) as `Unavailable`.
fn remote_error(error: object_store::Error) -> object_store::Error {
    match error {
        object_store::Error::Generic { store, source } => object_store::Error::Generic {
            store,
            source: Box::new(StoreError {
                kind: StoreErrorKind::Unavailable,
                message: format!("the remote store did not answer: {source}"),
            }),
        },
        other => other,
    }
}
