//! `Node`: the object layer over all erasure sets of this node. This is the API the S3 layer
//! and (later) the sharing protocol use; everything below it is private to `storage`.
//!
//! Invariant: a drive that lost its format stamp while the node runs is offline until
//! `adopt_replacements` stamps it back into its slot (only when its folder exists and holds
//! no file), and every heal of everything starts with that pass.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use futures::{Stream, StreamExt};
use lakeshare_engine::io::DriveIo;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::erasure;
use crate::error::{Result, StorageError};
use crate::format::{self, Adoption, FormatFile};
use crate::fsio::Fs;
use crate::heal;
use crate::health::DriveHealth;
use crate::locks::KeyLocks;
use crate::meta::{DATA_DIR, META_FILE};
use crate::set::ErasureSet;
use crate::watch::FolderWatches;

/// A stream of body bytes, in and out.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync + 'static>>;

/// How the node is laid out.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Drive folders, already brace-expanded, in command-line order.
    pub drives: Vec<PathBuf>,
    /// Parity per set; `None` means MinIO's default for the set size.
    pub parity: Option<usize>,
    /// Shard bytes at or below which an object's data is kept inline in its metadata.
    pub inline_bytes_max: usize,
    /// Drives per erasure set; `None` means the largest even split into sets of 2..16.
    pub set_drive_count: Option<usize>,
    /// Pause of the background scanner between two objects; zero turns the scanner and the
    /// background watch for blank replacement drives off (an admin heal still adopts them).
    pub scanner_interval: Duration,
}

impl StorageConfig {
    /// The defaults for these drives: MinIO's parity and set split, 128 KiB inline limit,
    /// one object healed per second by the scanner.
    pub fn new(drives: Vec<PathBuf>) -> StorageConfig {
        StorageConfig {
            drives,
            parity: None,
            inline_bytes_max: INLINE_BYTES_MAX_DEFAULT,
            set_drive_count: None,
            scanner_interval: Duration::from_secs(1),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig::new(vec![PathBuf::from("./data")])
    }
}

/// Default `StorageConfig::inline_bytes_max`.
pub const INLINE_BYTES_MAX_DEFAULT: usize = 128 * 1024;

#[derive(Clone, Debug)]
pub struct BucketInfo {
    pub name: String,
    pub created: OffsetDateTime,
}

/// What a write must find at commit time; checked under the per-key lock.
#[derive(Clone, Debug, Default)]
pub struct WriteCondition {
    /// `If-None-Match: *`: the key must not exist.
    pub if_none_match_any: bool,
    /// `If-Match: "etag"` (or `*`): the key must exist with this ETag.
    pub if_match: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    /// `x-amz-meta-*` without the prefix.
    pub user_metadata: BTreeMap<String, String>,
    /// S3 checksums already verified by the S3 layer, e.g. `("CRC32", base64)`.
    pub checksums: BTreeMap<String, String>,
    pub condition: WriteCondition,
}

#[derive(Clone, Debug)]
pub struct ObjectInfo {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    pub modified: OffsetDateTime,
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    pub checksums: BTreeMap<String, String>,
    /// Number of multipart parts (0 for a single PUT).
    pub parts: u32,
}

/// An inclusive byte range, already resolved against the object size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

pub struct GetResult {
    pub info: ObjectInfo,
    /// The range served, if one was asked.
    pub range: Option<ByteRange>,
    pub body: ByteStream,
}

#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Exclusive: keys strictly after this (start-after, marker or continuation).
    pub after: Option<String>,
    pub max_keys: usize,
}

#[derive(Clone, Debug, Default)]
pub struct ListResult {
    pub objects: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    /// The last key or common prefix returned, for the next page's `after`.
    pub next_after: Option<String>,
}

#[derive(Clone, Debug)]
pub struct MultipartUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub struct PartInfo {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
    pub modified: OffsetDateTime,
    pub checksums: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct CompletePart {
    pub part_number: u32,
    /// Without quotes.
    pub etag: String,
}

#[derive(Clone, Debug, Default)]
pub struct HealReport {
    pub objects_scanned: u64,
    pub objects_healed: u64,
    pub shards_rebuilt: u64,
    pub objects_failed: u64,
}

/// Where drives, sets and the I/O back-end stand, for the start-up log and health checks.
#[derive(Clone, Debug)]
pub struct Topology {
    pub set_count: usize,
    pub drives_per_set: usize,
    pub parity: usize,
    pub deployment_id: String,
}

/// The object layer over all erasure sets. Shared by all cores (`Arc<Node>`).
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

/// The internal bucket of the system area; not a valid S3 bucket name (it starts with `.`).
pub(crate) const SYSTEM_BUCKET: &str = ".lakeshare.sys/config";
/// Objects met damaged wait here for the background healer; beyond it they are dropped (the
/// scanner finds them later).
const MRF_QUEUE_MAX: usize = 10_000;
/// Multipart uploads older than this are removed at open.
const UPLOAD_AGE_MAX: Duration = Duration::from_secs(24 * 3600);
/// Keys per page when heal and the scanner walk a bucket.
const HEAL_PAGE_KEYS: usize = 1000;

pub(crate) struct Inner {
    pub(crate) fs: Fs,
    pub(crate) drives: Vec<PathBuf>,
    pub(crate) sets: Vec<Arc<ErasureSet>>,
    /// Per drive, in command-line order (shared with the drive's set).
    health: Vec<Arc<DriveHealth>>,
    /// The deployment's layout, to stamp a blank replacement drive with.
    reference: FormatFile,
    deployment_id: String,
    hash_key: [u8; 16],
    set_size: usize,
    parity: usize,
    buckets: std::sync::RwLock<BTreeMap<String, OffsetDateTime>>,
    bucket_lock: tokio::sync::Mutex<()>,
    watches: FolderWatches,
}

#[derive(Serialize, Deserialize)]
struct BucketRecord {
    created_unix_ms: i64,
}

impl Node {
    /// Opens (formatting fresh drives) and checks every drive's stamp.
    pub async fn open(config: StorageConfig, io: DriveIo) -> Result<Arc<Node>> {
        Node::open_with(config, Fs::Drive(io)).await
    }

    pub(crate) async fn open_with(config: StorageConfig, fs: Fs) -> Result<Arc<Node>> {
        let set_size = format::set_drive_count(config.drives.len(), config.set_drive_count)?;
        let parity = config.parity.unwrap_or(format::default_parity(set_size));
        format::validate_parity(set_size, parity)?;
        erasure::self_test()?;
        let layout = format::open_layout(&fs, &config.drives, set_size).await?;
        let hash_key = *uuid::Uuid::parse_str(&layout.deployment_id)
            .map_err(|error| StorageError::Internal(format!("deployment id: {error}")))?
            .as_bytes();
        for drive in &config.drives {
            prepare_system_dirs(&fs, drive).await.map_err(|error| {
                StorageError::InvalidArgument(format!("drive {}: {error}", drive.display()))
            })?;
        }
        let health: Vec<Arc<DriveHealth>> = config
            .drives
            .iter()
            .zip(layout.reference.sets.iter().flatten())
            .map(|(drive, uuid)| {
                Arc::new(DriveHealth::new(
                    drive.clone(),
                    layout.deployment_id.clone(),
                    uuid.clone(),
                ))
            })
            .collect();
        if health.len() != config.drives.len() {
            return Err(StorageError::Internal(
                "the format layout does not name every drive".into(),
            ));
        }
        let (mrf_sender, mrf_receiver) = mpsc::channel(MRF_QUEUE_MAX);
        let sets: Vec<Arc<ErasureSet>> = config
            .drives
            .chunks(set_size)
            .zip(health.chunks(set_size))
            .enumerate()
            .map(|(index, (drives, health))| {
                Arc::new(ErasureSet {
                    index,
                    drives: drives.to_vec(),
                    fs: fs.clone(),
                    parity,
                    inline_bytes_max: config.inline_bytes_max,
                    locks: KeyLocks::new(),
                    mrf: mrf_sender.clone(),
                    health: health.to_vec(),
                })
            })
            .collect();
        drop(mrf_sender);
        let inner = Arc::new(Inner {
            fs,
            drives: config.drives.clone(),
            sets,
            health,
            reference: layout.reference,
            deployment_id: layout.deployment_id,
            hash_key,
            set_size,
            parity,
            buckets: std::sync::RwLock::new(BTreeMap::new()),
            bucket_lock: tokio::sync::Mutex::new(()),
            watches: FolderWatches::default(),
        });
        inner.load_buckets().await;
        for set in &inner.sets {
            set.remove_stale_uploads(UPLOAD_AGE_MAX).await;
        }
        heal::spawn_background(
            &inner,
            mrf_receiver,
            config.scanner_interval,
            !layout.replaced.is_empty(),
        );
        Ok(Arc::new(Node { inner }))
    }

    pub fn topology(&self) -> Topology {
        Topology {
            set_count: self.inner.sets.len(),
            drives_per_set: self.inner.set_size,
            parity: self.inner.parity,
            deployment_id: self.inner.deployment_id.clone(),
        }
    }

    pub async fn make_bucket(&self, bucket: &str) -> Result<()> {
        validate_bucket_name(bucket)?;
        let inner = &self.inner;
        let _guard = inner.bucket_lock.lock().await;
        if inner.bucket_created(bucket).is_some() {
            return Err(StorageError::BucketExists(bucket.into()));
        }
        let created = OffsetDateTime::now_utc();
        let record = BucketRecord {
            created_unix_ms: (created.unix_timestamp_nanos() / 1_000_000) as i64,
        };
        let json = serde_json::to_vec(&record)
            .map_err(|error| StorageError::Internal(format!("bucket record: {error}")))?;
        let writes = inner
            .drives
            .iter()
            .zip(&inner.health)
            .map(|(drive, health)| {
                let json = json.clone();
                async move {
                    if !health.online(&inner.fs).await {
                        return Err(io::Error::other("drive is offline"));
                    }
                    inner
                        .fs
                        .create_dir_below(drive, &drive.join(bucket))
                        .await?;
                    let target = bucket_record_path(drive, bucket);
                    write_small_file(&inner.fs, drive, &target, json).await
                }
            });
        let written = join_all(writes)
            .await
            .iter()
            .filter(|result| result.is_ok())
            .count();
        if written < inner.drives.len() / 2 + 1 {
            return Err(StorageError::WriteQuorum(format!("bucket {bucket}")));
        }
        let created = OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(record.created_unix_ms) * 1_000_000,
        )
        .unwrap_or(created);
        inner.buckets_write().insert(bucket.into(), created);
        Ok(())
    }

    pub async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        let inner = &self.inner;
        let _guard = inner.bucket_lock.lock().await;
        inner.check_bucket(bucket)?;
        let probe = ListRequest {
            max_keys: 1,
            ..ListRequest::default()
        };
        if !inner.list(bucket, &probe).await?.objects.is_empty() {
            return Err(StorageError::BucketNotEmpty(bucket.into()));
        }
        for set in &inner.sets {
            if !set.list_uploads(bucket, "").await.is_empty() {
                return Err(StorageError::BucketNotEmpty(bucket.into()));
            }
        }
        let removals = inner.drives.iter().map(|drive| async move {
            let _ = inner
                .fs
                .remove_file(&bucket_record_path(drive, bucket))
                .await;
            inner.fs.remove_any(&drive.join(bucket)).await;
        });
        join_all(removals).await;
        inner.buckets_write().remove(bucket);
        Ok(())
    }

    pub async fn bucket_info(&self, bucket: &str) -> Result<BucketInfo> {
        match self.inner.bucket_created(bucket) {
            Some(created) => Ok(BucketInfo {
                name: bucket.into(),
                created,
            }),
            None => Err(StorageError::NoSuchBucket(bucket.into())),
        }
    }

    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        let buckets = self
            .inner
            .buckets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(buckets
            .iter()
            .map(|(name, created)| BucketInfo {
                name: name.clone(),
                created: *created,
            })
            .collect())
    }

    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<ObjectInfo> {
        self.inner.check_bucket(bucket)?;
        validate_key(key)?;
        let set = self.inner.set_for(bucket, key);
        let result = set.put(bucket, key, body, options, self.inner.parity).await;
        self.inner.watches.touch(bucket, key);
        result
    }

    /// A counter that grows with every put, multipart completion or delete of an object
    /// directly inside `bucket/folder` (`folder` ends with `/`) made through this node.
    pub fn watch_folder(&self, bucket: &str, folder: &str) -> Arc<AtomicU64> {
        self.inner.watches.watch(bucket, folder)
    }

    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        self.inner.check_bucket(bucket)?;
        validate_key(key)?;
        self.inner.set_for(bucket, key).head(bucket, key).await
    }

    /// `range` is resolved against the size by the callee: `(first, Some(last))`,
    /// `(first, None)` = to the end; suffix ranges are resolved by the caller via `head`.
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<GetResult> {
        self.inner.check_bucket(bucket)?;
        validate_key(key)?;
        let set = self.inner.set_for(bucket, key);
        let (info, range, body) = set.get(bucket, key, range).await?;
        Ok(GetResult { info, range, body })
    }

    /// Deleting a missing key succeeds.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        self.inner.check_bucket(bucket)?;
        validate_key(key)?;
        let result = self.inner.set_for(bucket, key).delete(bucket, key).await;
        self.inner.watches.touch(bucket, key);
        result
    }

    pub async fn copy_object(
        &self,
        source_bucket: &str,
        source_key: &str,
        target_bucket: &str,
        target_key: &str,
        mut options: PutOptions,
    ) -> Result<ObjectInfo> {
        self.inner.check_bucket(target_bucket)?;
        validate_key(target_key)?;
        let source = self.get_object(source_bucket, source_key, None).await?;
        if options.content_type.is_none() && options.user_metadata.is_empty() {
            options.content_type = source.info.content_type.clone();
            options.user_metadata = source.info.user_metadata.clone();
        }
        if options.checksums.is_empty() {
            options.checksums = source.info.checksums.clone();
        }
        self.put_object(target_bucket, target_key, source.body, options)
            .await
    }

    pub async fn list_objects(&self, bucket: &str, request: ListRequest) -> Result<ListResult> {
        self.inner.check_bucket(bucket)?;
        self.inner.list(bucket, &request).await
    }

    pub async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        options: PutOptions,
    ) -> Result<String> {
        self.inner.check_bucket(bucket)?;
        validate_key(key)?;
        self.inner
            .set_for(bucket, key)
            .create_multipart(bucket, key, options)
            .await
    }

    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: ByteStream,
        checksums: BTreeMap<String, String>,
    ) -> Result<PartInfo> {
        self.inner.check_bucket(bucket)?;
        validate_key(key)?;
        let set = self.inner.set_for(bucket, key);
        set.upload_part(bucket, key, upload_id, part_number, body, checksums)
            .await
    }

    pub async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletePart>,
        condition: WriteCondition,
    ) -> Result<ObjectInfo> {
        self.inner.check_bucket(bucket)?;
        validate_key(key)?;
        let set = self.inner.set_for(bucket, key);
        let result = set
            .complete_multipart(bucket, key, upload_id, parts, condition)
            .await;
        self.inner.watches.touch(bucket, key);
        result
    }

    pub async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        self.inner.check_bucket(bucket)?;
        validate_key(key)?;
        self.inner
            .set_for(bucket, key)
            .abort_multipart(bucket, key, upload_id)
            .await
    }

    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<PartInfo>> {
        self.inner.check_bucket(bucket)?;
        validate_key(key)?;
        self.inner
            .set_for(bucket, key)
            .list_parts(bucket, key, upload_id)
            .await
    }

    pub async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<MultipartUpload>> {
        self.inner.check_bucket(bucket)?;
        let mut uploads = Vec::new();
        for set in &self.inner.sets {
            uploads.extend(set.list_uploads(bucket, prefix).await);
        }
        uploads.sort_by(|left, right| {
            left.key
                .as_bytes()
                .cmp(right.key.as_bytes())
                .then(left.initiated.cmp(&right.initiated))
        });
        Ok(uploads)
    }

    /// Heals every object under `bucket`/`prefix` (all buckets when `bucket` is `None`).
    pub async fn heal(&self, bucket: Option<&str>, prefix: &str) -> Result<HealReport> {
        match bucket {
            Some(bucket) => {
                self.inner.check_bucket(bucket)?;
                self.inner.adopt_replacements().await;
                let mut report = HealReport::default();
                self.inner
                    .heal_bucket(bucket, prefix, &mut report, None)
                    .await?;
                Ok(report)
            }
            None => self.inner.heal_everything(prefix, None).await,
        }
    }

    /// The node's own state (shares, tokens): written at maximum parity in a system area
    /// that S3 cannot reach.
    pub async fn put_system(&self, key: &str, data: Bytes) -> Result<()> {
        validate_key(key)?;
        let set = self.inner.set_for(SYSTEM_BUCKET, key);
        let parity = self.inner.set_size / 2;
        let body: ByteStream = Box::pin(futures::stream::iter([Ok(data)]));
        set.put(SYSTEM_BUCKET, key, body, PutOptions::default(), parity)
            .await?;
        Ok(())
    }

    pub async fn get_system(&self, key: &str) -> Result<Option<Bytes>> {
        validate_key(key)?;
        let set = self.inner.set_for(SYSTEM_BUCKET, key);
        let (_, _, mut body) = match set.get(SYSTEM_BUCKET, key, None).await {
            Ok(found) => found,
            Err(StorageError::NoSuchKey { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| StorageError::ReadQuorum(error.to_string()))?;
            data.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(data)))
    }

    pub async fn delete_system(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.inner
            .set_for(SYSTEM_BUCKET, key)
            .delete(SYSTEM_BUCKET, key)
            .await
    }

    pub async fn list_system(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let request = ListRequest {
                prefix: prefix.into(),
                delimiter: None,
                after: after.clone(),
                max_keys: HEAL_PAGE_KEYS,
            };
            let page = self.inner.list(SYSTEM_BUCKET, &request).await?;
            keys.extend(page.objects.into_iter().map(|object| object.key));
            if !page.is_truncated {
                return Ok(keys);
            }
            after = page.next_after;
        }
    }
}

impl Inner {
    pub(crate) fn drives(&self) -> impl Iterator<Item = &PathBuf> {
        self.drives.iter()
    }

    /// The set an object lives in: SipHash-2-4 (keyed with the deployment id) of
    /// `bucket/key`, modulo the set count.
    pub(crate) fn set_for(&self, bucket: &str, key: &str) -> &Arc<ErasureSet> {
        use std::hash::Hasher;
        let mut hasher = siphasher::sip::SipHasher24::new_with_key(&self.hash_key);
        hasher.write(bucket.as_bytes());
        hasher.write(b"/");
        hasher.write(key.as_bytes());
        &self.sets[(hasher.finish() % self.sets.len() as u64) as usize]
    }

    fn bucket_created(&self, bucket: &str) -> Option<OffsetDateTime> {
        let buckets = self
            .buckets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        buckets.get(bucket).copied()
    }

    fn buckets_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, OffsetDateTime>> {
        self.buckets
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn check_bucket(&self, bucket: &str) -> Result<()> {
        if bucket == SYSTEM_BUCKET || self.bucket_created(bucket).is_some() {
            Ok(())
        } else {
            Err(StorageError::NoSuchBucket(bucket.into()))
        }
    }

    pub(crate) fn bucket_names(&self) -> Vec<String> {
        let buckets = self
            .buckets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        buckets.keys().cloned().collect()
    }

    /// Buckets known to any drive (a replaced drive learns them through heal).
    async fn load_buckets(&self) {
        let mut found: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
        for drive in &self.drives {
            let folder = format::system_dir(drive).join("buckets");
            let Ok(entries) = self.fs.read_dir(&folder).await else {
                continue;
            };
            for (name, is_dir) in entries {
                let Some(bucket) = name.strip_suffix(".json") else {
                    continue;
                };
                if is_dir || found.contains_key(bucket) {
                    continue;
                }
                let Ok(raw) = self.fs.read_file(&folder.join(&name)).await else {
                    continue;
                };
                let Ok(record) = serde_json::from_slice::<BucketRecord>(&raw) else {
                    continue;
                };
                let created = OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(record.created_unix_ms) * 1_000_000,
                )
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                found.insert(bucket.to_string(), created);
            }
        }
        *self.buckets_write() = found;
    }

    /// Makes sure every drive has the bucket folder and record (after a drive replacement).
    pub(crate) async fn heal_bucket_records(&self) {
        let buckets: Vec<(String, OffsetDateTime)> = {
            let buckets = self
                .buckets
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            buckets
                .iter()
                .map(|(name, created)| (name.clone(), *created))
                .collect()
        };
        for (drive, health) in self.drives.iter().zip(&self.health) {
            if !health.online(&self.fs).await {
                continue;
            }
            for (bucket, created) in &buckets {
                let target = bucket_record_path(drive, bucket);
                if self.fs.read_file(&target).await.is_ok() {
                    continue;
                }
                let record = BucketRecord {
                    created_unix_ms: (created.unix_timestamp_nanos() / 1_000_000) as i64,
                };
                let Ok(json) = serde_json::to_vec(&record) else {
                    continue;
                };
                let _ = self.fs.create_dir_below(drive, &drive.join(bucket)).await;
                let _ = write_small_file(&self.fs, drive, &target, json).await;
            }
        }
    }

    /// Stamps blank drives that lost their stamp while the node runs back into their slots
    /// (see `format::adopt_blank_drive`); returns the drives stamped, which need a heal.
    pub(crate) async fn adopt_replacements(&self) -> Vec<PathBuf> {
        let mut adopted = Vec::new();
        for health in &self.health {
            if health.online(&self.fs).await {
                continue;
            }
            let drive = health.path();
            let outcome =
                format::adopt_blank_drive(&self.fs, drive, &self.reference, health.uuid()).await;
            match outcome {
                Ok(Adoption::Stamped) => {}
                Ok(Adoption::Missing) => continue,
                Ok(Adoption::Refused(why)) => {
                    tracing::warn!(drive = %drive.display(), "drive stays offline: {why}");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(drive = %drive.display(), "stamping a blank drive: {error}");
                    continue;
                }
            }
            if let Err(error) = prepare_system_dirs(&self.fs, drive).await {
                tracing::warn!(drive = %drive.display(), "preparing a blank drive: {error}");
                continue;
            }
            health.suspect();
            if health.online(&self.fs).await {
                tracing::info!(drive = %drive.display(), "blank drive stamped into its slot");
                adopted.push(drive.to_path_buf());
            }
        }
        adopted
    }

    /// Heals every object in every bucket and the system area, after adopting blank drives.
    pub(crate) async fn heal_everything(
        &self,
        prefix: &str,
        pause: Option<Duration>,
    ) -> Result<HealReport> {
        self.adopt_replacements().await;
        self.heal_bucket_records().await;
        let mut report = HealReport::default();
        let mut buckets = self.bucket_names();
        buckets.push(SYSTEM_BUCKET.to_string());
        for bucket in buckets {
            self.heal_bucket(&bucket, prefix, &mut report, pause)
                .await?;
        }
        Ok(report)
    }

    pub(crate) async fn heal_bucket(
        &self,
        bucket: &str,
        prefix: &str,
        report: &mut HealReport,
        pause: Option<Duration>,
    ) -> Result<()> {
        let mut after = None;
        loop {
            let request = ListRequest {
                prefix: prefix.into(),
                delimiter: None,
                after: after.clone(),
                max_keys: HEAL_PAGE_KEYS,
            };
            let page = self.list(bucket, &request).await?;
            for object in &page.objects {
                report.objects_scanned += 1;
                match self
                    .set_for(bucket, &object.key)
                    .heal_object(bucket, &object.key)
                    .await
                {
                    Ok(outcome) => {
                        report.objects_healed += u64::from(outcome.healed);
                        report.shards_rebuilt += outcome.shards_rebuilt;
                    }
                    Err(error) => {
                        tracing::warn!("heal {bucket}/{}: {error}", object.key);
                        report.objects_failed += 1;
                    }
                }
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
            if !page.is_truncated {
                return Ok(());
            }
            after = page.next_after;
        }
    }
}

/// Makes the system folders of a stamped drive; temp space left by a crash is dropped first
/// (nothing in it was ever visible).
async fn prepare_system_dirs(fs: &Fs, drive: &Path) -> io::Result<()> {
    let system = format::system_dir(drive);
    fs.remove_any(&system.join("tmp")).await;
    for folder in ["tmp", "config", "buckets", "multipart"] {
        fs.create_dir_below(&system, &system.join(folder)).await?;
    }
    Ok(())
}

fn bucket_record_path(drive: &Path, bucket: &str) -> PathBuf {
    format::system_dir(drive)
        .join("buckets")
        .join(format!("{bucket}.json"))
}

async fn write_small_file(fs: &Fs, drive: &Path, target: &Path, data: Vec<u8>) -> io::Result<()> {
    let staged = format::system_dir(drive)
        .join("tmp")
        .join(format!("small-{}", uuid::Uuid::new_v4()));
    fs.write_file_synced(&staged, Bytes::from(data)).await?;
    fs.rename(&staged, target).await
}

/// S3 bucket naming rules; names of our system folders are never valid.
pub(crate) fn validate_bucket_name(bucket: &str) -> Result<()> {
    let invalid = || StorageError::InvalidBucketName(bucket.into());
    let bytes = bucket.as_bytes();
    if !(3..=63).contains(&bytes.len()) {
        return Err(invalid());
    }
    let allowed =
        |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b".-".contains(byte);
    if !bytes.iter().all(allowed) {
        return Err(invalid());
    }
    let edge = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    if !edge(bytes[0]) || !edge(bytes[bytes.len() - 1]) {
        return Err(invalid());
    }
    if bucket.contains("..") || bucket.contains(".-") || bucket.contains("-.") {
        return Err(invalid());
    }
    if bucket.parse::<std::net::Ipv4Addr>().is_ok() || bucket.starts_with("xn--") {
        return Err(invalid());
    }
    Ok(())
}

/// Longest `/`-separated key segment: a file name on the drives (NAME_MAX).
const KEY_SEGMENT_BYTES_MAX: usize = 255;

/// Object key rules: 1..=1024 bytes, segments of at most 255 bytes, no NUL, no empty, `.`
/// or `..` segment, no segment that is one of our own file names, no leading `/`.
pub(crate) fn validate_key(key: &str) -> Result<()> {
    let invalid = |why: &str| StorageError::InvalidObjectName(format!("{why}: {key:?}"));
    if key.is_empty() {
        return Err(invalid("empty key"));
    }
    if key.len() > 1024 {
        return Err(invalid("key longer than 1024 bytes"));
    }
    if key.contains('\0') {
        return Err(invalid("key holds a NUL byte"));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(invalid("key has an empty path segment")),
            "." | ".." => return Err(invalid("key has a '.' or '..' segment")),
            META_FILE | DATA_DIR => return Err(invalid("key uses a reserved name")),
            // Each segment is a directory name on the drives.
            _ if segment.len() > KEY_SEGMENT_BYTES_MAX => {
                return Err(invalid("key has a path segment longer than 255 bytes"))
            }
            _ => {}
        }
    }
    Ok(())
}
