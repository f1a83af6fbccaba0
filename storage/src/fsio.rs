//! `Fs`: the drive operations the object layer uses, all routed through
//! `lakeshare_engine::io::DriveIo`. Unit tests may use a `std::fs` twin (`Fs::Std`) so the
//! object layer can be tested on its own; both follow the `DriveIo` contract (a missing file
//! is `io::ErrorKind::NotFound`, `write_at` writes the whole buffer, renames are atomic).
//!
//! Folder creation and removal may race (a write making `a/b/k1` while a delete prunes the
//! empty `a/b` of `a/b/k2`). Neither side locks: `create_dir_below` never creates its base
//! (a drive, a bucket folder) or anything above it, and makes a folder again when a prune
//! removed it between two steps; `prune_empty_parents` removes only empty folders, strictly
//! below its stop; callers that move something into a fresh folder retry on `NotFound`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use lakeshare_engine::io::{DriveIo, OpenMode};

#[derive(Clone)]
pub(crate) enum Fs {
    Drive(DriveIo),
    /// Blocking `std::fs` on tokio's blocking pool; for tests only.
    #[cfg(test)]
    Std,
}

impl Fs {
    pub(crate) async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<File>> {
        match self {
            Fs::Drive(io) => io.open(path, mode).await,
            #[cfg(test)]
            Fs::Std => {
                let path = path.to_path_buf();
                std_blocking(move || {
                    let file = match mode {
                        OpenMode::Read => File::open(&path)?,
                        OpenMode::CreateTruncate => File::create(&path)?,
                    };
                    Ok(Arc::new(file))
                })
                .await
            }
        }
    }

    pub(crate) async fn read_at(
        &self,
        file: &Arc<File>,
        offset: u64,
        len: usize,
    ) -> io::Result<Vec<u8>> {
        match self {
            Fs::Drive(io) => io.read_at(file, offset, len).await,
            #[cfg(test)]
            Fs::Std => {
                let file = file.clone();
                std_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buffer = vec![0u8; len];
                    let mut filled = 0;
                    while filled < len {
                        let count = file.read_at(&mut buffer[filled..], offset + filled as u64)?;
                        if count == 0 {
                            break;
                        }
                        filled += count;
                    }
                    buffer.truncate(filled);
                    Ok(buffer)
                })
                .await
            }
        }
    }

    pub(crate) async fn write_at(
        &self,
        file: &Arc<File>,
        offset: u64,
        data: Bytes,
    ) -> io::Result<()> {
        match self {
            Fs::Drive(io) => io.write_at(file, offset, data).await,
            #[cfg(test)]
            Fs::Std => {
                let file = file.clone();
                std_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    file.write_all_at(&data, offset)
                })
                .await
            }
        }
    }

    pub(crate) async fn fsync(&self, file: &Arc<File>) -> io::Result<()> {
        match self {
            Fs::Drive(io) => io.fsync(file).await,
            #[cfg(test)]
            Fs::Std => {
                let file = file.clone();
                std_blocking(move || file.sync_all()).await
            }
        }
    }

    pub(crate) async fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        match self {
            Fs::Drive(io) => io.read_file(path).await,
            #[cfg(test)]
            Fs::Std => {
                let path = path.to_path_buf();
                std_blocking(move || std::fs::read(path)).await
            }
        }
    }

    pub(crate) async fn write_file_synced(&self, path: &Path, data: Bytes) -> io::Result<()> {
        match self {
            Fs::Drive(io) => io.write_file_synced(path, data).await,
            #[cfg(test)]
            Fs::Std => {
                let path = path.to_path_buf();
                std_blocking(move || {
                    use std::io::Write;
                    let mut file = File::create(path)?;
                    file.write_all(&data)?;
                    file.sync_all()
                })
                .await
            }
        }
    }

    pub(crate) async fn rename(&self, source: &Path, target: &Path) -> io::Result<()> {
        match self {
            Fs::Drive(io) => io.rename(source, target).await,
            #[cfg(test)]
            Fs::Std => {
                let (source, target) = (source.to_path_buf(), target.to_path_buf());
                std_blocking(move || std::fs::rename(source, target)).await
            }
        }
    }

    pub(crate) async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        match self {
            Fs::Drive(io) => io.create_dir_all(path).await,
            #[cfg(test)]
            Fs::Std => {
                let path = path.to_path_buf();
                std_blocking(move || std::fs::create_dir_all(path)).await
            }
        }
    }

    pub(crate) async fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self {
            Fs::Drive(io) => io.remove_file(path).await,
            #[cfg(test)]
            Fs::Std => {
                let path = path.to_path_buf();
                std_blocking(move || std::fs::remove_file(path)).await
            }
        }
    }

    pub(crate) async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match self {
            Fs::Drive(io) => io.remove_dir_all(path).await,
            #[cfg(test)]
            Fs::Std => {
                let path = path.to_path_buf();
                std_blocking(move || std::fs::remove_dir_all(path)).await
            }
        }
    }

    pub(crate) async fn remove_dir_if_empty(&self, path: &Path) -> io::Result<bool> {
        match self {
            Fs::Drive(io) => io.remove_dir_if_empty(path).await,
            #[cfg(test)]
            Fs::Std => {
                let path = path.to_path_buf();
                std_blocking(move || match std::fs::remove_dir(path) {
                    Ok(()) => Ok(true),
                    Err(error) if error.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(false),
                    Err(error) => Err(error),
                })
                .await
            }
        }
    }

    pub(crate) async fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>> {
        match self {
            Fs::Drive(io) => io.read_dir(path).await,
            #[cfg(test)]
            Fs::Std => {
                let path = path.to_path_buf();
                std_blocking(move || {
                    let mut names = Vec::new();
                    for entry in std::fs::read_dir(path)? {
                        let entry = entry?;
                        let is_dir = entry.file_type()?.is_dir();
                        names.push((entry.file_name().to_string_lossy().into_owned(), is_dir));
                    }
                    Ok(names)
                })
                .await
            }
        }
    }

    /// Creates `path` and its missing parents strictly below `base`, which must exist: a
    /// missing `base` (a wiped drive, a deleted bucket) is `NotFound`, and nothing is created.
    /// A parent pruned by a concurrent delete while this runs is made again.
    pub(crate) async fn create_dir_below(&self, base: &Path, path: &Path) -> io::Result<()> {
        let (base, path) = (base.to_path_buf(), path.to_path_buf());
        let create = move || create_dir_below_blocking(&base, &path);
        match self {
            Fs::Drive(io) => io.blocking(create).await,
            #[cfg(test)]
            Fs::Std => std_blocking(create).await,
        }
    }

    /// Removes `path` (a file or a directory tree); a missing path is not an error.
    pub(crate) async fn remove_any(&self, path: &Path) {
        if self.remove_dir_all(path).await.is_err() {
            let _ = self.remove_file(path).await;
        }
    }

    /// Removes empty directories from `path` up to (not including) `stop`.
    pub(crate) async fn prune_empty_parents(&self, path: &Path, stop: &Path) {
        let mut current: PathBuf = path.to_path_buf();
        while current.starts_with(stop) && current != stop {
            match self.remove_dir_if_empty(&current).await {
                Ok(true) => {}
                _ => break,
            }
            if !current.pop() {
                break;
            }
        }
    }
}

/// Rounds of `create_dir_below` against concurrent prunes before it gives up.
const CREATE_ROUNDS_MAX: usize = 16;

fn create_dir_below_blocking(base: &Path, path: &Path) -> io::Result<()> {
    let relative = path.strip_prefix(base).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not below {}", path.display(), base.display()),
        )
    })?;
    if relative.as_os_str().is_empty() {
        return match std::fs::metadata(base) {
            Ok(metadata) if metadata.is_dir() => Ok(()),
            Ok(_) => Err(not_a_directory(base)),
            Err(error) => Err(error),
        };
    }
    for _ in 0..CREATE_ROUNDS_MAX {
        // The common cases first: the folder exists, or only its last level is missing.
        match make_dir(path) {
            Ok(()) => return Ok(()),
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            Err(_) => {}
        }
        let mut current = base.to_path_buf();
        let mut pruned = false;
        for (depth, component) in relative.components().enumerate() {
            current.push(component);
            match make_dir(&current) {
                Ok(()) => {}
                // The base itself is gone: never make it.
                Err(error) if error.kind() == io::ErrorKind::NotFound && depth == 0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} is missing", base.display()),
                    ));
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    pruned = true;
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        if !pruned {
            return Ok(());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} kept being removed while it was made", path.display()),
    ))
}

/// `mkdir`, where an existing folder is fine (also one pruned and made again meanwhile).
fn make_dir(path: &Path) -> io::Result<()> {
    let mut error = None;
    for _ in 0..2 {
        match std::fs::create_dir(path) {
            Ok(()) => return Ok(()),
            Err(exists) if exists.kind() == io::ErrorKind::AlreadyExists => {
                match std::fs::metadata(path) {
                    Ok(metadata) if metadata.is_dir() => return Ok(()),
                    Ok(_) => return Err(not_a_directory(path)),
                    Err(gone) if gone.kind() == io::ErrorKind::NotFound => error = Some(gone),
                    Err(other) => return Err(other),
                }
            }
            Err(other) => return Err(other),
        }
    }
    Err(error.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
}

fn not_a_directory(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("{} is not a folder", path.display()),
    )
}

#[cfg(test)]
async fn std_blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|error| io::Error::other(error.to_string()))?
}
