//! Reads: the metadata quorum picks a version, its data dir is registered with the open
//! readers (so a concurrent overwrite or delete cannot remove it under the stream), the first
//! block is read before answering (so a read that cannot succeed is an error status, not a
//! broken body), and the rest streams from a task.
//!
//! Invariants: every block served was decoded from shards that passed `bitrot::verify`
//! with their own identity; a stream that meets an unreadable block ends with an error,
//! never short; a reader that met a damaged or missing shard queues the object for heal.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;
use lakeshare_engine::io::{DriveFile, OpenMode};

use super::readers::ReadGuard;
use super::{no_such_key, object_info, Chosen, ErasureSet};
use crate::bitrot::{self, ShardId, HASH_BYTES};
use crate::drive::{Drive, DrivePath};
use crate::erasure::{BlockSpan, Erasure};
use crate::error::{Result, StorageError};
use crate::meta::ObjectMeta;
use crate::object::{ByteRange, ByteStream, ObjectInfo};

/// Attempts at starting a read whose data dir a concurrent writer removed in between.
const READ_START_ATTEMPTS_MAX: usize = 3;

/// Where a shard of the chosen version can be read.
#[derive(Clone, Debug)]
pub(crate) enum ShardSource {
    Missing,
    Inline(Arc<Vec<u8>>),
    /// The data dir of the version on the drive at this slot.
    Dir {
        slot: usize,
        dir: DrivePath,
    },
}

/// One step of a read: a block of a part, and the slice of it to send.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadStep {
    part_index: usize,
    block: u64,
    slice_start: usize,
    slice_end: usize,
}

impl ErasureSet {
    pub(crate) async fn get(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<(ObjectInfo, Option<ByteRange>, ByteStream)> {
        let mut attempt = 1;
        loop {
            let reads = self.read_metas(bucket, key).await;
            let chosen = self
                .choose(&reads, true)
                .await?
                .ok_or_else(|| no_such_key(bucket, key))?;
            let version = chosen.meta.version_id;
            match self.start_read(bucket, key, chosen, range).await {
                Ok(started) => return Ok(started),
                // The version may have been replaced between the metadata read and the
                // registration of its data dir: read the metadata again.
                Err(error)
                    if attempt < READ_START_ATTEMPTS_MAX
                        && self.replaced(bucket, key, version).await =>
                {
                    tracing::debug!(
                        "{bucket}/{key}: version replaced while starting a read: {error}"
                    );
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Whether the version the quorum agrees on now is not `version`.
    async fn replaced(&self, bucket: &str, key: &str, version: uuid::Uuid) -> bool {
        let reads = self.read_metas(bucket, key).await;
        !matches!(self.choose(&reads, true).await, Ok(Some(chosen)) if chosen.meta.version_id == version)
    }

    async fn start_read(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        chosen: Chosen,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<(ObjectInfo, Option<ByteRange>, ByteStream)> {
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
        let guard = match chosen.meta.data_dir {
            Some(data_dir) => Some(self.readers.register(data_dir).ok_or_else(|| {
                StorageError::ReadQuorum(format!("{bucket}/{key}: its data is being removed"))
            })?),
            None => None,
        };
        let plan = read_plan(&chosen.meta, resolved);
        let mut reader = ObjectReader::new(self.clone(), bucket, key, chosen, guard)?;
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

    /// Where each shard of the chosen version can be read, by shard index.
    pub(crate) fn sources(&self, bucket: &str, key: &str, chosen: &Chosen) -> Vec<ShardSource> {
        let mut sources = vec![ShardSource::Missing; chosen.meta.distribution.len()];
        for (slot, copy) in chosen.copies.iter().enumerate() {
            let Some((copy, inline)) = copy else { continue };
            let Some(source) = sources.get_mut(copy.shard_index) else {
                continue;
            };
            if chosen.meta.distribution.get(copy.shard_index) != Some(&slot) {
                continue;
            }
            *source = match copy.data_dir {
                None => ShardSource::Inline(Arc::new(inline.clone())),
                Some(data_dir) => match Self::data_dir_path(bucket, key, data_dir) {
                    Ok(dir) => ShardSource::Dir { slot, dir },
                    Err(_) => ShardSource::Missing,
                },
            };
        }
        sources
    }
}

pub(crate) fn read_plan(meta: &ObjectMeta, range: Option<ByteRange>) -> Vec<ReadStep> {
    let (first, last) = match range {
        Some(range) => (range.first, range.last),
        None if meta.size == 0 => return Vec::new(),
        None => (0, meta.size - 1),
    };
    let block_bytes = meta.block_bytes;
    let mut steps = Vec::new();
    let mut part_start = 0u64;
    for (part_index, part) in meta.parts.iter().enumerate() {
        let part_end = part_start + part.size; // exclusive
        if part.size > 0 && first < part_end && last >= part_start {
            let local_first = first.max(part_start) - part_start;
            let local_last = last.min(part_end - 1) - part_start;
            for block in local_first / block_bytes..=local_last / block_bytes {
                let block_start = block * block_bytes;
                let block_end = (block_start + block_bytes).min(part.size) - 1;
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
    files: HashMap<(usize, u32), DriveFile>,
    bad: Vec<bool>,
    damaged: bool,
    /// Keeps the data dir from being removed until the stream ends.
    _guard: Option<ReadGuard>,
}

impl ObjectReader {
    fn new(
        set: Arc<ErasureSet>,
        bucket: &str,
        key: &str,
        chosen: Chosen,
        guard: Option<ReadGuard>,
    ) -> Result<ObjectReader> {
        let erasure = Erasure::new(
            chosen.meta.data,
            chosen.meta.parity,
            chosen.meta.block_bytes,
        )?;
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
            _guard: guard,
        })
    }

    async fn read_step(&mut self, step: ReadStep) -> Result<Bytes> {
        let part = &self.meta.parts[step.part_index];
        let (part_number, part_size) = (part.number, part.size);
        let file_name = part.file_name();
        let part_id = part.id;
        let span = self.erasure.block_span(part_size, step.block);
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
                let drives = &self.set.drives;
                let file_name = &file_name;
                let block = BlockToRead {
                    id: ShardId {
                        part: part_id,
                        shard: shard as u32,
                    },
                    index: step.block,
                    span,
                };
                async move { read_shard_block(drives, source, cached, file_name, block).await }
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

/// One framed block of one shard file: its identity and where it lies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockToRead {
    pub(crate) id: ShardId,
    pub(crate) index: u64,
    pub(crate) span: BlockSpan,
}

/// Reads and verifies one framed shard block; `None` when missing, short or corrupt (or of
/// another part version).
pub(crate) async fn read_shard_block(
    drives: &[Arc<Drive>],
    source: &ShardSource,
    cached: Option<DriveFile>,
    file_name: &str,
    block: BlockToRead,
) -> (Option<DriveFile>, Option<Vec<u8>>) {
    let span = block.span;
    let framed_len = HASH_BYTES + span.shard_len;
    match source {
        ShardSource::Missing => (None, None),
        ShardSource::Inline(bytes) => {
            let start = span.file_offset as usize;
            let framed = bytes.get(start..start + framed_len);
            let verified = framed
                .and_then(|framed| bitrot::verify(framed, span.shard_len, block.id, block.index));
            (None, verified.map(<[u8]>::to_vec))
        }
        ShardSource::Dir { slot, dir } => {
            let drive = &drives[*slot];
            let file = match cached {
                Some(file) => file,
                None => {
                    let Ok(path) = dir.join(file_name) else {
                        return (None, None);
                    };
                    match drive.open(&path, OpenMode::Read).await {
                        Ok(file) => file,
                        Err(_) => return (None, None),
                    }
                }
            };
            let framed = drive
                .read_at(&file, span.file_offset, vec![0; framed_len])
                .await;
            let verified = framed.ok().and_then(|framed| {
                bitrot::verify(&framed, span.shard_len, block.id, block.index).map(<[u8]>::to_vec)
            });
            (Some(file), verified)
        }
    }
}
