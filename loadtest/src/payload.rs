//! Object contents: a deterministic, incompressible byte pattern per object index, so that
//! `get --setup` uploads and `write-files` writes the same bytes without keeping them around.
//!
//! Invariant: `object_payload(index, len)` depends only on its arguments, and a shorter
//! payload is a prefix of a longer one for the same index.

use std::path::Path;

use anyhow::Context;
use bytes::Bytes;

/// The bytes of object `index`, `len` long.
pub fn object_payload(index: u64, len: u64) -> anyhow::Result<Bytes> {
    let len = usize::try_from(len).context("object size does not fit in memory")?;
    let mut bytes = Vec::with_capacity(len);
    // splitmix64: fast, and its output defeats any compression a server might try.
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED_1A4E_5A4E_0001;
    while bytes.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut word = state;
        word = (word ^ (word >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        word = (word ^ (word >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        word ^= word >> 31;
        let take = (len - bytes.len()).min(8);
        bytes.extend_from_slice(&word.to_le_bytes()[..take]);
    }
    Ok(Bytes::from(bytes))
}

/// The file name object `index` gets in `write-files`, and the key suffix it gets in S3.
pub fn object_name(index: u64) -> String {
    format!("obj-{index}")
}

/// Writes objects `0..objects` as plain files `directory/obj-{i}`.
pub fn write_files(directory: &Path, objects: u64, object_bytes: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("create {}", directory.display()))?;
    for index in 0..objects {
        let path = directory.join(object_name(index));
        let payload = object_payload(index, object_bytes)?;
        std::fs::write(&path, &payload).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_deterministic_prefixes_and_distinct() {
        let long = object_payload(3, 1000).unwrap();
        let short = object_payload(3, 13).unwrap();
        assert_eq!(long.len(), 1000);
        assert_eq!(&long[..13], &short[..]);
        assert_eq!(object_payload(3, 1000).unwrap(), long);
        assert_ne!(object_payload(4, 1000).unwrap(), long);
    }

    #[test]
    fn write_files_writes_the_payloads() {
        let directory = std::env::temp_dir().join(format!("loadtest-{}", std::process::id()));
        write_files(&directory, 2, 100).unwrap();
        let written = std::fs::read(directory.join("obj-1")).unwrap();
        std::fs::remove_dir_all(&directory).unwrap();
        assert_eq!(written, object_payload(1, 100).unwrap());
    }
}
