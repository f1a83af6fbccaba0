//! Buckets: a folder per bucket on every drive and a record of its creation time in each
//! drive's `.lakeshare.sys/buckets/<bucket>.json`, known in memory once read at open.
//!
//! Invariants: a bucket exists once its record and folder are on more than half of the
//! drives; creations and deletions are serialised; `heal` makes the folder and record again
//! on every stamped drive that lacks them (a replaced drive, a folder removed by hand).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::drive::{Drive, DrivePath};
use crate::env::Environment;
use crate::error::{Result, StorageError};
use crate::format::system_dir;
use crate::set::ErasureSet;

/// The internal bucket of the system area; not a valid S3 bucket name (it starts with `.`).
pub(crate) const SYSTEM_BUCKET: &str = ".lakeshare.sys/config";

#[derive(Serialize, Deserialize)]
struct BucketRecord {
    created_unix_ms: i64,
}

pub(crate) struct Buckets {
    drives: Vec<Arc<Drive>>,
    env: Environment,
    names: RwLock<BTreeMap<String, OffsetDateTime>>,
    /// Serialises creations and deletions.
    pub(crate) lock: tokio::sync::Mutex<()>,
}

impl Buckets {
    /// The buckets any drive knows of (a replaced drive learns them through heal).
    pub(crate) async fn load(drives: Vec<Arc<Drive>>, env: Environment) -> Buckets {
        let mut found: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
        let folder = records_dir();
        for drive in &drives {
            let Ok(entries) = drive.read_dir(&folder).await else {
                continue;
            };
            for (name, is_dir) in entries {
                let Some(bucket) = name.strip_suffix(".json") else {
                    continue;
                };
                if is_dir || found.contains_key(bucket) {
                    continue;
                }
                let Ok(path) = folder.join(&name) else {
                    continue;
                };
                let Ok(raw) = drive.read_file(&path).await else {
                    continue;
                };
                let Ok(record) = serde_json::from_slice::<BucketRecord>(&raw) else {
                    continue;
                };
                found.insert(bucket.to_string(), created_at(&record));
            }
        }
        Buckets {
            drives,
            env,
            names: RwLock::new(found),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn created(&self, bucket: &str) -> Option<OffsetDateTime> {
        self.read().get(bucket).copied()
    }

    pub(crate) fn check(&self, bucket: &str) -> Result<()> {
        if bucket == SYSTEM_BUCKET || self.created(bucket).is_some() {
            Ok(())
        } else {
            Err(StorageError::NoSuchBucket(bucket.into()))
        }
    }

    pub(crate) fn all(&self) -> Vec<(String, OffsetDateTime)> {
        self.read()
            .iter()
            .map(|(name, created)| (name.clone(), *created))
            .collect()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Writes the folder and record on every online drive. Caller holds `lock`.
    pub(crate) async fn create_locked(&self, bucket: &str) -> Result<()> {
        if self.created(bucket).is_some() {
            return Err(StorageError::BucketExists(bucket.into()));
        }
        let now = self.env.now_utc();
        let record = BucketRecord {
            created_unix_ms: (now.unix_timestamp_nanos() / 1_000_000) as i64,
        };
        let written = join_all(self.drives.iter().map(|drive| {
            let record = &record;
            async move {
                if !drive.online().await {
                    return Err(io::Error::other("drive is offline"));
                }
                self.write_bucket(drive, bucket, record).await
            }
        }))
        .await
        .iter()
        .filter(|result| result.is_ok())
        .count();
        if written < self.drives.len() / 2 + 1 {
            return Err(StorageError::WriteQuorum(format!("bucket {bucket}")));
        }
        self.write().insert(bucket.into(), created_at(&record));
        Ok(())
    }

    /// Removes the record and folder on every drive. Caller holds `lock` and checked that
    /// the bucket is empty.
    pub(crate) async fn remove_locked(&self, bucket: &str) {
        let removals = self.drives.iter().map(|drive| async move {
            if let Ok(record) = record_path(bucket) {
                let _ = drive.remove_file(&record).await;
                let _ = drive.sync_dir(&records_dir()).await;
            }
            if let Ok(folder) = ErasureSet::bucket_dir(bucket) {
                drive.remove_any(&folder).await;
            }
        });
        join_all(removals).await;
        self.write().remove(bucket);
    }

    /// Makes the folder and record of every bucket (and the system area's folder) on every
    /// online drive that lacks them; returns how many it made and how many it could not.
    pub(crate) async fn heal(&self) -> (u64, u64) {
        let buckets = self.all();
        let mut healed = 0;
        let mut failed = 0;
        for drive in &self.drives {
            if !drive.online().await {
                continue;
            }
            if let Ok(system) = ErasureSet::bucket_dir(SYSTEM_BUCKET) {
                let _ = drive.create_dir_below(&DrivePath::root(), &system).await;
            }
            for (bucket, created) in &buckets {
                let Ok(folder) = ErasureSet::bucket_dir(bucket) else {
                    continue;
                };
                let Ok(record) = record_path(bucket) else {
                    continue;
                };
                let has_folder = drive.path_kind(&folder).await.is_ok();
                let has_record = drive.read_file(&record).await.is_ok();
                if has_folder && has_record {
                    continue;
                }
                let record = BucketRecord {
                    created_unix_ms: (created.unix_timestamp_nanos() / 1_000_000) as i64,
                };
                match self.write_bucket(drive, bucket, &record).await {
                    Ok(()) => {
                        tracing::info!(drive = %drive.root().display(), %bucket, "bucket folder made again");
                        healed += 1;
                    }
                    Err(error) => {
                        tracing::warn!(
                            drive = %drive.root().display(),
                            %bucket,
                            "healing the bucket folder: {error}"
                        );
                        failed += 1;
                    }
                }
            }
        }
        (healed, failed)
    }

    async fn write_bucket(
        &self,
        drive: &Drive,
        bucket: &str,
        record: &BucketRecord,
    ) -> io::Result<()> {
        let folder = ErasureSet::bucket_dir(bucket)?;
        drive.create_dir_below(&DrivePath::root(), &folder).await?;
        let json = serde_json::to_vec(record).map_err(io::Error::other)?;
        let name = format!("bucket-{}", self.env.new_id());
        drive
            .write_atomic(
                &system_dir(),
                &ErasureSet::tmp_root(),
                &name,
                &record_path(bucket)?,
                Bytes::from(json),
            )
            .await
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, OffsetDateTime>> {
        self.names
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, OffsetDateTime>> {
        self.names
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn records_dir() -> DrivePath {
    system_dir().child("buckets")
}

fn record_path(bucket: &str) -> io::Result<DrivePath> {
    records_dir().join(&format!("{bucket}.json"))
}

fn created_at(record: &BucketRecord) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(record.created_unix_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
