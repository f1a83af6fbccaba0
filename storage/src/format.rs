//! Drive identity and set layout: `<drive>/.lakeshare.sys/format.json`.
//!
//! Invariants: every formatted drive of a deployment carries the same deployment id and set
//! layout; a drive serves only the slot its uuid names. Opening refuses a drive from another
//! deployment or in the wrong slot (naming the drive path), formats a wholly fresh node, and
//! stamps an empty replacement drive into its slot (the caller then heals everything). A
//! drive counts as empty when it holds no file outside its system folder (empty folders are
//! left by a wipe racing with a running node, and are no data). While the node runs, a blank
//! drive is stamped back into its slot only when its folder exists: a missing drive folder is
//! a missing disk, and the node never creates it.

use std::io;
use std::path::PathBuf;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::drive::{DrivePath, DriveRoot};
use crate::env::Environment;
use crate::error::{Result, StorageError};

/// The per-drive system folder; never a valid bucket name.
pub(crate) const SYSTEM_DIR: &str = ".lakeshare.sys";
const FORMAT_FILE: &str = "format.json";
/// Version 2: shards carry the identity of their part (see `bitrot`), part files are named
/// by part id. Drives of version 1 are refused, never read as corrupt.
const FORMAT_VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct FormatFile {
    pub(crate) version: u32,
    pub(crate) deployment_id: String,
    /// Drive uuids per set, in slot order.
    pub(crate) sets: Vec<Vec<String>>,
    /// This drive's uuid.
    pub(crate) this: String,
}

pub(crate) struct OpenedLayout {
    pub(crate) deployment_id: String,
    /// The deployment's layout; its `this` is meaningless (any drive's).
    pub(crate) reference: FormatFile,
    /// Drives stamped during this open into a formatted deployment.
    pub(crate) replaced: Vec<PathBuf>,
}

pub(crate) fn system_dir() -> DrivePath {
    DrivePath::root().child(SYSTEM_DIR)
}

pub(crate) fn format_path() -> DrivePath {
    system_dir().child(FORMAT_FILE)
}

/// Splits `drive_count` drives into sets: `forced` when given (must divide), else the largest
/// size in 2..=16 dividing the count (one drive is one set of one).
pub(crate) fn set_drive_count(drive_count: usize, forced: Option<usize>) -> Result<usize> {
    if drive_count == 0 {
        return Err(StorageError::InvalidArgument("no drives given".into()));
    }
    if let Some(size) = forced {
        let valid = (size == 1 && drive_count == 1) || (2..=16).contains(&size);
        if !valid || !drive_count.is_multiple_of(size) {
            return Err(StorageError::InvalidArgument(format!(
                "set size {size} does not split {drive_count} drives into sets of 2..16"
            )));
        }
        return Ok(size);
    }
    if drive_count == 1 {
        return Ok(1);
    }
    (2..=16usize)
        .rev()
        .find(|size| drive_count.is_multiple_of(*size))
        .ok_or_else(|| {
            StorageError::InvalidArgument(format!(
                "{drive_count} drives cannot be split into equal sets of 2..16 drives"
            ))
        })
}

/// MinIO's default parity for a set of `set_size` drives.
pub(crate) fn default_parity(set_size: usize) -> usize {
    match set_size {
        0 | 1 => 0,
        2 | 3 => 1,
        4 | 5 => 2,
        6 | 7 => 3,
        _ => 4,
    }
}

pub(crate) fn validate_parity(set_size: usize, parity: usize) -> Result<()> {
    if parity > set_size / 2 {
        return Err(StorageError::InvalidArgument(format!(
            "parity {parity} is above half of the set size {set_size}"
        )));
    }
    Ok(())
}

/// Reads, checks and (for fresh drives) writes every drive's format.
pub(crate) async fn open_layout(
    drives: &[DriveRoot],
    set_size: usize,
    env: &Environment,
) -> Result<OpenedLayout> {
    let mut found: Vec<Option<FormatFile>> = Vec::with_capacity(drives.len());
    // Drives whose stamp could not be read (an I/O error, a garbled file): they start
    // offline, are never stamped here, and come back through the stamp checks and heal.
    let mut unreadable = vec![false; drives.len()];
    for (slot, drive) in drives.iter().enumerate() {
        match read_format(drive).await {
            Ok(format) => found.push(format),
            Err(FormatError::Refused(error)) => return Err(error),
            Err(FormatError::Unreadable(error)) => {
                tracing::warn!("{error}; the drive starts offline");
                unreadable[slot] = true;
                found.push(None);
            }
        }
    }
    let reference = majority_format(&found);
    let Some(reference) = reference else {
        if unreadable.contains(&true) {
            return Err(StorageError::InvalidArgument(
                "no drive's format stamp could be read, and some drives failed: refusing to \
                 format them as new"
                    .into(),
            ));
        }
        return format_fresh(drives, set_size, env).await;
    };
    let expected_sets: Vec<usize> = vec![set_size; drives.len() / set_size];
    let actual_sets: Vec<usize> = reference.sets.iter().map(Vec::len).collect();
    if expected_sets != actual_sets {
        return Err(StorageError::InvalidArgument(format!(
            "the drives were formatted as sets of {actual_sets:?}, not {expected_sets:?}; give \
             the same drives in the same order"
        )));
    }
    let mut replaced = Vec::new();
    for (slot, (drive, format)) in drives.iter().zip(&found).enumerate() {
        let expected_uuid = &reference.sets[slot / set_size][slot % set_size];
        match format {
            Some(format) if format.deployment_id != reference.deployment_id => {
                return Err(StorageError::InvalidArgument(format!(
                    "drive {} belongs to deployment {}, not {}",
                    drive.root().display(),
                    format.deployment_id,
                    reference.deployment_id
                )));
            }
            Some(format) if &format.this != expected_uuid => {
                let home = reference
                    .sets
                    .iter()
                    .flatten()
                    .position(|uuid| uuid == &format.this);
                let detail = match home {
                    Some(home) => {
                        format!("it belongs in slot {home} (drive argument {})", home + 1)
                    }
                    None => "its id is not part of this deployment".to_string(),
                };
                return Err(StorageError::InvalidArgument(format!(
                    "drive {} is in the wrong slot {slot}: {detail}",
                    drive.root().display()
                )));
            }
            Some(_) => {}
            None if unreadable[slot] => {}
            None => {
                let stamp = FormatFile {
                    this: expected_uuid.clone(),
                    ..reference.clone()
                };
                match write_format(drive, &stamp, env).await {
                    Ok(()) => replaced.push(drive.root().to_path_buf()),
                    // Stamped later by the drive watch or an admin heal.
                    Err(error) => tracing::warn!("stamping a blank drive: {error}"),
                }
            }
        }
    }
    Ok(OpenedLayout {
        deployment_id: reference.deployment_id.clone(),
        reference: reference.clone(),
        replaced,
    })
}

async fn format_fresh(
    drives: &[DriveRoot],
    set_size: usize,
    env: &Environment,
) -> Result<OpenedLayout> {
    let deployment_id = env.new_id().to_string();
    let uuids: Vec<String> = drives.iter().map(|_| env.new_id().to_string()).collect();
    let sets: Vec<Vec<String>> = uuids.chunks(set_size).map(<[String]>::to_vec).collect();
    let mut reference = None;
    for (drive, uuid) in drives.iter().zip(&uuids) {
        let stamp = FormatFile {
            version: FORMAT_VERSION,
            deployment_id: deployment_id.clone(),
            sets: sets.clone(),
            this: uuid.clone(),
        };
        write_format(drive, &stamp, env).await?;
        reference = Some(stamp);
    }
    let reference =
        reference.ok_or_else(|| StorageError::InvalidArgument("no drives given".into()))?;
    Ok(OpenedLayout {
        deployment_id,
        reference,
        replaced: Vec::new(),
    })
}

/// `Ok(None)` for a drive with no format that is empty (fresh or a replacement).
enum FormatError {
    /// The node must not start (a folder that is not one of ours).
    Refused(StorageError),
    /// This drive cannot be read now.
    Unreadable(StorageError),
}

async fn read_format(drive: &DriveRoot) -> std::result::Result<Option<FormatFile>, FormatError> {
    match drive.read_file(&format_path()).await {
        Ok(bytes) => {
            let format = parse_format(&bytes).map_err(|why| {
                FormatError::Unreadable(StorageError::InvalidArgument(format!(
                    "drive {}: {SYSTEM_DIR}/{FORMAT_FILE}: {why}",
                    drive.root().display()
                )))
            })?;
            Ok(Some(format))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let files = files_outside_system_dir(drive)
                .await
                .map_err(|error| FormatError::Unreadable(drive_error(drive, error)))?;
            if !files.is_empty() {
                return Err(FormatError::Refused(StorageError::InvalidArgument(
                    format!(
                        "drive {} is not empty and has no {SYSTEM_DIR}/{FORMAT_FILE}; refusing to \
                     format it (found {files:?})",
                        drive.root().display(),
                    ),
                )));
            }
            Ok(None)
        }
        Err(error) => Err(FormatError::Unreadable(drive_error(drive, error))),
    }
}

/// A stamp of this format version, or why not.
fn parse_format(raw: &[u8]) -> std::result::Result<FormatFile, String> {
    let format: FormatFile = serde_json::from_slice(raw).map_err(|error| error.to_string())?;
    if format.version != FORMAT_VERSION {
        return Err(format!(
            "format version {} is not {FORMAT_VERSION}: the drive was formatted by another \
             lakeshare release, whose objects this one cannot read",
            format.version
        ));
    }
    Ok(format)
}

/// What a running node makes of a drive that lost its stamp.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Adoption {
    /// Blank: stamped into its slot again; the caller heals it.
    Stamped,
    /// The drive folder is missing (a missing disk): left alone until it comes back.
    Missing,
    /// Holds files, or another stamp: left offline, never written.
    Refused(String),
}

/// Stamps `drive` into the slot of `uuid` if its folder exists and holds no file outside
/// the system folder. Never creates the drive folder itself.
pub(crate) async fn adopt_blank_drive(
    drive: &DriveRoot,
    reference: &FormatFile,
    uuid: &str,
    env: &Environment,
) -> Result<Adoption> {
    match drive.read_file(&format_path()).await {
        Ok(raw) => {
            let why = match parse_format(&raw) {
                Ok(found) if found.deployment_id != reference.deployment_id => {
                    format!("it belongs to deployment {}", found.deployment_id)
                }
                Ok(found) if found.this != uuid => {
                    format!("it carries drive id {}, not {uuid}", found.this)
                }
                Ok(_) => return Ok(Adoption::Stamped),
                Err(why) => format!("{SYSTEM_DIR}/{FORMAT_FILE}: {why}"),
            };
            return Ok(Adoption::Refused(why));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Ok(Adoption::Refused(error.to_string())),
    }
    let files = match files_outside_system_dir(drive).await {
        Ok(files) => files,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Adoption::Missing),
        Err(error) => return Ok(Adoption::Refused(error.to_string())),
    };
    if !files.is_empty() {
        return Ok(Adoption::Refused(format!(
            "it holds files but no {SYSTEM_DIR}/{FORMAT_FILE} (found {files:?})"
        )));
    }
    let stamp = FormatFile {
        this: uuid.to_string(),
        ..reference.clone()
    };
    write_format(drive, &stamp, env).await?;
    Ok(Adoption::Stamped)
}

/// Up to `FOUND_NAMES_MAX` files (not folders) under `drive`, outside the system folder.
async fn files_outside_system_dir(drive: &DriveRoot) -> io::Result<Vec<String>> {
    const FOUND_NAMES_MAX: usize = 3;
    let mut found = Vec::new();
    let mut pending: Vec<DrivePath> = vec![DrivePath::root()];
    while let Some(dir) = pending.pop() {
        for (name, is_dir) in drive.read_dir(&dir).await? {
            if dir.is_root() && name == SYSTEM_DIR {
                continue;
            }
            let Ok(path) = dir.join(&name) else {
                found.push(format!("{dir}/{name}"));
                continue;
            };
            if is_dir {
                pending.push(path);
                continue;
            }
            found.push(path.to_string());
            if found.len() >= FOUND_NAMES_MAX {
                return Ok(found);
            }
        }
    }
    Ok(found)
}

async fn write_format(drive: &DriveRoot, format: &FormatFile, env: &Environment) -> Result<()> {
    let system = system_dir();
    let tmp = system.child("tmp");
    drive
        .create_dir_below(&DrivePath::root(), &tmp)
        .await
        .map_err(|error| drive_error(drive, error))?;
    let json = serde_json::to_vec_pretty(format)
        .map_err(|error| StorageError::Internal(format!("format encode: {error}")))?;
    let staged_name = format!("format-{}.json", env.new_id());
    drive
        .write_atomic(
            &system,
            &tmp,
            &staged_name,
            &format_path(),
            Bytes::from(json),
        )
        .await
        .map_err(|error| drive_error(drive, error))
}

/// Makes the system folders of a stamped drive; temp space left by a crash is dropped first
/// (nothing in it was ever visible).
pub(crate) async fn prepare_system_dirs(drive: &DriveRoot) -> io::Result<()> {
    let system = system_dir();
    drive.remove_any(&system.child("tmp")).await;
    for folder in ["tmp", "config", "buckets", "multipart"] {
        drive
            .create_dir_below(&system, &system.child(folder))
            .await?;
    }
    Ok(())
}

fn majority_format(found: &[Option<FormatFile>]) -> Option<&FormatFile> {
    let mut best: Option<(&FormatFile, usize)> = None;
    for format in found.iter().flatten() {
        let count = found
            .iter()
            .flatten()
            .filter(|other| other.deployment_id == format.deployment_id)
            .count();
        if best.is_none_or(|(_, best_count)| count > best_count) {
            best = Some((format, count));
        }
    }
    best.map(|(format, _)| format)
}

fn drive_error(drive: &DriveRoot, error: io::Error) -> StorageError {
    StorageError::InvalidArgument(format!("drive {}: {error}", drive.root().display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_sizes_follow_minio() {
        assert_eq!(set_drive_count(1, None).unwrap(), 1);
        assert_eq!(set_drive_count(4, None).unwrap(), 4);
        assert_eq!(set_drive_count(12, None).unwrap(), 12);
        assert_eq!(set_drive_count(32, None).unwrap(), 16);
        assert_eq!(set_drive_count(18, None).unwrap(), 9);
        assert_eq!(set_drive_count(8, Some(4)).unwrap(), 4);
        assert!(set_drive_count(17, None).is_err());
        assert!(set_drive_count(8, Some(3)).is_err());
    }

    #[test]
    fn parity_defaults_and_limits() {
        assert_eq!(default_parity(1), 0);
        assert_eq!(default_parity(3), 1);
        assert_eq!(default_parity(4), 2);
        assert_eq!(default_parity(7), 3);
        assert_eq!(default_parity(16), 4);
        assert!(validate_parity(4, 2).is_ok());
        assert!(validate_parity(4, 3).is_err());
        assert!(validate_parity(1, 1).is_err());
    }
}
