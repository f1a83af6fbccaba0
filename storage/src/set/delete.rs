//! Deletes: under the object lock, the metadata copies go first (durably), then the data
//! dirs are retired (kept for open readers) and empty folders pruned. A delete that misses
//! quorum puts the metadata copies back, so a failed delete leaves the object readable.

use std::sync::Arc;

use futures::future::join_all;

use super::{object_path_error, ErasureSet, MetaRead};
use crate::drive::is_not_found;
use crate::error::{Result, StorageError};

impl ErasureSet {
    /// Deleting a missing key succeeds.
    pub(crate) async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let _guard = self.object_locks.lock(&format!("{bucket}/{key}")).await;
        let key_dir = Self::key_dir(bucket, key).map_err(|e| object_path_error(bucket, key, e))?;
        let meta_path =
            Self::meta_path(bucket, key).map_err(|e| object_path_error(bucket, key, e))?;
        let previous = self.read_metas(bucket, key).await;
        let quorum = match self.choose(&previous, true).await {
            Ok(Some(chosen)) => Self::write_quorum(chosen.meta.data, chosen.meta.parity),
            _ => self.total() / 2 + 1,
        };
        let removals = (0..self.total()).map(|slot| {
            let (key_dir, meta_path) = (&key_dir, &meta_path);
            async move {
                let drive = &self.drives[slot];
                if !drive.online().await {
                    return Err(std::io::Error::other("drive is offline"));
                }
                match drive.remove_file(meta_path).await {
                    Err(error) if !is_not_found(&error) => return Err(error),
                    _ => {}
                }
                match drive.sync_dir(key_dir).await {
                    Err(error) if !is_not_found(&error) => Err(error),
                    _ => Ok(()),
                }
            }
        });
        let results = join_all(removals).await;
        let removed = results.iter().filter(|result| result.is_ok()).count();
        if removed < quorum {
            for (slot, result) in results.iter().enumerate() {
                if let (Ok(()), MetaRead::Found { raw, .. }) = (result, &previous[slot]) {
                    let _ = self.write_record(slot, &meta_path, raw.clone()).await;
                }
            }
            return Err(StorageError::WriteQuorum(format!("delete {bucket}/{key}")));
        }
        self.retire_replaced(bucket, key, &previous, None).await;
        self.prune_key_dirs(bucket, key).await;
        Ok(())
    }

    /// Removes what is left of `key` on every online drive (heal of an object too damaged to
    /// read, or one whose metadata survives on too few drives). Caller holds the object lock.
    pub(crate) async fn purge_locked(&self, bucket: &str, key: &str, previous: &[MetaRead]) {
        let Ok(meta_path) = Self::meta_path(bucket, key) else {
            return;
        };
        for drive in &self.drives {
            if drive.online().await {
                let _ = drive.remove_file(&meta_path).await;
            }
        }
        self.retire_replaced(bucket, key, previous, None).await;
        self.retire_unnamed_data_dirs(bucket, key, None).await;
        self.prune_key_dirs(bucket, key).await;
    }

    /// Prunes the key folder (and empty parents, up to the bucket folder) on every drive.
    async fn prune_key_dirs(&self, bucket: &str, key: &str) {
        let (Ok(key_dir), Ok(holder), Ok(bucket_dir)) = (
            Self::key_dir(bucket, key),
            Self::data_holder(bucket, key),
            Self::bucket_dir(bucket),
        ) else {
            return;
        };
        let prunes = self.drives.iter().map(|drive| {
            let (key_dir, holder, bucket_dir) = (&key_dir, &holder, &bucket_dir);
            async move {
                let _ = drive.remove_dir(holder).await;
                drive.prune_empty_parents(key_dir, bucket_dir).await;
            }
        });
        join_all(prunes).await;
    }

    /// Retires, on every drive, the data dirs under the key folder other than `kept`
    /// (left by a crash, or retired while a reader held them and the node stopped).
    pub(crate) async fn retire_unnamed_data_dirs(
        &self,
        bucket: &str,
        key: &str,
        kept: Option<uuid::Uuid>,
    ) {
        let Ok(holder) = Self::data_holder(bucket, key) else {
            return;
        };
        let mut found: std::collections::BTreeMap<uuid::Uuid, Vec<_>> = Default::default();
        for drive in &self.drives {
            let Ok(entries) = drive.read_dir(&holder).await else {
                continue;
            };
            for (name, _) in entries {
                let Ok(data_dir) = uuid::Uuid::parse_str(&name) else {
                    continue;
                };
                if Some(data_dir) == kept {
                    continue;
                }
                found
                    .entry(data_dir)
                    .or_default()
                    .push((Arc::clone(drive), holder.join_id(data_dir)));
            }
        }
        for (data_dir, copies) in found {
            self.readers.retire(data_dir, copies).await;
        }
    }
}
