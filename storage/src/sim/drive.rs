//! A simulated drive: an in-memory filesystem behind `DriveIo`, with a crash model and
//! seeded faults.
//!
//! Crash model (what survives `crash()`):
//! - File bytes: what was there at the last `fsync` (or `write_file_synced`); each write
//!   since then independently survives whole, torn (a prefix of it) or not at all.
//! - Names: `create_dir` and `rename` are durable when they return (both sync the parent,
//!   as the real back-ends do); a file's name made by `open`/`write_file_synced`, and any
//!   removal, are durable only once their folder is synced. Entries whose folder did not
//!   survive are gone.
//!
//! Faults, drawn from the drive's seeded generator while the drive is marked faulty:
//! `EIO` on any call (sometimes after the call took effect), `ENOSPC` on writes, short
//! writes, silent bit flips in bytes read, and bit rot kept in written shard bytes. Every call
//! yields to the scheduler a seeded number of times, so concurrent requests interleave
//! differently per seed.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use lakeshare_engine::io::{DriveFile, DriveIo, IoBackendKind, OpenMode, PathKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How often each fault strikes a call of a faulty drive, per thousand calls.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FaultRates {
    pub(crate) eio: u32,
    pub(crate) enospc: u32,
    pub(crate) short_write: u32,
    pub(crate) read_flip: u32,
    pub(crate) bit_rot: u32,
}

impl FaultRates {
    pub(crate) fn none() -> FaultRates {
        FaultRates {
            eio: 0,
            enospc: 0,
            short_write: 0,
            read_flip: 0,
            bit_rot: 0,
        }
    }
}

#[derive(Clone, Debug)]
enum Entry {
    Dir,
    File(u64),
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    /// The bytes on the medium: what the last fsync made durable.
    durable: Vec<u8>,
    /// Writes since the last fsync, in order.
    unsynced: Vec<(u64, Vec<u8>)>,
}

struct Fs {
    names: BTreeMap<PathBuf, Entry>,
    durable_names: BTreeMap<PathBuf, Entry>,
    inodes: HashMap<u64, Inode>,
    handles: HashMap<u64, u64>,
    next_id: u64,
}

struct Faults {
    rng: StdRng,
    faulty: bool,
    rates: FaultRates,
    /// Most scheduler yields per call.
    yields_max: u32,
}

pub(crate) struct SimDrive {
    root: PathBuf,
    fs: Mutex<Fs>,
    faults: Mutex<Faults>,
}

/// A fault drawn for one call.
#[derive(PartialEq, Eq)]
enum Strike {
    None,
    Eio,
    /// The call takes effect, then reports `EIO`.
    EioAfter,
    NoSpace,
    Short,
    Flip,
    Rot,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display()))
}

fn is_a_directory(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::IsADirectory, format!("{}", path.display()))
}

fn not_a_directory(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotADirectory, format!("{}", path.display()))
}

fn not_empty(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::DirectoryNotEmpty,
        format!("{}", path.display()),
    )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SimDrive {
    pub(crate) fn new(root: PathBuf, seed: u64) -> SimDrive {
        let mut names = BTreeMap::new();
        for ancestor in root.ancestors() {
            names.insert(ancestor.to_path_buf(), Entry::Dir);
        }
        SimDrive {
            root,
            fs: Mutex::new(Fs {
                durable_names: names.clone(),
                names,
                inodes: HashMap::new(),
                handles: HashMap::new(),
                next_id: 1,
            }),
            faults: Mutex::new(Faults {
                rng: StdRng::seed_from_u64(seed),
                faulty: false,
                rates: FaultRates::none(),
                yields_max: 3,
            }),
        }
    }

    pub(crate) fn set_faulty(&self, faulty: bool, rates: FaultRates) {
        let mut faults = lock(&self.faults);
        faults.faulty = faulty;
        faults.rates = rates;
    }

    pub(crate) fn is_faulty(&self) -> bool {
        lock(&self.faults).faulty
    }

    /// Power loss: keeps what the crash model says survives; open files are gone.
    pub(crate) fn crash(&self) {
        let mut fs = lock(&self.fs);
        let mut faults = lock(&self.faults);
        let fs = &mut *fs;
        let mut names = fs.durable_names.clone();
        // Entries whose folder did not survive go with it.
        loop {
            let orphans: Vec<PathBuf> = names
                .keys()
                .filter(|path| {
                    path.parent()
                        .is_some_and(|parent| !matches!(names.get(parent), Some(Entry::Dir)))
                })
                .cloned()
                .collect();
            if orphans.is_empty() {
                break;
            }
            for orphan in orphans {
                names.remove(&orphan);
            }
        }
        for inode in fs.inodes.values_mut() {
            let mut data = std::mem::take(&mut inode.durable);
            for (offset, write) in std::mem::take(&mut inode.unsynced) {
                let kept = match faults.rng.gen_range(0..3) {
                    0 => 0,
                    1 => faults.rng.gen_range(0..=write.len()),
                    _ => write.len(),
                };
                apply_write(&mut data, offset, &write[..kept]);
            }
            inode.data = data.clone();
            inode.durable = data;
        }
        let live: std::collections::HashSet<u64> = names
            .values()
            .filter_map(|entry| match entry {
                Entry::File(id) => Some(*id),
                Entry::Dir => None,
            })
            .collect();
        fs.inodes.retain(|id, _| live.contains(id));
        fs.handles.clear();
        fs.durable_names = names.clone();
        fs.names = names;
    }

    /// Names below `folder` (relative to the drive root), for the checker.
    pub(crate) fn entries_below(&self, folder: &str) -> Vec<PathBuf> {
        let base = self.root.join(folder);
        lock(&self.fs)
            .names
            .keys()
            .filter(|path| path.starts_with(&base) && **path != base)
            .cloned()
            .collect()
    }

    /// Yields a seeded number of times, then draws this call's fault. `writes`: the call
    /// writes (ENOSPC, short writes and bit rot apply); `reads`: it returns bytes (flips).
    async fn strike(&self, writes: bool, reads: bool) -> Strike {
        let (yields, strike) = {
            let mut faults = lock(&self.faults);
            let yields_max = faults.yields_max;
            let yields = faults.rng.gen_range(0..=yields_max);
            let rates = faults.rates;
            let roll = faults.rng.gen_range(0..1000u32);
            let after = faults.rng.gen_bool(0.25);
            let mut strike = Strike::None;
            if faults.faulty {
                let mut thresholds = vec![(
                    rates.eio,
                    if after { Strike::EioAfter } else { Strike::Eio },
                )];
                if writes {
                    thresholds.push((rates.enospc, Strike::NoSpace));
                    thresholds.push((rates.short_write, Strike::Short));
                    thresholds.push((rates.bit_rot, Strike::Rot));
                }
                if reads {
                    thresholds.push((rates.read_flip, Strike::Flip));
                }
                let mut bound = 0;
                for (rate, candidate) in thresholds {
                    bound += rate;
                    if roll < bound {
                        strike = candidate;
                        break;
                    }
                }
            }
            (yields, strike)
        };
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        strike
    }

    fn random_bit(&self, len: usize) -> usize {
        lock(&self.faults).rng.gen_range(0..len * 8)
    }

    fn file_of(fs: &Fs, file: &DriveFile) -> io::Result<u64> {
        let handle = file
            .virtual_id()
            .ok_or_else(|| io::Error::other("not a simulated file"))?;
        fs.handles
            .get(&handle)
            .copied()
            .ok_or_else(|| io::Error::other("stale handle (the drive crashed)"))
    }

    /// `path` is a folder, or why not.
    fn expect_dir(fs: &Fs, path: &Path) -> io::Result<()> {
        match fs.names.get(path) {
            Some(Entry::Dir) => Ok(()),
            Some(Entry::File(_)) => Err(not_a_directory(path)),
            None => Err(not_found(path)),
        }
    }

    fn parent_is_dir(fs: &Fs, path: &Path) -> bool {
        path.parent()
            .is_some_and(|parent| matches!(fs.names.get(parent), Some(Entry::Dir)))
    }

    fn new_handle(fs: &mut Fs, inode: u64) -> DriveFile {
        let handle = fs.next_id;
        fs.next_id += 1;
        fs.handles.insert(handle, inode);
        DriveFile::from_virtual(handle)
    }

    fn create_file(fs: &mut Fs, path: &Path) -> io::Result<u64> {
        match fs.names.get(path) {
            Some(Entry::File(id)) => {
                let id = *id;
                let inode = fs.inodes.entry(id).or_default();
                // Truncation survives a crash only with an fsync, like the writes after it.
                inode.data.clear();
                Ok(id)
            }
            Some(Entry::Dir) => Err(is_a_directory(path)),
            None => {
                if !Self::parent_is_dir(fs, path) {
                    return Err(not_found(path));
                }
                let id = fs.next_id;
                fs.next_id += 1;
                fs.inodes.insert(id, Inode::default());
                fs.names.insert(path.to_path_buf(), Entry::File(id));
                Ok(id)
            }
        }
    }
}

fn apply_write(data: &mut Vec<u8>, offset: u64, write: &[u8]) {
    let offset = offset as usize;
    let end = offset + write.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset..end].copy_from_slice(write);
}

fn subtree(names: &BTreeMap<PathBuf, Entry>, base: &Path) -> Vec<PathBuf> {
    names
        .range(base.to_path_buf()..)
        .take_while(|(path, _)| path.starts_with(base))
        .map(|(path, _)| path.clone())
        .collect()
}

fn move_subtree(names: &mut BTreeMap<PathBuf, Entry>, source: &Path, target: &Path) {
    for path in subtree(names, target) {
        names.remove(&path);
    }
    for path in subtree(names, source) {
        if let Some(entry) = names.remove(&path) {
            let relative = path.strip_prefix(source).unwrap_or(Path::new(""));
            let moved = if relative.as_os_str().is_empty() {
                target.to_path_buf()
            } else {
                target.join(relative)
            };
            names.insert(moved, entry);
        }
    }
}

#[async_trait]
impl DriveIo for SimDrive {
    fn kind(&self) -> IoBackendKind {
        IoBackendKind::Threads
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<DriveFile> {
        if matches!(self.strike(false, false).await, Strike::Eio) {
            return Err(eio());
        }
        let mut fs = lock(&self.fs);
        let inode = match mode {
            OpenMode::Read => match fs.names.get(path) {
                Some(Entry::File(id)) => *id,
                Some(Entry::Dir) => return Err(is_a_directory(path)),
                None => return Err(not_found(path)),
            },
            OpenMode::CreateTruncate => Self::create_file(&mut fs, path)?,
        };
        Ok(Self::new_handle(&mut fs, inode))
    }

    async fn read_at(&self, file: &DriveFile, offset: u64, buffer: Vec<u8>) -> io::Result<Vec<u8>> {
        let strike = self.strike(false, true).await;
        if matches!(strike, Strike::Eio | Strike::EioAfter) {
            return Err(eio());
        }
        let mut out = {
            let fs = lock(&self.fs);
            let inode = Self::file_of(&fs, file)?;
            let data = fs.inodes.get(&inode).map(|i| &i.data[..]).unwrap_or(&[]);
            let start = (offset as usize).min(data.len());
            let end = (start + buffer.len()).min(data.len());
            let mut out = buffer;
            out.truncate(end - start);
            out.copy_from_slice(&data[start..end]);
            out
        };
        if strike == Strike::Flip && !out.is_empty() {
            let bit = self.random_bit(out.len());
            out[bit / 8] ^= 1 << (bit % 8);
        }
        Ok(out)
    }

    async fn write_at(&self, file: &DriveFile, offset: u64, data: Bytes) -> io::Result<()> {
        let strike = self.strike(true, false).await;
        let mut data = data.to_vec();
        match strike {
            Strike::Eio => return Err(eio()),
            Strike::NoSpace => return Err(enospc()),
            Strike::Short | Strike::EioAfter => {
                let kept = data.len() / 2;
                data.truncate(kept);
            }
            Strike::Rot if !data.is_empty() => {
                let bit = self.random_bit(data.len());
                data[bit / 8] ^= 1 << (bit % 8);
            }
            _ => {}
        }
        {
            let mut fs = lock(&self.fs);
            let inode = Self::file_of(&fs, file)?;
            let inode = fs.inodes.entry(inode).or_default();
            apply_write(&mut inode.data, offset, &data);
            inode.unsynced.push((offset, data));
        }
        match strike {
            Strike::Short | Strike::EioAfter => Err(eio()),
            _ => Ok(()),
        }
    }

    async fn fsync(&self, file: &DriveFile) -> io::Result<()> {
        if matches!(self.strike(false, false).await, Strike::Eio) {
            return Err(eio());
        }
        let mut fs = lock(&self.fs);
        let inode = Self::file_of(&fs, file)?;
        let inode = fs.inodes.entry(inode).or_default();
        inode.durable = inode.data.clone();
        inode.unsynced.clear();
        Ok(())
    }

    async fn is_linked(&self, file: &DriveFile) -> io::Result<bool> {
        let fs = lock(&self.fs);
        let Ok(inode) = Self::file_of(&fs, file) else {
            return Ok(false);
        };
        Ok(fs
            .names
            .values()
            .any(|entry| matches!(entry, Entry::File(id) if *id == inode)))
    }

    async fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let strike = self.strike(false, true).await;
        if matches!(strike, Strike::Eio | Strike::EioAfter) {
            return Err(eio());
        }
        let mut out = {
            let fs = lock(&self.fs);
            match fs.names.get(path) {
                Some(Entry::File(id)) => fs
                    .inodes
                    .get(id)
                    .map(|i| i.data.clone())
                    .unwrap_or_default(),
                Some(Entry::Dir) => return Err(is_a_directory(path)),
                None => return Err(not_found(path)),
            }
        };
        if strike == Strike::Flip && !out.is_empty() {
            let bit = self.random_bit(out.len());
            out[bit / 8] ^= 1 << (bit % 8);
        }
        Ok(out)
    }

    async fn write_file_synced(&self, path: &Path, data: Bytes) -> io::Result<()> {
        let strike = self.strike(true, false).await;
        match strike {
            Strike::Eio => return Err(eio()),
            Strike::NoSpace => return Err(enospc()),
            _ => {}
        }
        let mut fs = lock(&self.fs);
        let inode = Self::create_file(&mut fs, path)?;
        let kept = if matches!(strike, Strike::Short | Strike::EioAfter) {
            data.len() / 2
        } else {
            data.len()
        };
        let inode = fs.inodes.entry(inode).or_default();
        inode.data = data[..kept].to_vec();
        if kept == data.len() {
            inode.durable = inode.data.clone();
            inode.unsynced.clear();
            Ok(())
        } else {
            inode.unsynced.push((0, inode.data.clone()));
            Err(eio())
        }
    }

    async fn rename(&self, source: &Path, target: &Path) -> io::Result<()> {
        let strike = self.strike(false, false).await;
        if strike == Strike::Eio {
            return Err(eio());
        }
        let mut fs = lock(&self.fs);
        let Some(entry) = fs.names.get(source).cloned() else {
            return Err(not_found(source));
        };
        if !Self::parent_is_dir(&fs, target) {
            return Err(not_found(target));
        }
        match (&entry, fs.names.get(target)) {
            (Entry::Dir, Some(Entry::Dir)) if subtree(&fs.names, target).len() > 1 => {
                return Err(not_empty(target));
            }
            (Entry::Dir, Some(Entry::File(_))) => return Err(not_a_directory(target)),
            (Entry::File(_), Some(Entry::Dir)) => return Err(is_a_directory(target)),
            _ => {}
        }
        if source == target {
            return Ok(());
        }
        move_subtree(&mut fs.names, source, target);
        // The target's folder is synced: the target name is durable, with whatever of the
        // moved tree was durable.
        let had_durable_source = fs.durable_names.contains_key(source);
        move_subtree(&mut fs.durable_names, source, target);
        if !had_durable_source {
            fs.durable_names.insert(target.to_path_buf(), entry);
        }
        if strike == Strike::EioAfter {
            return Err(eio());
        }
        Ok(())
    }

    async fn create_dir(&self, path: &Path) -> io::Result<()> {
        let strike = self.strike(true, false).await;
        match strike {
            Strike::Eio => return Err(eio()),
            Strike::NoSpace => return Err(enospc()),
            _ => {}
        }
        let mut fs = lock(&self.fs);
        if fs.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}", path.display()),
            ));
        }
        if !Self::parent_is_dir(&fs, path) {
            return Err(not_found(path));
        }
        fs.names.insert(path.to_path_buf(), Entry::Dir);
        fs.durable_names.insert(path.to_path_buf(), Entry::Dir);
        if strike == Strike::EioAfter {
            return Err(eio());
        }
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if matches!(self.strike(false, false).await, Strike::Eio) {
            return Err(eio());
        }
        let mut fs = lock(&self.fs);
        let fs = &mut *fs;
        let is_child = |candidate: &Path| candidate.parent() == Some(path);
        let durable_children: Vec<PathBuf> = fs
            .durable_names
            .keys()
            .filter(|candidate| is_child(candidate))
            .cloned()
            .collect();
        for child in durable_children {
            if !fs.names.contains_key(&child) {
                for gone in subtree(&fs.durable_names, &child) {
                    fs.durable_names.remove(&gone);
                }
            }
        }
        for (child, entry) in fs.names.iter().filter(|(candidate, _)| is_child(candidate)) {
            fs.durable_names.insert(child.clone(), entry.clone());
        }
        Ok(())
    }

    async fn path_kind(&self, path: &Path) -> io::Result<PathKind> {
        if matches!(self.strike(false, false).await, Strike::Eio) {
            return Err(eio());
        }
        match lock(&self.fs).names.get(path) {
            Some(Entry::Dir) => Ok(PathKind::Directory),
            Some(Entry::File(_)) => Ok(PathKind::File),
            None => Err(not_found(path)),
        }
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let strike = self.strike(false, false).await;
        if strike == Strike::Eio {
            return Err(eio());
        }
        let mut fs = lock(&self.fs);
        match fs.names.get(path) {
            Some(Entry::File(_)) => {
                fs.names.remove(path);
            }
            Some(Entry::Dir) => return Err(is_a_directory(path)),
            None => return Err(not_found(path)),
        }
        if strike == Strike::EioAfter {
            return Err(eio());
        }
        Ok(())
    }

    async fn remove_dir(&self, path: &Path) -> io::Result<bool> {
        let strike = self.strike(false, false).await;
        if strike == Strike::Eio {
            return Err(eio());
        }
        let mut fs = lock(&self.fs);
        Self::expect_dir(&fs, path)?;
        if subtree(&fs.names, path).len() > 1 {
            return Ok(false);
        }
        fs.names.remove(path);
        Ok(true)
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        if matches!(self.strike(false, false).await, Strike::Eio) {
            return Err(eio());
        }
        let mut fs = lock(&self.fs);
        if !fs.names.contains_key(path) {
            return Err(not_found(path));
        }
        for gone in subtree(&fs.names, path) {
            fs.names.remove(&gone);
        }
        Ok(())
    }

    async fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>> {
        if matches!(self.strike(false, false).await, Strike::Eio) {
            return Err(eio());
        }
        let fs = lock(&self.fs);
        Self::expect_dir(&fs, path)?;
        Ok(fs
            .names
            .range(path.to_path_buf()..)
            .skip(1)
            .take_while(|(candidate, _)| candidate.starts_with(path))
            .filter(|(candidate, _)| candidate.parent() == Some(path))
            .filter_map(|(candidate, entry)| {
                let name = candidate.file_name()?.to_str()?.to_owned();
                Some((name, matches!(entry, Entry::Dir)))
            })
            .collect())
    }

    async fn disk_space(&self, _path: &Path) -> io::Result<(u64, u64)> {
        let used: u64 = lock(&self.fs)
            .inodes
            .values()
            .map(|inode| inode.data.len() as u64)
            .sum();
        const TOTAL: u64 = 1 << 32;
        Ok((TOTAL.saturating_sub(used), TOTAL))
    }

    async fn lock_exclusive(&self, _path: &Path) -> io::Result<DriveFile> {
        let mut fs = lock(&self.fs);
        let handle = fs.next_id;
        fs.next_id += 1;
        Ok(DriveFile::from_virtual(handle))
    }
}
