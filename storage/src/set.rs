//! One erasure set: the drives an object's shards live on, and the per-object operations
//! (write, read, delete, heal) over them.
//!
//! Invariants: shard files are written under the drive's `tmp/` and reach the object's key
//! directory only by rename, after fsync; an object version is visible only when its
//! metadata is committed on write-quorum drives; every shard byte served was verified
//! against its bitrot hash; a conditional write is decided under the key lock that commits;
//! a drive whose format stamp is gone or foreign (`DriveHealth`) is neither read nor written,
//! and writes never create a drive's folder, its system folder or a bucket folder.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use futures::StreamExt;
use lakeshare_engine::io::OpenMode;
use md5::{Digest, Md5};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::bitrot::{self, HASH_BYTES};
use crate::erasure::{block_count, block_span, Erasure, BLOCK_BYTES};
use crate::error::{Result, StorageError};
use crate::format::system_dir;
use crate::fsio::Fs;
use crate::health::DriveHealth;
use crate::locks::KeyLocks;
use crate::meta::{self, ObjectMeta, PartMeta, DATA_DIR, META_FILE};
use crate::node::{ByteRange, ByteStream, ObjectInfo, PutOptions, WriteCondition};

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
    pub(crate) damaged: bool,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HealOutcome {
    pub(crate) healed: bool,
    pub(crate) shards_rebuilt: u64,
}

pub(crate) struct ErasureSet {
    pub(crate) index: usize,
    pub(crate) drives: Vec<PathBuf>,
    pub(crate) fs: Fs,
    pub(crate) parity: usize,
    pub(crate) inline_bytes_max: usize,
    pub(crate) locks: KeyLocks,
    pub(crate) mrf: mpsc::Sender<HealTask>,
    /// Per drive slot: whether the drive still carries its stamp.
    pub(crate) health: Vec<Arc<DriveHealth>>,
}

/// Attempts to move something into a fresh folder that concurrent prunes keep removing.
const PLACE_ATTEMPTS_MAX: usize = 8;

/// The shards of one write, staged under `tmp/<tmp_id>/` on every drive.
pub(crate) struct Staged {
    pub(crate) tmp_id: String,
    pub(crate) size: u64,
    pub(crate) md5: [u8; 16],
    /// Framed shard bytes per drive slot, when the data is inline.
    pub(crate) inline: Option<Vec<Vec<u8>>>,
    /// Per drive slot: whether that drive holds its staged shard.
    pub(crate) alive: Vec<bool>,
    pub(crate) drive_full: bool,
}

impl ErasureSet {
    pub(crate) fn total(&self) -> usize {
        self.drives.len()
    }

    pub(crate) fn data_for(&self, parity: usize) -> usize {
        self.total() - parity
    }

    pub(crate) fn write_quorum(data: usize, parity: usize) -> usize {
        data + usize::from(data == parity)
    }

    pub(crate) fn key_dir(&self, slot: usize, bucket: &str, key: &str) -> PathBuf {
        self.drives[slot].join(bucket).join(key)
    }

    pub(crate) fn tmp_dir(&self, slot: usize, tmp_id: &str) -> PathBuf {
        system_dir(&self.drives[slot]).join("tmp").join(tmp_id)
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

    /// Whether drive `slot` carries its format stamp (cheap: see `DriveHealth`).
    pub(crate) async fn drive_online(&self, slot: usize) -> bool {
        self.health[slot].online(&self.fs).await
    }

    /// The folder of `bucket` on drive `slot`: the base below which writes create folders.
    pub(crate) fn bucket_dir(&self, slot: usize, bucket: &str) -> PathBuf {
        self.drives[slot].join(bucket)
    }

    /// Makes `dir` (strictly below `base`, which must exist) on drive `slot`, then runs
    /// `place`, which moves something into it. When a concurrent prune removed the still
    /// empty `dir` first (`NotFound`), makes it again and retries.
    pub(crate) async fn place_in_dir<T, F, Fut>(
        &self,
        slot: usize,
        base: &Path,
        dir: &Path,
        mut place: F,
    ) -> io::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = io::Result<T>>,
    {
        let mut attempt = 1;
        loop {
            if let Err(error) = self.fs.create_dir_below(base, dir).await {
                if is_not_found(&error) {
                    self.health[slot].suspect();
                }
                return Err(error);
            }
            match place().await {
                Err(error) if is_not_found(&error) && attempt < PLACE_ATTEMPTS_MAX => {
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    // ---- metadata -------------------------------------------------------------------------

    pub(crate) async fn read_metas(&self, bucket: &str, key: &str) -> Vec<MetaRead> {
        let reads = (0..self.total()).map(|slot| async move {
            if !self.drive_online(slot).await {
                return MetaRead::Failed;
            }
            let path = self.key_dir(slot, bucket, key).join(META_FILE);
            match self.fs.read_file(&path).await {
                Ok(raw) => match meta::decode::<ObjectMeta>(&raw) {
                    Some((meta, inline)) => MetaRead::Found {
                        meta: Box::new(meta),
                        inline,
                        raw,
                    },
                    None => MetaRead::Corrupt,
                },
                Err(error) if is_not_found(&error) => MetaRead::NotFound,
                Err(_) => MetaRead::Failed,
            }
        });
        join_all(reads).await
    }

    /// Picks the version agreed by read quorum. `Ok(None)`: the key does not exist.
    /// `check_drives` distinguishes a wiped or missing drive from a genuine "not found".
    pub(crate) async fn choose(
        &self,
        reads: &[MetaRead],
        check_drives: bool,
    ) -> Result<Option<Chosen>> {
        let mut counts: HashMap<&str, (usize, &ObjectMeta)> = HashMap::new();
        for read in reads {
            if let MetaRead::Found { meta, .. } = read {
                let entry = counts.entry(meta.version_id.as_str()).or_insert((0, meta));
                entry.0 += 1;
            }
        }
        let best = counts.values().max_by(|left, right| {
            left.0
                .cmp(&right.0)
                .then(left.1.modified_unix_nanos.cmp(&right.1.modified_unix_nanos))
        });
        let default_data = self.data_for(self.parity).max(1);
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
                let damaged = count < self.total();
                return Ok(Some(Chosen {
                    meta: best.clone(),
                    copies,
                    damaged,
                }));
            }
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

    // ---- writes ---------------------------------------------------------------------------

    /// Streams `body` into framed shard files `tmp/<tmp_id>/<file_rel>` on every drive,
    /// block by block; keeps the shards in memory instead when `allow_inline` and they fit.
    pub(crate) async fn stage(
        &self,
        mut body: ByteStream,
        erasure: &Erasure,
        distribution: &[usize],
        file_rel: &str,
        allow_inline: bool,
    ) -> Result<Staged> {
        let tmp_id = uuid::Uuid::new_v4().to_string();
        let total = self.total();
        let quorum = Self::write_quorum(erasure.data, erasure.parity);
        let mut md5 = Md5::new();
        let mut size: u64 = 0;
        let mut pending = BytesMut::new();
        let mut files: Option<Vec<Option<Arc<File>>>> = None;
        let mut drive_full = false;
        let mut offset: u64 = 0;
        let mut finished = false;
        let outcome: Result<Option<Vec<Vec<u8>>>> = async {
            loop {
                while !finished && (pending.len() as u64) < BLOCK_BYTES {
                    match body.next().await {
                        Some(Ok(chunk)) => {
                            md5.update(&chunk);
                            size += chunk.len() as u64;
                            pending.extend_from_slice(&chunk);
                        }
                        Some(Err(error)) => return Err(StorageError::Body(error.to_string())),
                        None => finished = true,
                    }
                }
                let take = pending.len().min(BLOCK_BYTES as usize);
                let block = pending.split_to(take);
                if finished && files.is_none() && allow_inline {
                    let shards = frame_shards(erasure, &block)?;
                    if shards
                        .first()
                        .is_none_or(|shard| shard.len() <= self.inline_bytes_max)
                    {
                        return Ok(Some(by_drive(shards, distribution)));
                    }
                }
                if files.is_none() {
                    files = Some(self.open_staging(&tmp_id, file_rel).await);
                }
                let Some(open_files) = files.as_mut() else {
                    return Err(StorageError::Internal("staging files vanished".into()));
                };
                if !block.is_empty() {
                    let shards = by_drive(frame_shards(erasure, &block)?, distribution);
                    let frame_len = shards[0].len() as u64;
                    let writes = open_files
                        .iter()
                        .zip(shards)
                        .map(|(file, shard)| async move {
                            match file {
                                Some(file) => {
                                    Some(self.fs.write_at(file, offset, Bytes::from(shard)).await)
                                }
                                None => None,
                            }
                        });
                    let results = join_all(writes).await;
                    for (slot, result) in results.into_iter().enumerate() {
                        if let Some(Err(error)) = result {
                            drive_full |= error.kind() == io::ErrorKind::StorageFull;
                            tracing::warn!(
                                drive = %self.drives[slot].display(),
                                "shard write failed: {error}"
                            );
                            open_files[slot] = None;
                        }
                    }
                    offset += frame_len;
                }
                let alive = open_files.iter().filter(|file| file.is_some()).count();
                if alive < quorum {
                    return Err(quorum_error(drive_full, alive, total));
                }
                if finished && pending.is_empty() {
                    let syncs = open_files.iter().map(|file| async move {
                        match file {
                            Some(file) => self.fs.fsync(file).await.is_ok(),
                            None => false,
                        }
                    });
                    let synced = join_all(syncs).await;
                    for (slot, ok) in synced.into_iter().enumerate() {
                        if !ok {
                            open_files[slot] = None;
                        }
                    }
                    let alive = open_files.iter().filter(|file| file.is_some()).count();
                    if alive < quorum {
                        return Err(quorum_error(drive_full, alive, total));
                    }
                    return Ok(None);
                }
            }
        }
        .await;
        match outcome {
            Ok(inline) => {
                let alive = match (&inline, &files) {
                    (Some(_), _) => vec![true; total],
                    (None, Some(files)) => files.iter().map(Option::is_some).collect(),
                    (None, None) => vec![false; total],
                };
                Ok(Staged {
                    tmp_id,
                    size,
                    md5: md5.finalize().into(),
                    inline,
                    alive,
                    drive_full,
                })
            }
            Err(error) => {
                self.discard_tmp(&tmp_id).await;
                Err(error)
            }
        }
    }

    async fn open_staging(&self, tmp_id: &str, file_rel: &str) -> Vec<Option<Arc<File>>> {
        let opens = (0..self.total()).map(|slot| async move {
            if !self.drive_online(slot).await {
                return None;
            }
            let path = self.tmp_dir(slot, tmp_id).join(file_rel);
            let parent = path.parent()?.to_path_buf();
            let system = system_dir(&self.drives[slot]);
            if let Err(error) = self.fs.create_dir_below(&system, &parent).await {
                if is_not_found(&error) {
                    self.health[slot].suspect();
                }
                tracing::warn!(drive = %self.drives[slot].display(), "staging dir: {error}");
                return None;
            }
            match self.fs.open(&path, OpenMode::CreateTruncate).await {
                Ok(file) => Some(file),
                Err(error) => {
                    tracing::warn!(drive = %self.drives[slot].display(), "staging file: {error}");
                    None
                }
            }
        });
        join_all(opens).await
    }

    pub(crate) async fn discard_tmp(&self, tmp_id: &str) {
        let removals = (0..self.total()).map(|slot| async move {
            self.fs.remove_any(&self.tmp_dir(slot, tmp_id)).await;
        });
        join_all(removals).await;
    }

    /// Single PUT (and the system area, with `parity` raised).
    pub(crate) async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: ByteStream,
        options: PutOptions,
        parity: usize,
    ) -> Result<ObjectInfo> {
        let erasure = Erasure::new(self.data_for(parity), parity)?;
        let distribution = self.distribution(bucket, key);
        let data_dir = uuid::Uuid::new_v4().to_string();
        let file_rel = format!("{data_dir}/part.1");
        let staged = self
            .stage(body, &erasure, &distribution, &file_rel, true)
            .await?;
        let etag = hex::encode(staged.md5);
        let meta = ObjectMeta {
            version_id: uuid::Uuid::new_v4().to_string(),
            size: staged.size,
            etag: etag.clone(),
            modified_unix_nanos: OffsetDateTime::now_utc().unix_timestamp_nanos(),
            content_type: options.content_type,
            user_metadata: options.user_metadata,
            checksums: options.checksums,
            data: erasure.data,
            parity,
            block_bytes: BLOCK_BYTES,
            shard_index: 0,
            distribution,
            data_dir: staged.inline.is_none().then_some(data_dir),
            parts: vec![PartMeta {
                number: 1,
                size: staged.size,
                etag,
            }],
            multipart_parts: 0,
        };
        let staged_dirs = StagedDirs::Tmp(staged.tmp_id.clone());
        let result = self
            .commit(bucket, key, &meta, &staged, staged_dirs, &options.condition)
            .await;
        self.discard_tmp(&staged.tmp_id).await;
        result.map(|()| object_info(bucket, key, &meta))
    }

    /// Under the key lock: checks `condition`, then moves the staged data dir and the new
    /// metadata into place on every live drive; undoes all of it without write quorum.
    pub(crate) async fn commit(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        staged: &Staged,
        dirs: StagedDirs,
        condition: &WriteCondition,
    ) -> Result<()> {
        let quorum = Self::write_quorum(meta.data, meta.parity);
        let _guard = self.locks.lock(&format!("{bucket}/{key}")).await;
        let previous = self.read_metas(bucket, key).await;
        let conditional = condition.if_none_match_any || condition.if_match.is_some();
        if conditional {
            let current = self.choose(&previous, true).await?;
            check_condition(
                bucket,
                key,
                condition,
                current.as_ref().map(|chosen| &chosen.meta),
            )?;
        }
        let mut inverse = vec![0usize; self.total()];
        for (shard, &slot) in meta.distribution.iter().enumerate() {
            inverse[slot] = shard;
        }
        let commits = (0..self.total()).map(|slot| {
            let dirs = &dirs;
            let inverse = &inverse;
            async move {
                if !staged.alive[slot] {
                    return Err(io::Error::other("drive failed during the write"));
                }
                if !self.drive_online(slot).await {
                    return Err(io::Error::other("drive is offline"));
                }
                let bucket_dir = self.bucket_dir(slot, bucket);
                let key_dir = self.key_dir(slot, bucket, key);
                if let Some(data_dir) = &meta.data_dir {
                    let source = dirs.data_dir_path(self, slot, data_dir);
                    let holder = key_dir.join(DATA_DIR);
                    let target = holder.join(data_dir);
                    self.place_in_dir(slot, &bucket_dir, &holder, || {
                        self.fs.rename(&source, &target)
                    })
                    .await?;
                }
                let shard_index = inverse[slot];
                let inline: &[u8] = match &staged.inline {
                    Some(shards) => &shards[slot],
                    None => &[],
                };
                let copy = ObjectMeta {
                    shard_index,
                    ..meta.clone()
                };
                self.place_in_dir(slot, &bucket_dir, &key_dir, || {
                    self.write_meta(slot, &key_dir, &copy, inline)
                })
                .await
            }
        });
        let results = join_all(commits).await;
        let committed = results.iter().filter(|result| result.is_ok()).count();
        let drive_full = staged.drive_full
            || results.iter().any(
                |result| matches!(result, Err(error) if error.kind() == io::ErrorKind::StorageFull),
            );
        if committed < quorum {
            self.undo_commit(bucket, key, meta, &previous, &results)
                .await;
            return Err(quorum_error(drive_full, committed, self.total()));
        }
        // Old data dirs of the replaced version.
        for (slot, read) in previous.iter().enumerate() {
            if let MetaRead::Found { meta: old, .. } = read {
                if let Some(old_dir) = &old.data_dir {
                    if Some(old_dir) != meta.data_dir.as_ref() {
                        let path = self.key_dir(slot, bucket, key).join(DATA_DIR).join(old_dir);
                        self.fs.remove_any(&path).await;
                    }
                }
            }
        }
        if committed < self.total() {
            self.queue_heal(bucket, key);
        }
        Ok(())
    }

    async fn undo_commit(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        previous: &[MetaRead],
        results: &[io::Result<()>],
    ) {
        for (slot, result) in results.iter().enumerate() {
            let key_dir = self.key_dir(slot, bucket, key);
            if let Some(data_dir) = &meta.data_dir {
                self.fs
                    .remove_any(&key_dir.join(DATA_DIR).join(data_dir))
                    .await;
            }
            if result.is_err() {
                continue;
            }
            match &previous[slot] {
                MetaRead::Found { raw, .. } => {
                    let _ = self.write_raw_meta(slot, &key_dir, raw.clone()).await;
                }
                _ => {
                    let _ = self.fs.remove_file(&key_dir.join(META_FILE)).await;
                    self.fs
                        .prune_empty_parents(&key_dir, &self.drives[slot].join(bucket))
                        .await;
                }
            }
        }
    }

    pub(crate) async fn write_meta(
        &self,
        slot: usize,
        key_dir: &Path,
        meta: &ObjectMeta,
        inline: &[u8],
    ) -> io::Result<()> {
        self.write_raw_meta(slot, key_dir, meta::encode(meta, inline))
            .await
    }

    /// Writes a record to `tmp/` and renames it over `key_dir/lakeshare.meta`.
    pub(crate) async fn write_raw_meta(
        &self,
        slot: usize,
        key_dir: &Path,
        raw: Vec<u8>,
    ) -> io::Result<()> {
        self.write_record(slot, &key_dir.join(META_FILE), raw).await
    }

    /// Writes any small file atomically: to `tmp/`, fsync, rename over `target`. The
    /// target's folder must exist; `tmp/` is made again when missing, but never the drive's
    /// system folder.
    pub(crate) async fn write_record(
        &self,
        slot: usize,
        target: &Path,
        raw: Vec<u8>,
    ) -> io::Result<()> {
        let system = system_dir(&self.drives[slot]);
        let tmp = system.join("tmp");
        let staged = tmp.join(format!("record-{}", uuid::Uuid::new_v4()));
        let raw = Bytes::from(raw);
        if let Err(error) = self.fs.write_file_synced(&staged, raw.clone()).await {
            if !is_not_found(&error) {
                return Err(error);
            }
            if let Err(error) = self.fs.create_dir_below(&system, &tmp).await {
                self.health[slot].suspect();
                return Err(error);
            }
            self.fs.write_file_synced(&staged, raw).await?;
        }
        if let Err(error) = self.fs.rename(&staged, target).await {
            let _ = self.fs.remove_file(&staged).await;
            return Err(error);
        }
        Ok(())
    }

    // ---- delete ---------------------------------------------------------------------------

    pub(crate) async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let _guard = self.locks.lock(&format!("{bucket}/{key}")).await;
        let removals = (0..self.total()).map(|slot| async move {
            if !self.drive_online(slot).await {
                return Err(io::Error::other("drive is offline"));
            }
            let key_dir = self.key_dir(slot, bucket, key);
            let outcome = match self.fs.remove_file(&key_dir.join(META_FILE)).await {
                Err(error) if !is_not_found(&error) => Err(error),
                _ => Ok(()),
            };
            self.fs.remove_any(&key_dir.join(DATA_DIR)).await;
            self.fs
                .prune_empty_parents(&key_dir, &self.drives[slot].join(bucket))
                .await;
            outcome
        });
        let results = join_all(removals).await;
        let removed = results.iter().filter(|result| result.is_ok()).count();
        if removed < self.total() / 2 + 1 {
            return Err(StorageError::WriteQuorum(format!("delete {bucket}/{key}")));
        }
        Ok(())
    }

    // ---- reads ----------------------------------------------------------------------------

    pub(crate) async fn get(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<(ObjectInfo, Option<ByteRange>, ByteStream)> {
        let reads = self.read_metas(bucket, key).await;
        let chosen = self
            .choose(&reads, true)
            .await?
            .ok_or_else(|| no_such_key(bucket, key))?;
        let info = object_info(bucket, key, &chosen.meta);
        let size = chosen.meta.size;
        let resolved = match range {
            None => None,
            Some((first, last)) => {
                let last = last.unwrap_or(u64::MAX).min(size.saturating_sub(1));
                if first >= size || first > last {
                    return Err(StorageError::InvalidArgument(format!(
                        "range {first}-{last} is outside an object of {size} bytes"
                    )));
                }
                Some(ByteRange { first, last })
            }
        };
        let plan = read_plan(&chosen.meta, resolved);
        let mut reader = ObjectReader::new(self.clone(), bucket, key, chosen)?;
        let mut steps = plan.into_iter();
        // The first block is read before answering, so quorum errors are errors, not a
        // broken body.
        let first = match steps.next() {
            Some(step) => Some(reader.read_step(step).await?),
            None => None,
        };
        let (mut sender, receiver) = futures::channel::mpsc::channel::<io::Result<Bytes>>(2);
        tokio::spawn(async move {
            use futures::SinkExt;
            if let Some(first) = first {
                if sender.send(Ok(first)).await.is_err() {
                    return;
                }
            }
            for step in steps {
                match reader.read_step(step).await {
                    Ok(bytes) => {
                        if sender.send(Ok(bytes)).await.is_err() {
                            break;
                        }
                    }
                    Err(error) => {
                        let _ = sender.send(Err(io::Error::other(error.to_string()))).await;
                        break;
                    }
                }
            }
            reader.finish();
        });
        Ok((info, resolved, Box::pin(receiver)))
    }

    // ---- heal -----------------------------------------------------------------------------

    /// Rebuilds missing or corrupt shards and metadata copies of one object on the drives of
    /// this set that are online; purges an object left on fewer drives than it needs.
    pub(crate) async fn heal_object(&self, bucket: &str, key: &str) -> Result<HealOutcome> {
        let _guard = self.locks.lock(&format!("{bucket}/{key}")).await;
        let reads = self.read_metas(bucket, key).await;
        let chosen = match self.choose(&reads, true).await {
            Ok(Some(chosen)) => chosen,
            Ok(None) => {
                let leftovers = reads
                    .iter()
                    .any(|read| matches!(read, MetaRead::Found { .. } | MetaRead::Corrupt));
                if leftovers {
                    self.purge_locked(bucket, key).await;
                    return Ok(HealOutcome {
                        healed: true,
                        shards_rebuilt: 0,
                    });
                }
                return Ok(HealOutcome::default());
            }
            Err(error) => return Err(error),
        };
        let meta = chosen.meta.clone();
        let erasure = Erasure::new(meta.data, meta.parity)?;
        let mut targets: Vec<usize> = Vec::new();
        for slot in 0..self.total() {
            if chosen.copies[slot].is_none() && self.drive_online(slot).await {
                targets.push(slot);
            }
        }
        // Verify every block of every agreeing copy.
        let sources = self.sources(bucket, key, &chosen);
        let mut bad_shards = vec![false; erasure.total()];
        for part in &meta.parts {
            for block in 0..block_count(part.size) {
                let span = block_span(&erasure, part.size, block);
                for shard in 0..erasure.total() {
                    if bad_shards[shard] || matches!(sources[shard], ShardSource::Missing) {
                        continue;
                    }
                    if read_shard_block(&self.fs, &sources[shard], None, part.number, span)
                        .await
                        .1
                        .is_none()
                    {
                        bad_shards[shard] = true;
                    }
                }
            }
        }
        for (shard, bad) in bad_shards.iter().enumerate() {
            let slot = meta.distribution[shard];
            if *bad && !targets.contains(&slot) {
                targets.push(slot);
            }
        }
        if targets.is_empty() {
            return Ok(HealOutcome::default());
        }
        let mut healthy = sources.clone();
        for &slot in &targets {
            if let Some(shard) = meta.distribution.iter().position(|&held| held == slot) {
                healthy[shard] = ShardSource::Missing;
            }
        }
        let target_shards: Vec<(usize, usize)> = targets
            .iter()
            .filter_map(|&slot| {
                meta.distribution
                    .iter()
                    .position(|&held| held == slot)
                    .map(|shard| (slot, shard))
            })
            .collect();
        // Rebuild into tmp (or memory for inline data).
        let tmp_id = uuid::Uuid::new_v4().to_string();
        let mut inline_out: HashMap<usize, Vec<u8>> = HashMap::new();
        let mut files: HashMap<(usize, u32), Arc<File>> = HashMap::new();
        let mut failed_slots: Vec<usize> = Vec::new();
        let outcome: Result<()> = async {
            for part in &meta.parts {
                let mut offset: u64 = 0;
                for block in 0..block_count(part.size) {
                    let span = block_span(&erasure, part.size, block);
                    let mut shards: Vec<Option<Vec<u8>>> = vec![None; erasure.total()];
                    for (shard, slot_source) in healthy.iter().enumerate() {
                        if !matches!(slot_source, ShardSource::Missing) {
                            shards[shard] =
                                read_shard_block(&self.fs, slot_source, None, part.number, span)
                                    .await
                                    .1;
                        }
                    }
                    let present = shards.iter().filter(|shard| shard.is_some()).count();
                    if present < erasure.data {
                        return Err(StorageError::ReadQuorum(format!("heal {bucket}/{key}")));
                    }
                    erasure.reconstruct_all(&mut shards)?;
                    for &(slot, shard) in &target_shards {
                        if failed_slots.contains(&slot) {
                            continue;
                        }
                        let mut framed = Vec::with_capacity(HASH_BYTES + span.shard_len);
                        let Some(block_bytes) = &shards[shard] else {
                            return Err(StorageError::Internal("reconstruct left a gap".into()));
                        };
                        bitrot::frame_into(&mut framed, block_bytes);
                        if meta.data_dir.is_none() {
                            inline_out
                                .entry(slot)
                                .or_default()
                                .extend_from_slice(&framed);
                            continue;
                        }
                        let file = match files.get(&(slot, part.number)) {
                            Some(file) => file.clone(),
                            None => {
                                match self.open_heal_file(slot, &tmp_id, &meta, part.number).await {
                                    Ok(file) => {
                                        files.insert((slot, part.number), file.clone());
                                        file
                                    }
                                    Err(_) => {
                                        failed_slots.push(slot);
                                        continue;
                                    }
                                }
                            }
                        };
                        if self
                            .fs
                            .write_at(&file, offset, Bytes::from(framed))
                            .await
                            .is_err()
                        {
                            failed_slots.push(slot);
                        }
                    }
                    offset += (HASH_BYTES + span.shard_len) as u64;
                }
                // Empty parts still need their (empty) shard files.
                if meta.data_dir.is_some() && part.size == 0 {
                    for &(slot, _) in &target_shards {
                        if self
                            .open_heal_file(slot, &tmp_id, &meta, part.number)
                            .await
                            .is_err()
                        {
                            failed_slots.push(slot);
                        }
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(error) = outcome {
            self.discard_tmp(&tmp_id).await;
            return Err(error);
        }
        for file in files.values() {
            let _ = self.fs.fsync(file).await;
        }
        let mut rebuilt = 0u64;
        for &(slot, shard) in &target_shards {
            if failed_slots.contains(&slot) {
                continue;
            }
            let key_dir = self.key_dir(slot, bucket, key);
            let bucket_dir = self.bucket_dir(slot, bucket);
            let placed: io::Result<()> = async {
                if let Some(data_dir) = &meta.data_dir {
                    let holder = key_dir.join(DATA_DIR);
                    self.fs.remove_any(&holder).await;
                    let source = self.tmp_dir(slot, &tmp_id).join(data_dir);
                    let target = holder.join(data_dir);
                    self.place_in_dir(slot, &bucket_dir, &holder, || {
                        self.fs.rename(&source, &target)
                    })
                    .await?;
                }
                let inline = inline_out.remove(&slot).unwrap_or_default();
                let copy = ObjectMeta {
                    shard_index: shard,
                    ..meta.clone()
                };
                self.place_in_dir(slot, &bucket_dir, &key_dir, || {
                    self.write_meta(slot, &key_dir, &copy, &inline)
                })
                .await
            }
            .await;
            match placed {
                Ok(()) => rebuilt += 1,
                Err(error) => tracing::warn!(
                    drive = %self.drives[slot].display(),
                    "heal {bucket}/{key}: {error}"
                ),
            }
        }
        self.discard_tmp(&tmp_id).await;
        Ok(HealOutcome {
            healed: rebuilt > 0,
            shards_rebuilt: rebuilt,
        })
    }

    async fn open_heal_file(
        &self,
        slot: usize,
        tmp_id: &str,
        meta: &ObjectMeta,
        part_number: u32,
    ) -> io::Result<Arc<File>> {
        let data_dir = meta.data_dir.as_deref().unwrap_or_default();
        let dir = self.tmp_dir(slot, tmp_id).join(data_dir);
        self.fs
            .create_dir_below(&system_dir(&self.drives[slot]), &dir)
            .await?;
        self.fs
            .open(
                &dir.join(format!("part.{part_number}")),
                OpenMode::CreateTruncate,
            )
            .await
    }

    async fn purge_locked(&self, bucket: &str, key: &str) {
        for slot in 0..self.total() {
            if !self.drive_online(slot).await {
                continue;
            }
            let key_dir = self.key_dir(slot, bucket, key);
            let _ = self.fs.remove_file(&key_dir.join(META_FILE)).await;
            self.fs.remove_any(&key_dir.join(DATA_DIR)).await;
            self.fs
                .prune_empty_parents(&key_dir, &self.drives[slot].join(bucket))
                .await;
        }
    }

    /// Where each shard of the chosen version can be read, by shard index.
    fn sources(&self, bucket: &str, key: &str, chosen: &Chosen) -> Vec<ShardSource> {
        let mut sources = vec![ShardSource::Missing; chosen.meta.distribution.len()];
        for (slot, copy) in chosen.copies.iter().enumerate() {
            let Some((copy, inline)) = copy else { continue };
            let Some(source) = sources.get_mut(copy.shard_index) else {
                continue;
            };
            if chosen.meta.distribution.get(copy.shard_index) != Some(&slot) {
                continue;
            }
            *source = match &copy.data_dir {
                None => ShardSource::Inline(Arc::new(inline.clone())),
                Some(data_dir) => ShardSource::Dir(
                    self.key_dir(slot, bucket, key)
                        .join(DATA_DIR)
                        .join(data_dir),
                ),
            };
        }
        sources
    }
}

/// Where the staged data dir of a commit lives on each drive.
pub(crate) enum StagedDirs {
    /// `tmp/<tmp_id>/<data_dir>`.
    Tmp(String),
    /// A multipart upload's data dir: `<upload_dir>/<data_dir>` per drive slot.
    Upload(Vec<PathBuf>),
}

impl StagedDirs {
    fn data_dir_path(&self, set: &ErasureSet, slot: usize, data_dir: &str) -> PathBuf {
        match self {
            StagedDirs::Tmp(tmp_id) => set.tmp_dir(slot, tmp_id).join(data_dir),
            StagedDirs::Upload(dirs) => dirs[slot].join(data_dir),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum ShardSource {
    Missing,
    Inline(Arc<Vec<u8>>),
    Dir(PathBuf),
}

/// One step of a read: a block of a part, and the slice of it to send.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadStep {
    part_index: usize,
    block: u64,
    slice_start: usize,
    slice_end: usize,
}

fn read_plan(meta: &ObjectMeta, range: Option<ByteRange>) -> Vec<ReadStep> {
    let (first, last) = match range {
        Some(range) => (range.first, range.last),
        None if meta.size == 0 => return Vec::new(),
        None => (0, meta.size - 1),
    };
    let mut steps = Vec::new();
    let mut part_start = 0u64;
    for (part_index, part) in meta.parts.iter().enumerate() {
        let part_end = part_start + part.size; // exclusive
        if part.size > 0 && first < part_end && last >= part_start {
            let local_first = first.max(part_start) - part_start;
            let local_last = last.min(part_end - 1) - part_start;
            for block in local_first / BLOCK_BYTES..=local_last / BLOCK_BYTES {
                let block_start = block * BLOCK_BYTES;
                let block_end = (block_start + BLOCK_BYTES).min(part.size) - 1;
                let slice_first = local_first.max(block_start) - block_start;
                let slice_last = local_last.min(block_end) - block_start;
                steps.push(ReadStep {
                    part_index,
                    block,
                    slice_start: slice_first as usize,
                    slice_end: slice_last as usize + 1,
                });
            }
        }
        part_start = part_end;
    }
    steps
}

/// Reads verified blocks of one object version, preferring data shards.
struct ObjectReader {
    set: Arc<ErasureSet>,
    bucket: String,
    key: String,
    meta: ObjectMeta,
    erasure: Erasure,
    sources: Vec<ShardSource>,
    files: HashMap<(usize, u32), Arc<File>>,
    bad: Vec<bool>,
    damaged: bool,
}

impl ObjectReader {
    fn new(set: Arc<ErasureSet>, bucket: &str, key: &str, chosen: Chosen) -> Result<ObjectReader> {
        let erasure = Erasure::new(chosen.meta.data, chosen.meta.parity)?;
        let sources = set.sources(bucket, key, &chosen);
        let bad = sources
            .iter()
            .map(|source| matches!(source, ShardSource::Missing))
            .collect();
        Ok(ObjectReader {
            set,
            bucket: bucket.into(),
            key: key.into(),
            meta: chosen.meta,
            erasure,
            sources,
            files: HashMap::new(),
            bad,
            damaged: chosen.damaged,
        })
    }

    async fn read_step(&mut self, step: ReadStep) -> Result<Bytes> {
        let part = &self.meta.parts[step.part_index];
        let (part_number, part_size) = (part.number, part.size);
        let span = block_span(&self.erasure, part_size, step.block);
        let total = self.erasure.total();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
        let mut next_candidate = 0usize;
        loop {
            let present = shards.iter().filter(|shard| shard.is_some()).count();
            if present >= self.erasure.data {
                break;
            }
            let mut batch = Vec::new();
            while batch.len() < self.erasure.data - present && next_candidate < total {
                if !self.bad[next_candidate] {
                    batch.push(next_candidate);
                }
                next_candidate += 1;
            }
            if batch.is_empty() {
                self.damaged = true;
                self.set.queue_heal(&self.bucket, &self.key);
                return Err(StorageError::ReadQuorum(format!(
                    "{}/{}: {present} good shards of {} needed",
                    self.bucket, self.key, self.erasure.data
                )));
            }
            let reads = batch.iter().map(|&shard| {
                let cached = self.files.get(&(shard, part_number)).cloned();
                let source = &self.sources[shard];
                let fs = &self.set.fs;
                async move { read_shard_block(fs, source, cached, part_number, span).await }
            });
            let results = join_all(reads).await;
            for (&shard, (file, block)) in batch.iter().zip(results) {
                if let Some(file) = file {
                    self.files.insert((shard, part_number), file);
                }
                match block {
                    Some(block) => shards[shard] = Some(block),
                    None => {
                        self.bad[shard] = true;
                        self.damaged = true;
                    }
                }
            }
        }
        let block = self.erasure.decode_block(&mut shards, span.block_bytes)?;
        Ok(Bytes::from(block).slice(step.slice_start..step.slice_end))
    }

    fn finish(self) {
        if self.damaged {
            self.set.queue_heal(&self.bucket, &self.key);
        }
    }
}

/// Reads and verifies one framed shard block; `None` when missing, short or corrupt.
async fn read_shard_block(
    fs: &Fs,
    source: &ShardSource,
    cached: Option<Arc<File>>,
    part_number: u32,
    span: crate::erasure::BlockSpan,
) -> (Option<Arc<File>>, Option<Vec<u8>>) {
    let framed_len = HASH_BYTES + span.shard_len;
    match source {
        ShardSource::Missing => (None, None),
        ShardSource::Inline(bytes) => {
            let start = span.file_offset as usize;
            let framed = bytes.get(start..start + framed_len);
            let block = framed.and_then(|framed| bitrot::verify(framed, span.shard_len));
            (None, block.map(<[u8]>::to_vec))
        }
        ShardSource::Dir(dir) => {
            let file = match cached {
                Some(file) => file,
                None => match fs
                    .open(&dir.join(format!("part.{part_number}")), OpenMode::Read)
                    .await
                {
                    Ok(file) => file,
                    Err(_) => return (None, None),
                },
            };
            let framed = fs.read_at(&file, span.file_offset, framed_len).await;
            let block = framed
                .ok()
                .and_then(|framed| bitrot::verify(&framed, span.shard_len).map(<[u8]>::to_vec));
            (Some(file), block)
        }
    }
}

/// Frames each shard of one block: `[hash][shard]`, indexed by shard.
fn frame_shards(erasure: &Erasure, block: &[u8]) -> Result<Vec<Vec<u8>>> {
    if block.is_empty() {
        return Ok(vec![Vec::new(); erasure.total()]);
    }
    let shards = erasure.encode_block(block)?;
    Ok(shards
        .into_iter()
        .map(|shard| {
            let mut framed = Vec::with_capacity(HASH_BYTES + shard.len());
            bitrot::frame_into(&mut framed, &shard);
            framed
        })
        .collect())
}

/// Reorders per-shard buffers into per-drive-slot buffers.
fn by_drive(shards: Vec<Vec<u8>>, distribution: &[usize]) -> Vec<Vec<u8>> {
    let mut slots: Vec<Vec<u8>> = vec![Vec::new(); shards.len()];
    for (shard, bytes) in shards.into_iter().enumerate() {
        slots[distribution[shard]] = bytes;
    }
    slots
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
        modified: OffsetDateTime::from_unix_timestamp_nanos(meta.modified_unix_nanos)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
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

pub(crate) fn is_not_found(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.kind() == io::ErrorKind::NotADirectory
}
