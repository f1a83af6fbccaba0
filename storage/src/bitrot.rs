//! Bitrot framing: every shard block is stored as `[hash][block]`, where the hash is keyed
//! blake3 over the block and the block's identity: the id of the part version it belongs to,
//! its shard index and its block index.
//!
//! Invariants: bytes of a shard block are used only after `verify` accepted them; a block of
//! another part version (a stale shard a drive kept when it missed a rewrite), of another
//! shard index (a misdirected write) or from another offset fails `verify` like a flipped bit,
//! so it counts as missing and heal rebuilds it.

use uuid::Uuid;

/// Bytes of the hash that precedes every shard block.
pub(crate) const HASH_BYTES: usize = 32;

/// The blake3 key of bitrot hashes. Fixed forever: changing it makes every stored shard
/// look corrupt. Keyed so a shard hash cannot be confused with a content hash elsewhere.
const BITROT_KEY: &[u8; 32] = b"lakeshare bitrot key, version 1!";

/// Which shard of which part version a shard file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ShardId {
    pub(crate) part: Uuid,
    pub(crate) shard: u32,
}

pub(crate) fn hash(id: ShardId, block: u64, bytes: &[u8]) -> [u8; HASH_BYTES] {
    let mut hasher = blake3::Hasher::new_keyed(BITROT_KEY);
    hasher.update(bytes);
    hasher.update(id.part.as_bytes());
    hasher.update(&id.shard.to_le_bytes());
    hasher.update(&block.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// Appends `[hash][bytes]` to `target`.
pub(crate) fn frame_into(target: &mut Vec<u8>, id: ShardId, block: u64, bytes: &[u8]) {
    target.extend_from_slice(&hash(id, block, bytes));
    target.extend_from_slice(bytes);
}

/// Checks a framed block of `shard_len` bytes; returns the block on success.
pub(crate) fn verify(framed: &[u8], shard_len: usize, id: ShardId, block: u64) -> Option<&[u8]> {
    if framed.len() != HASH_BYTES + shard_len {
        return None;
    }
    let (stored, bytes) = framed.split_at(HASH_BYTES);
    (hash(id, block, bytes) == stored).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(part: u128, shard: u32) -> ShardId {
        ShardId {
            part: Uuid::from_u128(part),
            shard,
        }
    }

    #[test]
    fn a_flipped_byte_is_detected() {
        let mut framed = Vec::new();
        frame_into(&mut framed, id(1, 0), 0, b"hello shard");
        assert_eq!(verify(&framed, 11, id(1, 0), 0), Some(&b"hello shard"[..]));
        framed[HASH_BYTES + 3] ^= 1;
        assert_eq!(verify(&framed, 11, id(1, 0), 0), None);
        assert_eq!(verify(&framed[..20], 11, id(1, 0), 0), None);
    }

    #[test]
    fn a_block_of_another_part_shard_or_offset_is_refused() {
        let mut framed = Vec::new();
        frame_into(&mut framed, id(1, 2), 5, b"block bytes");
        assert!(verify(&framed, 11, id(1, 2), 5).is_some());
        assert!(
            verify(&framed, 11, id(9, 2), 5).is_none(),
            "another part version"
        );
        assert!(
            verify(&framed, 11, id(1, 3), 5).is_none(),
            "another shard index"
        );
        assert!(verify(&framed, 11, id(1, 2), 6).is_none(), "another block");
    }
}
