//! One drive: its root folder, its I/O back-end (`DriveIo`), and the only way storage names
//! a file on it, `DrivePath`.
//!
//! Invariants:
//! - Every path storage hands a back-end is `root` joined with a `DrivePath`, whose every
//!   segment was checked (not empty, not `.` or `..`, no `/`, no NUL, at most 255 bytes): no
//!   bucket name, key, listing prefix or name read back from a folder can reach outside the
//!   drive.
//! - Folder creation and removal may race (a write making `a/b/k1` while a delete prunes the
//!   empty `a/b` of `a/b/k2`). Neither side locks: `create_dir_below` never creates its base
//!   (a drive, a bucket folder) or anything above it, and makes a folder again when a prune
//!   removed it between two steps; `prune_empty_parents` removes only empty folders, strictly
//!   below its stop; callers that move something into a fresh folder retry on `NotFound`.
//! - Folders are made durably (`DriveIo::create_dir` syncs the parent), so a rename into a
//!   fresh folder is durable once the rename returns.
//! - Running out of file handles (`EMFILE`, `ENFILE`: a load spike, not a drive fault) is
//!   waited out: every call that opens a handle is retried with a growing pause for up to
//!   `OUT_OF_HANDLES_WAIT_MAX` before the error reaches the caller, so thousands of
//!   connections at once slow requests down instead of failing them as lost quorum.

use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lakeshare_engine::io::{DriveFile, DriveIo, OpenMode, PathKind};

use crate::health::DriveHealth;

/// Longest segment of a path on a drive (NAME_MAX).
pub(crate) const SEGMENT_BYTES_MAX: usize = 255;

/// A path relative to a drive's root, every segment checked. The empty path is the root.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DrivePath(String);

impl DrivePath {
    pub(crate) fn root() -> DrivePath {
        DrivePath(String::new())
    }

    /// This path and one more segment; refuses a segment that could leave the folder.
    pub(crate) fn join(&self, segment: &str) -> io::Result<DrivePath> {
        check_segment(segment)?;
        if self.0.is_empty() {
            return Ok(DrivePath(segment.to_owned()));
        }
        let mut joined = String::with_capacity(self.0.len() + 1 + segment.len());
        joined.push_str(&self.0);
        joined.push('/');
        joined.push_str(segment);
        Ok(DrivePath(joined))
    }

    /// This path and the `/`-separated segments of `relative` (an object key, a folder of a
    /// listing), each checked.
    pub(crate) fn join_all(&self, relative: &str) -> io::Result<DrivePath> {
        let mut path = self.clone();
        for segment in relative.split('/') {
            path = path.join(segment)?;
        }
        Ok(path)
    }

    /// A segment known at compile time (our own folder and file names).
    pub(crate) fn child(&self, segment: &'static str) -> DrivePath {
        match self.join(segment) {
            Ok(path) => path,
            Err(error) => panic!("{segment:?} is one of our own names: {error}"),
        }
    }

    /// This path and a name storage generated (a hex digest, `part.N.meta`): a name that
    /// is not a valid segment is a bug.
    pub(crate) fn join_generated(&self, segment: &str) -> DrivePath {
        assert!(is_valid_segment(segment), "generated name {segment:?}");
        if self.0.is_empty() {
            return DrivePath(segment.to_owned());
        }
        DrivePath(format!("{}/{segment}", self.0))
    }

    /// This path and the hyphenated form of `id` (always a valid segment).
    pub(crate) fn join_id(&self, id: uuid::Uuid) -> DrivePath {
        let segment = id.hyphenated().to_string();
        debug_assert!(is_valid_segment(&segment));
        if self.0.is_empty() {
            return DrivePath(segment);
        }
        DrivePath(format!("{}/{segment}", self.0))
    }

    pub(crate) fn parent(&self) -> Option<DrivePath> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(slash) => DrivePath(self.0[..slash].to_owned()),
            None => DrivePath::root(),
        })
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `self` is `ancestor` or lies below it (segment-wise).
    pub(crate) fn starts_with(&self, ancestor: &DrivePath) -> bool {
        ancestor.0.is_empty()
            || self.0 == ancestor.0
            || (self.0.starts_with(&ancestor.0) && self.0.as_bytes()[ancestor.0.len()] == b'/')
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DrivePath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", self.0)
    }
}

impl fmt::Display for DrivePath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Whether `segment` is a name that stays inside its folder.
pub(crate) fn is_valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment.len() <= SEGMENT_BYTES_MAX
        && !segment.contains(['/', '\0'])
}

fn check_segment(segment: &str) -> io::Result<()> {
    if is_valid_segment(segment) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{segment:?} is not a valid name on a drive"),
        ))
    }
}

/// A drive's root folder and back-end, before its format stamp is known. Every operation
/// takes a `DrivePath`.
pub(crate) struct DriveRoot {
    root: PathBuf,
    io: Arc<dyn DriveIo>,
}

/// Rounds of `create_dir_below` against concurrent prunes before it gives up.
const CREATE_ROUNDS_MAX: usize = 16;

/// Longest wait for a free file handle before `EMFILE`/`ENFILE` reaches the caller.
const OUT_OF_HANDLES_WAIT_MAX: Duration = Duration::from_secs(5);
/// First pause after running out of handles; it doubles up to `OUT_OF_HANDLES_PAUSE_MAX`.
const OUT_OF_HANDLES_PAUSE_FIRST: Duration = Duration::from_millis(1);
const OUT_OF_HANDLES_PAUSE_MAX: Duration = Duration::from_millis(50);

/// Whether the process or the system ran out of file handles.
pub(crate) fn is_out_of_handles(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Runs `call` again while it fails for want of a file handle, within the wait bound.
async fn waiting_for_handles<T, F, Fut>(mut call: F) -> io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let mut waited = Duration::ZERO;
    let mut pause = OUT_OF_HANDLES_PAUSE_FIRST;
    loop {
        match call().await {
            Err(error) if is_out_of_handles(&error) && waited < OUT_OF_HANDLES_WAIT_MAX => {
                tokio::time::sleep(pause).await;
                waited += pause;
                pause = (pause * 2).min(OUT_OF_HANDLES_PAUSE_MAX);
            }
            result => return result,
        }
    }
}

impl DriveRoot {
    pub(crate) fn new(root: PathBuf, io: Arc<dyn DriveIo>) -> DriveRoot {
        DriveRoot { root, io }
    }

    /// The drive folder, for messages.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn absolute(&self, path: &DrivePath) -> PathBuf {
        if path.is_root() {
            self.root.clone()
        } else {
            self.root.join(path.as_str())
        }
    }

    pub(crate) async fn open(&self, path: &DrivePath, mode: OpenMode) -> io::Result<DriveFile> {
        let path = self.absolute(path);
        waiting_for_handles(|| self.io.open(&path, mode)).await
    }

    pub(crate) async fn read_at(
        &self,
        file: &DriveFile,
        offset: u64,
        buffer: Vec<u8>,
    ) -> io::Result<Vec<u8>> {
        self.io.read_at(file, offset, buffer).await
    }

    pub(crate) async fn write_at(
        &self,
        file: &DriveFile,
        offset: u64,
        data: Bytes,
    ) -> io::Result<()> {
        self.io.write_at(file, offset, data).await
    }

    pub(crate) async fn fsync(&self, file: &DriveFile) -> io::Result<()> {
        self.io.fsync(file).await
    }

    pub(crate) async fn is_linked(&self, file: &DriveFile) -> io::Result<bool> {
        self.io.is_linked(file).await
    }

    pub(crate) async fn read_file(&self, path: &DrivePath) -> io::Result<Vec<u8>> {
        let path = self.absolute(path);
        waiting_for_handles(|| self.io.read_file(&path)).await
    }

    pub(crate) async fn write_file_synced(&self, path: &DrivePath, data: Bytes) -> io::Result<()> {
        let path = self.absolute(path);
        waiting_for_handles(|| self.io.write_file_synced(&path, data.clone())).await
    }

    pub(crate) async fn rename(&self, source: &DrivePath, target: &DrivePath) -> io::Result<()> {
        self.io
            .rename(&self.absolute(source), &self.absolute(target))
            .await
    }

    pub(crate) async fn sync_dir(&self, path: &DrivePath) -> io::Result<()> {
        let path = self.absolute(path);
        waiting_for_handles(|| self.io.sync_dir(&path)).await
    }

    pub(crate) async fn path_kind(&self, path: &DrivePath) -> io::Result<PathKind> {
        self.io.path_kind(&self.absolute(path)).await
    }

    pub(crate) async fn remove_file(&self, path: &DrivePath) -> io::Result<()> {
        self.io.remove_file(&self.absolute(path)).await
    }

    pub(crate) async fn remove_dir(&self, path: &DrivePath) -> io::Result<bool> {
        self.io.remove_dir(&self.absolute(path)).await
    }

    pub(crate) async fn read_dir(&self, path: &DrivePath) -> io::Result<Vec<(String, bool)>> {
        let path = self.absolute(path);
        waiting_for_handles(|| self.io.read_dir(&path)).await
    }

    pub(crate) async fn lock_exclusive(&self, path: &DrivePath) -> io::Result<DriveFile> {
        let path = self.absolute(path);
        waiting_for_handles(|| self.io.lock_exclusive(&path)).await
    }

    /// Removes `path`, a file or a folder tree; a missing path is not an error.
    pub(crate) async fn remove_any(&self, path: &DrivePath) {
        let absolute = self.absolute(path);
        match self.io.path_kind(&absolute).await {
            Ok(PathKind::Directory) => {
                if let Err(error) = self.io.remove_dir_all(&absolute).await {
                    if error.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %absolute.display(), "removing a folder: {error}");
                    }
                }
            }
            Ok(PathKind::File) => {
                if let Err(error) = self.io.remove_file(&absolute).await {
                    if error.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %absolute.display(), "removing a file: {error}");
                    }
                }
            }
            Err(_) => {}
        }
    }

    /// Makes the drive folder itself and any missing parent (at open, for a new drive).
    pub(crate) async fn create_root(&self) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut current: &Path = &self.root;
        loop {
            match self.io.create_dir(current).await {
                Ok(()) => break,
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    match self.io.path_kind(current).await? {
                        PathKind::Directory => break,
                        PathKind::File => return Err(not_a_directory(current)),
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    let Some(parent) = current.parent() else {
                        return Err(error);
                    };
                    missing.push(current);
                    current = parent;
                }
                Err(error) => return Err(error),
            }
        }
        for folder in missing.into_iter().rev() {
            match self.io.create_dir(folder).await {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Makes `path` and its missing parents strictly below `base`, which must exist: a
    /// missing `base` (a wiped drive, a deleted bucket) is `NotFound`, and nothing is made.
    /// A parent pruned by a concurrent delete while this runs is made again.
    pub(crate) async fn create_dir_below(
        &self,
        base: &DrivePath,
        path: &DrivePath,
    ) -> io::Result<()> {
        if !path.starts_with(base) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path} is not below {base}"),
            ));
        }
        if path == base {
            return match self.path_kind(base).await? {
                PathKind::Directory => Ok(()),
                PathKind::File => Err(not_a_directory(&self.absolute(base))),
            };
        }
        let relative = if base.is_root() {
            path.as_str()
        } else {
            &path.as_str()[base.as_str().len() + 1..]
        };
        for _ in 0..CREATE_ROUNDS_MAX {
            // The common cases first: the folder exists, or only its last level is missing.
            match self.make_dir(path).await {
                Ok(()) => return Ok(()),
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                Err(_) => {}
            }
            let mut current = base.clone();
            let mut pruned = false;
            for (depth, segment) in relative.split('/').enumerate() {
                current = current.join(segment)?;
                match self.make_dir(&current).await {
                    Ok(()) => {}
                    // The base itself is gone: never make it.
                    Err(error) if error.kind() == io::ErrorKind::NotFound && depth == 0 => {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("{} is missing", self.absolute(base).display()),
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
            format!("{path} kept being removed while it was made"),
        ))
    }

    /// `mkdir`, where an existing folder is fine. `NotFound` means a parent is missing: a
    /// folder pruned between `mkdir`'s "exists" and the check of its kind is made again.
    async fn make_dir(&self, path: &DrivePath) -> io::Result<()> {
        let absolute = self.absolute(path);
        for _ in 0..CREATE_ROUNDS_MAX {
            match self.io.create_dir(&absolute).await {
                Ok(()) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    match self.io.path_kind(&absolute).await {
                        Ok(PathKind::Directory) => return Ok(()),
                        Ok(PathKind::File) => return Err(not_a_directory(&absolute)),
                        Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                        Err(error) => return Err(error),
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Err(io::Error::other(format!(
            "{} kept being removed while it was made",
            absolute.display()
        )))
    }

    /// Removes empty folders from `path` up to (not including) `stop`.
    pub(crate) async fn prune_empty_parents(&self, path: &DrivePath, stop: &DrivePath) {
        let mut current = path.clone();
        while current.starts_with(stop) && &current != stop {
            match self.remove_dir(&current).await {
                Ok(true) => {}
                _ => break,
            }
            match current.parent() {
                Some(parent) => current = parent,
                None => break,
            }
        }
    }

    /// Writes a small file atomically and durably: into `staging` (a temp folder below
    /// `staging_base`, made again when missing, never `staging_base` itself), fsync, rename
    /// over `target`, whose folder must exist.
    pub(crate) async fn write_atomic(
        &self,
        staging_base: &DrivePath,
        staging: &DrivePath,
        staged_name: &str,
        target: &DrivePath,
        raw: Bytes,
    ) -> io::Result<()> {
        let staged = staging.join(staged_name)?;
        if let Err(error) = self.write_file_synced(&staged, raw.clone()).await {
            if error.kind() != io::ErrorKind::NotFound {
                return Err(error);
            }
            self.create_dir_below(staging_base, staging).await?;
            self.write_file_synced(&staged, raw).await?;
        }
        if let Err(error) = self.rename(&staged, target).await {
            let _ = self.remove_file(&staged).await;
            return Err(error);
        }
        Ok(())
    }
}

/// A stamped drive of the node: its root, back-end and health (see `DriveHealth`).
pub(crate) struct Drive {
    root: DriveRoot,
    pub(crate) health: DriveHealth,
    /// The exclusive lock on `.lakeshare.sys/lock`, held while the node lives.
    _lock: DriveFile,
}

impl Drive {
    pub(crate) fn new(root: DriveRoot, health: DriveHealth, lock: DriveFile) -> Drive {
        Drive {
            root,
            health,
            _lock: lock,
        }
    }

    /// Whether the drive carries its stamp (cheap: see `DriveHealth`).
    pub(crate) async fn online(&self) -> bool {
        self.health.online(&self.root).await
    }

    /// A write met `NotFound`: re-read the stamp on the next question.
    pub(crate) fn suspect(&self) {
        self.health.suspect();
    }
}

impl Deref for Drive {
    type Target = DriveRoot;

    fn deref(&self) -> &DriveRoot {
        &self.root
    }
}

pub(crate) fn is_not_found(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.kind() == io::ErrorKind::NotADirectory
}

fn not_a_directory(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("{} is not a folder", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn running_out_of_handles_is_waited_out_within_a_bound() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let answer = waiting_for_handles(|| async {
            match calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                0..=2 => Err(io::Error::from_raw_os_error(libc::EMFILE)),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(answer.unwrap(), 7);
        let never = waiting_for_handles(|| async {
            Err::<(), _>(io::Error::from_raw_os_error(libc::ENFILE))
        })
        .await;
        assert!(is_out_of_handles(&never.unwrap_err()));
        let other =
            waiting_for_handles(|| async { Err::<(), _>(io::Error::from_raw_os_error(libc::EIO)) })
                .await;
        assert_eq!(other.unwrap_err().raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn segments_that_leave_the_folder_are_refused() {
        let root = DrivePath::root();
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(root.join(bad).is_err(), "{bad:?}");
        }
        for bad in ["../etc", "a/../b", "./a", "a//b", "a/", "/a"] {
            assert!(root.join_all(bad).is_err(), "{bad:?}");
        }
        let key = root.join("bucket").unwrap().join_all("a/..b/.c").unwrap();
        assert_eq!(key.as_str(), "bucket/a/..b/.c");
    }

    #[test]
    fn parents_and_ancestry_are_segment_wise() {
        let path = DrivePath::root().join_all("a/b/c").unwrap();
        assert_eq!(path.parent().unwrap().as_str(), "a/b");
        assert_eq!(
            DrivePath::root().join("a").unwrap().parent(),
            Some(DrivePath::root())
        );
        assert_eq!(DrivePath::root().parent(), None);
        let ab = DrivePath::root().join_all("a/b").unwrap();
        let abc = DrivePath::root().join_all("a/bc").unwrap();
        assert!(path.starts_with(&ab));
        assert!(!abc.starts_with(&ab));
        assert!(ab.starts_with(&DrivePath::root()));
    }
}
