//! Drive I/O: the one seam through which `storage` touches drives.
//!
//! Two back-ends implement it: io_uring (a ring owned by a dedicated thread, fed through a
//! channel, so callers' futures stay `Send`) and a blocking thread pool. `IoChoice::Auto`
//! probes io_uring once (every opcode we use) and falls back to the pool when the kernel
//! refuses it (EPERM/ENOSYS/EACCES, `kernel.io_uring_disabled`), or when
//! `LAKESHARE_FORCE_FALLBACK_IO=1` is set.
//!
//! Contract shared by both back-ends:
//! - `read_at` returns fewer bytes than asked only at end of file.
//! - `write_at` writes the whole buffer or fails.
//! - Paths are absolute; a missing file is `io::ErrorKind::NotFound`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

/// What the operator asked for (`--io`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoChoice {
    Auto,
    Uring,
    Threads,
}

/// What is in use after probing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoBackendKind {
    Uring,
    Threads,
}

/// How `open` opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    Read,
    /// Create or truncate, write only.
    CreateTruncate,
}

/// Handle to the drive I/O back-end; cheap to clone, shared by all cores.
#[derive(Clone)]
pub struct DriveIo {
    _private: (),
}

impl DriveIo {
    /// Builds the back-end asked for. `Uring` fails when io_uring is unavailable;
    /// `Auto` falls back to threads and says why in the returned value's `fallback_reason`.
    pub fn new(_choice: IoChoice) -> io::Result<DriveIo> {
        todo!()
    }
    pub fn kind(&self) -> IoBackendKind {
        todo!()
    }
    /// Why `Auto` fell back to threads, if it did.
    pub fn fallback_reason(&self) -> Option<String> {
        todo!()
    }
    pub async fn open(&self, _path: &Path, _mode: OpenMode) -> io::Result<Arc<File>> {
        todo!()
    }
    pub async fn read_at(&self, _file: &Arc<File>, _offset: u64, _len: usize) -> io::Result<Vec<u8>> {
        todo!()
    }
    pub async fn write_at(&self, _file: &Arc<File>, _offset: u64, _data: Bytes) -> io::Result<()> {
        todo!()
    }
    pub async fn fsync(&self, _file: &Arc<File>) -> io::Result<()> {
        todo!()
    }
    /// Reads a whole file.
    pub async fn read_file(&self, _path: &Path) -> io::Result<Vec<u8>> {
        todo!()
    }
    /// Creates (or truncates) `path`, writes `data`, fsyncs it. Parent must exist.
    pub async fn write_file_synced(&self, _path: &Path, _data: Bytes) -> io::Result<()> {
        todo!()
    }
    /// Atomic rename (same filesystem); fsyncs the target's parent directory.
    pub async fn rename(&self, _source: &Path, _target: &Path) -> io::Result<()> {
        todo!()
    }
    pub async fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        todo!()
    }
    pub async fn remove_file(&self, _path: &Path) -> io::Result<()> {
        todo!()
    }
    pub async fn remove_dir_all(&self, _path: &Path) -> io::Result<()> {
        todo!()
    }
    /// Removes `path` if it is an empty directory; `Ok(false)` if it was not empty.
    pub async fn remove_dir_if_empty(&self, _path: &Path) -> io::Result<bool> {
        todo!()
    }
    /// Names in a directory (not recursive), with whether each is a directory.
    pub async fn read_dir(&self, _path: &Path) -> io::Result<Vec<(String, bool)>> {
        todo!()
    }
    /// Free and total bytes of the filesystem holding `path`.
    pub async fn disk_space(&self, _path: &Path) -> io::Result<(u64, u64)> {
        todo!()
    }
    /// Runs a blocking closure on the I/O pool (for rare operations with no async form).
    pub async fn blocking<T: Send + 'static>(
        &self,
        _f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        todo!()
    }
}

#[allow(dead_code)]
fn _unused(_: PathBuf) {}
