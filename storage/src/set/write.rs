//! Writes: a body is staged block by block into framed shard files under every drive's
//! `tmp/` (or kept in memory when small enough to inline), then committed under the object
//! lock: the condition is checked, the data dir is renamed into the key folder and the new
//! metadata written, on every live drive. A commit that misses write quorum is undone on
//! the drives it reached, so a failed write leaves the previous version in place.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use futures::StreamExt;
use lakeshare_engine::io::{DriveFile, OpenMode};
use md5::{Digest, Md5};
use uuid::Uuid;

use super::{check_condition, object_info, object_path_error, quorum_error, ErasureSet, MetaRead};
use crate::bitrot::{self, ShardId, HASH_BYTES};
use crate::drive::DrivePath;
use crate::erasure::Erasure;
use crate::error::{Result, StorageError};
use crate::format::system_dir;
use crate::meta::{self, part_file_name, ObjectMeta, PartMeta, ReplacedVersion};
use crate::object::{ByteStream, ObjectInfo, PutOptions, WriteCondition};

/// The shards of one write, staged under `tmp/<tmp_id>/` on every drive.
pub(crate) struct Staged {
    pub(crate) tmp_id: Uuid,
    pub(crate) size: u64,
    pub(crate) md5: [u8; 16],
    /// Framed shard bytes per drive slot, when the data is inline.
    pub(crate) inline: Option<Vec<Vec<u8>>>,
    /// Per drive slot: whether that drive holds its staged shard.
    pub(crate) alive: Vec<bool>,
    pub(crate) drive_full: bool,
}

/// Where the data dir of a commit comes from on each drive.
pub(crate) enum StagedDirs {
    /// `tmp/<tmp_id>/<data dir>` (a single PUT).
    Tmp(Uuid),
    /// A multipart upload's data dir, per drive slot (moved back if the commit fails).
    Upload(Vec<DrivePath>),
}

impl StagedDirs {
    fn source(&self, slot: usize, data_dir: Uuid) -> DrivePath {
        match self {
            StagedDirs::Tmp(tmp_id) => ErasureSet::tmp_dir(*tmp_id).join_id(data_dir),
            StagedDirs::Upload(dirs) => dirs[slot].join_id(data_dir),
        }
    }
}

/// What one part of a write is: the file the shards go to and the identity they carry.
pub(crate) struct StagePlan<'a> {
    pub(crate) erasure: &'a Erasure,
    pub(crate) distribution: &'a [usize],
    pub(crate) part_id: Uuid,
    /// The staged file, relative to `tmp/<tmp_id>/` (`<data dir>/part.N.<id>` or `part.N.<id>`).
    pub(crate) file: String,
    pub(crate) allow_inline: bool,
}

impl ErasureSet {
    /// Streams `body` into framed shard files `tmp/<tmp_id>/<plan.file>` on every drive,
    /// block by block; keeps the shards in memory instead when inlining is allowed and they
    /// fit. On success the files and their folder are durable.
    pub(crate) async fn stage(&self, mut body: ByteStream, plan: StagePlan<'_>) -> Result<Staged> {
        let erasure = plan.erasure;
        let tmp_id = self.env.new_id();
        let total = self.total();
        let quorum = Self::write_quorum(erasure.data, erasure.parity);
        let block_bytes = erasure.block_bytes as usize;
        let mut md5 = Md5::new();
        let mut size: u64 = 0;
        let mut pending = BytesMut::new();
        let mut files: Option<Vec<Option<DriveFile>>> = None;
        let mut drive_full = false;
        let mut offset: u64 = 0;
        let mut block_index: u64 = 0;
        let mut finished = false;
        let staged_file = Self::tmp_dir(tmp_id)
            .join_all(&plan.file)
            .map_err(|error| StorageError::Internal(format!("staged file: {error}")))?;
        let outcome: Result<Option<Vec<Vec<u8>>>> = async {
            loop {
                while !finished && pending.len() < block_bytes {
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
                let take = pending.len().min(block_bytes);
                let block = pending.split_to(take);
                if finished && files.is_none() && plan.allow_inline {
                    let shards = frame_shards(erasure, plan.part_id, 0, &block)?;
                    if shards
                        .first()
                        .is_none_or(|shard| shard.len() <= self.layout.inline_bytes_max)
                    {
                        return Ok(Some(by_drive(shards, plan.distribution)));
                    }
                }
                if files.is_none() {
                    files = Some(self.open_staging(&staged_file).await);
                }
                let Some(open_files) = files.as_mut() else {
                    return Err(StorageError::Internal("staging files vanished".into()));
                };
                if !block.is_empty() {
                    let shards = by_drive(
                        frame_shards(erasure, plan.part_id, block_index, &block)?,
                        plan.distribution,
                    );
                    let frame_len = shards[0].len() as u64;
                    let writes = open_files.iter().zip(shards).enumerate().map(
                        |(slot, (file, shard))| async move {
                            let file = file.as_ref()?;
                            Some(
                                self.drives[slot]
                                    .write_at(file, offset, Bytes::from(shard))
                                    .await,
                            )
                        },
                    );
                    let results = join_all(writes).await;
                    for (slot, result) in results.into_iter().enumerate() {
                        if let Some(Err(error)) = result {
                            drive_full |= error.kind() == io::ErrorKind::StorageFull;
                            tracing::warn!(
                                drive = %self.drives[slot].root().display(),
                                "shard write failed: {error}"
                            );
                            open_files[slot] = None;
                        }
                    }
                    offset += frame_len;
                    block_index += 1;
                }
                let alive = open_files.iter().filter(|file| file.is_some()).count();
                if alive < quorum {
                    return Err(quorum_error(drive_full, alive, total));
                }
                if finished && pending.is_empty() {
                    self.sync_staging(open_files, &staged_file).await;
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
                self.discard_tmp(tmp_id).await;
                Err(error)
            }
        }
    }

    async fn open_staging(&self, staged_file: &DrivePath) -> Vec<Option<DriveFile>> {
        let opens = (0..self.total()).map(|slot| async move {
            let drive = &self.drives[slot];
            if !drive.online().await {
                return None;
            }
            let parent = staged_file.parent()?;
            if let Err(error) = drive.create_dir_below(&system_dir(), &parent).await {
                if crate::drive::is_not_found(&error) {
                    drive.suspect();
                }
                tracing::warn!(drive = %drive.root().display(), "staging dir: {error}");
                return None;
            }
            match drive.open(staged_file, OpenMode::CreateTruncate).await {
                Ok(file) => Some(file),
                Err(error) => {
                    tracing::warn!(drive = %drive.root().display(), "staging file: {error}");
                    None
                }
            }
        });
        join_all(opens).await
    }

    /// Fsyncs every live staged file and its folder; a drive that fails drops out.
    async fn sync_staging(&self, files: &mut [Option<DriveFile>], staged_file: &DrivePath) {
        let parent = staged_file.parent();
        let syncs = files.iter().enumerate().map(|(slot, file)| {
            let parent = &parent;
            async move {
                let Some(file) = file else { return false };
                let drive = &self.drives[slot];
                if drive.fsync(file).await.is_err() {
                    return false;
                }
                match parent {
                    Some(parent) => drive.sync_dir(parent).await.is_ok(),
                    None => true,
                }
            }
        });
        for (slot, synced) in join_all(syncs).await.into_iter().enumerate() {
            if !synced {
                files[slot] = None;
            }
        }
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
        let erasure = Erasure::new(self.data_for(parity), parity, self.layout.block_bytes)?;
        let distribution = self.distribution(bucket, key);
        let data_dir = self.env.new_id();
        let part_id = self.env.new_id();
        let plan = StagePlan {
            erasure: &erasure,
            distribution: &distribution,
            part_id,
            file: format!("{data_dir}/{}", part_file_name(1, part_id)),
            allow_inline: true,
        };
        let staged = self.stage(body, plan).await?;
        let etag = hex::encode(staged.md5);
        let meta = ObjectMeta {
            version_id: self.env.new_id(),
            size: staged.size,
            etag: etag.clone(),
            modified_unix_nanos: self.env.now_utc().unix_timestamp_nanos(),
            content_type: options.content_type,
            user_metadata: options.user_metadata,
            checksums: options.checksums,
            data: erasure.data,
            parity,
            block_bytes: erasure.block_bytes,
            shard_index: 0,
            distribution,
            data_dir: staged.inline.is_none().then_some(data_dir),
            parts: vec![PartMeta {
                number: 1,
                size: staged.size,
                etag,
                id: part_id,
            }],
            multipart_parts: 0,
            upload_id: None,
            replaced: None,
        };
        let result = async {
            let _guard = self.object_locks.lock(&format!("{bucket}/{key}")).await;
            let previous = self.read_metas(bucket, key).await;
            self.check_write_condition(bucket, key, &previous, &options.condition)
                .await?;
            let dirs = StagedDirs::Tmp(staged.tmp_id);
            self.commit_locked(bucket, key, &meta, &staged, &dirs, &previous)
                .await
        }
        .await;
        self.discard_tmp(staged.tmp_id).await;
        result.map(|()| object_info(bucket, key, &meta))
    }

    /// Decides `condition` against the current version. Caller holds the object lock.
    pub(crate) async fn check_write_condition(
        &self,
        bucket: &str,
        key: &str,
        previous: &[MetaRead],
        condition: &WriteCondition,
    ) -> Result<()> {
        if !condition.if_none_match_any && condition.if_match.is_none() {
            return Ok(());
        }
        let current = self.choose(previous, true).await?;
        check_condition(
            bucket,
            key,
            condition,
            current.as_ref().map(|chosen| &chosen.meta),
        )
    }

    /// Moves the staged data dir and the new metadata into place on every live drive, then
    /// retires the data dirs of the version replaced; undoes everything without write
    /// quorum. Caller holds the object lock and read `previous` under it.
    pub(crate) async fn commit_locked(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        staged: &Staged,
        dirs: &StagedDirs,
        previous: &[MetaRead],
    ) -> Result<()> {
        let quorum = Self::write_quorum(meta.data, meta.parity);
        let bucket_dir = Self::bucket_dir(bucket).map_err(|e| object_path_error(bucket, key, e))?;
        let key_dir = Self::key_dir(bucket, key).map_err(|e| object_path_error(bucket, key, e))?;
        let holder =
            Self::data_holder(bucket, key).map_err(|e| object_path_error(bucket, key, e))?;
        let meta_path =
            Self::meta_path(bucket, key).map_err(|e| object_path_error(bucket, key, e))?;
        let mut shard_of_slot = vec![0usize; self.total()];
        for (shard, &slot) in meta.distribution.iter().enumerate() {
            shard_of_slot[slot] = shard;
        }
        let commits = (0..self.total()).map(|slot| {
            let (bucket_dir, key_dir, holder, meta_path) =
                (&bucket_dir, &key_dir, &holder, &meta_path);
            let shard_of_slot = &shard_of_slot;
            async move {
                if !staged.alive[slot] {
                    return Err(io::Error::other("drive failed during the write"));
                }
                let drive = &self.drives[slot];
                if !drive.online().await {
                    return Err(io::Error::other("drive is offline"));
                }
                if let Some(data_dir) = meta.data_dir {
                    let source = dirs.source(slot, data_dir);
                    let target = holder.join_id(data_dir);
                    self.place_in_dir(slot, bucket_dir, holder, || drive.rename(&source, &target))
                        .await?;
                }
                let inline: &[u8] = match &staged.inline {
                    Some(shards) => &shards[slot],
                    None => &[],
                };
                let copy = ObjectMeta {
                    shard_index: shard_of_slot[slot],
                    replaced: replaced_on(&previous[slot], meta.version_id),
                    ..meta.clone()
                };
                let raw = meta::encode(&copy, inline);
                self.place_in_dir(slot, bucket_dir, key_dir, || {
                    self.write_record(slot, meta_path, raw.clone())
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
            self.undo_commit(bucket, key, meta, dirs, previous, &results)
                .await;
            return Err(quorum_error(drive_full, committed, self.total()));
        }
        self.retire_replaced(bucket, key, previous, meta.data_dir)
            .await;
        if committed < self.total() {
            self.queue_heal(bucket, key);
        }
        Ok(())
    }

    /// Retires the data dirs the drives held for the versions in `previous`, except `kept`.
    pub(crate) async fn retire_replaced(
        &self,
        bucket: &str,
        key: &str,
        previous: &[MetaRead],
        kept: Option<Uuid>,
    ) {
        let mut by_dir: std::collections::BTreeMap<Uuid, Vec<_>> = Default::default();
        for (slot, read) in previous.iter().enumerate() {
            let MetaRead::Found { meta: old, .. } = read else {
                continue;
            };
            let Some(old_dir) = old.data_dir else {
                continue;
            };
            if Some(old_dir) == kept {
                continue;
            }
            if let Ok(path) = Self::data_dir_path(bucket, key, old_dir) {
                by_dir
                    .entry(old_dir)
                    .or_default()
                    .push((Arc::clone(&self.drives[slot]), path));
            }
        }
        for (data_dir, copies) in by_dir {
            self.readers.retire(data_dir, copies).await;
        }
    }

    /// Puts back what a commit without quorum changed: the previous metadata on the drives
    /// it reached, and the data dir where it came from (a multipart upload keeps its parts)
    /// or retired (a staged PUT).
    async fn undo_commit(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        dirs: &StagedDirs,
        previous: &[MetaRead],
        results: &[io::Result<()>],
    ) {
        let (Ok(key_dir), Ok(meta_path), Ok(bucket_dir)) = (
            Self::key_dir(bucket, key),
            Self::meta_path(bucket, key),
            Self::bucket_dir(bucket),
        ) else {
            return;
        };
        let mut retired = Vec::new();
        for (slot, result) in results.iter().enumerate() {
            let drive = &self.drives[slot];
            if let Some(data_dir) = meta.data_dir {
                let Ok(placed) = Self::data_dir_path(bucket, key, data_dir) else {
                    continue;
                };
                match dirs {
                    StagedDirs::Upload(_) => {
                        let source = dirs.source(slot, data_dir);
                        if drive.path_kind(&placed).await.is_ok() {
                            if let Err(error) = drive.rename(&placed, &source).await {
                                tracing::warn!(
                                    drive = %drive.root().display(),
                                    "moving an upload's parts back: {error}"
                                );
                            }
                        }
                    }
                    StagedDirs::Tmp(_) => retired.push((Arc::clone(drive), placed)),
                }
            }
            if result.is_err() {
                continue;
            }
            match &previous[slot] {
                MetaRead::Found { raw, .. } => {
                    if let Err(error) = self.write_record(slot, &meta_path, raw.clone()).await {
                        tracing::warn!(drive = %drive.root().display(), "undoing a commit: {error}");
                    }
                }
                _ => {
                    let _ = drive.remove_file(&meta_path).await;
                    let _ = drive.sync_dir(&key_dir).await;
                    drive.prune_empty_parents(&key_dir, &bucket_dir).await;
                }
            }
        }
        if let Some(data_dir) = meta.data_dir {
            self.readers.retire(data_dir, retired).await;
        }
    }
}

/// Frames each shard of one block: `[hash][shard]`, indexed by shard.
pub(crate) fn frame_shards(
    erasure: &Erasure,
    part_id: Uuid,
    block_index: u64,
    block: &[u8],
) -> Result<Vec<Vec<u8>>> {
    if block.is_empty() {
        return Ok(vec![Vec::new(); erasure.total()]);
    }
    let shards = erasure.encode_block(block)?;
    Ok(shards
        .into_iter()
        .enumerate()
        .map(|(index, shard)| {
            let mut framed = Vec::with_capacity(HASH_BYTES + shard.len());
            let id = ShardId {
                part: part_id,
                shard: index as u32,
            };
            bitrot::frame_into(&mut framed, id, block_index, &shard);
            framed
        })
        .collect())
}

/// Reorders per-shard buffers into per-drive-slot buffers.
pub(crate) fn by_drive(shards: Vec<Vec<u8>>, distribution: &[usize]) -> Vec<Vec<u8>> {
    let mut slots: Vec<Vec<u8>> = vec![Vec::new(); shards.len()];
    for (shard, bytes) in shards.into_iter().enumerate() {
        slots[distribution[shard]] = bytes;
    }
    slots
}

/// The version a drive held before this commit, kept in the new copy until the next one.
fn replaced_on(read: &MetaRead, new_version: Uuid) -> Option<Box<ReplacedVersion>> {
    match read {
        MetaRead::Found { meta, inline, .. } if meta.version_id != new_version => {
            Some(Box::new(ReplacedVersion {
                meta: ObjectMeta {
                    replaced: None,
                    ..meta.as_ref().clone()
                },
                inline: inline.clone(),
            }))
        }
        _ => None,
    }
}
