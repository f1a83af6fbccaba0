//! Reed-Solomon coding of 1 MiB blocks into `data + parity` shards, and the shard file
//! geometry. Invariants: every block of a part except the last is `BLOCK_BYTES` long; shard
//! `i < data` of a block holds bytes `[i*shard_len, (i+1)*shard_len)` of the block, zero
//! padded; parity 0 means plain data (one shard per block, no coding).

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::bitrot::HASH_BYTES;
use crate::error::{Result, StorageError};

/// Object bytes per erasure block.
pub(crate) const BLOCK_BYTES: u64 = 1024 * 1024;

pub(crate) struct Erasure {
    pub(crate) data: usize,
    pub(crate) parity: usize,
    codec: Option<ReedSolomon>,
}

impl Erasure {
    pub(crate) fn new(data: usize, parity: usize) -> Result<Erasure> {
        if data == 0 || data + parity > 256 {
            return Err(StorageError::Internal(format!(
                "bad erasure layout {data}+{parity}"
            )));
        }
        let codec = if parity == 0 {
            None
        } else {
            Some(ReedSolomon::new(data, parity).map_err(|error| {
                StorageError::Internal(format!("erasure {data}+{parity}: {error:?}"))
            })?)
        };
        Ok(Erasure {
            data,
            parity,
            codec,
        })
    }

    pub(crate) fn total(&self) -> usize {
        self.data + self.parity
    }

    /// Bytes of one shard of a block of `block_bytes` object bytes.
    pub(crate) fn shard_len(&self, block_bytes: u64) -> usize {
        block_bytes.div_ceil(self.data as u64) as usize
    }

    /// Splits and encodes one block into `data + parity` shards of equal length.
    pub(crate) fn encode_block(&self, block: &[u8]) -> Result<Vec<Vec<u8>>> {
        let shard_len = self.shard_len(block.len() as u64);
        let mut shards: Vec<Vec<u8>> = (0..self.data)
            .map(|index| {
                let start = (index * shard_len).min(block.len());
                let end = ((index + 1) * shard_len).min(block.len());
                let mut shard = block[start..end].to_vec();
                shard.resize(shard_len, 0);
                shard
            })
            .collect();
        shards.extend((0..self.parity).map(|_| vec![0u8; shard_len]));
        if let Some(codec) = &self.codec {
            if shard_len > 0 {
                codec
                    .encode(&mut shards)
                    .map_err(|error| StorageError::Internal(format!("encode: {error:?}")))?;
            }
        }
        Ok(shards)
    }

    /// Rebuilds the block of `block_bytes` bytes from at least `data` present shards.
    pub(crate) fn decode_block(
        &self,
        shards: &mut [Option<Vec<u8>>],
        block_bytes: usize,
    ) -> Result<Vec<u8>> {
        assert_eq!(shards.len(), self.total());
        let data_present = shards[..self.data].iter().all(Option::is_some);
        if !data_present {
            let codec = self.codec.as_ref().ok_or_else(|| {
                StorageError::ReadQuorum("a plain (parity 0) shard is missing".into())
            })?;
            codec
                .reconstruct_data(shards)
                .map_err(|error| StorageError::ReadQuorum(format!("reconstruct: {error:?}")))?;
        }
        let mut block = Vec::with_capacity(block_bytes);
        for shard in shards[..self.data].iter().flatten() {
            block.extend_from_slice(shard);
        }
        block.truncate(block_bytes);
        if block.len() != block_bytes {
            return Err(StorageError::Internal("decoded block is short".into()));
        }
        Ok(block)
    }

    /// Rebuilds every shard (data and parity) from at least `data` present shards.
    pub(crate) fn reconstruct_all(&self, shards: &mut [Option<Vec<u8>>]) -> Result<()> {
        if shards.iter().all(Option::is_some) {
            return Ok(());
        }
        let codec = self
            .codec
            .as_ref()
            .ok_or_else(|| StorageError::ReadQuorum("a plain shard is missing".into()))?;
        codec
            .reconstruct(shards)
            .map_err(|error| StorageError::ReadQuorum(format!("reconstruct: {error:?}")))
    }
}

/// Layouts checked at start-up, with the xxh64 of all shards of `SELF_TEST_INPUT` encoded.
/// The digests pin the code itself: a SIMD or library change that alters the parity would
/// make every stored parity shard useless, so the node refuses to start instead.
const SELF_TEST_LAYOUTS: [(usize, usize, u64); 3] = [
    (4, 2, SELF_TEST_DIGEST_4_2),
    (8, 4, SELF_TEST_DIGEST_8_4),
    (12, 4, SELF_TEST_DIGEST_12_4),
];
const SELF_TEST_DIGEST_4_2: u64 = 0x85ce_3583_c293_ff48;
const SELF_TEST_DIGEST_8_4: u64 = 0xcf73_c657_530e_973a;
const SELF_TEST_DIGEST_12_4: u64 = 0x3396_d412_1c16_c431;

fn self_test_input() -> Vec<u8> {
    (0..256u32).map(|index| (index * 7 + 3) as u8).collect()
}

fn self_test_digest(data: usize, parity: usize) -> Result<u64> {
    let erasure = Erasure::new(data, parity)?;
    let shards = erasure.encode_block(&self_test_input())?;
    Ok(xxhash_rust::xxh64::xxh64(&shards.concat(), 0))
}

/// Encodes a fixed buffer for a few layouts, compares against the baked digests, then drops
/// `parity` shards and checks the rebuilt block. Run once at open.
pub(crate) fn self_test() -> Result<()> {
    let input = self_test_input();
    for (data, parity, expected) in SELF_TEST_LAYOUTS {
        let digest = self_test_digest(data, parity)?;
        if digest != expected {
            return Err(StorageError::Internal(format!(
                "erasure self-test {data}+{parity}: digest {digest:#x}, expected {expected:#x}"
            )));
        }
        let erasure = Erasure::new(data, parity)?;
        let mut shards: Vec<Option<Vec<u8>>> = erasure
            .encode_block(&input)?
            .into_iter()
            .map(Some)
            .collect();
        for shard in shards.iter_mut().take(parity) {
            *shard = None;
        }
        if erasure.decode_block(&mut shards, input.len())? != input {
            return Err(StorageError::Internal(format!(
                "erasure self-test {data}+{parity}: rebuilt block differs"
            )));
        }
    }
    Ok(())
}

/// Where block `block_index` of a part of `part_bytes` starts in a shard file, and how many
/// object bytes and shard bytes it holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockSpan {
    pub(crate) file_offset: u64,
    pub(crate) block_bytes: usize,
    pub(crate) shard_len: usize,
}

pub(crate) fn block_count(part_bytes: u64) -> u64 {
    part_bytes.div_ceil(BLOCK_BYTES)
}

pub(crate) fn block_span(erasure: &Erasure, part_bytes: u64, block_index: u64) -> BlockSpan {
    let full_shard_len = erasure.shard_len(BLOCK_BYTES) as u64;
    let start = block_index * BLOCK_BYTES;
    let block_bytes = (part_bytes - start).min(BLOCK_BYTES) as usize;
    BlockSpan {
        file_offset: block_index * (HASH_BYTES as u64 + full_shard_len),
        block_bytes,
        shard_len: erasure.shard_len(block_bytes as u64),
    }
}

/// Size of one drive's framed shard file for a part of `part_bytes`.
#[cfg(test)]
pub(crate) fn shard_file_bytes(erasure: &Erasure, part_bytes: u64) -> u64 {
    let blocks = block_count(part_bytes);
    if blocks == 0 {
        return 0;
    }
    let last = block_span(erasure, part_bytes, blocks - 1);
    last.file_offset + HASH_BYTES as u64 + last.shard_len as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|index| (index * 31 + index / 7) as u8)
            .collect()
    }

    fn round_trip(data: usize, parity: usize, len: usize, missing: &[usize]) {
        let erasure = Erasure::new(data, parity).unwrap();
        let block = pattern(len);
        let shards = erasure.encode_block(&block).unwrap();
        assert_eq!(shards.len(), data + parity);
        let mut partial: Vec<Option<Vec<u8>>> = shards.into_iter().map(Some).collect();
        for &index in missing {
            partial[index] = None;
        }
        let decoded = erasure.decode_block(&mut partial, len).unwrap();
        assert_eq!(
            decoded, block,
            "{data}+{parity} len {len} missing {missing:?}"
        );
    }

    #[test]
    fn decodes_with_up_to_parity_shards_missing() {
        for (data, parity) in [(4, 2), (8, 4), (12, 4)] {
            for len in [1, 7, 1000, 4099, BLOCK_BYTES as usize] {
                round_trip(data, parity, len, &[]);
                // The first `parity` shards (all data) and the last ones (mixed).
                let first: Vec<usize> = (0..parity).collect();
                round_trip(data, parity, len, &first);
                let last: Vec<usize> = (data - 1..data - 1 + parity).collect();
                round_trip(data, parity, len, &last);
            }
        }
    }

    #[test]
    fn too_many_missing_is_read_quorum() {
        let erasure = Erasure::new(4, 2).unwrap();
        let shards = erasure.encode_block(&pattern(100)).unwrap();
        let mut partial: Vec<Option<Vec<u8>>> = shards.into_iter().map(Some).collect();
        for shard in partial.iter_mut().take(3) {
            *shard = None;
        }
        let outcome = erasure.decode_block(&mut partial, 100);
        assert!(matches!(outcome, Err(StorageError::ReadQuorum(_))));
    }

    #[test]
    fn plain_layout_is_the_block_itself() {
        let erasure = Erasure::new(1, 0).unwrap();
        let block = pattern(33);
        let shards = erasure.encode_block(&block).unwrap();
        assert_eq!(shards, vec![block]);
    }

    #[test]
    fn self_test_passes_and_pins_the_code() {
        self_test().unwrap();
        // Any change to the input changes the digest, so the check can fail.
        assert_ne!(self_test_digest(4, 2).unwrap(), SELF_TEST_DIGEST_8_4);
    }

    #[test]
    fn shard_file_geometry() {
        let erasure = Erasure::new(4, 2).unwrap();
        assert_eq!(shard_file_bytes(&erasure, 0), 0);
        assert_eq!(shard_file_bytes(&erasure, 10), 32 + 3);
        let full = 32 + (BLOCK_BYTES / 4);
        assert_eq!(shard_file_bytes(&erasure, BLOCK_BYTES + 1), full + 32 + 1);
        let span = block_span(&erasure, 3 * BLOCK_BYTES, 2);
        assert_eq!(span.file_offset, 2 * full);
        assert_eq!(span.block_bytes, BLOCK_BYTES as usize);
    }
}
