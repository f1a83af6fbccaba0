//! Per-drive metadata files (`lakeshare.meta`, upload and part records).
//!
//! Layout: `b"LKSM"`, format version (u16 LE), payload length (u32 LE), payload (rmp-serde),
//! inline length (u32 LE), inline bytes (one bitrot-framed shard), xxh64 of everything
//! before it (u64 LE). Invariant: a record whose checksum does not match is never used; it
//! reads as corrupt and is healed.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Name of an object's metadata file inside its key directory.
pub(crate) const META_FILE: &str = "lakeshare.meta";
/// Name of the directory holding an object's data dirs inside its key directory.
pub(crate) const DATA_DIR: &str = "lakeshare.data";
/// Name of the key directory of a key ending in `/` (an S3 directory marker such as `a/`):
/// `a/` lives in `<bucket>/a/lakeshare.dir/`, beside the folders of the keys under `a/`, so
/// neither can take the other's place. Reserved: no key segment may use it.
pub(crate) const DIRECTORY_KEY_DIR: &str = "lakeshare.dir";

const MAGIC: &[u8; 4] = b"LKSM";
const FORMAT_VERSION: u16 = 2;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PartMeta {
    pub(crate) number: u32,
    pub(crate) size: u64,
    pub(crate) etag: String,
    /// A fresh id per upload of the part: names its shard files and keys their hashes.
    pub(crate) id: Uuid,
}

impl PartMeta {
    /// The shard file of this part version inside a data dir.
    pub(crate) fn file_name(&self) -> String {
        part_file_name(self.number, self.id)
    }
}

/// The shard file name of part `number`, version `id`: `part.N.<id>`.
pub(crate) fn part_file_name(number: u32, id: Uuid) -> String {
    format!("part.{number}.{}", id.simple())
}

/// One drive's copy of an object's metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ObjectMeta {
    /// A fresh id per write; copies with the same id describe the same version.
    pub(crate) version_id: Uuid,
    pub(crate) size: u64,
    pub(crate) etag: String,
    pub(crate) modified_unix_nanos: i128,
    pub(crate) content_type: Option<String>,
    pub(crate) user_metadata: BTreeMap<String, String>,
    pub(crate) checksums: BTreeMap<String, String>,
    pub(crate) data: usize,
    pub(crate) parity: usize,
    pub(crate) block_bytes: u64,
    /// Which shard this drive holds.
    pub(crate) shard_index: usize,
    /// `distribution[shard]` = the drive slot in the set holding that shard.
    pub(crate) distribution: Vec<usize>,
    /// The data dir under `lakeshare.data/`; `None` when the data is inline.
    pub(crate) data_dir: Option<Uuid>,
    pub(crate) parts: Vec<PartMeta>,
    /// Number of multipart parts (0 for a single PUT).
    pub(crate) multipart_parts: u32,
    /// The multipart upload this version completed, so a retried Complete is answered.
    pub(crate) upload_id: Option<Uuid>,
    /// The version this drive's copy replaced, whose data the drive keeps until the commit
    /// reached its quorum: a commit cut off by a crash leaves it readable (see
    /// `ErasureSet::choose`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replaced: Option<Box<ReplacedVersion>>,
}

/// A drive's copy of the version a commit replaced (its own `replaced` is empty).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ReplacedVersion {
    pub(crate) meta: ObjectMeta,
    pub(crate) inline: Vec<u8>,
}

impl ObjectMeta {
    /// The same version on another drive: equal except for the shard index.
    pub(crate) fn same_version(&self, other: &ObjectMeta) -> bool {
        self.version_id == other.version_id
    }
}

pub(crate) fn encode<T: Serialize>(value: &T, inline: &[u8]) -> Vec<u8> {
    // rmp-serde only fails on types it cannot represent; ours are plain structs.
    let payload = rmp_serde::to_vec_named(value).unwrap_or_default();
    assert!(!payload.is_empty(), "metadata payload must encode");
    let mut out = Vec::with_capacity(payload.len() + inline.len() + 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&(inline.len() as u32).to_le_bytes());
    out.extend_from_slice(inline);
    let checksum = xxhash_rust::xxh64::xxh64(&out, 0);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// Decodes a record; `None` when it is truncated, of another format or fails its checksum.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<(T, Vec<u8>)> {
    if bytes.len() < 4 + 2 + 4 + 4 + 8 || &bytes[..4] != MAGIC {
        return None;
    }
    let (body, checksum) = bytes.split_at(bytes.len() - 8);
    let stored = u64::from_le_bytes(checksum.try_into().ok()?);
    if xxhash_rust::xxh64::xxh64(body, 0) != stored {
        return None;
    }
    let version = u16::from_le_bytes(body[4..6].try_into().ok()?);
    if version != FORMAT_VERSION {
        return None;
    }
    let payload_len = u32::from_le_bytes(body[6..10].try_into().ok()?) as usize;
    let payload = body.get(10..10 + payload_len)?;
    let rest = body.get(10 + payload_len..)?;
    let inline_len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let inline = rest.get(4..4 + inline_len)?;
    if rest.len() != 4 + inline_len {
        return None;
    }
    let value = rmp_serde::from_slice(payload).ok()?;
    Some((value, inline.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ObjectMeta {
        ObjectMeta {
            version_id: Uuid::from_u128(1),
            size: 10,
            etag: "abc".into(),
            modified_unix_nanos: 12345,
            content_type: Some("text/plain".into()),
            user_metadata: BTreeMap::from([("a".into(), "b".into())]),
            checksums: BTreeMap::new(),
            data: 2,
            parity: 2,
            block_bytes: 1 << 20,
            shard_index: 1,
            distribution: vec![1, 2, 3, 0],
            data_dir: None,
            parts: vec![PartMeta {
                number: 1,
                size: 10,
                etag: "abc".into(),
                id: Uuid::from_u128(2),
            }],
            multipart_parts: 0,
            upload_id: None,
            replaced: None,
        }
    }

    #[test]
    fn round_trip_with_inline_data() {
        let bytes = encode(&sample(), b"inline!");
        let (meta, inline): (ObjectMeta, Vec<u8>) = decode(&bytes).unwrap();
        assert_eq!(meta, sample());
        assert_eq!(inline, b"inline!");
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let bytes = encode(&sample(), b"inline!");
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x40;
            assert!(decode::<ObjectMeta>(&damaged).is_none(), "byte {index}");
        }
        assert!(decode::<ObjectMeta>(&bytes[..bytes.len() - 1]).is_none());
    }
}
