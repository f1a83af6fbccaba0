//! Data dirs in use by open readers. A GET that has started streams the version it started
//! on to the end, even when that version is overwritten or deleted meanwhile (MinIO keeps
//! the old data dir under a read lock the same way): writers retire an old data dir through
//! `retire`, which removes it at once when nobody reads it and otherwise leaves it to the
//! last reader, whose guard removes it on drop.
//!
//! Invariants: a data dir is removed only while no guard for it is alive, and no guard is
//! handed out for a data dir whose removal has begun (`register` then answers `None`, and
//! the reader reads the metadata again). A crash leaves retired data dirs behind; heal
//! removes data dirs that no metadata names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use uuid::Uuid;

use crate::drive::{Drive, DrivePath};

#[derive(Default)]
pub(crate) struct OpenReaders {
    dirs: Mutex<HashMap<Uuid, InUse>>,
}

#[derive(Default)]
struct InUse {
    readers: usize,
    /// Removal has begun: no new reader may start on it.
    removing: bool,
    /// Copies to remove once the last reader is gone.
    retired: Vec<(Arc<Drive>, DrivePath)>,
}

/// Keeps one data dir from being removed while it lives.
pub(crate) struct ReadGuard {
    readers: Weak<OpenReaders>,
    data_dir: Uuid,
}

impl OpenReaders {
    /// A guard for `data_dir`, or `None` when its removal has begun.
    pub(crate) fn register(self: &Arc<Self>, data_dir: Uuid) -> Option<ReadGuard> {
        let mut dirs = self.lock();
        let entry = dirs.entry(data_dir).or_default();
        if entry.removing {
            return None;
        }
        entry.readers += 1;
        Some(ReadGuard {
            readers: Arc::downgrade(self),
            data_dir,
        })
    }

    /// Removes the copies of `data_dir` now, or when its last reader is done.
    pub(crate) async fn retire(&self, data_dir: Uuid, copies: Vec<(Arc<Drive>, DrivePath)>) {
        if copies.is_empty() {
            return;
        }
        {
            let mut dirs = self.lock();
            let entry = dirs.entry(data_dir).or_default();
            if entry.readers > 0 {
                entry.retired.extend(copies);
                return;
            }
            entry.removing = true;
        }
        remove_copies(&copies).await;
        self.finish_removal(data_dir);
    }

    fn finish_removal(&self, data_dir: Uuid) {
        let mut dirs = self.lock();
        let done = dirs.get(&data_dir).is_some_and(|entry| entry.readers == 0);
        if done {
            dirs.remove(&data_dir);
        }
    }

    /// A guard was dropped; the retired copies, if it was the last reader.
    fn release(&self, data_dir: Uuid) -> Vec<(Arc<Drive>, DrivePath)> {
        let mut dirs = self.lock();
        let Some(entry) = dirs.get_mut(&data_dir) else {
            return Vec::new();
        };
        entry.readers = entry.readers.saturating_sub(1);
        if entry.readers > 0 {
            return Vec::new();
        }
        if entry.retired.is_empty() {
            if !entry.removing {
                dirs.remove(&data_dir);
            }
            return Vec::new();
        }
        entry.removing = true;
        std::mem::take(&mut entry.retired)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, InUse>> {
        // Every update is a single insert, remove or counter step: consistent after a panic.
        self.dirs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let Some(readers) = self.readers.upgrade() else {
            return;
        };
        let copies = readers.release(self.data_dir);
        if copies.is_empty() {
            return;
        }
        let data_dir = self.data_dir;
        // Outside a runtime (never on the serving path) the copies stay; heal removes them.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                remove_copies(&copies).await;
                readers.finish_removal(data_dir);
            });
        }
    }
}

async fn remove_copies(copies: &[(Arc<Drive>, DrivePath)]) {
    let removals = copies
        .iter()
        .map(|(drive, path)| async move { drive.remove_any(path).await });
    futures::future::join_all(removals).await;
}
