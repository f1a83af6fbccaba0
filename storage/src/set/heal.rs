//! Heal of one object: under the object lock, every block of every shard of the version the
//! quorum agrees on is verified; drives missing the version (no metadata, stale or corrupt
//! metadata, a missing bucket folder) or holding a bad shard get their shards rebuilt from
//! the good ones, into `tmp/`, then renamed into place file by file, then the metadata. Data
//! dirs and part files no metadata names are retired. An object left on fewer drives than it
//! needs is purged.
//!
//! Invariants: heal never writes a shard it did not verify or rebuild from verified shards;
//! it reports every drive it could not repair (`HealOutcome::failed_drives`).

use std::collections::BTreeMap;

use lakeshare_engine::io::{DriveFile, OpenMode};

use super::read::{read_shard_block, BlockToRead, ShardSource};
use super::{ErasureSet, MetaRead};
use crate::bitrot::{self, ShardId, HASH_BYTES};
use crate::drive::DrivePath;
use crate::erasure::{BlockSpan, Erasure};
use crate::error::{Result, StorageError};
use crate::format::system_dir;
use crate::meta::{self, ObjectMeta, PartMeta};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HealOutcome {
    pub(crate) healed: bool,
    pub(crate) shards_rebuilt: u64,
    /// Drives that needed a repair heal could not make (offline drives are not counted).
    pub(crate) failed_drives: u64,
}

impl ErasureSet {
    /// Rebuilds missing or corrupt shards and metadata copies of one object on the drives of
    /// this set that are online; purges an object left on fewer drives than it needs.
    pub(crate) async fn heal_object(&self, bucket: &str, key: &str) -> Result<HealOutcome> {
        let _guard = self.object_locks.lock(&format!("{bucket}/{key}")).await;
        let reads = self.read_metas(bucket, key).await;
        let chosen = match self.choose(&reads, true).await {
            Ok(Some(chosen)) => chosen,
            Ok(None) => {
                let leftovers = reads
                    .iter()
                    .any(|read| matches!(read, MetaRead::Found { .. } | MetaRead::Corrupt));
                if leftovers {
                    self.purge_locked(bucket, key, &reads).await;
                    return Ok(HealOutcome {
                        healed: true,
                        ..HealOutcome::default()
                    });
                }
                return Ok(HealOutcome::default());
            }
            Err(error) => return Err(error),
        };
        let meta = chosen.meta.clone();
        let erasure = Erasure::new(meta.data, meta.parity, meta.block_bytes)?;
        let mut targets: Vec<usize> = Vec::new();
        for slot in 0..self.total() {
            let stale = chosen.copies[slot].is_none() || chosen.restored[slot];
            if stale && self.drive_online(slot).await {
                targets.push(slot);
            }
        }
        // Verify every block of every agreeing copy.
        let sources = self.sources(bucket, key, &chosen);
        let mut bad_shards = vec![false; erasure.total()];
        for part in &meta.parts {
            let file_name = part.file_name();
            for block in 0..erasure.block_count(part.size) {
                let span = erasure.block_span(part.size, block);
                for shard in 0..erasure.total() {
                    if bad_shards[shard] || matches!(sources[shard], ShardSource::Missing) {
                        continue;
                    }
                    let verified = self
                        .read_verified_block(&sources[shard], part, &file_name, shard, block, span)
                        .await;
                    if verified.is_none() {
                        bad_shards[shard] = true;
                    }
                }
            }
        }
        for (shard, bad) in bad_shards.iter().enumerate() {
            let slot = meta.distribution[shard];
            if *bad && !targets.contains(&slot) && self.drive_online(slot).await {
                targets.push(slot);
            }
        }
        let mut outcome = HealOutcome::default();
        if !targets.is_empty() {
            let rebuilt = self
                .rebuild(bucket, key, &meta, &erasure, &sources, &targets)
                .await?;
            outcome.shards_rebuilt = rebuilt;
            outcome.healed = rebuilt > 0;
            outcome.failed_drives = targets.len() as u64 - rebuilt;
        }
        self.retire_replaced(bucket, key, &reads, meta.data_dir)
            .await;
        self.retire_unnamed_data_dirs(bucket, key, meta.data_dir)
            .await;
        self.drop_unnamed_part_files(bucket, key, &meta).await;
        Ok(outcome)
    }

    /// Rebuilds the shards of `targets` (drive slots) from the healthy sources; returns how
    /// many drives were repaired.
    async fn rebuild(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        erasure: &Erasure,
        sources: &[ShardSource],
        targets: &[usize],
    ) -> Result<u64> {
        // Every block is read from every shard that has one, the targets' own included: a
        // shard with one rotten block still gives its other blocks, and each block is
        // verified on its own, so a block is rebuilt while any `data` of its shards are good.
        let healthy = sources;
        let target_shards: Vec<(usize, usize)> = targets
            .iter()
            .filter_map(|&slot| {
                meta.distribution
                    .iter()
                    .position(|&held| held == slot)
                    .map(|shard| (slot, shard))
            })
            .collect();
        let tmp_id = self.env.new_id();
        let tmp = Self::tmp_dir(tmp_id);
        let mut inline_out: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let mut failed: Vec<usize> = Vec::new();
        let outcome: Result<()> = async {
            for part in &meta.parts {
                let file_name = part.file_name();
                let mut files: BTreeMap<usize, DriveFile> = BTreeMap::new();
                if meta.data_dir.is_some() {
                    for &(slot, _) in &target_shards {
                        match self.open_heal_file(slot, &tmp, &file_name).await {
                            Ok(file) => {
                                files.insert(slot, file);
                            }
                            Err(error) => {
                                tracing::warn!(
                                    drive = %self.drives[slot].root().display(),
                                    "heal {bucket}/{key}: {error}"
                                );
                                failed.push(slot);
                            }
                        }
                    }
                }
                let mut offset: u64 = 0;
                for block in 0..erasure.block_count(part.size) {
                    let span = erasure.block_span(part.size, block);
                    let mut shards: Vec<Option<Vec<u8>>> = vec![None; erasure.total()];
                    for (shard, source) in healthy.iter().enumerate() {
                        if matches!(source, ShardSource::Missing) {
                            continue;
                        }
                        shards[shard] = self
                            .read_verified_block(source, part, &file_name, shard, block, span)
                            .await;
                    }
                    let present = shards.iter().filter(|shard| shard.is_some()).count();
                    if present < erasure.data {
                        return Err(StorageError::ReadQuorum(format!(
                            "heal {bucket}/{key}: {present} good shards of {} needed",
                            erasure.data
                        )));
                    }
                    erasure.reconstruct_all(&mut shards)?;
                    for &(slot, shard) in &target_shards {
                        if failed.contains(&slot) {
                            continue;
                        }
                        let Some(block_bytes) = &shards[shard] else {
                            return Err(StorageError::Internal("reconstruct left a gap".into()));
                        };
                        let mut framed = Vec::with_capacity(HASH_BYTES + span.shard_len);
                        let id = ShardId {
                            part: part.id,
                            shard: shard as u32,
                        };
                        bitrot::frame_into(&mut framed, id, block, block_bytes);
                        if meta.data_dir.is_none() {
                            inline_out
                                .entry(slot)
                                .or_default()
                                .extend_from_slice(&framed);
                            continue;
                        }
                        let Some(file) = files.get(&slot) else {
                            continue;
                        };
                        let drive = &self.drives[slot];
                        if drive.write_at(file, offset, framed.into()).await.is_err() {
                            failed.push(slot);
                        }
                    }
                    offset += (HASH_BYTES + span.shard_len) as u64;
                }
                for (slot, file) in &files {
                    if !failed.contains(slot) && self.drives[*slot].fsync(file).await.is_err() {
                        failed.push(*slot);
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(error) = outcome {
            self.discard_tmp(tmp_id).await;
            return Err(error);
        }
        let mut rebuilt = 0u64;
        for &(slot, shard) in &target_shards {
            if failed.contains(&slot) {
                continue;
            }
            let inline = inline_out.remove(&slot).unwrap_or_default();
            match self
                .place_rebuilt(bucket, key, meta, slot, shard, &tmp, &inline)
                .await
            {
                Ok(()) => rebuilt += 1,
                Err(error) => tracing::warn!(
                    drive = %self.drives[slot].root().display(),
                    "heal {bucket}/{key}: {error}"
                ),
            }
        }
        self.discard_tmp(tmp_id).await;
        Ok(rebuilt)
    }

    /// Block `block` of shard `shard` of `part` from `source`, when it passes its hash.
    async fn read_verified_block(
        &self,
        source: &ShardSource,
        part: &PartMeta,
        file_name: &str,
        shard: usize,
        block: u64,
        span: BlockSpan,
    ) -> Option<Vec<u8>> {
        let to_read = BlockToRead {
            id: ShardId {
                part: part.id,
                shard: shard as u32,
            },
            index: block,
            span,
        };
        read_shard_block(&self.drives, source, None, file_name, to_read)
            .await
            .1
    }

    async fn open_heal_file(
        &self,
        slot: usize,
        tmp: &DrivePath,
        file_name: &str,
    ) -> std::io::Result<DriveFile> {
        let drive = &self.drives[slot];
        drive.create_dir_below(&system_dir(), tmp).await?;
        drive
            .open(&tmp.join(file_name)?, OpenMode::CreateTruncate)
            .await
    }

    /// Moves one drive's rebuilt part files into the version's data dir (each rename
    /// replaces a bad file whole) and writes its metadata copy. May make the bucket folder
    /// again: the drive is stamped and the bucket exists.
    #[allow(clippy::too_many_arguments)]
    async fn place_rebuilt(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        slot: usize,
        shard: usize,
        tmp: &DrivePath,
        inline: &[u8],
    ) -> std::io::Result<()> {
        let drive = &self.drives[slot];
        let bucket_dir = Self::bucket_dir(bucket)?;
        drive
            .create_dir_below(&DrivePath::root(), &bucket_dir)
            .await?;
        if let Some(data_dir) = meta.data_dir {
            let target_dir = Self::data_dir_path(bucket, key, data_dir)?;
            let tmp_dir = tmp.clone();
            for part in &meta.parts {
                let file_name = part.file_name();
                let source = tmp_dir.join(&file_name)?;
                let target = target_dir.join(&file_name)?;
                self.place_in_dir(slot, &bucket_dir, &target_dir, || {
                    drive.rename(&source, &target)
                })
                .await?;
            }
        }
        let copy = ObjectMeta {
            shard_index: shard,
            replaced: None,
            ..meta.clone()
        };
        let raw = meta::encode(&copy, inline);
        let key_dir = Self::key_dir(bucket, key)?;
        let meta_path = Self::meta_path(bucket, key)?;
        self.place_in_dir(slot, &bucket_dir, &key_dir, || {
            self.write_record(slot, &meta_path, raw.clone())
        })
        .await
    }
}
