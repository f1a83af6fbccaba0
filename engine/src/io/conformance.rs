//! Conformance checks every drive I/O back-end must pass.
//!
//! Each check takes a back-end and an empty scratch folder, runs one part of the `DriveIo`
//! contract (see the `io` module doc) and panics with a message naming the broken promise.
//! The `io` tests run each check as a `uring_*` and a `fallback_*` test; other crates can
//! call them through the `testing` feature.

use std::io;
use std::path::Path;

use bytes::Bytes;

use std::sync::Arc;

use super::{DriveIo, OpenMode, PathKind};

/// Writes at scattered offsets (with a hole) and reads back each range and the whole file.
pub async fn round_trip_at_offsets(io: &dyn DriveIo, folder: &Path) {
    let path = folder.join("offsets");
    let file = io
        .open(&path, OpenMode::CreateTruncate)
        .await
        .expect("create");
    let first = pattern(4096, 1);
    let second = pattern(10_000, 2);
    io.write_at(&file, 0, Bytes::from(first.clone()))
        .await
        .expect("write at 0");
    io.write_at(&file, 20_000, Bytes::from(second.clone()))
        .await
        .expect("write at 20000");
    io.fsync(&file).await.expect("fsync");
    drop(file);

    let file = io.open(&path, OpenMode::Read).await.expect("open for read");
    let read = io
        .read_at(&file, 0, vec![0; first.len()])
        .await
        .expect("read at 0");
    assert_eq!(read, first, "bytes written at 0 read back");
    let read = io
        .read_at(&file, 20_000, vec![0; second.len()])
        .await
        .expect("read at 20000");
    assert_eq!(read, second, "bytes written at 20000 read back");
    let hole = io
        .read_at(&file, 4096, vec![0; 20_000 - 4096])
        .await
        .expect("read the hole");
    assert!(hole.iter().all(|&byte| byte == 0), "a hole reads as zeroes");
    let middle = io
        .read_at(&file, 100, vec![0; 50])
        .await
        .expect("read inside");
    assert_eq!(middle, first[100..150], "a range inside a write reads back");
}

/// A read past the end returns only what exists; a read at the end returns nothing.
pub async fn short_read_at_end_of_file(io: &dyn DriveIo, folder: &Path) {
    let path = folder.join("short");
    let contents = pattern(1000, 3);
    io.write_file_synced(&path, Bytes::from(contents.clone()))
        .await
        .expect("write");
    let file = io.open(&path, OpenMode::Read).await.expect("open");
    let tail = io
        .read_at(&file, 900, vec![0; 500])
        .await
        .expect("read past the end");
    assert_eq!(
        tail,
        contents[900..],
        "a read across the end stops at the end"
    );
    let nothing = io
        .read_at(&file, 1000, vec![0; 10])
        .await
        .expect("read at the end");
    assert!(nothing.is_empty(), "a read at the end is empty");
    let beyond = io
        .read_at(&file, 5000, vec![0; 10])
        .await
        .expect("read beyond the end");
    assert!(beyond.is_empty(), "a read beyond the end is empty");
    let zero = io
        .read_at(&file, 0, vec![0; 0])
        .await
        .expect("read of zero bytes");
    assert!(zero.is_empty(), "a read of zero bytes is empty");
}

/// Every operation on a missing path is `NotFound`.
pub async fn missing_file_is_not_found(io: &dyn DriveIo, folder: &Path) {
    let missing = folder.join("missing");
    let kind = |result: io::Result<()>| result.err().map(|error| error.kind());
    let not_found = Some(io::ErrorKind::NotFound);
    assert_eq!(
        kind(io.open(&missing, OpenMode::Read).await.map(drop)),
        not_found,
        "open"
    );
    assert_eq!(
        kind(io.read_file(&missing).await.map(drop)),
        not_found,
        "read_file"
    );
    assert_eq!(
        kind(io.remove_file(&missing).await),
        not_found,
        "remove_file"
    );
    assert_eq!(
        kind(io.read_dir(&missing).await.map(drop)),
        not_found,
        "read_dir"
    );
    let target = folder.join("target");
    assert_eq!(
        kind(io.rename(&missing, &target).await),
        not_found,
        "rename"
    );
    let nested = missing.join("child");
    let created = io.open(&nested, OpenMode::CreateTruncate).await.map(drop);
    assert_eq!(kind(created), not_found, "create in a missing folder");
}

/// `write_file_synced` then `read_file`, empty and large, and truncation on rewrite.
pub async fn whole_file_round_trip(io: &dyn DriveIo, folder: &Path) {
    let path = folder.join("whole");
    let large = pattern(3 * 1024 * 1024 + 17, 4);
    io.write_file_synced(&path, Bytes::from(large.clone()))
        .await
        .expect("write large");
    assert_eq!(
        io.read_file(&path).await.expect("read large"),
        large,
        "large file"
    );
    io.write_file_synced(&path, Bytes::from_static(b"short"))
        .await
        .expect("rewrite");
    assert_eq!(
        io.read_file(&path).await.expect("read"),
        b"short",
        "rewrite truncates"
    );
    io.write_file_synced(&path, Bytes::new())
        .await
        .expect("write empty");
    assert!(
        io.read_file(&path).await.expect("read empty").is_empty(),
        "empty file"
    );
}

/// Renaming over an existing file replaces it whole; the source name is gone.
pub async fn rename_replaces_atomically(io: &dyn DriveIo, folder: &Path) {
    let target = folder.join("object");
    let staged = folder.join("object.tmp");
    io.write_file_synced(&target, Bytes::from_static(b"old"))
        .await
        .expect("write old");
    io.write_file_synced(&staged, Bytes::from_static(b"new contents"))
        .await
        .expect("write staged");
    io.rename(&staged, &target).await.expect("rename");
    assert_eq!(
        io.read_file(&target).await.expect("read"),
        b"new contents",
        "new bytes"
    );
    let source = io
        .read_file(&staged)
        .await
        .map(drop)
        .map_err(|error| error.kind());
    assert_eq!(
        source,
        Err(io::ErrorKind::NotFound),
        "the source name is gone"
    );
}

/// `create_dir` makes one level, durably, and refuses an existing name or a missing
/// parent; `path_kind` tells files from folders; `read_dir` lists names and kinds;
/// `remove_file` and `remove_dir_all` remove.
pub async fn folders_create_list_and_remove(io: &dyn DriveIo, folder: &Path) {
    let kind = |result: io::Result<()>| result.err().map(|error| error.kind());
    let nested = folder.join("a/b");
    assert_eq!(
        kind(io.create_dir(&nested).await),
        Some(io::ErrorKind::NotFound),
        "create_dir needs its parent"
    );
    io.create_dir(&folder.join("a")).await.expect("create a");
    io.create_dir(&nested).await.expect("create a/b");
    assert_eq!(
        kind(io.create_dir(&nested).await),
        Some(io::ErrorKind::AlreadyExists),
        "create_dir of an existing folder"
    );
    io.write_file_synced(&folder.join("a/file"), Bytes::from_static(b"x"))
        .await
        .expect("file");
    assert_eq!(
        kind(io.create_dir(&folder.join("a/file")).await),
        Some(io::ErrorKind::AlreadyExists),
        "create_dir over a file"
    );
    assert_eq!(
        io.path_kind(&nested).await.expect("kind of a folder"),
        PathKind::Directory
    );
    assert_eq!(
        io.path_kind(&folder.join("a/file"))
            .await
            .expect("kind of a file"),
        PathKind::File
    );
    assert_eq!(
        io.path_kind(&folder.join("none"))
            .await
            .map_err(|error| error.kind()),
        Err(io::ErrorKind::NotFound),
        "kind of a missing path"
    );
    io.sync_dir(&folder.join("a")).await.expect("sync a folder");
    let mut names = io.read_dir(&folder.join("a")).await.expect("list");
    names.sort();
    assert_eq!(
        names,
        vec![("b".to_owned(), true), ("file".to_owned(), false)],
        "listing"
    );
    io.remove_file(&folder.join("a/file"))
        .await
        .expect("remove file");
    let names = io.read_dir(&folder.join("a")).await.expect("list again");
    assert_eq!(names, vec![("b".to_owned(), true)], "the file is gone");
    io.remove_dir_all(&folder.join("a"))
        .await
        .expect("remove tree");
    assert!(
        io.read_dir(folder).await.expect("list root").is_empty(),
        "the tree is gone"
    );
}

/// `remove_dir` removes empty folders only.
pub async fn remove_dir_keeps_full_folders(io: &dyn DriveIo, folder: &Path) {
    let full = folder.join("full");
    let empty = folder.join("empty");
    io.create_dir(&full).await.expect("create full");
    io.create_dir(&empty).await.expect("create empty");
    io.write_file_synced(&full.join("x"), Bytes::from_static(b"x"))
        .await
        .expect("file");
    assert!(!io.remove_dir(&full).await.expect("try full"), "full stays");
    assert!(
        io.remove_dir(&empty).await.expect("try empty"),
        "empty goes"
    );
    let mut names = io.read_dir(folder).await.expect("list");
    names.sort();
    assert_eq!(
        names,
        vec![("full".to_owned(), true)],
        "only the full folder is left"
    );
}

/// An open file is linked until it is removed or renamed over.
pub async fn unlinked_files_are_not_linked(io: &dyn DriveIo, folder: &Path) {
    let path = folder.join("stamp");
    io.write_file_synced(&path, Bytes::from_static(b"one"))
        .await
        .expect("write");
    let held = io.open(&path, OpenMode::Read).await.expect("open");
    assert!(
        io.is_linked(&held).await.expect("linked"),
        "a fresh file is linked"
    );
    let replacement = folder.join("stamp.new");
    io.write_file_synced(&replacement, Bytes::from_static(b"two"))
        .await
        .expect("write replacement");
    io.rename(&replacement, &path).await.expect("rename over");
    assert!(
        !io.is_linked(&held).await.expect("after rename"),
        "a file renamed over is unlinked"
    );
    let held = io.open(&path, OpenMode::Read).await.expect("open again");
    io.remove_file(&path).await.expect("remove");
    assert!(
        !io.is_linked(&held).await.expect("after remove"),
        "a removed file is unlinked"
    );
}

/// A lock taken through `first` refuses `second` (another holder) until it is dropped.
pub async fn lock_is_exclusive_between_holders(
    first: &dyn DriveIo,
    second: &dyn DriveIo,
    folder: &Path,
) {
    let path = folder.join("lock");
    let held = first.lock_exclusive(&path).await.expect("first lock");
    let refused = second.lock_exclusive(&path).await.map(drop);
    assert_eq!(
        refused.map_err(|error| error.kind()),
        Err(io::ErrorKind::WouldBlock),
        "a held lock refuses another holder"
    );
    drop(held);
    second
        .lock_exclusive(&path)
        .await
        .expect("the lock is free once dropped");
}

/// `disk_space` reports free bytes no larger than the total, and a non-zero total.
pub async fn disk_space_is_sane(io: &dyn DriveIo, folder: &Path) {
    let (free_bytes, total_bytes) = io.disk_space(folder).await.expect("disk space");
    assert!(total_bytes > 0, "a filesystem has some size");
    assert!(
        free_bytes <= total_bytes,
        "free {free_bytes} <= total {total_bytes}"
    );
}

/// Many operations in flight at once, more than an io_uring queue holds.
pub async fn many_operations_in_flight(io: &dyn DriveIo, folder: &Path) {
    let path = folder.join("many");
    let block_bytes = 4096;
    let blocks = 1200;
    let file = io
        .open(&path, OpenMode::CreateTruncate)
        .await
        .expect("create");
    let writes = (0..blocks).map(|block| {
        let data = Bytes::from(pattern(block_bytes, block as u8));
        io.write_at(&file, (block * block_bytes) as u64, data)
    });
    for result in futures::future::join_all(writes).await {
        result.expect("concurrent write");
    }
    io.fsync(&file).await.expect("fsync");
    let file = io.open(&path, OpenMode::Read).await.expect("open");
    let reads =
        (0..blocks).map(|block| io.read_at(&file, (block * block_bytes) as u64, vec![0; 4096]));
    for (block, result) in futures::future::join_all(reads)
        .await
        .into_iter()
        .enumerate()
    {
        let expected = pattern(block_bytes, block as u8);
        assert_eq!(result.expect("concurrent read"), expected, "block {block}");
    }
}

/// Four threads, each with its own current-thread runtime, use one back-end at once.
pub fn concurrent_runtimes(io: Arc<dyn DriveIo>, folder: &Path) {
    let threads = 4;
    let files_per_thread = 50;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let io = io.clone();
            scope.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let own = folder.join(format!("thread-{thread}"));
                    io.create_dir(&own).await.expect("create folder");
                    for index in 0..files_per_thread {
                        let path = own.join(format!("file-{index}"));
                        let contents = pattern(1000 + index, (thread * 31 + index) as u8);
                        io.write_file_synced(&path, Bytes::from(contents.clone()))
                            .await
                            .expect("write");
                        assert_eq!(io.read_file(&path).await.expect("read"), contents);
                    }
                    let names = io.read_dir(&own).await.expect("list");
                    assert_eq!(names.len(), files_per_thread, "every file is listed");
                });
            });
        }
    });
}

/// Deterministic bytes that differ by `seed` and by position.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
