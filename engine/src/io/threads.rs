//! The blocking back-end: every operation is a plain system call on tokio's blocking pool.
//! It is the fallback where io_uring is refused, and the pool the io_uring back-end hands
//! the operations it has no opcode for.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use bytes::Bytes;

use super::{blocking, parent_of, DriveFile, DriveIo, IoBackendKind, OpenMode, PathKind};

/// The blocking-pool back-end. Stateless: every call is one task on the pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadPoolIo;

#[async_trait::async_trait]
impl DriveIo for ThreadPoolIo {
    fn kind(&self) -> IoBackendKind {
        IoBackendKind::Threads
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<DriveFile> {
        let path = path.to_owned();
        blocking(move || open_blocking(&path, mode).map(DriveFile::from_os)).await
    }

    async fn read_at(&self, file: &DriveFile, offset: u64, buffer: Vec<u8>) -> io::Result<Vec<u8>> {
        let file = file.os_file()?.clone();
        blocking(move || read_at_blocking(&file, offset, buffer)).await
    }

    async fn write_at(&self, file: &DriveFile, offset: u64, data: Bytes) -> io::Result<()> {
        let file = file.os_file()?.clone();
        blocking(move || file.write_all_at(&data, offset)).await
    }

    async fn fsync(&self, file: &DriveFile) -> io::Result<()> {
        let file = file.os_file()?.clone();
        blocking(move || file.sync_all()).await
    }

    async fn is_linked(&self, file: &DriveFile) -> io::Result<bool> {
        // One fstat of a held descriptor, no path lookup: cheap enough to run in place.
        Ok(file.os_file()?.metadata()?.nlink() > 0)
    }

    async fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let path = path.to_owned();
        blocking(move || std::fs::read(path)).await
    }

    async fn write_file_synced(&self, path: &Path, data: Bytes) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || {
            let file = open_blocking(&path, OpenMode::CreateTruncate)?;
            file.write_all_at(&data, 0)?;
            file.sync_all()
        })
        .await
    }

    async fn rename(&self, source: &Path, target: &Path) -> io::Result<()> {
        let (source, target) = (source.to_owned(), target.to_owned());
        blocking(move || {
            std::fs::rename(&source, &target)?;
            sync_dir_blocking(parent_of(&target))
        })
        .await
    }

    async fn create_dir(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || {
            std::fs::create_dir(&path)?;
            sync_dir_blocking(parent_of(&path))
        })
        .await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || sync_dir_blocking(&path)).await
    }

    async fn path_kind(&self, path: &Path) -> io::Result<PathKind> {
        let path = path.to_owned();
        blocking(move || {
            let metadata = std::fs::metadata(path)?;
            Ok(if metadata.is_dir() {
                PathKind::Directory
            } else {
                PathKind::File
            })
        })
        .await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || std::fs::remove_file(path)).await
    }

    async fn remove_dir(&self, path: &Path) -> io::Result<bool> {
        let path = path.to_owned();
        blocking(move || remove_dir_blocking(&path)).await
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || std::fs::remove_dir_all(path)).await
    }

    async fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>> {
        let path = path.to_owned();
        blocking(move || read_dir_blocking(&path)).await
    }

    async fn disk_space(&self, path: &Path) -> io::Result<(u64, u64)> {
        let path = path.to_owned();
        blocking(move || disk_space_blocking(&path)).await
    }

    async fn lock_exclusive(&self, path: &Path) -> io::Result<DriveFile> {
        let path = path.to_owned();
        blocking(move || lock_exclusive_blocking(&path)).await
    }
}

fn open_blocking(path: &Path, mode: OpenMode) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    match mode {
        OpenMode::Read => options.read(true),
        OpenMode::CreateTruncate => options.write(true).create(true).truncate(true).mode(0o644),
    };
    options.open(path)
}

fn sync_dir_blocking(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)?
        .sync_all()
}

fn remove_dir_blocking(path: &Path) -> io::Result<bool> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(true),
        Err(error) if matches!(error.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

fn read_at_blocking(file: &File, offset: u64, mut buffer: Vec<u8>) -> io::Result<Vec<u8>> {
    let wanted = buffer.len();
    let mut filled = 0;
    while filled < wanted {
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

fn lock_exclusive_blocking(path: &Path) -> io::Result<DriveFile> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)?;
    // SAFETY: flock takes a descriptor this function owns; the result is checked.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(DriveFile::from_os(file))
}
