//! Reed-Solomon coding of blocks (1 MiB by default) into `data + parity` shards, and the
//! shard file geometry. Invariants: every block of a part except the last is `block_bytes`
//! long (a value each object records, so a node with another default still reads it); shard
//! `i < data` of a block holds bytes `[i*shard_len, (i+1)*shard_len)` of the block, zero
//! padded; parity 0 means plain data (one shard per block, no coding).

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::bitrot::HASH_BYTES;
use crate::error::{Result, StorageError};

/// Default object bytes per erasure block.
pub const BLOCK_BYTES_DEFAULT: u64 = 1024 * 1024;

pub(crate) struct Erasure {
    pub(crate) data: usize,
    pub(crate) parity: usize,
    /// Object bytes per block.
    pub(crate) block_bytes: u64,
    codec: Option<ReedSolomon>,
}

impl Erasure {
    pub(crate) fn new(data: usize, parity: usize, block_bytes: u64) -> Result<Erasure> {
        if data == 0 || data + parity > 256 || block_bytes == 0 {
            return Err(StorageError::Internal(format!(
                "bad erasure layout {data}+{parity} of {block_bytes}-byte blocks"
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
            block_bytes,
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
    let erasure = Erasure::new(data, parity, BLOCK_BYTES_DEFAULT)?;
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
        let erasure = Erasure::new(data, parity, BLOCK_BYTES_DEFAULT)?;
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

impl Erasure {
    pub(crate) fn block_count(&self, part_bytes: u64) -> u64 {
        part_bytes.div_ceil(self.block_bytes)
    }

    pub(crate) fn block_span(&self, part_bytes: u64, block_index: u64) -> BlockSpan {
        let full_shard_len = self.shard_len(self.block_bytes) as u64;
        let start = block_index * self.block_bytes;
        let block_bytes = (part_bytes - start).min(self.block_bytes) as usize;
        BlockSpan {
            file_offset: block_index * (HASH_BYTES as u64 + full_shard_len),
            block_bytes,
            shard_len: self.shard_len(block_bytes as u64),
        }
    }
}
