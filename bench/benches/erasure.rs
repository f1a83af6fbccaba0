//! Erasure and bitrot throughput over 1 MiB blocks, the unit the storage engine codes in:
//! Reed-Solomon encode and decode (reconstructing the data with `parity` data shards
//! missing, the worst case a read can meet) for 4+2, 8+4 and 12+4, and keyed blake3 hashing
//! of a whole block and of one data shard of each layout.
//!
//! Throughput is counted in bytes of the 1 MiB block (for hashing: bytes hashed), so the
//! figures read as GB/s (1e9 bytes) of object data. Measurement times are short so the whole
//! bench runs in well under two minutes; the figures go to tuning.md.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use reed_solomon_erasure::galois_8::ReedSolomon;

/// The erasure block: an object is coded in blocks of this many bytes.
const BLOCK_BYTES: usize = 1 << 20;
/// (data shards, parity shards) layouts to measure.
const LAYOUTS: [(usize, usize); 3] = [(4, 2), (8, 4), (12, 4)];
/// Key of the keyed bitrot hash; any fixed 32 bytes measure the same.
const BITROT_KEY: [u8; 32] = *b"lakeshare-bench-bitrot-key-32by!";

fn shard_bytes(data_shards: usize) -> usize {
    BLOCK_BYTES.div_ceil(data_shards)
}

/// A block split into `data + parity` shards of equal length, data filled, parity zero.
fn shards_for(data_shards: usize, parity_shards: usize) -> Vec<Vec<u8>> {
    let shard_bytes = shard_bytes(data_shards);
    (0..data_shards + parity_shards)
        .map(|shard| {
            if shard < data_shards {
                (0..shard_bytes)
                    .map(|byte| (byte * 31 + shard * 7) as u8)
                    .collect()
            } else {
                vec![0u8; shard_bytes]
            }
        })
        .collect()
}

fn erasure(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("erasure");
    group.throughput(Throughput::BytesDecimal(BLOCK_BYTES as u64));
    for (data_shards, parity_shards) in LAYOUTS {
        let layout = format!("{data_shards}+{parity_shards}");
        let codec = ReedSolomon::new(data_shards, parity_shards).expect("valid layout");
        let mut shards = shards_for(data_shards, parity_shards);
        group.bench_function(BenchmarkId::new("encode_1MiB", &layout), |bench| {
            bench.iter(|| codec.encode(&mut shards).expect("encode"))
        });
        codec.encode(&mut shards).expect("encode");
        let coded: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
        group.bench_function(BenchmarkId::new("decode_1MiB", &layout), |bench| {
            bench.iter_batched_ref(
                || {
                    let mut damaged = coded.clone();
                    for missing in damaged.iter_mut().take(parity_shards) {
                        *missing = None;
                    }
                    damaged
                },
                |damaged| codec.reconstruct_data(damaged).expect("reconstruct"),
                BatchSize::LargeInput,
            )
        });
        let restored = {
            let mut damaged = coded.clone();
            for missing in damaged.iter_mut().take(parity_shards) {
                *missing = None;
            }
            codec.reconstruct_data(&mut damaged).expect("reconstruct");
            damaged
        };
        assert_eq!(
            restored[..data_shards],
            coded[..data_shards],
            "decode must restore data"
        );
    }
    group.finish();
}

fn bitrot(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("bitrot_blake3_keyed");
    let mut sizes = vec![("block_1MiB".to_string(), BLOCK_BYTES)];
    for (data_shards, parity_shards) in LAYOUTS {
        let label = format!("shard_{data_shards}+{parity_shards}");
        sizes.push((label, shard_bytes(data_shards)));
    }
    for (label, bytes) in sizes {
        let input: Vec<u8> = (0..bytes).map(|byte| (byte * 13) as u8).collect();
        group.throughput(Throughput::BytesDecimal(bytes as u64));
        group.bench_function(BenchmarkId::new(label, bytes), |bench| {
            bench.iter(|| blake3::keyed_hash(&BITROT_KEY, &input))
        });
    }
    group.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = quick();
    targets = erasure, bitrot
}
criterion_main!(benches);
