//! The io_uring back-end: one ring owned by one dedicated thread, fed through a queue.
//!
//! Callers on any tokio runtime build a submission entry, hand it to the ring thread
//! together with everything the kernel will touch (buffers, paths, the file), and await a
//! `oneshot` reply. The ring thread owns those resources until the kernel reports the
//! completion, so a caller that drops its future never frees memory the kernel still uses.
//!
//! Invariants:
//! - Every entry pushed to the submission queue has its resources held in `pending` until
//!   its completion is reaped; the ring thread exits only when nothing is in flight.
//! - At most `in_flight_max` (the completion queue size) operations are in the kernel at
//!   once; the rest wait in the queue, so completions never overflow.
//! - The ring thread sleeps in `submit_and_wait` with a read on `wake_fd` (an eventfd)
//!   armed; producers write `wake_fd` only when the thread said it was about to sleep.

use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use bytes::Bytes;
use io_uring::{opcode, squeue, types, IoUring, Probe};
use tokio::sync::oneshot;

use super::threads::ThreadPoolIo;
use super::FORCE_FALLBACK_ENV;
use super::{parent_of, refusal, DriveFile, DriveIo, IoBackendKind, OpenMode, PathKind};

/// The io_uring back-end: the ring for every operation it has an opcode for, the blocking
/// pool (`ThreadPoolIo`) for the rest. Cheap to clone; the ring thread stops with the last
/// clone.
#[derive(Clone)]
pub struct UringIo {
    ring: Arc<Ring>,
    pool: ThreadPoolIo,
}

impl UringIo {
    /// Starts the ring unless the environment or the kernel forbids it; the error says why.
    pub fn start() -> Result<UringIo, (String, io::Error)> {
        let forced = std::env::var(FORCE_FALLBACK_ENV).ok();
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
        if let Some(reason) = refusal(forced.as_deref(), disabled.as_deref()) {
            return Err((reason, io::Error::from(io::ErrorKind::Unsupported)));
        }
        let ring = Ring::start().map_err(|unavailable| (unavailable.reason, unavailable.source))?;
        Ok(UringIo {
            ring: Arc::new(ring),
            pool: ThreadPoolIo,
        })
    }

    /// Opens folder `path` and fsyncs it on the ring.
    async fn sync_dir_on_ring(&self, path: &Path) -> io::Result<()> {
        let directory = Arc::new(self.ring.open(path, OpenMode::Read, true).await?);
        self.ring.fsync(&directory).await
    }
}

#[async_trait::async_trait]
impl DriveIo for UringIo {
    fn kind(&self) -> IoBackendKind {
        IoBackendKind::Uring
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<DriveFile> {
        if self.ring.path_ops.open {
            return self
                .ring
                .open(path, mode, false)
                .await
                .map(DriveFile::from_os);
        }
        self.pool.open(path, mode).await
    }

    async fn read_at(&self, file: &DriveFile, offset: u64, buffer: Vec<u8>) -> io::Result<Vec<u8>> {
        self.ring.read_at(file.os_file()?, offset, buffer).await
    }

    async fn write_at(&self, file: &DriveFile, offset: u64, data: Bytes) -> io::Result<()> {
        self.ring.write_at(file.os_file()?, offset, data).await
    }

    async fn fsync(&self, file: &DriveFile) -> io::Result<()> {
        self.ring.fsync(file.os_file()?).await
    }

    async fn is_linked(&self, file: &DriveFile) -> io::Result<bool> {
        if self.ring.path_ops.statx {
            return Ok(self.ring.statx_file(file.os_file()?).await?.stx_nlink > 0);
        }
        self.pool.is_linked(file).await
    }

    async fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        if !(self.ring.path_ops.open && self.ring.path_ops.statx) {
            return self.pool.read_file(path).await;
        }
        let file = Arc::new(self.ring.open(path, OpenMode::Read, false).await?);
        let size_bytes = self.ring.statx_file(&file).await?.stx_size;
        // Ask one byte more than the size, so a file that has not grown ends in one read.
        let wanted = usize::try_from(size_bytes)
            .map_err(|_| io::Error::other("file larger than memory"))?
            .saturating_add(1);
        let mut contents = self.ring.read_at(&file, 0, vec![0; wanted]).await?;
        while contents.len() == wanted {
            let more = self
                .ring
                .read_at(
                    &file,
                    contents.len() as u64,
                    vec![0; READ_FILE_GROWTH_BYTES],
                )
                .await?;
            let done = more.len() < READ_FILE_GROWTH_BYTES;
            contents.extend_from_slice(&more);
            if done {
                break;
            }
        }
        Ok(contents)
    }

    async fn write_file_synced(&self, path: &Path, data: Bytes) -> io::Result<()> {
        let file = self.open(path, OpenMode::CreateTruncate).await?;
        let file = file.os_file()?;
        self.ring.write_at(file, 0, data).await?;
        self.ring.fsync(file).await
    }

    async fn rename(&self, source: &Path, target: &Path) -> io::Result<()> {
        if self.ring.path_ops.rename && self.ring.path_ops.open {
            self.ring.rename(source, target).await?;
            return self.sync_dir_on_ring(parent_of(target)).await;
        }
        self.pool.rename(source, target).await
    }

    async fn create_dir(&self, path: &Path) -> io::Result<()> {
        if self.ring.path_ops.mkdir && self.ring.path_ops.open {
            self.ring.mkdir(path).await?;
            return self.sync_dir_on_ring(parent_of(path)).await;
        }
        self.pool.create_dir(path).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if self.ring.path_ops.open {
            return self.sync_dir_on_ring(path).await;
        }
        self.pool.sync_dir(path).await
    }

    async fn path_kind(&self, path: &Path) -> io::Result<PathKind> {
        if self.ring.path_ops.statx {
            let status = self.ring.statx_path(path).await?;
            return Ok(
                if u32::from(status.stx_mode) & libc::S_IFMT == libc::S_IFDIR {
                    PathKind::Directory
                } else {
                    PathKind::File
                },
            );
        }
        self.pool.path_kind(path).await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        if self.ring.path_ops.unlink {
            return self.ring.unlink(path, false).await;
        }
        self.pool.remove_file(path).await
    }

    async fn remove_dir(&self, path: &Path) -> io::Result<bool> {
        if !self.ring.path_ops.unlink {
            return self.pool.remove_dir(path).await;
        }
        match self.ring.unlink(path, true).await {
            Ok(()) => Ok(true),
            Err(error) if matches!(error.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.pool.remove_dir_all(path).await
    }

    async fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>> {
        self.pool.read_dir(path).await
    }

    async fn disk_space(&self, path: &Path) -> io::Result<(u64, u64)> {
        self.pool.disk_space(path).await
    }

    async fn lock_exclusive(&self, path: &Path) -> io::Result<DriveFile> {
        self.pool.lock_exclusive(path).await
    }
}

/// Read size after the first read of `read_file` filled its buffer (the file grew).
const READ_FILE_GROWTH_BYTES: usize = 64 * 1024;

/// Submission queue size; the completion queue is twice as large.
const RING_ENTRIES: u32 = 256;
/// Largest length of one read or write operation (the kernel takes a `u32`).
const OPERATION_BYTES_MAX: usize = 1 << 30;
/// `user_data` of the read on the wake-up eventfd.
const WAKE_USER_DATA: u64 = u64::MAX;

/// Opcodes the ring must support, or the back-end is refused.
const REQUIRED_OPCODES: [(u8, &str); 3] = [
    (opcode::Read::CODE, "read"),
    (opcode::Write::CODE, "write"),
    (opcode::Fsync::CODE, "fsync"),
];

/// Path operations the kernel can run on the ring; the others go to the blocking pool.
#[derive(Clone, Copy, Debug)]
struct PathOps {
    pub open: bool,
    pub statx: bool,
    pub rename: bool,
    pub unlink: bool,
    pub mkdir: bool,
}

/// Why the ring could not be used.
#[derive(Debug)]
struct Unavailable {
    pub reason: String,
    pub source: io::Error,
}

/// Handle to the ring thread. Dropping the last handle stops the thread once the
/// operations in flight have completed.
struct Ring {
    shared: Arc<Shared>,
    pub path_ops: PathOps,
}

type Completer = Box<dyn FnOnce(i32) + Send>;

struct Submission {
    entry: squeue::Entry,
    complete: Completer,
}

struct Queue {
    submissions: VecDeque<Submission>,
    /// The ring thread is about to wait, or waits, for completions: wake it up.
    sleeping: bool,
    /// No handle is left: finish what is in flight and stop.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake_fd: OwnedFd,
}

impl Ring {
    /// Sets up a ring, probes it, and starts its thread.
    pub fn start() -> Result<Ring, Unavailable> {
        let ring = IoUring::new(RING_ENTRIES).map_err(|source| Unavailable {
            reason: format!("io_uring_setup failed: {source}"),
            source,
        })?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|source| Unavailable {
                reason: format!("io_uring probe failed: {source}"),
                source,
            })?;
        for (code, name) in REQUIRED_OPCODES {
            if !probe.is_supported(code) {
                return Err(Unavailable {
                    reason: format!("io_uring lacks the {name} opcode"),
                    source: io::Error::from(io::ErrorKind::Unsupported),
                });
            }
        }
        let path_ops = PathOps {
            open: probe.is_supported(opcode::OpenAt::CODE),
            statx: probe.is_supported(opcode::Statx::CODE),
            rename: probe.is_supported(opcode::RenameAt::CODE),
            unlink: probe.is_supported(opcode::UnlinkAt::CODE),
            mkdir: probe.is_supported(opcode::MkDirAt::CODE),
        };
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let wake_raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if wake_raw < 0 {
            let source = io::Error::last_os_error();
            return Err(Unavailable {
                reason: format!("eventfd failed: {source}"),
                source,
            });
        }
        // SAFETY: `wake_raw` is a fresh descriptor that nothing else owns.
        let wake_fd = unsafe { OwnedFd::from_raw_fd(wake_raw) };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                submissions: VecDeque::new(),
                sleeping: false,
                closed: false,
            }),
            wake_fd,
        });
        let thread_shared = shared.clone();
        thread::Builder::new()
            .name("lakeshare-uring".into())
            .spawn(move || ring_thread(ring, &thread_shared))
            .map_err(|source| Unavailable {
                reason: format!("could not start the io_uring thread: {source}"),
                source,
            })?;
        Ok(Ring { shared, path_ops })
    }

    /// Reads `buffer.len()` bytes at `offset` into `buffer`; fewer only at end of file.
    pub async fn read_at(
        &self,
        file: &Arc<File>,
        offset: u64,
        mut buffer: Vec<u8>,
    ) -> io::Result<Vec<u8>> {
        let len = buffer.len();
        buffer.clear();
        while buffer.len() < len {
            let filled = buffer.len();
            let chunk_bytes = (len - filled).min(OPERATION_BYTES_MAX);
            let target = buffer.spare_capacity_mut().as_mut_ptr().cast::<u8>();
            let entry = opcode::Read::new(types::Fd(file.as_raw_fd()), target, chunk_bytes as u32)
                .offset(offset + filled as u64)
                .build();
            // The heap block of `buffer` does not move when the Vec moves into the ring.
            let keep = (file.clone(), buffer);
            let (result, (_, returned)) = self.submit(entry, keep, |r, keep| (r, keep)).await?;
            buffer = returned;
            match result {
                0 => break,
                count if count > 0 => {
                    assert!(count as usize <= chunk_bytes);
                    // SAFETY: the kernel initialised `count` bytes after `filled`, within
                    // the capacity the caller's buffer had.
                    unsafe { buffer.set_len(filled + count as usize) };
                }
                error if is_retryable(error) => continue,
                error => return Err(io::Error::from_raw_os_error(-error)),
            }
        }
        Ok(buffer)
    }

    /// Writes all of `data` at `offset`, looping on short writes.
    pub async fn write_at(&self, file: &Arc<File>, offset: u64, data: Bytes) -> io::Result<()> {
        let mut written = 0;
        while written < data.len() {
            let chunk = data.slice(written..data.len().min(written + OPERATION_BYTES_MAX));
            let entry = opcode::Write::new(
                types::Fd(file.as_raw_fd()),
                chunk.as_ptr(),
                chunk.len() as u32,
            )
            .offset(offset + written as u64)
            .build();
            let result = self.submit(entry, (file.clone(), chunk), |r, _| r).await?;
            match result {
                0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                count if count > 0 => written += count as usize,
                error if is_retryable(error) => continue,
                error => return Err(io::Error::from_raw_os_error(-error)),
            }
        }
        Ok(())
    }

    pub async fn fsync(&self, file: &Arc<File>) -> io::Result<()> {
        let entry = opcode::Fsync::new(types::Fd(file.as_raw_fd())).build();
        let result = self.submit(entry, file.clone(), |r, _| r).await?;
        check(result).map(drop)
    }

    /// Opens `path`; with `directory`, opens it read-only as a directory (to fsync it).
    pub async fn open(&self, path: &Path, mode: OpenMode, directory: bool) -> io::Result<File> {
        let path = c_path(path)?;
        let mut flags = libc::O_CLOEXEC;
        flags |= match mode {
            OpenMode::Read => libc::O_RDONLY,
            OpenMode::CreateTruncate => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        };
        if directory {
            flags |= libc::O_DIRECTORY;
        }
        let entry = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
            .flags(flags)
            .mode(0o644)
            .build();
        // The descriptor becomes an `OwnedFd` on the ring thread, so it is closed if the
        // caller has gone away.
        let opened = self
            .submit(entry, path, |result, _| owned_fd(result))
            .await?;
        opened.map(File::from)
    }

    /// `statx` of an open file.
    pub async fn statx_file(&self, file: &Arc<File>) -> io::Result<libc::statx> {
        static EMPTY_PATH: &std::ffi::CStr = c"";
        // SAFETY: `statx` is plain old data; all zeroes is a valid value.
        let mut buffer: Box<libc::statx> = Box::new(unsafe { std::mem::zeroed() });
        let target = (&mut *buffer as *mut libc::statx).cast::<types::statx>();
        let entry = opcode::Statx::new(types::Fd(file.as_raw_fd()), EMPTY_PATH.as_ptr(), target)
            .flags(libc::AT_EMPTY_PATH)
            .mask(libc::STATX_BASIC_STATS)
            .build();
        let (result, (_, buffer)) = self
            .submit(entry, (file.clone(), buffer), |r, keep| (r, keep))
            .await?;
        check(result)?;
        Ok(*buffer)
    }

    /// `statx` of a path (following symbolic links).
    pub async fn statx_path(&self, path: &Path) -> io::Result<libc::statx> {
        let path = c_path(path)?;
        // SAFETY: `statx` is plain old data; all zeroes is a valid value.
        let mut buffer: Box<libc::statx> = Box::new(unsafe { std::mem::zeroed() });
        let target = (&mut *buffer as *mut libc::statx).cast::<types::statx>();
        let entry = opcode::Statx::new(types::Fd(libc::AT_FDCWD), path.as_ptr(), target)
            .mask(libc::STATX_BASIC_STATS)
            .build();
        let (result, (_, buffer)) = self
            .submit(entry, (path, buffer), |r, keep| (r, keep))
            .await?;
        check(result)?;
        Ok(*buffer)
    }

    pub async fn rename(&self, source: &Path, target: &Path) -> io::Result<()> {
        let source = c_path(source)?;
        let target = c_path(target)?;
        let entry = opcode::RenameAt::new(
            types::Fd(libc::AT_FDCWD),
            source.as_ptr(),
            types::Fd(libc::AT_FDCWD),
            target.as_ptr(),
        )
        .build();
        let result = self.submit(entry, (source, target), |r, _| r).await?;
        check(result).map(drop)
    }

    /// Removes a file, or with `directory` an empty directory.
    pub async fn unlink(&self, path: &Path, directory: bool) -> io::Result<()> {
        let path = c_path(path)?;
        let flags = if directory { libc::AT_REMOVEDIR } else { 0 };
        let entry = opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
            .flags(flags)
            .build();
        let result = self.submit(entry, path, |r, _| r).await?;
        check(result).map(drop)
    }

    pub async fn mkdir(&self, path: &Path) -> io::Result<()> {
        let path = c_path(path)?;
        let entry = opcode::MkDirAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
            .mode(0o755)
            .build();
        let result = self.submit(entry, path, |r, _| r).await?;
        check(result).map(drop)
    }

    /// Hands `entry` to the ring thread; `keep` owns every resource the kernel reads or
    /// writes, and stays alive until the completion. `convert` runs on the ring thread.
    async fn submit<K, T>(
        &self,
        entry: squeue::Entry,
        keep: K,
        convert: impl FnOnce(i32, K) -> T + Send + 'static,
    ) -> io::Result<T>
    where
        K: Send + 'static,
        T: Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        let complete: Completer = Box::new(move |result| {
            // The caller may have gone away; dropping the value releases its resources.
            let _ = reply.send(convert(result, keep));
        });
        let wake = {
            let mut queue = lock(&self.shared.queue);
            if queue.closed {
                return Err(ring_stopped());
            }
            queue.submissions.push_back(Submission { entry, complete });
            std::mem::replace(&mut queue.sleeping, false)
        };
        if wake {
            self.shared.wake()?;
        }
        receiver.await.map_err(|_| ring_stopped())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        if let Err(error) = self.shared.wake() {
            tracing::error!(%error, "could not wake the io_uring thread to stop it");
        }
    }
}

impl Shared {
    fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor this struct owns.
        let written = unsafe {
            libc::write(
                self.wake_fd.as_raw_fd(),
                (&one as *const u64).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
        if written < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The ring thread: moves queued submissions into the ring, waits, dispatches completions.
fn ring_thread(mut ring: IoUring, shared: &Shared) {
    let in_flight_max = ring.params().cq_entries() as usize - 1;
    let mut pending: Vec<Option<Completer>> = Vec::new();
    let mut free_slots: Vec<usize> = Vec::new();
    let mut in_flight = 0usize;
    let mut wake_buffer: Box<u64> = Box::new(0);
    let mut wake_armed = false;
    loop {
        let closed = {
            let mut queue = lock(&shared.queue);
            while in_flight < in_flight_max {
                let Some(submission) = queue.submissions.pop_front() else {
                    break;
                };
                let slot = match free_slots.pop() {
                    Some(slot) => {
                        pending[slot] = Some(submission.complete);
                        slot
                    }
                    None => {
                        pending.push(Some(submission.complete));
                        pending.len() - 1
                    }
                };
                push_entry(&mut ring, &submission.entry.user_data(slot as u64));
                in_flight += 1;
            }
            queue.sleeping = true;
            queue.closed
        };
        if closed && in_flight == 0 && !wake_armed {
            return;
        }
        if !wake_armed && !closed {
            let target = (&mut *wake_buffer as *mut u64).cast::<u8>();
            let entry = opcode::Read::new(types::Fd(shared.wake_fd.as_raw_fd()), target, 8)
                .build()
                .user_data(WAKE_USER_DATA);
            push_entry(&mut ring, &entry);
            wake_armed = true;
        }
        if let Err(error) = ring.submit_and_wait(1) {
            let retry = matches!(
                error.raw_os_error(),
                Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
            );
            if !retry {
                tracing::error!(%error, "io_uring submit failed; retrying");
                thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        for completion in ring.completion() {
            let user_data = completion.user_data();
            if user_data == WAKE_USER_DATA {
                wake_armed = false;
                continue;
            }
            let slot = user_data as usize;
            let complete = pending.get_mut(slot).and_then(Option::take);
            assert!(
                complete.is_some(),
                "io_uring completion for an unknown slot"
            );
            if let Some(complete) = complete {
                complete(completion.result());
            }
            free_slots.push(slot);
            in_flight -= 1;
        }
    }
}

/// Pushes one entry, flushing the submission queue to the kernel when it is full.
fn push_entry(ring: &mut IoUring, entry: &squeue::Entry) {
    loop {
        // SAFETY: the resources `entry` points to are owned by its completer (or by the
        // ring thread for the wake-up read) until its completion is reaped.
        let pushed = unsafe { ring.submission().push(entry) };
        if pushed.is_ok() {
            return;
        }
        if let Err(error) = ring.submit() {
            tracing::warn!(%error, "io_uring submit of a full queue failed; retrying");
        }
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic while holding the lock cannot leave the queue inconsistent: every update
    // is a single push, pop or flag store.
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn owned_fd(result: i32) -> io::Result<OwnedFd> {
    check(result)?;
    // SAFETY: a non-negative result of openat is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(result) })
}

fn check(result: i32) -> io::Result<i32> {
    if result < 0 {
        return Err(io::Error::from_raw_os_error(-result));
    }
    Ok(result)
}

fn is_retryable(result: i32) -> bool {
    result == -libc::EINTR || result == -libc::EAGAIN
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path contains a NUL byte: {}", path.display()),
        )
    })
}

fn ring_stopped() -> io::Error {
    io::Error::other("the io_uring thread has stopped")
}
