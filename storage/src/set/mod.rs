//! One erasure set: the drives an object's shards live on, and the per-object operations
//! over them, split by an object's life: `write` (stage and commit), `read`, `multipart`,
//! `delete` and `heal`; `readers` keeps the data dirs open readers still need.
//!
//! Layout on each drive: `<bucket>/<key>/lakeshare.meta` (one copy of the object's metadata,
//! small objects' shards inline) and `<bucket>/<key>/lakeshare.data/<data dir>/part.N.<part
//! id>` (bitrot-framed shard files; see `bitrot`).
//!
//! Invariants:
//! - Shard files are written under the drive's `tmp/` and reach the object's key folder only
//!   by rename, after fsync; an object version is visible only when its metadata is
//!   committed on write-quorum drives, and a commit that misses quorum is undone.
//! - Every shard byte served was verified against a hash keyed by its part version, shard
//!   index and block: a shard of another version counts as missing.
//! - Conditions (`If-None-Match`, `If-Match`) are decided under the object lock that
//!   commits; a multipart upload's parts and its completion are serialised by its upload
//!   lock, taken after the object lock.
//! - A data dir is removed only when no open reader uses it (`readers`).
//! - A drive whose format stamp is gone or foreign is neither read nor written, and writes
//!   never create a drive's folder, its system folder or a bucket folder (heal may make a
//!   bucket folder again on a stamped drive).

mod delete;
mod heal;
mod multipart;
mod read;
mod readers;
mod write;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::drive::{Drive, DrivePath};
use crate::env::Environment;
use crate::error::{Result, StorageError};
use crate::format::system_dir;
use crate::locks::KeyLocks;
use crate::meta::{self, ObjectMeta, DATA_DIR, DIRECTORY_KEY_DIR, META_FILE};
use crate::object::{ObjectInfo, WriteCondition};

use readers::OpenReaders;

/// An object met in a damaged state, to be healed in the background.
#[derive(Clone, Debug)]
pub(crate) struct HealTask {
    pub(crate) set: usize,
    pub(crate) bucket: String,
    pub(crate) key: String,
}

/// What one drive holds for a key.
#[derive(Clone, Debug)]
pub(crate) enum MetaRead {
    Found {
        meta: Box<ObjectMeta>,
        inline: Vec<u8>,
        raw: Vec<u8>,
    },
    NotFound,
    Corrupt,
    Failed,
}

/// The version a quorum of drives agrees on.
pub(crate) struct Chosen {
    pub(crate) meta: ObjectMeta,
    /// Per drive slot: that drive's copy when it agrees with `meta`.
    pub(crate) copies: Vec<Option<(ObjectMeta, Vec<u8>)>>,
    /// Per drive slot: its copy is the version its current metadata replaced (a commit cut
    /// off before its quorum); heal writes the chosen version's metadata there again.
    pub(crate) restored: Vec<bool>,
    pub(crate) damaged: bool,
}

/// How the objects of a set are laid out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SetLayout {
    pub(crate) parity: usize,
    /// Shard bytes at or below which an object's data is kept inline in its metadata.
    pub(crate) inline_bytes_max: usize,
    /// Object bytes per erasure block.
    pub(crate) block_bytes: u64,
}

pub(crate) struct ErasureSet {
    pub(crate) index: usize,
    pub(crate) drives: Vec<Arc<Drive>>,
    pub(crate) layout: SetLayout,
    pub(crate) env: Environment,
    object_locks: KeyLocks,
    upload_locks: KeyLocks,
    readers: Arc<OpenReaders>,
    mrf: mpsc::Sender<HealTask>,
}

impl ErasureSet {
    pub(crate) fn new(
        index: usize,
        drives: Vec<Arc<Drive>>,
        layout: SetLayout,
        env: Environment,
        mrf: mpsc::Sender<HealTask>,
    ) -> ErasureSet {
        ErasureSet {
            index,
            drives,
            layout,
            env,
            object_locks: KeyLocks::new(),
            upload_locks: KeyLocks::new(),
            readers: Arc::new(OpenReaders::default()),
            mrf,
        }
    }

    pub(crate) fn total(&self) -> usize {
        self.drives.len()
    }

    pub(crate) fn data_for(&self, parity: usize) -> usize {
        self.total() - parity
    }

    pub(crate) fn write_quorum(data: usize, parity: usize) -> usize {
        data + usize::from(data == parity)
    }

    /// Shard `shard` of an object lives on drive slot `distribution[shard]`.
    pub(crate) fn distribution(&self, bucket: &str, key: &str) -> Vec<usize> {
        let total = self.total();
        let object = format!("{bucket}/{key}");
        let start = (xxhash_rust::xxh64::xxh64(object.as_bytes(), 0) % total as u64) as usize;
        (0..total).map(|shard| (start + shard) % total).collect()
    }

    pub(crate) fn queue_heal(&self, bucket: &str, key: &str) {
        let task = HealTask {
            set: self.index,
            bucket: bucket.into(),
            key: key.into(),
        };
        // A full queue drops the task: the scanner finds the object later.
        let _ = self.mrf.try_send(task);
    }

    pub(crate) async fn drive_online(&self, slot: usize) -> bool {
        self.drives[slot].online().await
    }

    // ---- paths ----------------------------------------------------------------------------

    /// The folder of `bucket` (the system area's is two segments deep).
    pub(crate) fn bucket_dir(bucket: &str) -> io::Result<DrivePath> {
        DrivePath::root().join_all(bucket)
    }

    /// The folder of `key`'s metadata and data; a key ending in `/` has its own reserved
    /// child folder of the folder named by the key (see `DIRECTORY_KEY_DIR`).
    pub(crate) fn key_dir(bucket: &str, key: &str) -> io::Result<DrivePath> {
        match key.strip_suffix('/') {
            Some(folder) => Ok(Self::bucket_dir(bucket)?
                .join_all(folder)?
                .child(DIRECTORY_KEY_DIR)),
            None => Self::bucket_dir(bucket)?.join_all(key),
        }
    }

    pub(crate) fn meta_path(bucket: &str, key: &str) -> io::Result<DrivePath> {
        Ok(Self::key_dir(bucket, key)?.child(META_FILE))
    }

    /// `<key dir>/lakeshare.data`, the folder of an object's data dirs.
    pub(crate) fn data_holder(bucket: &str, key: &str) -> io::Result<DrivePath> {
        Ok(Self::key_dir(bucket, key)?.child(DATA_DIR))
    }

    pub(crate) fn data_dir_path(bucket: &str, key: &str, data_dir: Uuid) -> io::Result<DrivePath> {
        Ok(Self::data_holder(bucket, key)?.join_id(data_dir))
    }

    pub(crate) fn tmp_root() -> DrivePath {
        system_dir().child("tmp")
    }

    pub(crate) fn tmp_dir(tmp_id: Uuid) -> DrivePath {
        Self::tmp_root().join_id(tmp_id)
    }

    // ---- metadata -------------------------------------------------------------------------

    pub(crate) async fn read_metas(&self, bucket: &str, key: &str) -> Vec<MetaRead> {
        let Ok(path) = Self::meta_path(bucket, key) else {
            return vec![MetaRead::NotFound; self.total()];
        };
        let reads = (0..self.total()).map(|slot| {
            let path = &path;
            async move {
                let drive = &self.drives[slot];
                if !drive.online().await {
                    return MetaRead::Failed;
                }
                match drive.read_file(path).await {
                    Ok(raw) => match meta::decode::<ObjectMeta>(&raw) {
                        Some((meta, inline)) => MetaRead::Found {
                            meta: Box::new(meta),
                            inline,
                            raw,
                        },
                        None => MetaRead::Corrupt,
                    },
                    Err(error) if crate::drive::is_not_found(&error) => MetaRead::NotFound,
                    Err(_) => MetaRead::Failed,
                }
            }
        });
        futures::future::join_all(reads).await
    }

    /// Picks the version agreed by read quorum. `Ok(None)`: the key does not exist.
    /// `check_drives` distinguishes a wiped or missing drive from a genuine "not found".
    pub(crate) async fn choose(
        &self,
        reads: &[MetaRead],
        check_drives: bool,
    ) -> Result<Option<Chosen>> {
        let mut counts: BTreeMap<Uuid, (usize, &ObjectMeta)> = BTreeMap::new();
        for read in reads {
            if let MetaRead::Found { meta, .. } = read {
                counts.entry(meta.version_id).or_insert((0, meta)).0 += 1;
            }
        }
        // Most copies first; between equals (a commit cut short), the newest write.
        let best = counts.values().max_by(|left, right| {
            left.0
                .cmp(&right.0)
                .then(left.1.modified_unix_nanos.cmp(&right.1.modified_unix_nanos))
                .then(left.1.version_id.cmp(&right.1.version_id))
        });
        let default_data = self.data_for(self.layout.parity).max(1);
        if let Some(&(count, best)) = best {
            if count >= best.data.max(1) {
                let copies: Vec<Option<(ObjectMeta, Vec<u8>)>> = reads
                    .iter()
                    .map(|read| match read {
                        MetaRead::Found { meta, inline, .. } if meta.same_version(best) => {
                            Some((meta.as_ref().clone(), inline.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                return Ok(Some(Chosen {
                    meta: best.clone(),
                    copies,
                    restored: vec![false; self.total()],
                    damaged: count < self.total(),
                }));
            }
        }
        if let Some(chosen) = Self::choose_replaced(reads) {
            return Ok(Some(chosen));
        }
        let quorum = best
            .map(|(_, meta)| meta.data.max(1))
            .unwrap_or(default_data);
        let mut absent = 0;
        for (slot, read) in reads.iter().enumerate() {
            if let MetaRead::NotFound = read {
                if !check_drives || self.drive_online(slot).await {
                    absent += 1;
                }
            }
        }
        if absent > self.total() - quorum {
            Ok(None)
        } else {
            Err(StorageError::ReadQuorum(format!(
                "{} of {} drives hold readable metadata",
                reads
                    .iter()
                    .filter(|read| matches!(read, MetaRead::Found { .. }))
                    .count(),
                self.total()
            )))
        }
    }

    /// With every drive answering with a sound record and no version on enough of them, a commit was cut off (a crash) after replacing the metadata on some drives:
    /// a version counts the drives where it is current and those whose current copy
    /// replaced it, and the newest version counted on enough drives is read. Newest,
    /// because a crash only cuts the newest commit short: an older version's "replaced"
    /// entries outlive the commit that retired its data, a newer one's cannot. Its data dirs
    /// are intact (a commit retires them only after it reached its quorum), and bitrot
    /// hashes with per-part ids check every shard. A drive that failed or returned a garbled
    /// record may hold the newest version, and a drive without a record may be one a delete
    /// cut short already cleared (which a stale drive looks the same as): then nothing is
    /// chosen.
    fn choose_replaced(reads: &[MetaRead]) -> Option<Chosen> {
        let every_drive_has_a_copy = reads
            .iter()
            .all(|read| matches!(read, MetaRead::Found { .. }));
        if !every_drive_has_a_copy {
            return None;
        }
        let mut votes: BTreeMap<Uuid, (usize, &ObjectMeta)> = BTreeMap::new();
        for read in reads {
            if let MetaRead::Found { meta, .. } = read {
                votes.entry(meta.version_id).or_insert((0, meta)).0 += 1;
                if let Some(replaced) = &meta.replaced {
                    votes
                        .entry(replaced.meta.version_id)
                        .or_insert((0, &replaced.meta))
                        .0 += 1;
                }
            }
        }
        let (_, version) = votes
            .values()
            .filter(|(count, meta)| *count >= meta.data.max(1))
            .max_by(|(_, left), (_, right)| {
                left.modified_unix_nanos
                    .cmp(&right.modified_unix_nanos)
                    .then(left.version_id.cmp(&right.version_id))
            })?;
        let mut restored = vec![false; reads.len()];
        let copies = reads
            .iter()
            .enumerate()
            .map(|(slot, read)| match read {
                MetaRead::Found { meta, inline, .. } if meta.same_version(version) => {
                    Some((meta.as_ref().clone(), inline.clone()))
                }
                MetaRead::Found { meta, .. } => match &meta.replaced {
                    Some(replaced) if replaced.meta.same_version(version) => {
                        restored[slot] = true;
                        Some((replaced.meta.clone(), replaced.inline.clone()))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        Some(Chosen {
            meta: ObjectMeta {
                replaced: None,
                ..(*version).clone()
            },
            copies,
            restored,
            damaged: true,
        })
    }

    pub(crate) async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        let reads = self.read_metas(bucket, key).await;
        match self.choose(&reads, true).await? {
            Some(chosen) => {
                if chosen.damaged {
                    self.queue_heal(bucket, key);
                }
                Ok(object_info(bucket, key, &chosen.meta))
            }
            None => Err(no_such_key(bucket, key)),
        }
    }

    /// Writes a small record atomically on drive `slot`: through `tmp/`, then renamed over
    /// `target`, whose folder must exist.
    pub(crate) async fn write_record(
        &self,
        slot: usize,
        target: &DrivePath,
        raw: Vec<u8>,
    ) -> io::Result<()> {
        let drive = &self.drives[slot];
        let name = format!("record-{}", self.env.new_id());
        let result = drive
            .write_atomic(
                &system_dir(),
                &Self::tmp_root(),
                &name,
                target,
                bytes::Bytes::from(raw),
            )
            .await;
        if let Err(error) = &result {
            if crate::drive::is_not_found(error) {
                drive.suspect();
            }
        }
        result
    }

    /// Makes `dir` (strictly below `base`, which must exist) on drive `slot`, then runs
    /// `place`, which moves something into it. When a concurrent prune removed the still
    /// empty `dir` first (`NotFound`), makes it again and retries.
    pub(crate) async fn place_in_dir<T, F, Fut>(
        &self,
        slot: usize,
        base: &DrivePath,
        dir: &DrivePath,
        mut place: F,
    ) -> io::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = io::Result<T>>,
    {
        const PLACE_ATTEMPTS_MAX: usize = 8;
        let drive = &self.drives[slot];
        let mut attempt = 1;
        loop {
            if let Err(error) = drive.create_dir_below(base, dir).await {
                if crate::drive::is_not_found(&error) {
                    drive.suspect();
                }
                return Err(error);
            }
            match place().await {
                Err(error)
                    if crate::drive::is_not_found(&error) && attempt < PLACE_ATTEMPTS_MAX =>
                {
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Removes the temp folder `tmp_id` on every drive.
    pub(crate) async fn discard_tmp(&self, tmp_id: Uuid) {
        let path = Self::tmp_dir(tmp_id);
        let removals = self.drives.iter().map(|drive| {
            let path = &path;
            async move { drive.remove_any(path).await }
        });
        futures::future::join_all(removals).await;
    }
}

pub(crate) fn check_condition(
    bucket: &str,
    key: &str,
    condition: &WriteCondition,
    current: Option<&ObjectMeta>,
) -> Result<()> {
    if condition.if_none_match_any && current.is_some() {
        return Err(StorageError::PreconditionFailed);
    }
    if let Some(expected) = &condition.if_match {
        let Some(current) = current else {
            return Err(no_such_key(bucket, key));
        };
        let expected = expected.trim_matches('"');
        if expected != "*" && expected != current.etag {
            return Err(StorageError::PreconditionFailed);
        }
    }
    Ok(())
}

pub(crate) fn object_info(bucket: &str, key: &str, meta: &ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        bucket: bucket.into(),
        key: key.into(),
        size: meta.size,
        etag: meta.etag.clone(),
        modified: time::OffsetDateTime::from_unix_timestamp_nanos(meta.modified_unix_nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        content_type: meta.content_type.clone(),
        user_metadata: meta.user_metadata.clone(),
        checksums: meta.checksums.clone(),
        parts: meta.multipart_parts,
    }
}

pub(crate) fn no_such_key(bucket: &str, key: &str) -> StorageError {
    StorageError::NoSuchKey {
        bucket: bucket.into(),
        key: key.into(),
    }
}

pub(crate) fn quorum_error(drive_full: bool, alive: usize, total: usize) -> StorageError {
    if drive_full {
        StorageError::DriveFull(format!(
            "only {alive} of {total} drives could take the write"
        ))
    } else {
        StorageError::WriteQuorum(format!("only {alive} of {total} drives took the write"))
    }
}

/// A path from a bucket name or key that `Node` validated; a failure here is a bug upstream
/// turned into a clear error rather than a path outside the drive.
pub(crate) fn object_path_error(bucket: &str, key: &str, error: io::Error) -> StorageError {
    StorageError::InvalidObjectName(format!("{bucket}/{key}: {error}"))
}
