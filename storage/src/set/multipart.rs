//! Multipart uploads of one erasure set, staged per drive under
//! `.lakeshare.sys/multipart/<sha256(bucket/key)>/<upload id>/`: an `upload.meta` record,
//! `part.N.meta` records naming the current version of each part, and erasure-coded part
//! files `<data dir>/part.N.<part id>`.
//!
//! Invariants:
//! - Parts are never inlined. Each upload of a part gets a fresh part id: its shard files
//!   have their own names and hashes, so two uploads of one part number never mix.
//! - A part is committed (files renamed in, records written) under the upload lock; the last
//!   to commit wins on every drive it reached, and a commit without write quorum is undone,
//!   leaving the previous version of the part in place.
//! - Completing an upload is decided once: under the object lock, then the upload lock, the
//!   condition and the part list are checked before anything is touched; the upload's data
//!   dir then becomes the object's by rename (no second copy). A failed commit moves it back.
//!   A Complete of an upload already completed into the current version, with the same
//!   parts, answers that version (as S3 does for a retried Complete).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

use super::write::{StagePlan, Staged, StagedDirs};
use super::{object_info, quorum_error, ErasureSet};
use crate::drive::{is_valid_segment, DrivePath};
use crate::erasure::Erasure;
use crate::error::{Result, StorageError};
use crate::format::system_dir;
use crate::meta::{self, part_file_name, ObjectMeta, PartMeta};
use crate::object::{
    ByteStream, CompletePart, MultipartUpload, ObjectInfo, PartInfo, PutOptions, WriteCondition,
};

const UPLOAD_FILE: &str = "upload.meta";
/// Parts other than the last must be at least this big.
const PART_BYTES_MIN: u64 = 5 * 1024 * 1024;
const PART_NUMBER_MAX: u32 = 10_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct UploadRecord {
    bucket: String,
    key: String,
    upload_id: Uuid,
    initiated_unix_nanos: i128,
    data: usize,
    parity: usize,
    block_bytes: u64,
    distribution: Vec<usize>,
    data_dir: Uuid,
    content_type: Option<String>,
    user_metadata: BTreeMap<String, String>,
    checksums: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct PartRecord {
    number: u32,
    /// This upload of the part: its files are `part.N.<id>`.
    id: Uuid,
    size: u64,
    etag: String,
    modified_unix_nanos: i128,
    checksums: BTreeMap<String, String>,
}

/// What the drives say about one part number: each version and the drives naming it.
struct PartVotes {
    versions: Vec<(PartRecord, usize)>,
}

impl PartVotes {
    /// The version most drives name; between equals, the newest.
    fn current(&self) -> Option<&(PartRecord, usize)> {
        self.versions.iter().max_by(|left, right| {
            left.1
                .cmp(&right.1)
                .then(left.0.modified_unix_nanos.cmp(&right.0.modified_unix_nanos))
        })
    }
}

impl ErasureSet {
    fn multipart_root() -> DrivePath {
        system_dir().child("multipart")
    }

    fn upload_dir(bucket: &str, key: &str, upload_id: Uuid) -> DrivePath {
        let digest = hex::encode(Sha256::digest(format!("{bucket}/{key}").as_bytes()));
        Self::multipart_root()
            .join_generated(&digest)
            .join_id(upload_id)
    }

    fn part_record_path(upload_dir: &DrivePath, number: u32) -> DrivePath {
        upload_dir.join_generated(&format!("part.{number}.meta"))
    }

    pub(crate) async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        options: PutOptions,
    ) -> Result<String> {
        let upload_id = self.env.new_id();
        let record = UploadRecord {
            bucket: bucket.into(),
            key: key.into(),
            upload_id,
            initiated_unix_nanos: self.env.now_utc().unix_timestamp_nanos(),
            data: self.data_for(self.layout.parity),
            parity: self.layout.parity,
            block_bytes: self.layout.block_bytes,
            distribution: self.distribution(bucket, key),
            data_dir: self.env.new_id(),
            content_type: options.content_type,
            user_metadata: options.user_metadata,
            checksums: options.checksums,
        };
        let raw = meta::encode(&record, &[]);
        let dir = Self::upload_dir(bucket, key, upload_id);
        let writes = (0..self.total()).map(|slot| {
            let (raw, dir) = (raw.clone(), &dir);
            async move {
                let drive = &self.drives[slot];
                if !drive.online().await {
                    return Err(std::io::Error::other("drive is offline"));
                }
                let data_dir = dir.join_id(record.data_dir);
                drive
                    .create_dir_below(&Self::multipart_root(), &data_dir)
                    .await?;
                self.write_record(slot, &dir.child(UPLOAD_FILE), raw).await
            }
        });
        let written = join_all(writes)
            .await
            .iter()
            .filter(|result| result.is_ok())
            .count();
        if written < Self::write_quorum(record.data, record.parity) {
            self.remove_upload_dirs(&dir).await;
            return Err(quorum_error(false, written, self.total()));
        }
        Ok(upload_id.to_string())
    }

    async fn read_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRecord> {
        let Ok(id) = Uuid::parse_str(upload_id) else {
            return Err(StorageError::NoSuchUpload(upload_id.into()));
        };
        let path = Self::upload_dir(bucket, key, id).child(UPLOAD_FILE);
        for drive in &self.drives {
            if !drive.online().await {
                continue;
            }
            if let Ok(raw) = drive.read_file(&path).await {
                if let Some((record, _)) = meta::decode::<UploadRecord>(&raw) {
                    if record.bucket == bucket && record.key == key && record.upload_id == id {
                        return Ok(record);
                    }
                }
            }
        }
        Err(StorageError::NoSuchUpload(upload_id.into()))
    }

    pub(crate) async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: ByteStream,
        checksums: BTreeMap<String, String>,
    ) -> Result<PartInfo> {
        if !(1..=PART_NUMBER_MAX).contains(&part_number) {
            return Err(StorageError::InvalidArgument(format!(
                "part number {part_number} is outside 1..={PART_NUMBER_MAX}"
            )));
        }
        let record = self.read_upload(bucket, key, upload_id).await?;
        let erasure = Erasure::new(record.data, record.parity, record.block_bytes)?;
        let part_id = self.env.new_id();
        let file_name = part_file_name(part_number, part_id);
        let plan = StagePlan {
            erasure: &erasure,
            distribution: &record.distribution,
            part_id,
            file: file_name.clone(),
            allow_inline: false,
        };
        let staged = self.stage(body, plan).await?;
        let modified = self.env.now_utc();
        let part = PartRecord {
            number: part_number,
            id: part_id,
            size: staged.size,
            etag: hex::encode(staged.md5),
            modified_unix_nanos: modified.unix_timestamp_nanos(),
            checksums,
        };
        let committed = self.commit_part(&record, &part, &staged, &file_name).await;
        self.discard_tmp(staged.tmp_id).await;
        committed?;
        Ok(PartInfo {
            part_number,
            etag: part.etag,
            size: part.size,
            modified,
            checksums: part.checksums,
        })
    }

    /// Moves a staged part into its upload on every live drive, under the upload lock.
    async fn commit_part(
        &self,
        record: &UploadRecord,
        part: &PartRecord,
        staged: &Staged,
        file_name: &str,
    ) -> Result<()> {
        let _guard = self
            .upload_locks
            .lock(&upload_lock_key(&record.upload_id.to_string()))
            .await;
        let dir = Self::upload_dir(&record.bucket, &record.key, record.upload_id);
        let record_path = Self::part_record_path(&dir, part.number);
        let data_dir = dir.join_id(record.data_dir);
        let target = data_dir
            .join(file_name)
            .map_err(|error| StorageError::Internal(format!("part file: {error}")))?;
        let source = Self::tmp_dir(staged.tmp_id)
            .join(file_name)
            .map_err(|error| StorageError::Internal(format!("part file: {error}")))?;
        let previous: Vec<Option<Vec<u8>>> = join_all(
            self.drives
                .iter()
                .map(|drive| async { drive.read_file(&record_path).await.ok() }),
        )
        .await;
        let raw = meta::encode(part, &[]);
        let moves = (0..self.total()).map(|slot| {
            let (raw, dir, data_dir, target, source, record_path) =
                (raw.clone(), &dir, &data_dir, &target, &source, &record_path);
            async move {
                if !staged.alive[slot] {
                    return Err(std::io::Error::other("drive failed during the write"));
                }
                let drive = &self.drives[slot];
                if !drive.online().await {
                    return Err(std::io::Error::other("drive is offline"));
                }
                // The upload's folder must still be there (an abort or a Complete removes it).
                drive.create_dir_below(dir, data_dir).await?;
                drive.rename(source, target).await?;
                self.write_record(slot, record_path, raw).await
            }
        });
        let results = join_all(moves).await;
        let moved = results.iter().filter(|result| result.is_ok()).count();
        if moved < Self::write_quorum(record.data, record.parity) {
            for (slot, result) in results.iter().enumerate() {
                let drive = &self.drives[slot];
                let _ = drive.remove_file(&target).await;
                if result.is_err() {
                    continue;
                }
                match &previous[slot] {
                    Some(old) => {
                        let _ = self.write_record(slot, &record_path, old.clone()).await;
                    }
                    None => {
                        let _ = drive.remove_file(&record_path).await;
                    }
                }
            }
            if results
                .iter()
                .all(|result| matches!(result, Err(error) if crate::drive::is_not_found(error)))
            {
                return Err(StorageError::NoSuchUpload(record.upload_id.to_string()));
            }
            return Err(quorum_error(staged.drive_full, moved, self.total()));
        }
        // The part versions this one replaced, on the drives it reached.
        for (slot, result) in results.iter().enumerate() {
            if result.is_err() {
                continue;
            }
            let Some(old) = previous[slot]
                .as_deref()
                .and_then(meta::decode::<PartRecord>)
            else {
                continue;
            };
            if old.0.id != part.id {
                if let Ok(old_file) = data_dir.join(&part_file_name(old.0.number, old.0.id)) {
                    let _ = self.drives[slot].remove_file(&old_file).await;
                }
            }
        }
        Ok(())
    }

    /// What every drive says about the parts of an upload, by part number.
    async fn read_parts(&self, dir: &DrivePath) -> BTreeMap<u32, PartVotes> {
        let per_drive = self.drives.iter().map(|drive| async move {
            let mut records = Vec::new();
            if !drive.online().await {
                return records;
            }
            let Ok(entries) = drive.read_dir(dir).await else {
                return records;
            };
            for (name, is_dir) in entries {
                if is_dir || !name.starts_with("part.") || !name.ends_with(".meta") {
                    continue;
                }
                let Ok(path) = dir.join(&name) else { continue };
                if let Ok(raw) = drive.read_file(&path).await {
                    if let Some((record, _)) = meta::decode::<PartRecord>(&raw) {
                        records.push(record);
                    }
                }
            }
            records
        });
        let mut votes: BTreeMap<u32, PartVotes> = BTreeMap::new();
        for record in join_all(per_drive).await.into_iter().flatten() {
            let part = votes.entry(record.number).or_insert(PartVotes {
                versions: Vec::new(),
            });
            match part
                .versions
                .iter_mut()
                .find(|(known, _)| known.id == record.id)
            {
                Some((_, count)) => *count += 1,
                None => part.versions.push((record, 1)),
            }
        }
        votes
    }

    pub(crate) async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<PartInfo>> {
        let record = self.read_upload(bucket, key, upload_id).await?;
        let dir = Self::upload_dir(bucket, key, record.upload_id);
        let parts = self.read_parts(&dir).await;
        Ok(parts
            .values()
            .filter_map(PartVotes::current)
            .map(|(record, _)| part_info(record.clone()))
            .collect())
    }

    pub(crate) async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletePart>,
        condition: WriteCondition,
    ) -> Result<ObjectInfo> {
        if parts.is_empty() {
            return Err(StorageError::InvalidPart("no parts given".into()));
        }
        if parts
            .windows(2)
            .any(|pair| pair[0].part_number >= pair[1].part_number)
        {
            return Err(StorageError::InvalidPartOrder);
        }
        let _object = self.object_locks.lock(&format!("{bucket}/{key}")).await;
        let _upload = self.upload_locks.lock(&upload_lock_key(upload_id)).await;
        let record = match self.read_upload(bucket, key, upload_id).await {
            Ok(record) => record,
            Err(StorageError::NoSuchUpload(id)) => {
                return self.completed_before(bucket, key, &id, &parts).await;
            }
            Err(error) => return Err(error),
        };
        let dir = Self::upload_dir(bucket, key, record.upload_id);
        let chosen = self.choose_parts(&dir, &parts, record.data).await?;
        let previous = self.read_metas(bucket, key).await;
        self.check_write_condition(bucket, key, &previous, &condition)
            .await?;
        let mut digests = Md5::new();
        for part in &chosen {
            let digest = hex::decode(&part.etag)
                .map_err(|_| StorageError::InvalidPart(format!("part {} ETag", part.number)))?;
            digests.update(&digest);
        }
        let etag = format!("{}-{}", hex::encode(digests.finalize()), chosen.len());
        let size: u64 = chosen.iter().map(|part| part.size).sum();
        let meta = ObjectMeta {
            version_id: self.env.new_id(),
            size,
            etag,
            modified_unix_nanos: self.env.now_utc().unix_timestamp_nanos(),
            content_type: record.content_type.clone(),
            user_metadata: record.user_metadata.clone(),
            checksums: record.checksums.clone(),
            data: record.data,
            parity: record.parity,
            block_bytes: record.block_bytes,
            shard_index: 0,
            distribution: record.distribution.clone(),
            data_dir: Some(record.data_dir),
            parts: chosen
                .iter()
                .map(|part| PartMeta {
                    number: part.number,
                    size: part.size,
                    etag: part.etag.clone(),
                    id: part.id,
                })
                .collect(),
            multipart_parts: chosen.len() as u32,
            upload_id: Some(record.upload_id),
            replaced: None,
        };
        let staged = Staged {
            tmp_id: Uuid::nil(),
            size,
            md5: [0; 16],
            inline: None,
            alive: vec![true; self.total()],
            drive_full: false,
        };
        let upload_dirs = vec![dir.clone(); self.total()];
        self.commit_locked(
            bucket,
            key,
            &meta,
            &staged,
            &StagedDirs::Upload(upload_dirs),
            &previous,
        )
        .await?;
        self.drop_unnamed_part_files(bucket, key, &meta).await;
        self.remove_upload_dirs(&dir).await;
        Ok(object_info(bucket, key, &meta))
    }

    /// For each part asked: the version with that ETag most drives name, readable (named
    /// by at least `data` drives).
    async fn choose_parts(
        &self,
        dir: &DrivePath,
        asked: &[CompletePart],
        data: usize,
    ) -> Result<Vec<PartRecord>> {
        let uploaded = self.read_parts(dir).await;
        let mut chosen = Vec::with_capacity(asked.len());
        for (position, part) in asked.iter().enumerate() {
            let Some(votes) = uploaded.get(&part.part_number) else {
                return Err(StorageError::InvalidPart(format!(
                    "part {} was not uploaded",
                    part.part_number
                )));
            };
            let wanted = part.etag.trim_matches('"');
            let matching = votes
                .versions
                .iter()
                .filter(|(record, count)| record.etag == wanted && *count >= data)
                .max_by_key(|(record, count)| (*count, record.modified_unix_nanos));
            let Some((record, _)) = matching else {
                let current = votes
                    .current()
                    .map_or_else(String::new, |(record, _)| record.etag.clone());
                return Err(StorageError::InvalidPart(format!(
                    "part {} has ETag {current}, not {wanted}",
                    part.part_number
                )));
            };
            if position + 1 < asked.len() && record.size < PART_BYTES_MIN {
                return Err(StorageError::EntityTooSmall {
                    part_number: record.number,
                    size: record.size,
                });
            }
            chosen.push(record.clone());
        }
        Ok(chosen)
    }

    /// A Complete of an upload that is gone: the current version, when that upload made
    /// it from the same parts (a retried Complete); otherwise `NoSuchUpload`.
    async fn completed_before(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletePart],
    ) -> Result<ObjectInfo> {
        let missing = || StorageError::NoSuchUpload(upload_id.into());
        let id = Uuid::parse_str(upload_id).map_err(|_| missing())?;
        let reads = self.read_metas(bucket, key).await;
        let Some(chosen) = self.choose(&reads, true).await? else {
            return Err(missing());
        };
        let meta = &chosen.meta;
        let same_parts = meta.parts.len() == parts.len()
            && meta.parts.iter().zip(parts).all(|(stored, asked)| {
                stored.number == asked.part_number && stored.etag == asked.etag.trim_matches('"')
            });
        if meta.upload_id == Some(id) && same_parts {
            Ok(object_info(bucket, key, meta))
        } else {
            Err(missing())
        }
    }

    /// Removes, from the object's data dir on every drive, part files the metadata does not
    /// name (parts left out of the Complete, versions a drive kept when it missed a rewrite).
    pub(super) async fn drop_unnamed_part_files(&self, bucket: &str, key: &str, meta: &ObjectMeta) {
        let Some(data_dir) = meta.data_dir else {
            return;
        };
        let Ok(dir) = Self::data_dir_path(bucket, key, data_dir) else {
            return;
        };
        let named: Vec<String> = meta.parts.iter().map(PartMeta::file_name).collect();
        let removals = self.drives.iter().map(|drive| {
            let (dir, named) = (&dir, &named);
            async move {
                let Ok(entries) = drive.read_dir(dir).await else {
                    return;
                };
                for (name, _) in entries {
                    if !named.contains(&name) && is_valid_segment(&name) {
                        if let Ok(path) = dir.join(&name) {
                            drive.remove_any(&path).await;
                        }
                    }
                }
            }
        });
        join_all(removals).await;
    }

    pub(crate) async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<()> {
        let _upload = self.upload_locks.lock(&upload_lock_key(upload_id)).await;
        let record = self.read_upload(bucket, key, upload_id).await?;
        self.remove_upload_dirs(&Self::upload_dir(bucket, key, record.upload_id))
            .await;
        Ok(())
    }

    async fn remove_upload_dirs(&self, dir: &DrivePath) {
        let parent = dir.parent();
        let removals = self.drives.iter().map(|drive| {
            let parent = &parent;
            async move {
                drive.remove_any(dir).await;
                if let Some(parent) = parent {
                    let _ = drive.remove_dir(parent).await;
                }
            }
        });
        join_all(removals).await;
    }

    /// Uploads of `bucket` whose key starts with `prefix`, read from any drive holding them.
    pub(crate) async fn list_uploads(&self, bucket: &str, prefix: &str) -> Vec<MultipartUpload> {
        let mut seen: BTreeMap<Uuid, MultipartUpload> = BTreeMap::new();
        for slot in 0..self.total() {
            for record in self.drive_uploads(slot).await {
                if record.bucket == bucket && record.key.starts_with(prefix) {
                    seen.entry(record.upload_id)
                        .or_insert_with(|| MultipartUpload {
                            key: record.key.clone(),
                            upload_id: record.upload_id.to_string(),
                            initiated: OffsetDateTime::from_unix_timestamp_nanos(
                                record.initiated_unix_nanos,
                            )
                            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                        });
                }
            }
        }
        seen.into_values().collect()
    }

    async fn drive_uploads(&self, slot: usize) -> Vec<UploadRecord> {
        let drive = &self.drives[slot];
        let root = Self::multipart_root();
        let mut records = Vec::new();
        if !drive.online().await {
            return records;
        }
        let Ok(digests) = drive.read_dir(&root).await else {
            return records;
        };
        for (digest, is_dir) in digests {
            let Ok(digest_dir) = root.join(&digest) else {
                continue;
            };
            if !is_dir {
                continue;
            }
            let Ok(uploads) = drive.read_dir(&digest_dir).await else {
                continue;
            };
            for (upload, _) in uploads {
                let Ok(path) = digest_dir.join(&upload).map(|dir| dir.child(UPLOAD_FILE)) else {
                    continue;
                };
                if let Ok(raw) = drive.read_file(&path).await {
                    if let Some((record, _)) = meta::decode::<UploadRecord>(&raw) {
                        records.push(record);
                    }
                }
            }
        }
        records
    }

    /// Removes uploads started more than `age_max` ago, on every drive.
    pub(crate) async fn remove_stale_uploads(&self, age_max: Duration) {
        let now = self.env.now_utc().unix_timestamp_nanos();
        for slot in 0..self.total() {
            for record in self.drive_uploads(slot).await {
                if now - record.initiated_unix_nanos > age_max.as_nanos() as i128 {
                    let dir = Self::upload_dir(&record.bucket, &record.key, record.upload_id);
                    self.drives[slot].remove_any(&dir).await;
                }
            }
        }
    }
}

/// One lock per upload, whatever spelling of its id a client sends.
fn upload_lock_key(upload_id: &str) -> String {
    match Uuid::parse_str(upload_id) {
        Ok(id) => id.to_string(),
        Err(_) => upload_id.to_owned(),
    }
}

fn part_info(record: PartRecord) -> PartInfo {
    PartInfo {
        part_number: record.number,
        etag: record.etag,
        size: record.size,
        modified: OffsetDateTime::from_unix_timestamp_nanos(record.modified_unix_nanos)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        checksums: record.checksums,
    }
}
