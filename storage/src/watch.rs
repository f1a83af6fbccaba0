//! In-process change notification: counters of the writes into watched folders.
//!
//! A reader that caches what a folder held (the sharing layer caches the latest snapshot of
//! a table's `_delta_log/`) watches the folder and compares the counter with the value it saw
//! before reading the folder: an unchanged counter means no object directly inside the folder
//! was written, replaced or deleted through this node since.
//!
//! Invariant: every put, multipart completion and delete bumps the counter of the object's
//! folder once the attempt has finished, whether it succeeded or not (a failed write may
//! still have left a readable object behind).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Counters per watched `(bucket, folder)`; folders end with `/` (or are `""`).
#[derive(Default)]
pub(crate) struct FolderWatches {
    folders: RwLock<HashMap<(String, String), Arc<AtomicU64>>>,
}

impl FolderWatches {
    /// The counter of `bucket/folder`, registered on first use.
    pub(crate) fn watch(&self, bucket: &str, folder: &str) -> Arc<AtomicU64> {
        let key = (bucket.to_string(), folder.to_string());
        if let Some(counter) = self.read().get(&key) {
            return counter.clone();
        }
        let mut folders = self
            .folders
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        folders.entry(key).or_default().clone()
    }

    /// Records that the object `bucket/key` changed (or may have).
    pub(crate) fn touch(&self, bucket: &str, key: &str) {
        let folders = self.read();
        if folders.is_empty() {
            return;
        }
        let folder = key.rfind('/').map_or("", |slash| &key[..=slash]);
        if let Some(counter) = folders.get(&(bucket.to_string(), folder.to_string())) {
            counter.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(String, String), Arc<AtomicU64>>> {
        self.folders
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_directly_inside_a_watched_folder_count() {
        let watches = FolderWatches::default();
        let log = watches.watch("lake", "t/_delta_log/");
        watches.touch("lake", "t/_delta_log/00000000000000000001.json");
        watches.touch("lake", "t/_delta_log/_sidecars/a.parquet");
        watches.touch("lake", "t/part-0.parquet");
        watches.touch("other", "t/_delta_log/00000000000000000001.json");
        assert_eq!(log.load(Ordering::Acquire), 1);
        assert!(Arc::ptr_eq(&log, &watches.watch("lake", "t/_delta_log/")));
        let root = watches.watch("lake", "");
        watches.touch("lake", "top.json");
        assert_eq!(root.load(Ordering::Acquire), 1);
    }
}
