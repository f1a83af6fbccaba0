//! Multipart uploads of one erasure set, staged per drive under
//! `.lakeshare.sys/multipart/<sha256(bucket/key)>/<upload id>/`: an `upload.meta` record,
//! `part.N.meta` records, and erasure-coded part files `<data dir>/part.N`.
//!
//! Invariants: parts are never inlined; completing an upload moves its part files into the
//! object's data dir by rename (no second copy), under the key lock, after the write
//! condition was checked there.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use futures::future::join_all;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::erasure::{Erasure, BLOCK_BYTES};
use crate::error::{Result, StorageError};
use crate::format::system_dir;
use crate::meta::{self, ObjectMeta, PartMeta};
use crate::node::{
    ByteStream, CompletePart, MultipartUpload, ObjectInfo, PartInfo, PutOptions, WriteCondition,
};
use crate::set::{object_info, quorum_error, ErasureSet, Staged, StagedDirs};

const UPLOAD_FILE: &str = "upload.meta";
/// Parts other than the last must be at least this big.
const PART_BYTES_MIN: u64 = 5 * 1024 * 1024;
const PART_NUMBER_MAX: u32 = 10_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct UploadRecord {
    bucket: String,
    key: String,
    upload_id: String,
    initiated_unix_nanos: i128,
    data: usize,
    parity: usize,
    distribution: Vec<usize>,
    data_dir: String,
    content_type: Option<String>,
    user_metadata: BTreeMap<String, String>,
    checksums: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct PartRecord {
    number: u32,
    size: u64,
    etag: String,
    modified_unix_nanos: i128,
    checksums: BTreeMap<String, String>,
}

impl ErasureSet {
    fn multipart_root(&self, slot: usize) -> PathBuf {
        system_dir(&self.drives[slot]).join("multipart")
    }

    fn upload_dir(&self, slot: usize, bucket: &str, key: &str, upload_id: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(format!("{bucket}/{key}").as_bytes()));
        self.multipart_root(slot).join(digest).join(upload_id)
    }

    pub(crate) async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        options: PutOptions,
    ) -> Result<String> {
        let upload_id = uuid::Uuid::new_v4().to_string();
        let record = UploadRecord {
            bucket: bucket.into(),
            key: key.into(),
            upload_id: upload_id.clone(),
            initiated_unix_nanos: OffsetDateTime::now_utc().unix_timestamp_nanos(),
            data: self.data_for(self.parity),
            parity: self.parity,
            distribution: self.distribution(bucket, key),
            data_dir: uuid::Uuid::new_v4().to_string(),
            content_type: options.content_type,
            user_metadata: options.user_metadata,
            checksums: options.checksums,
        };
        let raw = meta::encode(&record, &[]);
        let writes = (0..self.total()).map(|slot| {
            let raw = raw.clone();
            let upload_id = &upload_id;
            async move {
                if !self.drive_online(slot).await {
                    return Err(std::io::Error::other("drive is offline"));
                }
                let dir = self.upload_dir(slot, bucket, key, upload_id);
                self.fs
                    .create_dir_below(&self.multipart_root(slot), &dir)
                    .await?;
                self.write_record(slot, &dir.join(UPLOAD_FILE), raw).await
            }
        });
        let written = join_all(writes)
            .await
            .iter()
            .filter(|result| result.is_ok())
            .count();
        if written < Self::write_quorum(record.data, record.parity) {
            let removals = (0..self.total()).map(|slot| {
                let dir = self.upload_dir(slot, bucket, key, &upload_id);
                async move { self.fs.remove_any(&dir).await }
            });
            join_all(removals).await;
            return Err(quorum_error(false, written, self.total()));
        }
        Ok(upload_id)
    }

    async fn read_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRecord> {
        if uuid::Uuid::parse_str(upload_id).is_err() {
            return Err(StorageError::NoSuchUpload(upload_id.into()));
        }
        for slot in 0..self.total() {
            let path = self
                .upload_dir(slot, bucket, key, upload_id)
                .join(UPLOAD_FILE);
            if let Ok(raw) = self.fs.read_file(&path).await {
                if let Some((record, _)) = meta::decode::<UploadRecord>(&raw) {
                    if record.bucket == bucket && record.key == key {
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
        let erasure = Erasure::new(record.data, record.parity)?;
        let file_name = format!("part.{part_number}");
        let staged = self
            .stage(body, &erasure, &record.distribution, &file_name, false)
            .await?;
        let modified = OffsetDateTime::now_utc();
        let part = PartRecord {
            number: part_number,
            size: staged.size,
            etag: hex::encode(staged.md5),
            modified_unix_nanos: modified.unix_timestamp_nanos(),
            checksums,
        };
        let raw = meta::encode(&part, &[]);
        let moves = (0..self.total()).map(|slot| {
            let raw = raw.clone();
            let (file_name, record, staged) = (&file_name, &record, &staged);
            async move {
                if !staged.alive[slot] {
                    return Err(std::io::Error::other("drive failed during the write"));
                }
                let dir = self.upload_dir(slot, bucket, key, upload_id);
                let data_dir = dir.join(&record.data_dir);
                // The upload's folder must still be there (an abort removes it).
                self.fs.create_dir_below(&dir, &data_dir).await?;
                let source = self.tmp_dir(slot, &staged.tmp_id).join(file_name);
                self.fs.rename(&source, &data_dir.join(file_name)).await?;
                self.write_record(slot, &dir.join(format!("{file_name}.meta")), raw)
                    .await
            }
        });
        let moved = join_all(moves)
            .await
            .iter()
            .filter(|result| result.is_ok())
            .count();
        self.discard_tmp(&staged.tmp_id).await;
        if moved < Self::write_quorum(record.data, record.parity) {
            return Err(quorum_error(staged.drive_full, moved, self.total()));
        }
        Ok(PartInfo {
            part_number,
            etag: part.etag,
            size: part.size,
            modified,
            checksums: part.checksums,
        })
    }

    /// The part records the most drives agree on, by part number.
    async fn read_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> BTreeMap<u32, PartRecord> {
        let per_drive = (0..self.total()).map(|slot| async move {
            let dir = self.upload_dir(slot, bucket, key, upload_id);
            let mut records = Vec::new();
            let Ok(entries) = self.fs.read_dir(&dir).await else {
                return records;
            };
            for (name, is_dir) in entries {
                if is_dir || !name.starts_with("part.") || !name.ends_with(".meta") {
                    continue;
                }
                if let Ok(raw) = self.fs.read_file(&dir.join(&name)).await {
                    if let Some((record, _)) = meta::decode::<PartRecord>(&raw) {
                        records.push(record);
                    }
                }
            }
            records
        });
        let mut votes: HashMap<u32, Vec<(PartRecord, usize)>> = HashMap::new();
        for record in join_all(per_drive).await.into_iter().flatten() {
            let candidates = votes.entry(record.number).or_default();
            match candidates
                .iter_mut()
                .find(|(known, _)| known.etag == record.etag)
            {
                Some((_, count)) => *count += 1,
                None => candidates.push((record, 1)),
            }
        }
        votes
            .into_iter()
            .filter_map(|(number, mut candidates)| {
                candidates.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
                candidates
                    .into_iter()
                    .next()
                    .map(|(record, _)| (number, record))
            })
            .collect()
    }

    pub(crate) async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<PartInfo>> {
        self.read_upload(bucket, key, upload_id).await?;
        let parts = self.read_parts(bucket, key, upload_id).await;
        Ok(parts.into_values().map(part_info).collect())
    }

    pub(crate) async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletePart>,
        condition: WriteCondition,
    ) -> Result<ObjectInfo> {
        let record = self.read_upload(bucket, key, upload_id).await?;
        if parts.is_empty() {
            return Err(StorageError::InvalidPart("no parts given".into()));
        }
        if parts
            .windows(2)
            .any(|pair| pair[0].part_number >= pair[1].part_number)
        {
            return Err(StorageError::InvalidPartOrder);
        }
        let uploaded = self.read_parts(bucket, key, upload_id).await;
        let mut chosen = Vec::with_capacity(parts.len());
        for (position, asked) in parts.iter().enumerate() {
            let Some(part) = uploaded.get(&asked.part_number) else {
                return Err(StorageError::InvalidPart(format!(
                    "part {} was not uploaded",
                    asked.part_number
                )));
            };
            if asked.etag.trim_matches('"') != part.etag {
                return Err(StorageError::InvalidPart(format!(
                    "part {} has ETag {}, not {}",
                    asked.part_number, part.etag, asked.etag
                )));
            }
            if position + 1 < parts.len() && part.size < PART_BYTES_MIN {
                return Err(StorageError::EntityTooSmall {
                    part_number: part.number,
                    size: part.size,
                });
            }
            chosen.push(part.clone());
        }
        let mut digests = Md5::new();
        for part in &chosen {
            let digest = hex::decode(&part.etag)
                .map_err(|_| StorageError::InvalidPart(format!("part {} ETag", part.number)))?;
            digests.update(&digest);
        }
        let etag = format!("{}-{}", hex::encode(digests.finalize()), chosen.len());
        // Drop part files the client did not name, so the data dir holds exactly the object.
        let wanted: Vec<String> = chosen
            .iter()
            .map(|part| format!("part.{}", part.number))
            .collect();
        let upload_dirs: Vec<PathBuf> = (0..self.total())
            .map(|slot| self.upload_dir(slot, bucket, key, upload_id))
            .collect();
        for dir in &upload_dirs {
            let data_dir = dir.join(&record.data_dir);
            if let Ok(entries) = self.fs.read_dir(&data_dir).await {
                for (name, _) in entries {
                    if !wanted.contains(&name) {
                        self.fs.remove_any(&data_dir.join(name)).await;
                    }
                }
            }
        }
        let size: u64 = chosen.iter().map(|part| part.size).sum();
        let meta = ObjectMeta {
            version_id: uuid::Uuid::new_v4().to_string(),
            size,
            etag,
            modified_unix_nanos: OffsetDateTime::now_utc().unix_timestamp_nanos(),
            content_type: record.content_type.clone(),
            user_metadata: record.user_metadata.clone(),
            checksums: record.checksums.clone(),
            data: record.data,
            parity: record.parity,
            block_bytes: BLOCK_BYTES,
            shard_index: 0,
            distribution: record.distribution.clone(),
            data_dir: Some(record.data_dir.clone()),
            parts: chosen
                .iter()
                .map(|part| PartMeta {
                    number: part.number,
                    size: part.size,
                    etag: part.etag.clone(),
                })
                .collect(),
            multipart_parts: chosen.len() as u32,
        };
        let staged = Staged {
            tmp_id: String::new(),
            size,
            md5: [0; 16],
            inline: None,
            alive: vec![true; self.total()],
            drive_full: false,
        };
        self.commit(
            bucket,
            key,
            &meta,
            &staged,
            StagedDirs::Upload(upload_dirs.clone()),
            &condition,
        )
        .await?;
        for dir in &upload_dirs {
            self.fs.remove_any(dir).await;
            if let Some(parent) = dir.parent() {
                let _ = self.fs.remove_dir_if_empty(parent).await;
            }
        }
        Ok(object_info(bucket, key, &meta))
    }

    pub(crate) async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<()> {
        self.read_upload(bucket, key, upload_id).await?;
        for slot in 0..self.total() {
            let dir = self.upload_dir(slot, bucket, key, upload_id);
            self.fs.remove_any(&dir).await;
            if let Some(parent) = dir.parent() {
                let _ = self.fs.remove_dir_if_empty(parent).await;
            }
        }
        Ok(())
    }

    /// Uploads of `bucket` whose key starts with `prefix`, read from any drive holding them.
    pub(crate) async fn list_uploads(&self, bucket: &str, prefix: &str) -> Vec<MultipartUpload> {
        let mut seen: BTreeMap<String, MultipartUpload> = BTreeMap::new();
        for slot in 0..self.total() {
            for record in self.drive_uploads(slot).await {
                if record.bucket == bucket && record.key.starts_with(prefix) {
                    seen.entry(record.upload_id.clone())
                        .or_insert_with(|| MultipartUpload {
                            key: record.key.clone(),
                            upload_id: record.upload_id.clone(),
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
        let root = self.multipart_root(slot);
        let mut records = Vec::new();
        let Ok(digests) = self.fs.read_dir(&root).await else {
            return records;
        };
        for (digest, is_dir) in digests {
            if !is_dir {
                continue;
            }
            let Ok(uploads) = self.fs.read_dir(&root.join(&digest)).await else {
                continue;
            };
            for (upload, _) in uploads {
                let path = root.join(&digest).join(&upload).join(UPLOAD_FILE);
                if let Ok(raw) = self.fs.read_file(&path).await {
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
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
        for slot in 0..self.total() {
            for record in self.drive_uploads(slot).await {
                if now - record.initiated_unix_nanos > age_max.as_nanos() as i128 {
                    let dir = self.upload_dir(slot, &record.bucket, &record.key, &record.upload_id);
                    self.fs.remove_any(&dir).await;
                }
            }
        }
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
