//! Drive I/O: the one seam through which `storage` touches drives.
//!
//! Two back-ends implement it: io_uring (a ring owned by a dedicated thread, fed through a
//! queue, so callers' futures stay `Send` and work from any tokio runtime) and a blocking
//! thread pool (`tokio::task::spawn_blocking`). `IoChoice::Auto` probes io_uring once
//! (setup, then every opcode we need) and falls back to the pool when the kernel refuses
//! it (EPERM/ENOSYS/EACCES, `kernel.io_uring_disabled`, a missing opcode), or when
//! `LAKESHARE_FORCE_FALLBACK_IO=1` is set. Path operations the ring cannot run (an old
//! kernel without `openat`, `statx`, `renameat`, `unlinkat` or `mkdirat` on io_uring) go
//! to the blocking pool; directory listing, recursive removal and `statvfs` always do.
//!
//! Contract shared by both back-ends (checked by `conformance`):
//! - `read_at` returns fewer bytes than asked only at end of file.
//! - `write_at` writes the whole buffer or fails.
//! - `rename` is atomic and durable: it fsyncs the target's parent directory.
//! - Paths are absolute; a missing file is `io::ErrorKind::NotFound`.
//! - Errors are the operating system's, unchanged (`raw_os_error` is kept).

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod uring;

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use uring::Ring;

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
    ring: Option<Arc<Ring>>,
    fallback_reason: Option<Arc<str>>,
}

impl DriveIo {
    /// Builds the back-end asked for. `Uring` fails when io_uring is unavailable;
    /// `Auto` falls back to threads and says why in the returned value's `fallback_reason`.
    pub fn new(choice: IoChoice) -> io::Result<DriveIo> {
        let threads = |reason: Option<String>| DriveIo {
            ring: None,
            fallback_reason: reason.map(Arc::from),
        };
        match choice {
            IoChoice::Threads => Ok(threads(None)),
            IoChoice::Uring => match start_uring() {
                Ok(ring) => Ok(DriveIo::from_ring(ring)),
                Err((reason, source)) => Err(io::Error::new(
                    source.kind(),
                    format!("io_uring is unavailable: {reason}"),
                )),
            },
            IoChoice::Auto => match start_uring() {
                Ok(ring) => Ok(DriveIo::from_ring(ring)),
                Err((reason, _)) => Ok(threads(Some(reason))),
            },
        }
    }

    pub fn kind(&self) -> IoBackendKind {
        match self.ring {
            Some(_) => IoBackendKind::Uring,
            None => IoBackendKind::Threads,
        }
    }

    /// Why `Auto` fell back to threads, if it did.
    pub fn fallback_reason(&self) -> Option<String> {
        self.fallback_reason.as_deref().map(str::to_owned)
    }

    pub async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<File>> {
        match self.ring.as_deref() {
            Some(ring) if ring.path_ops.open => ring.open(path, mode, false).await.map(Arc::new),
            _ => {
                let path = path.to_owned();
                self.blocking(move || open_blocking(&path, mode).map(Arc::new))
                    .await
            }
        }
    }

    pub async fn read_at(&self, file: &Arc<File>, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if let Some(ring) = &self.ring {
            return ring.read_at(file, offset, len).await;
        }
        let file = file.clone();
        self.blocking(move || read_at_blocking(&file, offset, len))
            .await
    }

    pub async fn write_at(&self, file: &Arc<File>, offset: u64, data: Bytes) -> io::Result<()> {
        if let Some(ring) = &self.ring {
            return ring.write_at(file, offset, data).await;
        }
        let file = file.clone();
        self.blocking(move || file.write_all_at(&data, offset))
            .await
    }

    pub async fn fsync(&self, file: &Arc<File>) -> io::Result<()> {
        if let Some(ring) = &self.ring {
            return ring.fsync(file).await;
        }
        let file = file.clone();
        self.blocking(move || file.sync_all()).await
    }

    /// Reads a whole file.
    pub async fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let Some(ring) = self.ring.as_deref().filter(|r| r.path_ops.statx) else {
            let path = path.to_owned();
            return self.blocking(move || std::fs::read(path)).await;
        };
        let file = self.open(path, OpenMode::Read).await?;
        let size_bytes = ring.statx_file(&file).await?.stx_size;
        // Ask one byte more than the size, so a file that has not grown ends in one read.
        let mut wanted = usize::try_from(size_bytes)
            .map_err(|_| io::Error::other("file larger than memory"))?
            .saturating_add(1);
        let mut contents = ring.read_at(&file, 0, wanted).await?;
        while contents.len() == wanted {
            wanted = READ_FILE_GROWTH_BYTES;
            let more = ring.read_at(&file, contents.len() as u64, wanted).await?;
            contents.extend_from_slice(&more);
            if more.len() < wanted {
                break;
            }
        }
        Ok(contents)
    }

    /// Creates (or truncates) `path`, writes `data`, fsyncs it. Parent must exist.
    pub async fn write_file_synced(&self, path: &Path, data: Bytes) -> io::Result<()> {
        if self.ring.is_none() {
            let path = path.to_owned();
            return self
                .blocking(move || {
                    let file = open_blocking(&path, OpenMode::CreateTruncate)?;
                    file.write_all_at(&data, 0)?;
                    file.sync_all()
                })
                .await;
        }
        let file = self.open(path, OpenMode::CreateTruncate).await?;
        self.write_at(&file, 0, data).await?;
        self.fsync(&file).await
    }

    /// Atomic rename (same filesystem); fsyncs the target's parent directory.
    pub async fn rename(&self, source: &Path, target: &Path) -> io::Result<()> {
        let parent = parent_of(target).to_owned();
        match self.ring.as_deref() {
            Some(ring) if ring.path_ops.rename && ring.path_ops.open => {
                ring.rename(source, target).await?;
                let directory = Arc::new(ring.open(&parent, OpenMode::Read, true).await?);
                ring.fsync(&directory).await
            }
            _ => {
                let (source, target) = (source.to_owned(), target.to_owned());
                self.blocking(move || {
                    std::fs::rename(&source, &target)?;
                    open_directory_blocking(&parent)?.sync_all()
                })
                .await
            }
        }
    }

    pub async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let Some(ring) = self
            .ring
            .as_deref()
            .filter(|r| r.path_ops.mkdir && r.path_ops.statx)
        else {
            let path = path.to_owned();
            return self.blocking(move || std::fs::create_dir_all(path)).await;
        };
        // The common case: the folder exists already, one statx.
        match ring.statx_path(path).await {
            Ok(status) if is_directory(&status) => return Ok(()),
            Ok(_) => return Err(not_a_directory(path)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        // Walk up to the first ancestor that exists, then create downwards.
        let mut missing = vec![path];
        let mut current = path;
        while let Some(parent) = current.parent().filter(|p| !p.as_os_str().is_empty()) {
            match ring.mkdir(parent).await {
                Ok(()) => break,
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => break,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    missing.push(parent);
                    current = parent;
                }
                Err(error) => return Err(error),
            }
        }
        for folder in missing.into_iter().rev() {
            match ring.mkdir(folder).await {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    // Another writer made it at the same time; fine if it is a folder.
                    if !is_directory(&ring.statx_path(folder).await?) {
                        return Err(not_a_directory(folder));
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    pub async fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self.ring.as_deref() {
            Some(ring) if ring.path_ops.unlink => ring.unlink(path, false).await,
            _ => {
                let path = path.to_owned();
                self.blocking(move || std::fs::remove_file(path)).await
            }
        }
    }

    pub async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        self.blocking(move || std::fs::remove_dir_all(path)).await
    }

    /// Removes `path` if it is an empty directory; `Ok(false)` if it was not empty.
    pub async fn remove_dir_if_empty(&self, path: &Path) -> io::Result<bool> {
        let removed = match self.ring.as_deref() {
            Some(ring) if ring.path_ops.unlink => ring.unlink(path, true).await,
            _ => {
                let path = path.to_owned();
                self.blocking(move || std::fs::remove_dir(path)).await
            }
        };
        match removed {
            Ok(()) => Ok(true),
            Err(error) if matches!(error.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Names in a directory (not recursive), with whether each is a directory.
    pub async fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>> {
        let path = path.to_owned();
        self.blocking(move || read_dir_blocking(&path)).await
    }

    /// Free and total bytes of the filesystem holding `path`.
    pub async fn disk_space(&self, path: &Path) -> io::Result<(u64, u64)> {
        let path = path.to_owned();
        self.blocking(move || disk_space_blocking(&path)).await
    }

    /// Runs a blocking closure on the I/O pool (for rare operations with no async form).
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        match tokio::task::spawn_blocking(f).await {
            Ok(result) => result,
            Err(error) => Err(io::Error::other(format!(
                "blocking I/O task failed: {error}"
            ))),
        }
    }

    fn from_ring(ring: Ring) -> DriveIo {
        DriveIo {
            ring: Some(Arc::new(ring)),
            fallback_reason: None,
        }
    }
}

impl std::fmt::Debug for DriveIo {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DriveIo")
            .field("kind", &self.kind())
            .field("fallback_reason", &self.fallback_reason)
            .finish()
    }
}

/// Read size after the first read of `read_file` filled its buffer (the file grew).
const READ_FILE_GROWTH_BYTES: usize = 64 * 1024;

/// Starts the ring unless the environment or the kernel forbids it.
fn start_uring() -> Result<Ring, (String, io::Error)> {
    let forced = std::env::var(FORCE_FALLBACK_ENV).ok();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    if let Some(reason) = refusal(forced.as_deref(), disabled.as_deref()) {
        return Err((reason, io::Error::from(io::ErrorKind::Unsupported)));
    }
    Ring::start().map_err(|unavailable| (unavailable.reason, unavailable.source))
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

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

fn is_directory(status: &libc::statx) -> bool {
    u32::from(status.stx_mode) & libc::S_IFMT == libc::S_IFDIR
}

fn not_a_directory(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{} exists and is not a directory", path.display()),
    )
}

fn open_blocking(path: &Path, mode: OpenMode) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    match mode {
        OpenMode::Read => options.read(true),
        OpenMode::CreateTruncate => options.write(true).create(true).truncate(true).mode(0o644),
    };
    options.open(path)
}

fn open_directory_blocking(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
}

fn read_at_blocking(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buffer.truncate(filled);
    Ok(buffer)
}

fn read_dir_blocking(path: &Path) -> io::Result<Vec<(String, bool)>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let is_dir = entry.file_type()?.is_dir();
        match entry.file_name().into_string() {
            Ok(name) => names.push((name, is_dir)),
            Err(name) => tracing::warn!(
                folder = %path.display(),
                name = ?name,
                "skipping a name that is not UTF-8"
            ),
        }
    }
    Ok(names)
}

fn disk_space_blocking(path: &Path) -> io::Result<(u64, u64)> {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statvfs is plain old data; all zeroes is a valid value.
    let mut status: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `status` is a live, writable statvfs.
    let result = unsafe { libc::statvfs(path.as_ptr(), &mut status) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let fragment_bytes = status.f_frsize as u64;
    let free_bytes = (status.f_bavail as u64).saturating_mul(fragment_bytes);
    let total_bytes = (status.f_blocks as u64).saturating_mul(fragment_bytes);
    Ok((free_bytes, total_bytes))
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
        let io = DriveIo::new(IoChoice::Threads)?;
        assert_eq!(io.kind(), IoBackendKind::Threads);
        assert_eq!(io.fallback_reason(), None);
        Ok(())
    }

    #[test]
    fn auto_is_uring_or_says_why_not() -> io::Result<()> {
        let io = DriveIo::new(IoChoice::Auto)?;
        match io.kind() {
            IoBackendKind::Uring => assert_eq!(io.fallback_reason(), None),
            IoBackendKind::Threads => assert!(io.fallback_reason().is_some()),
        }
        Ok(())
    }

    /// The io_uring back-end, or `None` (with a note) where this machine refuses it.
    fn uring() -> Option<DriveIo> {
        match DriveIo::new(IoChoice::Uring) {
            Ok(io) => {
                assert_eq!(io.kind(), IoBackendKind::Uring);
                Some(io)
            }
            Err(error) => {
                eprintln!("skipping an io_uring test: {error}");
                None
            }
        }
    }

    fn threads() -> DriveIo {
        match DriveIo::new(IoChoice::Threads) {
            Ok(io) => io,
            Err(error) => panic!("the thread pool back-end always builds: {error}"),
        }
    }

    /// Expands one conformance check into a `uring_*` and a `fallback_*` test.
    macro_rules! conformance_tests {
        ($($check:ident => $uring:ident, $fallback:ident;)*) => {$(
            #[tokio::test]
            async fn $uring() {
                let Some(io) = uring() else { return };
                let folder = tempfile::tempdir().expect("temp folder");
                conformance::$check(&io, folder.path()).await;
            }

            #[tokio::test]
            async fn $fallback() {
                let folder = tempfile::tempdir().expect("temp folder");
                conformance::$check(&threads(), folder.path()).await;
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
        remove_dir_if_empty_keeps_full_folders => uring_remove_dir_if_empty_keeps_full_folders,
            fallback_remove_dir_if_empty_keeps_full_folders;
        disk_space_is_sane => uring_disk_space_is_sane, fallback_disk_space_is_sane;
        many_operations_in_flight => uring_many_operations_in_flight,
            fallback_many_operations_in_flight;
    }

    #[test]
    fn uring_concurrent_runtimes() {
        let Some(io) = uring() else { return };
        let folder = tempfile::tempdir().expect("temp folder");
        conformance::concurrent_runtimes(&io, folder.path());
    }

    #[test]
    fn fallback_concurrent_runtimes() {
        let folder = tempfile::tempdir().expect("temp folder");
        conformance::concurrent_runtimes(&threads(), folder.path());
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
        let mut read = Box::pin(io.read_at(&file, 0, 1 << 20));
        let _ = futures::poll!(read.as_mut());
        drop(read);
        let again = io
            .read_at(&file, 0, 16)
            .await
            .expect("read after a dropped read");
        assert_eq!(again, vec![7u8; 16]);
    }
}
