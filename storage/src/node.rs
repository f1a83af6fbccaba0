//! `Node`: the object layer over all erasure sets of this node. This is the API the S3 layer
//! and the sharing protocol use; everything below it is private to `storage`.
//!
//! Invariants: every drive is locked (`.lakeshare.sys/lock`, exclusive) while the node is
//! open, so a second process on the same drives refuses to start; a drive that lost its
//! format stamp while the node runs is offline until the healer stamps it back into its slot
//! (only when its folder exists and holds no file), and every heal of everything starts with
//! that pass; bucket names, keys and listing bounds are validated here, before any path is
//! made from them.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lakeshare_engine::io::DriveIo;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::buckets::{Buckets, SYSTEM_BUCKET};
use crate::drive::{Drive, DrivePath, DriveRoot};
use crate::env::Environment;
use crate::erasure::{self, BLOCK_BYTES_DEFAULT};
use crate::error::{Result, StorageError};
use crate::format;
use crate::heal::{self, Healer};
use crate::health::DriveHealth;
use crate::meta::{DATA_DIR, DIRECTORY_KEY_DIR, META_FILE};
use crate::set::{ErasureSet, SetLayout};
use crate::sets::SetGroup;
use crate::watch::FolderWatches;

pub use crate::object::*;

/// How the node is laid out.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Drive folders, already brace-expanded, in command-line order.
    pub drives: Vec<PathBuf>,
    /// Parity per set; `None` means MinIO's default for the set size.
    pub parity: Option<usize>,
    /// Shard bytes at or below which an object's data is kept inline in its metadata.
    pub inline_bytes_max: usize,
    /// Object bytes per erasure block of new objects.
    pub block_bytes: u64,
    /// Drives per erasure set; `None` means the largest even split into sets of 2..16.
    pub set_drive_count: Option<usize>,
    /// Pause of the background scanner between two objects; zero turns the scanner and the
    /// background watch for blank replacement drives off (an admin heal still adopts them).
    pub scanner_interval: Duration,
}

impl StorageConfig {
    /// The defaults for these drives: MinIO's parity and set split, 128 KiB inline limit,
    /// 1 MiB blocks, one object healed per second by the scanner.
    pub fn new(drives: Vec<PathBuf>) -> StorageConfig {
        StorageConfig {
            drives,
            parity: None,
            inline_bytes_max: INLINE_BYTES_MAX_DEFAULT,
            block_bytes: BLOCK_BYTES_DEFAULT,
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
    pub(crate) sets: Arc<SetGroup>,
    buckets: Arc<Buckets>,
    healer: Arc<Healer>,
    watches: FolderWatches,
    topology: Topology,
    background: Vec<AbortHandle>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

/// Objects met damaged wait here for the background healer; beyond it they are dropped (the
/// scanner finds them later).
const MRF_QUEUE_MAX: usize = 10_000;
/// Multipart uploads older than this are removed at open.
const UPLOAD_AGE_MAX: Duration = Duration::from_secs(24 * 3600);
/// Keys per page when the system area is listed.
const SYSTEM_PAGE_KEYS: usize = 1000;
/// The lock file every open node holds on each of its drives.
const LOCK_FILE: &str = "lock";

impl Node {
    /// Opens (formatting fresh drives) and checks every drive's stamp; all drives use `io`.
    pub async fn open(config: StorageConfig, io: Arc<dyn DriveIo>) -> Result<Arc<Node>> {
        let ios = vec![io; config.drives.len()];
        Node::open_with(config, ios, Environment::real()).await
    }

    /// Opens over one back-end per drive (the simulation test gives each its own).
    pub(crate) async fn open_with(
        config: StorageConfig,
        ios: Vec<Arc<dyn DriveIo>>,
        env: Environment,
    ) -> Result<Arc<Node>> {
        let set_size = format::set_drive_count(config.drives.len(), config.set_drive_count)?;
        let parity = config.parity.unwrap_or(format::default_parity(set_size));
        format::validate_parity(set_size, parity)?;
        erasure::self_test()?;
        if ios.len() != config.drives.len() {
            return Err(StorageError::Internal("one back-end per drive".into()));
        }
        let roots: Vec<DriveRoot> = config
            .drives
            .iter()
            .zip(ios)
            .map(|(path, io)| DriveRoot::new(path.clone(), io))
            .collect();
        let mut locks = Vec::with_capacity(roots.len());
        for root in &roots {
            locks.push(lock_drive(root).await?);
        }
        let layout = format::open_layout(&roots, set_size, &env).await?;
        let hash_key = *uuid::Uuid::parse_str(&layout.deployment_id)
            .map_err(|error| StorageError::Internal(format!("deployment id: {error}")))?
            .as_bytes();
        // A drive that fails here starts like an offline drive: its stamp checks and heal
        // bring it back; the node starts as long as the sets have their quorums.
        for root in &roots {
            if let Err(error) = format::prepare_system_dirs(root).await {
                tracing::warn!(drive = %root.root().display(), "preparing the system folders: {error}");
            }
        }
        let uuids: Vec<&String> = layout.reference.sets.iter().flatten().collect();
        if uuids.len() != roots.len() {
            return Err(StorageError::Internal(
                "the format layout does not name every drive".into(),
            ));
        }
        let drives: Vec<Arc<Drive>> = roots
            .into_iter()
            .zip(locks)
            .zip(uuids)
            .map(|((root, lock), uuid)| {
                let health = DriveHealth::new(layout.deployment_id.clone(), uuid.clone());
                Arc::new(Drive::new(root, health, lock))
            })
            .collect();
        let (mrf_sender, mrf_receiver) = mpsc::channel(MRF_QUEUE_MAX);
        let set_layout = SetLayout {
            parity,
            inline_bytes_max: config.inline_bytes_max,
            block_bytes: config.block_bytes,
        };
        let sets: Vec<Arc<ErasureSet>> = drives
            .chunks(set_size)
            .enumerate()
            .map(|(index, drives)| {
                Arc::new(ErasureSet::new(
                    index,
                    drives.to_vec(),
                    set_layout,
                    env.clone(),
                    mrf_sender.clone(),
                ))
            })
            .collect();
        drop(mrf_sender);
        let sets = Arc::new(SetGroup::new(sets, hash_key));
        let buckets = Arc::new(Buckets::load(drives.clone(), env.clone()).await);
        for set in &sets.sets {
            set.remove_stale_uploads(UPLOAD_AGE_MAX).await;
        }
        let healer = Arc::new(Healer::new(
            sets.clone(),
            buckets.clone(),
            drives,
            layout.reference,
            env,
        ));
        let background = heal::spawn_background(
            &healer,
            mrf_receiver,
            config.scanner_interval,
            !layout.replaced.is_empty(),
        );
        Ok(Arc::new(Node {
            sets,
            buckets,
            healer,
            watches: FolderWatches::default(),
            topology: Topology {
                set_count: config.drives.len() / set_size,
                drives_per_set: set_size,
                parity,
                deployment_id: layout.deployment_id,
            },
            background,
        }))
    }

    pub fn topology(&self) -> Topology {
        self.topology.clone()
    }

    pub async fn make_bucket(&self, bucket: &str) -> Result<()> {
        validate_bucket_name(bucket)?;
        let _guard = self.buckets.lock.lock().await;
        self.buckets.create_locked(bucket).await
    }

    pub async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        let _guard = self.buckets.lock.lock().await;
        self.buckets.check(bucket)?;
        let probe = ListRequest {
            max_keys: 1,
            ..ListRequest::default()
        };
        if !self.sets.list(bucket, &probe).await?.objects.is_empty() {
            return Err(StorageError::BucketNotEmpty(bucket.into()));
        }
        for set in &self.sets.sets {
            if !set.list_uploads(bucket, "").await.is_empty() {
                return Err(StorageError::BucketNotEmpty(bucket.into()));
            }
        }
        self.buckets.remove_locked(bucket).await;
        Ok(())
    }

    pub async fn bucket_info(&self, bucket: &str) -> Result<BucketInfo> {
        match self.buckets.created(bucket) {
            Some(created) => Ok(BucketInfo {
                name: bucket.into(),
                created,
            }),
            None => Err(StorageError::NoSuchBucket(bucket.into())),
        }
    }

    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        Ok(self
            .buckets
            .all()
            .into_iter()
            .map(|(name, created)| BucketInfo { name, created })
            .collect())
    }

    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<ObjectInfo> {
        self.check_object(bucket, key)?;
        let set = self.sets.set_for(bucket, key);
        let result = set
            .put(bucket, key, body, options, self.topology.parity)
            .await;
        self.watches.touch(bucket, key);
        result
    }

    /// A counter that grows with every put, multipart completion or delete of an object
    /// directly inside `bucket/folder` (`folder` ends with `/`) made through this node.
    pub fn watch_folder(&self, bucket: &str, folder: &str) -> Arc<AtomicU64> {
        self.watches.watch(bucket, folder)
    }

    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        self.check_object(bucket, key)?;
        self.sets.set_for(bucket, key).head(bucket, key).await
    }

    /// `range` is resolved against the size by the callee: `(first, Some(last))`,
    /// `(first, None)` = to the end; suffix ranges are resolved by the caller via `head`.
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<GetResult> {
        self.check_object(bucket, key)?;
        let set = self.sets.set_for(bucket, key);
        let (info, range, body) = set.get(bucket, key, range).await?;
        Ok(GetResult { info, range, body })
    }

    /// Deleting a missing key succeeds.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        self.check_object(bucket, key)?;
        let result = self.sets.set_for(bucket, key).delete(bucket, key).await;
        self.watches.touch(bucket, key);
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
        self.check_object(target_bucket, target_key)?;
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

    /// Lists `bucket`. The prefix and the `after` bound follow the key rules for whole
    /// segments: a `.` or `..` segment is refused (a partial last segment such as `..a`
    /// of a prefix is fine).
    pub async fn list_objects(&self, bucket: &str, request: ListRequest) -> Result<ListResult> {
        self.buckets.check(bucket)?;
        validate_list_bound("prefix", &request.prefix)?;
        if let Some(after) = &request.after {
            validate_list_bound("start-after marker", after)?;
        }
        self.sets.list(bucket, &request).await
    }

    pub async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        options: PutOptions,
    ) -> Result<String> {
        self.check_object(bucket, key)?;
        self.sets
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
        self.check_object(bucket, key)?;
        let set = self.sets.set_for(bucket, key);
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
        self.check_object(bucket, key)?;
        let set = self.sets.set_for(bucket, key);
        let result = set
            .complete_multipart(bucket, key, upload_id, parts, condition)
            .await;
        self.watches.touch(bucket, key);
        result
    }

    pub async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        self.check_object(bucket, key)?;
        self.sets
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
        self.check_object(bucket, key)?;
        self.sets
            .set_for(bucket, key)
            .list_parts(bucket, key, upload_id)
            .await
    }

    pub async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<MultipartUpload>> {
        self.buckets.check(bucket)?;
        let mut uploads = Vec::new();
        for set in &self.sets.sets {
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

    /// Heals every object under `bucket`/`prefix` (all buckets and the system area when
    /// `bucket` is `None`), after stamping blank drives and making missing bucket folders.
    pub async fn heal(&self, bucket: Option<&str>, prefix: &str) -> Result<HealReport> {
        match bucket {
            Some(bucket) => {
                self.buckets.check(bucket)?;
                self.healer.heal_one_bucket(bucket, prefix).await
            }
            None => self.healer.heal_everything(prefix, None).await,
        }
    }

    /// The node's own state (shares, tokens): written at maximum parity in a system area
    /// that S3 cannot reach.
    pub async fn put_system(&self, key: &str, data: Bytes) -> Result<()> {
        validate_key(key)?;
        let set = self.sets.set_for(SYSTEM_BUCKET, key);
        let parity = self.topology.drives_per_set / 2;
        let body: ByteStream = Box::pin(futures::stream::iter([Ok(data)]));
        set.put(SYSTEM_BUCKET, key, body, PutOptions::default(), parity)
            .await?;
        Ok(())
    }

    pub async fn get_system(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_system_versioned(key).await?.map(|(data, _)| data))
    }

    /// A system object and its ETag (what `put_system_if` compares).
    pub async fn get_system_versioned(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        validate_key(key)?;
        let set = self.sets.set_for(SYSTEM_BUCKET, key);
        let (info, _, mut body) = match set.get(SYSTEM_BUCKET, key, None).await {
            Ok(found) => found,
            Err(StorageError::NoSuchKey { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| StorageError::ReadQuorum(error.to_string()))?;
            data.extend_from_slice(&chunk);
        }
        Ok(Some((Bytes::from(data), info.etag)))
    }

    /// Writes a system object if `condition` holds (decided under the key's lock, as for any
    /// conditional PUT: `PreconditionFailed` otherwise); returns its new ETag.
    pub async fn put_system_if(
        &self,
        key: &str,
        data: Bytes,
        condition: WriteCondition,
    ) -> Result<String> {
        validate_key(key)?;
        let set = self.sets.set_for(SYSTEM_BUCKET, key);
        let parity = self.topology.drives_per_set / 2;
        let body: ByteStream = Box::pin(futures::stream::iter([Ok(data)]));
        let options = PutOptions {
            condition,
            ..PutOptions::default()
        };
        Ok(set
            .put(SYSTEM_BUCKET, key, body, options, parity)
            .await?
            .etag)
    }

    pub async fn delete_system(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.sets
            .set_for(SYSTEM_BUCKET, key)
            .delete(SYSTEM_BUCKET, key)
            .await
    }

    pub async fn list_system(&self, prefix: &str) -> Result<Vec<String>> {
        validate_list_bound("prefix", prefix)?;
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let request = ListRequest::flat(prefix, after.take(), SYSTEM_PAGE_KEYS);
            let page = self.sets.list(SYSTEM_BUCKET, &request).await?;
            keys.extend(page.objects.into_iter().map(|object| object.key));
            if !page.is_truncated {
                return Ok(keys);
            }
            after = page.next_after;
        }
    }

    fn check_object(&self, bucket: &str, key: &str) -> Result<()> {
        self.buckets.check(bucket)?;
        validate_key(key)
    }
}

/// Takes the exclusive lock of a drive, making its folder and system folder when missing.
async fn lock_drive(root: &DriveRoot) -> Result<lakeshare_engine::io::DriveFile> {
    let drive_error = |error: io::Error| {
        StorageError::InvalidArgument(format!("drive {}: {error}", root.root().display()))
    };
    // A failing drive may still take its lock; the lock is what must not fail.
    if let Err(error) = root.create_root().await {
        tracing::warn!("{}", drive_error(error));
    }
    let system = format::system_dir();
    if let Err(error) = root.create_dir_below(&DrivePath::root(), &system).await {
        tracing::warn!("{}", drive_error(error));
    }
    let mut waited = Duration::ZERO;
    loop {
        match root.lock_exclusive(&system.child(LOCK_FILE)).await {
            // A node of this process that was just dropped may still be finishing a task.
            Err(error) if error.kind() == io::ErrorKind::WouldBlock && waited < LOCK_WAIT_MAX => {
                tokio::time::sleep(LOCK_RETRY_PAUSE).await;
                waited += LOCK_RETRY_PAUSE;
            }
            other => break lock_answer(root, other),
        }
    }
}

/// Waiting for a drive lock held by someone else ends after this, with an error.
const LOCK_WAIT_MAX: Duration = Duration::from_secs(2);
const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(50);

fn lock_answer(
    root: &DriveRoot,
    attempt: io::Result<lakeshare_engine::io::DriveFile>,
) -> Result<lakeshare_engine::io::DriveFile> {
    let drive_error = |error: io::Error| {
        StorageError::InvalidArgument(format!("drive {}: {error}", root.root().display()))
    };
    match attempt {
        Ok(lock) => Ok(lock),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
            Err(StorageError::InvalidArgument(format!(
            "drive {} is in use by another lakeshare server (it holds {}/{LOCK_FILE}); stop it \
             first: two servers on the same drives would overwrite each other's writes",
            root.root().display(),
            format::SYSTEM_DIR,
        )))
        }
        Err(error) => Err(drive_error(error)),
    }
}

/// A listing prefix or marker: like a key, but it may be empty and its last segment may be
/// partial (empty, or the start of a name such as `..a`).
fn validate_list_bound(what: &str, value: &str) -> Result<()> {
    let invalid = |why: &str| StorageError::InvalidObjectName(format!("{what} {value:?}: {why}"));
    if value.contains('\0') {
        return Err(invalid("it holds a NUL byte"));
    }
    let segments: Vec<&str> = value.split('/').collect();
    let whole = &segments[..segments.len() - 1];
    for segment in whole {
        match *segment {
            "." | ".." => return Err(invalid("it has a '.' or '..' segment")),
            _ => {}
        }
    }
    Ok(())
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
/// or `..` segment, no segment that is one of our own file names, no leading `/`. A key may
/// end with `/` (a directory marker such as `a/`, stored in `DIRECTORY_KEY_DIR`).
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
    let segments = key.strip_suffix('/').unwrap_or(key);
    for segment in segments.split('/') {
        match segment {
            "" => return Err(invalid("key has an empty path segment")),
            "." | ".." => return Err(invalid("key has a '.' or '..' segment")),
            META_FILE | DATA_DIR | DIRECTORY_KEY_DIR => {
                return Err(invalid("key uses a reserved name"))
            }
            // Each segment is a directory name on the drives.
            _ if segment.len() > KEY_SEGMENT_BYTES_MAX => {
                return Err(invalid("key has a path segment longer than 255 bytes"))
            }
            _ => {}
        }
    }
    Ok(())
}
