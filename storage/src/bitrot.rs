//! Bitrot framing: every shard block is stored as `[keyed blake3 of the block][block]`.
//! Invariant: bytes of a shard block are used only after `verify` accepted them.

/// Bytes of the hash that precedes every shard block.
pub(crate) const HASH_BYTES: usize = 32;

/// The blake3 key of bitrot hashes. Fixed forever: changing it makes every stored shard
/// look corrupt. Keyed so a shard hash cannot be confused with a content hash elsewhere.
const BITROT_KEY: &[u8; 32] = b"lakeshare bitrot key, version 1!";

pub(crate) fn hash(block: &[u8]) -> [u8; HASH_BYTES] {
    *blake3::keyed_hash(BITROT_KEY, block).as_bytes()
}

/// Appends `[hash][block]` to `target`.
pub(crate) fn frame_into(target: &mut Vec<u8>, block: &[u8]) {
    target.extend_from_slice(&hash(block));
    target.extend_from_slice(block);
}

/// Checks a framed block of `shard_len` bytes; returns the block on success.
pub(crate) fn verify(framed: &[u8], shard_len: usize) -> Option<&[u8]> {
    if framed.len() != HASH_BYTES + shard_len {
        return None;
    }
    let (stored, block) = framed.split_at(HASH_BYTES);
    (hash(block) == stored).then_some(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_byte_is_detected() {
        let mut framed = Vec::new();
        frame_into(&mut framed, b"hello shard");
        assert_eq!(verify(&framed, 11), Some(&b"hello shard"[..]));
        framed[HASH_BYTES + 3] ^= 1;
        assert_eq!(verify(&framed, 11), None);
        assert_eq!(verify(&framed[..20], 11), None);
    }
}
