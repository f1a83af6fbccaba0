//! Drive I/O: the one seam through which `storage` touches drives, the `DriveIo` trait.
//!
//! Two back-ends of this crate implement it: io_uring (`uring`: a ring owned by a dedicated
//! thread, fed through a queue, so callers' futures stay `Send` and work from any tokio
//! runtime) and a blocking thread pool (`threads`: `tokio::task::spawn_blocking`). A third,
//! the simulated drive of `storage`'s tests, lives outside the operating system. `IoChoice::Auto`
//! probes io_uring once (setup, then every opcode we need) and falls back to the pool when the
//! kernel refuses it (EPERM/ENOSYS/EACCES, `kernel.io_uring_disabled`, a missing opcode), or
//! when `LAKESHARE_FORCE_FALLBACK_IO=1` is set. Path operations the ring cannot run (an old
//! kernel without `openat`, `statx`, `renameat`, `unlinkat` or `mkdirat` on io_uring) go to
//! the blocking pool; directory listing, recursive removal, locks and `statvfs` always do.
//!
//! Contract shared by every back-end (checked by `conformance`):
//! - Paths are absolute; a missing file or folder is `io::ErrorKind::NotFound`.
//! - `read_at` fills the buffer it is given, shorter only at end of file.
//! - `write_at` writes the whole buffer or fails.
//! - Durability: file bytes are durable after `fsync`; a folder's entries after `sync_dir`.
//!   `rename` and `create_dir` are durable when they return (they sync the parent folder);
//!   `remove_file`, `remove_dir` and `remove_dir_all` are not (call `sync_dir` after).
//! - `rename` is atomic: a reader sees the old target or the new one, never neither.
//! - `lock_exclusive` fails with `io::ErrorKind::WouldBlock` while another holder (another
//!   process) has the lock; the lock lasts while any clone of the returned file lives.
//! - Errors are the operating system's, unchanged (`raw_os_error` is kept).

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod threads;
mod uring;

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub use threads::ThreadPoolIo;
pub use uring::UringIo;

/// Environment variable that forces the blocking pool when set to `1`.
pub const FORCE_FALLBACK_ENV: &str = "LAKESHARE_FORCE_FALLBACK_IO";

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
    /// A drive simulated in memory (tests only).
    Simulated,
}

/// How `open` opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    Read,
    /// Create or truncate, write only.
    CreateTruncate,
}

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    File,
    Directory,
}

/// An open file of a drive back-end. Cheap to clone; the file closes with the last clone.
#[derive(Clone, Debug)]
pub struct DriveFile(Handle);

#[derive(Clone, Debug)]
enum Handle {
    Os(Arc<File>),
    /// A file of a back-end outside the operating system, named by an id it chose.
    Virtual(Arc<u64>),
}

impl DriveFile {
    pub fn from_os(file: File) -> DriveFile {
        DriveFile(Handle::Os(Arc::new(file)))
    }

    /// A file of a back-end outside the operating system (the simulated drive).
    pub fn from_virtual(id: u64) -> DriveFile {
        DriveFile(Handle::Virtual(Arc::new(id)))
    }

    pub fn os(&self) -> Option<&Arc<File>> {
        match &self.0 {
            Handle::Os(file) => Some(file),
            Handle::Virtual(_) => None,
        }
    }

    pub fn virtual_id(&self) -> Option<u64> {
        match &self.0 {
            Handle::Virtual(id) => Some(**id),
            Handle::Os(_) => None,
        }
    }

    /// How many clones of this handle are alive (the simulated drive closes on the last).
    pub fn clone_count(&self) -> usize {
        match &self.0 {
            Handle::Os(file) => Arc::strong_count(file),
            Handle::Virtual(id) => Arc::strong_count(id),
        }
    }

    /// The operating system's file, or an error for a handle of another back-end.
    fn os_file(&self) -> io::Result<&Arc<File>> {
        self.os().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a file of another drive back-end",
            )
        })
    }
}

/// The drive operations storage needs. See the module doc for the contract.
#[async_trait::async_trait]
pub trait DriveIo: Send + Sync + 'static {
    fn kind(&self) -> IoBackendKind;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<DriveFile>;

    /// Reads `buffer.len()` bytes at `offset` into `buffer` (its bytes are overwritten) and
    /// returns it, truncated to what was read: shorter only at end of file.
    async fn read_at(&self, file: &DriveFile, offset: u64, buffer: Vec<u8>) -> io::Result<Vec<u8>>;

    /// Writes all of `data` at `offset`.
    async fn write_at(&self, file: &DriveFile, offset: u64, data: Bytes) -> io::Result<()>;

    async fn fsync(&self, file: &DriveFile) -> io::Result<()>;

    /// Whether the open file still has a name (it was not unlinked or renamed over).
    async fn is_linked(&self, file: &DriveFile) -> io::Result<bool>;

    /// Reads a whole file.
    async fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Creates (or truncates) `path`, writes `data` and fsyncs the file. Its folder must exist.
    async fn write_file_synced(&self, path: &Path, data: Bytes) -> io::Result<()>;

    /// Atomic, durable rename on one filesystem (syncs the target's folder).
    async fn rename(&self, source: &Path, target: &Path) -> io::Result<()>;

    /// Makes one folder, durably (syncs its parent). `AlreadyExists` when the name exists,
    /// `NotFound` when the parent is missing.
    async fn create_dir(&self, path: &Path) -> io::Result<()>;

    /// Makes the entries of folder `path` durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;

    async fn path_kind(&self, path: &Path) -> io::Result<PathKind>;

    async fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Removes `path` if it is an empty folder; `Ok(false)` if it holds anything.
    async fn remove_dir(&self, path: &Path) -> io::Result<bool>;

    /// Removes a folder and everything under it.
    async fn remove_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Names in a folder (not recursive), with whether each is a folder.
    async fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>>;

    /// Free and total bytes of the filesystem holding `path`.
    async fn disk_space(&self, path: &Path) -> io::Result<(u64, u64)>;

    /// Creates `path` if needed and takes an exclusive lock on it, held while the returned
    /// file (or a clone) lives. `WouldBlock` when another process holds it.
    async fn lock_exclusive(&self, path: &Path) -> io::Result<DriveFile>;
}

/// The back-end chosen at start-up, and why it is not io_uring when `Auto` fell back.
#[derive(Clone)]
pub struct IoBackend {
    pub io: Arc<dyn DriveIo>,
    pub fallback_reason: Option<String>,
}

impl IoBackend {
    /// Builds the back-end asked for. `Uring` fails when io_uring is unavailable; `Auto`
    /// falls back to threads and says why in `fallback_reason`.
    pub fn new(choice: IoChoice) -> io::Result<IoBackend> {
        let threads = |reason: Option<String>| IoBackend {
            io: Arc::new(ThreadPoolIo),
            fallback_reason: reason,
        };
        match choice {
            IoChoice::Threads => Ok(threads(None)),
            IoChoice::Uring => match UringIo::start() {
                Ok(io) => Ok(IoBackend {
                    io: Arc::new(io),
                    fallback_reason: None,
                }),
                Err((reason, source)) => Err(io::Error::new(
                    source.kind(),
                    format!("io_uring is unavailable: {reason}"),
                )),
            },
            IoChoice::Auto => match UringIo::start() {
                Ok(io) => Ok(IoBackend {
                    io: Arc::new(io),
                    fallback_reason: None,
                }),
                Err((reason, _)) => Ok(threads(Some(reason))),
            },
        }
    }

    pub fn kind(&self) -> IoBackendKind {
        self.io.kind()
    }
}

impl std::fmt::Debug for IoBackend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("IoBackend")
            .field("kind", &self.kind())
            .field("fallback_reason", &self.fallback_reason)
            .finish()
    }
}

/// Why the settings forbid io_uring before even trying it, if they do.
fn refusal(force_fallback: Option<&str>, io_uring_disabled: Option<&str>) -> Option<String> {
    if force_fallback.map(str::trim) == Some("1") {
        return Some(format!("{FORCE_FALLBACK_ENV}=1"));
    }
    match io_uring_disabled.map(str::trim) {
        None | Some("0") => None,
        Some(value) => Some(format!("kernel.io_uring_disabled = {value}")),
    }
}

/// Runs a blocking closure on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(error) => Err(io::Error::other(format!(
            "blocking I/O task failed: {error}"
        ))),
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_names_the_reason() {
        assert_eq!(refusal(None, Some("0\n")), None);
        assert_eq!(refusal(Some("0"), None), None);
        let forced = refusal(Some("1"), Some("0"));
        assert_eq!(forced.as_deref(), Some("LAKESHARE_FORCE_FALLBACK_IO=1"));
        let disabled = refusal(None, Some("2\n"));
        assert_eq!(disabled.as_deref(), Some("kernel.io_uring_disabled = 2"));
    }

    #[test]
    fn threads_choice_has_no_fallback_reason() -> io::Result<()> {
        let backend = IoBackend::new(IoChoice::Threads)?;
        assert_eq!(backend.kind(), IoBackendKind::Threads);
        assert_eq!(backend.fallback_reason, None);
        Ok(())
    }

    #[test]
    fn auto_is_uring_or_says_why_not() -> io::Result<()> {
        let backend = IoBackend::new(IoChoice::Auto)?;
        match backend.kind() {
            IoBackendKind::Uring => assert_eq!(backend.fallback_reason, None),
            _ => assert!(backend.fallback_reason.is_some()),
        }
        Ok(())
    }

    /// The io_uring back-end, or `None` (with a note) where this machine refuses it.
    fn uring() -> Option<Arc<dyn DriveIo>> {
        match IoBackend::new(IoChoice::Uring) {
            Ok(backend) => {
                assert_eq!(backend.kind(), IoBackendKind::Uring);
                Some(backend.io)
            }
            Err(error) => {
                eprintln!("skipping an io_uring test: {error}");
                None
            }
        }
    }

    fn threads() -> Arc<dyn DriveIo> {
        Arc::new(ThreadPoolIo)
    }

    /// Expands one conformance check into a `uring_*` and a `fallback_*` test.
    macro_rules! conformance_tests {
        ($($check:ident => $uring:ident, $fallback:ident;)*) => {$(
            #[tokio::test]
            async fn $uring() {
                let Some(io) = uring() else { return };
                let folder = tempfile::tempdir().expect("temp folder");
                conformance::$check(&*io, folder.path()).await;
            }

            #[tokio::test]
            async fn $fallback() {
                let folder = tempfile::tempdir().expect("temp folder");
                conformance::$check(&*threads(), folder.path()).await;
            }
        )*};
    }

    conformance_tests! {
        round_trip_at_offsets => uring_round_trip_at_offsets, fallback_round_trip_at_offsets;
        short_read_at_end_of_file => uring_short_read_at_end_of_file,
            fallback_short_read_at_end_of_file;
        missing_file_is_not_found => uring_missing_file_is_not_found,
            fallback_missing_file_is_not_found;
        whole_file_round_trip => uring_whole_file_round_trip, fallback_whole_file_round_trip;
        rename_replaces_atomically => uring_rename_replaces_atomically,
            fallback_rename_replaces_atomically;
        folders_create_list_and_remove => uring_folders_create_list_and_remove,
            fallback_folders_create_list_and_remove;
        remove_dir_keeps_full_folders => uring_remove_dir_keeps_full_folders,
            fallback_remove_dir_keeps_full_folders;
        unlinked_files_are_not_linked => uring_unlinked_files_are_not_linked,
            fallback_unlinked_files_are_not_linked;
        disk_space_is_sane => uring_disk_space_is_sane, fallback_disk_space_is_sane;
        many_operations_in_flight => uring_many_operations_in_flight,
            fallback_many_operations_in_flight;
    }

    #[tokio::test]
    async fn uring_lock_is_exclusive_between_processes() {
        let Some(io) = uring() else { return };
        let folder = tempfile::tempdir().expect("temp folder");
        conformance::lock_is_exclusive_between_holders(&*io, &*threads(), folder.path()).await;
    }

    #[tokio::test]
    async fn fallback_lock_is_exclusive_between_processes() {
        let folder = tempfile::tempdir().expect("temp folder");
        conformance::lock_is_exclusive_between_holders(&*threads(), &*threads(), folder.path())
            .await;
    }

    #[test]
    fn uring_concurrent_runtimes() {
        let Some(io) = uring() else { return };
        let folder = tempfile::tempdir().expect("temp folder");
        conformance::concurrent_runtimes(io, folder.path());
    }

    #[test]
    fn fallback_concurrent_runtimes() {
        let folder = tempfile::tempdir().expect("temp folder");
        conformance::concurrent_runtimes(threads(), folder.path());
    }

    #[tokio::test]
    async fn uring_dropped_read_future_leaves_ring_working() {
        let Some(io) = uring() else { return };
        let folder = tempfile::tempdir().expect("temp folder");
        let path = folder.path().join("data");
        io.write_file_synced(&path, Bytes::from(vec![7u8; 1 << 20]))
            .await
            .expect("write");
        let file = io.open(&path, OpenMode::Read).await.expect("open");
        // Poll a read once, then drop it: the ring keeps the buffer until completion.
        let mut read = Box::pin(io.read_at(&file, 0, vec![0; 1 << 20]));
        let _ = futures::poll!(read.as_mut());
        drop(read);
        let again = io
            .read_at(&file, 0, vec![0; 16])
            .await
            .expect("read after a dropped read");
        assert_eq!(again, vec![7u8; 16]);
    }
}
