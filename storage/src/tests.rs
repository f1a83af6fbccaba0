//! Node-level tests over temp-dir drives, through the drive I/O back-end of the machine
//! (io_uring where the kernel allows it, else the pool; `LAKESHARE_FORCE_FALLBACK_IO=1`
//! forces the pool).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use lakeshare_engine::io::{DriveIo, IoBackend, IoChoice};

use crate::error::StorageError;
use crate::node::*;

/// The drive back-end under test.
fn test_io() -> Arc<dyn DriveIo> {
    IoBackend::new(IoChoice::Auto).unwrap().io
}

fn drive_paths(root: &Path, count: usize) -> Vec<PathBuf> {
    (1..=count)
        .map(|index| root.join(format!("d{index}")))
        .collect()
}

fn config(drives: Vec<PathBuf>, set_drive_count: Option<usize>) -> StorageConfig {
    StorageConfig {
        set_drive_count,
        scanner_interval: Duration::ZERO,
        ..StorageConfig::new(drives)
    }
}

async fn open(drives: &[PathBuf]) -> Arc<Node> {
    Node::open(config(drives.to_vec(), None), test_io())
        .await
        .unwrap()
}

fn body(data: &[u8]) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(64 * 1024 + 7)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|index| {
            (index as u8)
                .wrapping_mul(31)
                .wrapping_add(seed ^ (index >> 11) as u8)
        })
        .collect()
}

async fn read(node: &Node, bucket: &str, key: &str, range: Option<(u64, Option<u64>)>) -> Vec<u8> {
    let mut result = node.get_object(bucket, key, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = result.body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

async fn put(node: &Node, bucket: &str, key: &str, data: &[u8]) -> ObjectInfo {
    node.put_object(bucket, key, body(data), PutOptions::default())
        .await
        .unwrap()
}

fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(data))
}

/// Objects named `o<size>` with pattern bytes of `seed`.
fn sized_objects(sizes: &[usize], seed: u8) -> Vec<(String, Vec<u8>)> {
    sizes
        .iter()
        .map(|size| (format!("o{size}"), pattern(*size, seed)))
        .collect()
}

/// Puts `objects` into bucket `keep` of a node over `drives`, then closes it.
async fn store_in_keep(drives: &[PathBuf], objects: &[(String, Vec<u8>)]) {
    let node = open(drives).await;
    node.make_bucket("keep").await.unwrap();
    for (key, data) in objects {
        put(&node, "keep", key, data).await;
    }
}

/// Drive `healed` holds every object's metadata, and with drives 0 and 2 gone (two of four,
/// the parity) the node still reads every object exact: the healed drive has real shards.
async fn assert_healed_drive_serves(
    node: &Node,
    drives: &[PathBuf],
    healed: usize,
    objects: &[(String, Vec<u8>)],
) {
    for (key, _) in objects {
        assert!(
            drives[healed]
                .join("keep")
                .join(key)
                .join("lakeshare.meta")
                .is_file(),
            "{key}"
        );
    }
    std::fs::remove_dir_all(&drives[0]).unwrap();
    std::fs::remove_dir_all(&drives[2]).unwrap();
    for (key, data) in objects {
        assert_eq!(&read(node, "keep", key, None).await, data, "{key}");
    }
}

/// Every `part.N` file under `dir`, recursively.
fn part_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(part_files(&path));
        } else if path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("part."))
        {
            found.push(path);
        }
    }
    found
}

fn wipe(drive: &Path) {
    for entry in std::fs::read_dir(drive).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
}

const SIZES: [usize; 7] = [
    0,
    1,
    1000,
    100 * 1024,
    300 * 1024,
    1024 * 1024,
    2 * 1024 * 1024 + 12345,
];

#[tokio::test]
async fn round_trip_and_ranges_on_four_drives() {
    let root = tempfile::tempdir().unwrap();
    let node = open(&drive_paths(root.path(), 4)).await;
    assert_eq!(node.topology().parity, 2);
    node.make_bucket("data").await.unwrap();
    for (index, size) in SIZES.iter().enumerate() {
        let data = pattern(*size, index as u8);
        let key = format!("dir/object-{size}");
        let info = put(&node, "data", &key, &data).await;
        assert_eq!(info.etag, md5_hex(&data));
        assert_eq!(info.size, *size as u64);
        assert_eq!(read(&node, "data", &key, None).await, data);
        let head = node.head_object("data", &key).await.unwrap();
        assert_eq!(head.etag, info.etag);
        if *size > 10 {
            let (first, last) = (*size as u64 / 3, *size as u64 - 2);
            let got = read(&node, "data", &key, Some((first, Some(last)))).await;
            assert_eq!(got, data[first as usize..=last as usize]);
            let tail = read(&node, "data", &key, Some((first, None))).await;
            assert_eq!(tail, data[first as usize..]);
        }
    }
    let missing = node.get_object("data", "nope", None).await;
    assert!(matches!(missing, Err(StorageError::NoSuchKey { .. })));
}

#[tokio::test]
async fn one_drive_is_plain_and_works() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 1);
    let node = open(&drives).await;
    assert_eq!(node.topology().parity, 0);
    node.make_bucket("solo").await.unwrap();
    for size in SIZES {
        let data = pattern(size, 3);
        put(&node, "solo", "k", &data).await;
        assert_eq!(read(&node, "solo", "k", None).await, data);
    }
    assert!(drives[0].join("solo/k/lakeshare.meta").is_file());
}

#[tokio::test]
async fn two_wiped_drives_of_four_still_read_exact() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("data").await.unwrap();
    let objects: Vec<(String, Vec<u8>)> = SIZES
        .iter()
        .map(|size| (format!("k{size}"), pattern(*size, 9)))
        .collect();
    for (key, data) in &objects {
        put(&node, "data", key, data).await;
    }
    wipe(&drives[0]);
    wipe(&drives[2]);
    for (key, data) in &objects {
        assert_eq!(&read(&node, "data", key, None).await, data, "{key}");
    }
}

#[tokio::test]
async fn three_gone_drives_of_four_are_read_quorum_never_bytes() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("data").await.unwrap();
    put(&node, "data", "small", &pattern(10, 1)).await;
    put(&node, "data", "big", &pattern(3 * 1024 * 1024, 1)).await;
    for drive in &drives[..3] {
        std::fs::remove_dir_all(drive).unwrap();
    }
    for key in ["small", "big"] {
        let outcome = node.get_object("data", key, None).await;
        assert!(matches!(outcome, Err(StorageError::ReadQuorum(_))), "{key}");
        let outcome = node.head_object("data", key).await;
        assert!(matches!(outcome, Err(StorageError::ReadQuorum(_))), "{key}");
    }
}

#[tokio::test]
async fn missing_shards_with_metadata_present_are_read_quorum() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("data").await.unwrap();
    put(&node, "data", "big", &pattern(2 * 1024 * 1024, 1)).await;
    for drive in &drives[..3] {
        for file in part_files(&drive.join("data")) {
            std::fs::remove_file(file).unwrap();
        }
    }
    let outcome = node.get_object("data", "big", None).await;
    assert!(matches!(outcome, Err(StorageError::ReadQuorum(_))));
}

#[tokio::test]
async fn a_flipped_shard_byte_is_detected_read_exact_and_healed() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("data").await.unwrap();
    let data = pattern(2 * 1024 * 1024 + 5, 4);
    put(&node, "data", "rot", &data).await;
    let files: Vec<PathBuf> = drives
        .iter()
        .flat_map(|drive| part_files(&drive.join("data")))
        .collect();
    assert_eq!(files.len(), 4);
    // Damage a data shard (shard 0 sits where distribution puts it; damage every file's
    // first block of one drive, whichever shard it is).
    let victim = &files[1];
    let original = std::fs::read(victim).unwrap();
    let mut damaged = original.clone();
    damaged[40] ^= 0xff;
    std::fs::write(victim, &damaged).unwrap();
    assert_eq!(read(&node, "data", "rot", None).await, data);
    let report = node.heal(Some("data"), "").await.unwrap();
    assert_eq!(report.objects_failed, 0);
    assert_eq!(
        std::fs::read(victim).unwrap(),
        original,
        "the shard was rebuilt"
    );
    // A second heal finds nothing to do.
    let report = node.heal(Some("data"), "").await.unwrap();
    assert_eq!(report.shards_rebuilt, 0);
    assert_eq!(report.objects_scanned, 1);
}

#[tokio::test]
async fn corrupt_inline_metadata_is_healed() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("data").await.unwrap();
    let data = pattern(5000, 2);
    put(&node, "data", "small", &data).await;
    let meta = drives[3].join("data/small/lakeshare.meta");
    let original = std::fs::read(&meta).unwrap();
    let mut damaged = original.clone();
    damaged[original.len() / 2] ^= 1;
    std::fs::write(&meta, &damaged).unwrap();
    assert_eq!(read(&node, "data", "small", None).await, data);
    let report = node.heal(None, "").await.unwrap();
    assert_eq!(report.objects_failed, 0);
    let healed = std::fs::read(&meta).unwrap();
    assert!(crate::meta::decode::<crate::meta::ObjectMeta>(&healed).is_some());
    std::fs::remove_dir_all(&drives[0]).unwrap();
    std::fs::remove_dir_all(&drives[1]).unwrap();
    assert_eq!(read(&node, "data", "small", None).await, data);
}

#[tokio::test]
async fn racing_if_none_match_writers_have_one_winner() {
    let root = tempfile::tempdir().unwrap();
    let node = open(&drive_paths(root.path(), 4)).await;
    node.make_bucket("delta").await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..12u8 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let options = PutOptions {
                condition: WriteCondition {
                    if_none_match_any: true,
                    if_match: None,
                },
                ..PutOptions::default()
            };
            let data = pattern(2000 + writer as usize, writer);
            node.put_object("delta", "_delta_log/00001.json", body(&data), options)
                .await
                .map(|_| data)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(data) => winners.push(data),
            Err(StorageError::PreconditionFailed) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(
        read(&node, "delta", "_delta_log/00001.json", None).await,
        winners[0]
    );
}

#[tokio::test]
async fn if_match_checks_the_etag() {
    let root = tempfile::tempdir().unwrap();
    let node = open(&drive_paths(root.path(), 2)).await;
    node.make_bucket("b12").await.unwrap();
    let first = put(&node, "b12", "k", b"one").await;
    let with = |etag: &str| PutOptions {
        condition: WriteCondition {
            if_none_match_any: false,
            if_match: Some(etag.into()),
        },
        ..PutOptions::default()
    };
    let wrong = node
        .put_object("b12", "k", body(b"two"), with("\"beef\""))
        .await;
    assert!(matches!(wrong, Err(StorageError::PreconditionFailed)));
    let quoted = format!("\"{}\"", first.etag);
    node.put_object("b12", "k", body(b"two"), with(&quoted))
        .await
        .unwrap();
    assert_eq!(read(&node, "b12", "k", None).await, b"two");
    let absent = node
        .put_object("b12", "absent", body(b"x"), with("*"))
        .await;
    assert!(matches!(absent, Err(StorageError::NoSuchKey { .. })));
}

#[tokio::test]
async fn listing_across_two_sets_is_ordered_with_delimiter_and_after() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 8);
    let node = Node::open(config(drives, Some(4)), test_io())
        .await
        .unwrap();
    assert_eq!(node.topology().set_count, 2);
    node.make_bucket("list").await.unwrap();
    let keys = [
        "a",
        "a-c",
        "a/b",
        "a/b/c",
        "a/d",
        "b",
        "b/x/y",
        "c.txt",
        "dir/one",
        "dir/two",
        "z",
        "\u{e9}t\u{e9}",
    ];
    for key in keys {
        put(&node, "list", key, key.as_bytes()).await;
    }
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_by(|left, right| left.as_bytes().cmp(right.as_bytes()));
    let all = |result: &ListResult| -> Vec<String> {
        result
            .objects
            .iter()
            .map(|object| object.key.clone())
            .collect()
    };
    let everything = node
        .list_objects(
            "list",
            ListRequest {
                max_keys: 1000,
                ..ListRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all(&everything), sorted);
    assert!(!everything.is_truncated);
    // Pages of 3 cover everything exactly once.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let request = ListRequest {
            after: after.clone(),
            max_keys: 3,
            ..ListRequest::default()
        };
        let page = node.list_objects("list", request).await.unwrap();
        paged.extend(all(&page));
        if !page.is_truncated {
            break;
        }
        after = page.next_after;
    }
    assert_eq!(paged, sorted);
    // Delimiter at the root.
    let request = ListRequest {
        delimiter: Some("/".into()),
        max_keys: 1000,
        ..ListRequest::default()
    };
    let root_level = node.list_objects("list", request).await.unwrap();
    assert_eq!(
        all(&root_level),
        vec!["a", "a-c", "b", "c.txt", "z", "\u{e9}t\u{e9}"]
    );
    assert_eq!(root_level.common_prefixes, vec!["a/", "b/", "dir/"]);
    // Prefix + delimiter.
    let request = ListRequest {
        prefix: "a/".into(),
        delimiter: Some("/".into()),
        max_keys: 1000,
        ..ListRequest::default()
    };
    let nested = node.list_objects("list", request).await.unwrap();
    assert_eq!(all(&nested), vec!["a/b", "a/d"]);
    assert_eq!(nested.common_prefixes, vec!["a/b/"]);
    // Prefix that is not a directory boundary, with start-after.
    let request = ListRequest {
        prefix: "di".into(),
        after: Some("dir/one".into()),
        max_keys: 1000,
        ..ListRequest::default()
    };
    assert_eq!(
        all(&node.list_objects("list", request).await.unwrap()),
        vec!["dir/two"]
    );
    // Delimiter pages: a common prefix as `after` skips the whole group.
    let request = ListRequest {
        delimiter: Some("/".into()),
        after: Some("a/".into()),
        max_keys: 2,
        ..ListRequest::default()
    };
    let page = node.list_objects("list", request).await.unwrap();
    // "a-c" sorts before "a/" ('-' < '/'), so it is not after it.
    assert_eq!(all(&page), vec!["b"]);
    assert_eq!(page.common_prefixes, vec!["b/"]);
    assert!(page.is_truncated);
    // Deleting prunes empty folders, so no phantom prefix stays.
    node.delete_object("list", "dir/one").await.unwrap();
    node.delete_object("list", "dir/two").await.unwrap();
    let request = ListRequest {
        delimiter: Some("/".into()),
        max_keys: 1000,
        ..ListRequest::default()
    };
    let root_level = node.list_objects("list", request).await.unwrap();
    assert_eq!(root_level.common_prefixes, vec!["a/", "b/"]);
}

#[tokio::test]
async fn multipart_assembles_by_rename_with_the_s3_etag() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("mpu").await.unwrap();
    let upload = node
        .create_multipart("mpu", "big/file", PutOptions::default())
        .await
        .unwrap();
    let first = pattern(5 * 1024 * 1024, 1);
    let second = pattern(1024 * 1024 + 3, 2);
    let unused = pattern(10, 3);
    let part1 = node.upload_part(
        "mpu",
        "big/file",
        &upload,
        1,
        body(&first),
        Default::default(),
    );
    let part1 = part1.await.unwrap();
    let part2 = node.upload_part(
        "mpu",
        "big/file",
        &upload,
        2,
        body(&second),
        Default::default(),
    );
    let part2 = part2.await.unwrap();
    node.upload_part(
        "mpu",
        "big/file",
        &upload,
        3,
        body(&unused),
        Default::default(),
    )
    .await
    .unwrap();
    let listed = node.list_parts("mpu", "big/file", &upload).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|part| part.part_number)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let uploads = node.list_multipart_uploads("mpu", "big").await.unwrap();
    assert_eq!(uploads.len(), 1);
    let complete = |numbers: &[(u32, &str)]| -> Vec<CompletePart> {
        numbers
            .iter()
            .map(|(number, etag)| CompletePart {
                part_number: *number,
                etag: etag.to_string(),
            })
            .collect()
    };
    let out_of_order = complete(&[(2, &part2.etag), (1, &part1.etag)]);
    let outcome = node
        .complete_multipart(
            "mpu",
            "big/file",
            &upload,
            out_of_order,
            WriteCondition::default(),
        )
        .await;
    assert!(matches!(outcome, Err(StorageError::InvalidPartOrder)));
    let too_small = complete(&[(1, &part1.etag), (2, "0123")]);
    let outcome = node
        .complete_multipart(
            "mpu",
            "big/file",
            &upload,
            too_small,
            WriteCondition::default(),
        )
        .await;
    assert!(matches!(outcome, Err(StorageError::InvalidPart(_))));
    let unused_etag = md5_hex(&unused);
    let too_small = complete(&[(2, &part2.etag), (3, &unused_etag)]);
    let outcome = node
        .complete_multipart(
            "mpu",
            "big/file",
            &upload,
            too_small,
            WriteCondition::default(),
        )
        .await;
    assert!(matches!(
        outcome,
        Err(StorageError::EntityTooSmall { part_number: 2, .. })
    ));
    let parts = complete(&[(1, &part1.etag), (2, &format!("\"{}\"", part2.etag))]);
    let info = node
        .complete_multipart("mpu", "big/file", &upload, parts, WriteCondition::default())
        .await
        .unwrap();
    let mut digests = Vec::new();
    digests.extend(hex::decode(md5_hex(&first)).unwrap());
    digests.extend(hex::decode(md5_hex(&second)).unwrap());
    assert_eq!(info.etag, format!("{}-2", md5_hex(&digests)));
    assert_eq!(info.parts, 2);
    let mut whole = first.clone();
    whole.extend_from_slice(&second);
    assert_eq!(read(&node, "mpu", "big/file", None).await, whole);
    let boundary = 5 * 1024 * 1024 - 10;
    let got = read(
        &node,
        "mpu",
        "big/file",
        Some((boundary, Some(boundary + 20))),
    )
    .await;
    assert_eq!(got, whole[boundary as usize..=boundary as usize + 20]);
    // Exactly the two named parts were moved in, on every drive; the upload is gone.
    for drive in &drives {
        assert_eq!(part_files(&drive.join("mpu")).len(), 2);
        assert!(part_files(&drive.join(".lakeshare.sys/multipart")).is_empty());
    }
    assert!(node
        .list_multipart_uploads("mpu", "")
        .await
        .unwrap()
        .is_empty());
    let again = node.list_parts("mpu", "big/file", &upload).await;
    assert!(matches!(again, Err(StorageError::NoSuchUpload(_))));
}

#[tokio::test]
async fn multipart_complete_honours_if_none_match_and_abort_removes() {
    let root = tempfile::tempdir().unwrap();
    let node = open(&drive_paths(root.path(), 4)).await;
    node.make_bucket("mpu").await.unwrap();
    put(&node, "mpu", "taken", b"here").await;
    let upload = node
        .create_multipart("mpu", "taken", PutOptions::default())
        .await
        .unwrap();
    let part = node.upload_part("mpu", "taken", &upload, 1, body(b"new"), Default::default());
    let part = part.await.unwrap();
    let parts = vec![CompletePart {
        part_number: 1,
        etag: part.etag,
    }];
    let condition = WriteCondition {
        if_none_match_any: true,
        if_match: None,
    };
    let outcome = node
        .complete_multipart("mpu", "taken", &upload, parts, condition)
        .await;
    assert!(matches!(outcome, Err(StorageError::PreconditionFailed)));
    assert_eq!(read(&node, "mpu", "taken", None).await, b"here");
    node.abort_multipart("mpu", "taken", &upload).await.unwrap();
    let outcome = node.abort_multipart("mpu", "taken", &upload).await;
    assert!(matches!(outcome, Err(StorageError::NoSuchUpload(_))));
}

#[tokio::test]
async fn a_drive_from_another_deployment_or_slot_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let first = drive_paths(&root.path().join("one"), 2);
    let second = drive_paths(&root.path().join("two"), 2);
    drop(open(&first).await);
    drop(open(&second).await);
    let mixed = vec![first[0].clone(), second[1].clone()];
    let error = Node::open(config(mixed, None), test_io())
        .await
        .err()
        .unwrap();
    let message = error.to_string();
    assert!(
        message.contains(&second[1].display().to_string()),
        "{message}"
    );
    assert!(message.contains("deployment"), "{message}");
    let swapped = vec![first[1].clone(), first[0].clone()];
    let error = Node::open(config(swapped, None), test_io())
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("wrong slot"), "{error}");
    // A non-empty, unformatted folder is not taken either.
    let foreign = root.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), b"keep").unwrap();
    let error = Node::open(config(vec![foreign], None), test_io())
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("not empty"), "{error}");
}

#[tokio::test]
async fn an_empty_replacement_drive_is_stamped_and_healed() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let objects = sized_objects(&[10, 200 * 1024, 1500 * 1024], 5);
    store_in_keep(&drives, &objects).await;
    {
        let node = open(&drives).await;
        node.put_system("catalog/shares.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
    }
    std::fs::remove_dir_all(&drives[1]).unwrap();
    let node = open(&drives).await;
    node.heal(None, "").await.unwrap();
    assert!(drives[1].join(".lakeshare.sys/format.json").is_file());
    assert!(drives[1].join(".lakeshare.sys/buckets/keep.json").is_file());
    assert!(drives[1]
        .join(".lakeshare.sys/config/catalog/shares.json/lakeshare.meta")
        .is_file());
    assert_healed_drive_serves(&node, &drives, 1, &objects).await;
}

#[tokio::test]
async fn the_system_area_survives_losing_half_minus_one_drives() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 6);
    let node = open(&drives).await;
    let value = Bytes::from(pattern(3000, 8));
    node.put_system("shares/a.json", value.clone())
        .await
        .unwrap();
    node.put_system("shares/b.json", Bytes::from_static(b"b"))
        .await
        .unwrap();
    node.put_system("tokens/t1", Bytes::from_static(b"t"))
        .await
        .unwrap();
    for drive in &drives[..2] {
        std::fs::remove_dir_all(drive).unwrap();
    }
    assert_eq!(node.get_system("shares/a.json").await.unwrap(), Some(value));
    assert_eq!(
        node.list_system("shares/").await.unwrap(),
        vec!["shares/a.json", "shares/b.json"]
    );
    node.put_system("shares/c.json", Bytes::from_static(b"c"))
        .await
        .unwrap();
    node.delete_system("shares/b.json").await.unwrap();
    assert_eq!(node.get_system("shares/b.json").await.unwrap(), None);
    // Not reachable as an S3 bucket.
    assert!(node.make_bucket(".lakeshare.sys").await.is_err());
    assert!(node
        .head_object(".lakeshare.sys", "config/shares/a.json")
        .await
        .is_err());
}

#[tokio::test]
async fn buckets_are_validated_created_listed_and_deleted() {
    let root = tempfile::tempdir().unwrap();
    let node = open(&drive_paths(root.path(), 2)).await;
    for bad in [
        "ab",
        "Upper",
        "_x_y",
        ".hidden",
        "a..b",
        "192.168.1.1",
        "ends-",
        &"x".repeat(64),
    ] {
        let outcome = node.make_bucket(bad).await;
        assert!(
            matches!(outcome, Err(StorageError::InvalidBucketName(_))),
            "{bad}"
        );
    }
    node.make_bucket("alpha").await.unwrap();
    node.make_bucket("beta.1").await.unwrap();
    assert!(matches!(
        node.make_bucket("alpha").await,
        Err(StorageError::BucketExists(_))
    ));
    let names: Vec<String> = node
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|bucket| bucket.name)
        .collect();
    assert_eq!(names, vec!["alpha", "beta.1"]);
    put(&node, "alpha", "x/y", b"1").await;
    assert!(matches!(
        node.delete_bucket("alpha").await,
        Err(StorageError::BucketNotEmpty(_))
    ));
    node.delete_object("alpha", "x/y").await.unwrap();
    node.delete_object("alpha", "x/y").await.unwrap();
    node.delete_bucket("alpha").await.unwrap();
    assert!(matches!(
        node.bucket_info("alpha").await,
        Err(StorageError::NoSuchBucket(_))
    ));
    let outcome = node
        .put_object("alpha", "k", body(b""), PutOptions::default())
        .await;
    assert!(matches!(outcome, Err(StorageError::NoSuchBucket(_))));
}

/// Every key of `keys` is refused by a PUT to bucket `keys` as an invalid object name.
async fn assert_invalid_keys(node: &Node, keys: &[&str]) {
    for key in keys {
        let outcome = node
            .put_object("keys", key, body(b"v"), PutOptions::default())
            .await;
        assert!(
            matches!(outcome, Err(StorageError::InvalidObjectName(_))),
            "{key:?}"
        );
    }
}

#[tokio::test]
async fn bad_keys_are_invalid_object_names() {
    let root = tempfile::tempdir().unwrap();
    let node = open(&drive_paths(root.path(), 1)).await;
    node.make_bucket("keys").await.unwrap();
    let long = "k".repeat(1025);
    let long_segment = "s".repeat(256);
    assert_invalid_keys(
        &node,
        &[
            "",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "nul\0",
            "x/lakeshare.meta",
            "lakeshare.data",
            &long,
            &long_segment,
        ],
    )
    .await;
    let longest = format!("{}/", "k".repeat(254)).repeat(4) + &"k".repeat(4);
    assert_eq!(longest.len(), 1024);
    put(&node, "keys", &longest, b"ok").await;
}

#[tokio::test]
async fn a_failing_body_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("abort").await.unwrap();
    let chunks: Vec<std::io::Result<Bytes>> = vec![
        Ok(Bytes::from(pattern(3 * 1024 * 1024, 1))),
        Err(std::io::Error::other("client went away")),
    ];
    let outcome = node.put_object(
        "abort",
        "k",
        Box::pin(futures::stream::iter(chunks)),
        PutOptions::default(),
    );
    assert!(matches!(outcome.await, Err(StorageError::Body(_))));
    assert!(matches!(
        node.head_object("abort", "k").await,
        Err(StorageError::NoSuchKey { .. })
    ));
    for drive in &drives {
        let tmp = std::fs::read_dir(drive.join(".lakeshare.sys/tmp"))
            .unwrap()
            .count();
        assert_eq!(tmp, 0);
    }
}

#[tokio::test]
async fn temp_space_from_a_crash_is_reclaimed_at_open() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 2);
    drop(open(&drives).await);
    let leftover = drives[0].join(".lakeshare.sys/tmp/crashed-upload/part.1");
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    std::fs::write(&leftover, vec![7u8; 4096]).unwrap();
    drop(open(&drives).await);
    assert!(!leftover.exists());
}

#[tokio::test]
async fn overwrite_removes_the_old_data_dir_and_copy_works() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("owr").await.unwrap();
    put(&node, "owr", "k", &pattern(2 * 1024 * 1024, 1)).await;
    let second = pattern(1024 * 1024 + 1, 2);
    put(&node, "owr", "k", &second).await;
    for drive in &drives {
        assert_eq!(part_files(&drive.join("owr")).len(), 1);
    }
    let options = PutOptions {
        content_type: Some("text/csv".into()),
        ..PutOptions::default()
    };
    let copied = node
        .copy_object("owr", "k", "owr", "copy", options)
        .await
        .unwrap();
    assert_eq!(copied.etag, md5_hex(&second));
    assert_eq!(read(&node, "owr", "copy", None).await, second);
    assert_eq!(
        node.head_object("owr", "copy")
            .await
            .unwrap()
            .content_type
            .as_deref(),
        Some("text/csv")
    );
}

#[tokio::test]
async fn stale_uploads_are_removed() {
    let root = tempfile::tempdir().unwrap();
    let node = open(&drive_paths(root.path(), 2)).await;
    node.make_bucket("stale").await.unwrap();
    let upload = node
        .create_multipart("stale", "k", PutOptions::default())
        .await
        .unwrap();
    for set in &node.sets.sets {
        set.remove_stale_uploads(Duration::from_secs(3600)).await;
    }
    assert_eq!(
        node.list_multipart_uploads("stale", "")
            .await
            .unwrap()
            .len(),
        1
    );
    for set in &node.sets.sets {
        set.remove_stale_uploads(Duration::ZERO).await;
    }
    assert!(node
        .list_multipart_uploads("stale", "")
        .await
        .unwrap()
        .is_empty());
    let gone = node.list_parts("stale", "k", &upload).await;
    assert!(matches!(gone, Err(StorageError::NoSuchUpload(_))));
}

#[tokio::test]
async fn a_read_that_meets_a_corrupt_shard_queues_a_heal() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("mrf").await.unwrap();
    let data = pattern(1024 * 1024 + 77, 6);
    put(&node, "mrf", "k", &data).await;
    // Remove the file of data shard 0, which every read needs.
    let holder = drives
        .iter()
        .find(|drive| {
            let raw = std::fs::read(drive.join("mrf/k/lakeshare.meta")).unwrap();
            let (meta, _) = crate::meta::decode::<crate::meta::ObjectMeta>(&raw).unwrap();
            meta.shard_index == 0
        })
        .unwrap();
    let files = part_files(&holder.join("mrf"));
    std::fs::remove_file(&files[0]).unwrap();
    assert_eq!(read(&node, "mrf", "k", None).await, data);
    // The background healer restores the file. Polls are bounded so a broken queue fails
    // the test instead of hanging it; the bound is far above the time a heal takes.
    let mut polls = 0;
    while !files[0].exists() {
        polls += 1;
        assert!(
            polls < 6000,
            "the MRF healer never restored {}",
            files[0].display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(node.heal(Some("mrf"), "").await.unwrap().shards_rebuilt, 0);
}

/// Every entry under `dir`, recursively, relative to it (empty for a missing `dir`).
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Regression: drives deleted while the node ran were written to again (their folders,
/// `tmp/` and key folders recreated) and a PUT answered 200 without write quorum.
#[tokio::test]
async fn r_deleted_drives_are_offline_and_never_recreated() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("data").await.unwrap();
    put(&node, "data", "old", &pattern(3 * 1024 * 1024, 1)).await;
    for drive in &drives[..3] {
        std::fs::remove_dir_all(drive).unwrap();
    }
    let outcome = node.get_object("data", "old", None).await;
    assert!(matches!(outcome, Err(StorageError::ReadQuorum(_))));
    for (key, size) in [("new", 2 * 1024 * 1024), ("dir/inline", 10)] {
        let outcome = node
            .put_object("data", key, body(&pattern(size, 2)), PutOptions::default())
            .await;
        assert!(
            matches!(outcome, Err(StorageError::WriteQuorum(_))),
            "{key}: {:?}",
            outcome.map(|info| info.etag)
        );
    }
    assert!(node.make_bucket("other").await.is_err());
    // A missing drive folder is a missing disk: not even a heal makes it again.
    node.heal(None, "").await.unwrap();
    for drive in &drives[..3] {
        assert!(!drive.exists(), "{} was recreated", drive.display());
    }
}

/// Regression: a drive emptied while the node ran counted as online; writes refilled it
/// without a format stamp, and the next start refused it as "not empty".
#[tokio::test]
async fn r_blanked_drives_are_offline_then_stamped_and_healed() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("data").await.unwrap();
    let objects: Vec<(String, Vec<u8>)> = [10usize, 200 * 1024, 2 * 1024 * 1024 + 3]
        .iter()
        .map(|size| (format!("dir/o{size}"), pattern(*size, 4)))
        .collect();
    for (key, data) in &objects {
        put(&node, "data", key, data).await;
    }
    for drive in &drives[..3] {
        wipe(drive);
    }
    // Three blank drives of four: no read, no write, no folder made on them.
    for (key, _) in &objects {
        let outcome = node.get_object("data", key, None).await;
        assert!(matches!(outcome, Err(StorageError::ReadQuorum(_))), "{key}");
    }
    let outcome = node
        .put_object(
            "data",
            "new",
            body(&pattern(2 * 1024 * 1024, 2)),
            PutOptions::default(),
        )
        .await;
    assert!(matches!(outcome, Err(StorageError::WriteQuorum(_))));
    let outcome = node.delete_object("data", "dir/o10").await;
    assert!(matches!(outcome, Err(StorageError::WriteQuorum(_))));
    for drive in &drives[..3] {
        assert_eq!(tree(drive), Vec::<String>::new(), "{}", drive.display());
    }
    drop(node);
    // Two blank drives of four: reads stay exact, and a heal stamps and refills them.
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("data").await.unwrap();
    for (key, data) in &objects {
        put(&node, "data", key, data).await;
    }
    wipe(&drives[0]);
    wipe(&drives[2]);
    for (key, data) in &objects {
        assert_eq!(&read(&node, "data", key, None).await, data, "{key}");
    }
    assert_eq!(tree(&drives[0]), Vec::<String>::new());
    let report = node.heal(None, "").await.unwrap();
    assert_eq!(report.objects_failed, 0);
    for drive in [&drives[0], &drives[2]] {
        assert!(drive.join(".lakeshare.sys/format.json").is_file());
        assert!(drive.join(".lakeshare.sys/buckets/data.json").is_file());
        for (key, _) in &objects {
            assert!(drive
                .join("data")
                .join(key)
                .join("lakeshare.meta")
                .is_file());
        }
    }
    // The stamped drives serve writes again, and carry real shards.
    put(&node, "data", "after", &pattern(1024 * 1024, 8)).await;
    drop(node);
    std::fs::remove_dir_all(&drives[1]).unwrap();
    std::fs::remove_dir_all(&drives[3]).unwrap();
    let node = open(&drives).await;
    for (key, data) in &objects {
        assert_eq!(&read(&node, "data", key, None).await, data, "{key}");
    }
    assert_eq!(
        read(&node, "data", "after", None).await,
        pattern(1024 * 1024, 8)
    );
}

/// Regression: a restart refused a blank drive because it held an empty `data/` folder.
#[tokio::test]
async fn r_open_takes_a_drive_holding_only_empty_folders() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let data = pattern(1024 * 1024 + 5, 3);
    {
        let node = open(&drives).await;
        node.make_bucket("data").await.unwrap();
        put(&node, "data", "k", &data).await;
    }
    wipe(&drives[1]);
    std::fs::create_dir_all(drives[1].join("data/dir/empty")).unwrap();
    let node = open(&drives).await;
    node.heal(None, "").await.unwrap();
    assert!(drives[1].join("data/k/lakeshare.meta").is_file());
    drop(node);
    std::fs::remove_dir_all(&drives[0]).unwrap();
    std::fs::remove_dir_all(&drives[2]).unwrap();
    let node = open(&drives).await;
    assert_eq!(read(&node, "data", "k", None).await, data);
    drop(node);
    // One file anywhere still makes the drive "not empty".
    wipe(&drives[3]);
    std::fs::create_dir_all(drives[3].join("data/dir")).unwrap();
    std::fs::write(drives[3].join("data/dir/precious"), b"keep").unwrap();
    let error = Node::open(config(drives.clone(), None), test_io())
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("not empty"), "{error}");
    assert!(error.to_string().contains("precious"), "{error}");
}

/// Regression: concurrent writes under one prefix failed when another write or delete pruned
/// a shared parent folder between the creation of a key's folders and the move into them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r_concurrent_writers_and_deleters_under_one_prefix() {
    const WORKERS: usize = 8;
    const ROUNDS: usize = 24;
    const SHARED_FOLDERS: usize = 2;
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let node = open(&drives).await;
    node.make_bucket("race").await.unwrap();
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let node = node.clone();
        let drives = drives.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                // Each worker's key sits in a folder shared with others and holding nothing
                // else, so every delete prunes the folder others are writing into.
                let shared = format!("dir/a b/s{}", round % SHARED_FOLDERS);
                let transient = format!("{shared}/w{worker}/t");
                let size = if round % 2 == 0 { 100 } else { 300 * 1024 };
                let data = pattern(size, worker as u8);
                node.put_object("race", &transient, body(&data), PutOptions::default())
                    .await
                    .unwrap_or_else(|error| panic!("put {transient}: {error}"));
                // Every drive took the write, not just a quorum of them.
                for drive in &drives {
                    let meta = drive.join("race").join(&transient).join("lakeshare.meta");
                    assert!(meta.is_file(), "{} lacks {transient}", drive.display());
                }
                let kept = format!("{shared}/k{worker}-{round}");
                if round % 4 == 3 {
                    node.put_object("race", &kept, body(&data), PutOptions::default())
                        .await
                        .unwrap_or_else(|error| panic!("put {kept}: {error}"));
                }
                node.delete_object("race", &transient)
                    .await
                    .unwrap_or_else(|error| panic!("delete {transient}: {error}"));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut kept_count = 0;
    for worker in 0..WORKERS {
        for round in (0..ROUNDS).filter(|round| round % 4 == 3) {
            let kept = format!("dir/a b/s{}/k{worker}-{round}", round % SHARED_FOLDERS);
            let size = if round % 2 == 0 { 100 } else { 300 * 1024 };
            assert_eq!(
                read(&node, "race", &kept, None).await,
                pattern(size, worker as u8),
                "{kept}"
            );
            kept_count += 1;
        }
    }
    let listed = node
        .list_objects(
            "race",
            ListRequest {
                prefix: "dir/".into(),
                max_keys: 10_000,
                ..ListRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.objects.len(), kept_count);
    for drive in &drives {
        assert!(drive.join("race").is_dir(), "{}", drive.display());
    }
}

/// Issue 11, bug 6: a bucket folder missing on one drive (a replaced drive that kept its
/// system area) was made again but its objects were not rebuilt and the heal counted nothing.
#[tokio::test]
async fn r11_heal_rebuilds_a_bucket_folder_missing_on_one_drive() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 4);
    let objects = sized_objects(&[1, 100 * 1024, 3 * 1024 * 1024 + 7], 9);
    store_in_keep(&drives, &objects).await;
    std::fs::remove_dir_all(drives[1].join("keep")).unwrap();
    let node = open(&drives).await;
    let report = node.heal(None, "").await.unwrap();
    assert_eq!(report.objects_failed, 0, "{report:?}");
    assert_eq!(report.objects_healed, objects.len() as u64, "{report:?}");
    assert!(report.shards_rebuilt >= objects.len() as u64, "{report:?}");
    assert_eq!(report.buckets_healed, 1, "{report:?}");
    assert_healed_drive_serves(&node, &drives, 1, &objects).await;
}

/// Keys and common prefixes of one listing of bucket `marks`.
async fn listed(
    node: &Node,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
) -> (Vec<String>, Vec<String>) {
    let result = node
        .list_objects(
            "marks",
            ListRequest {
                prefix: prefix.into(),
                delimiter: delimiter.map(Into::into),
                after: after.map(Into::into),
                max_keys: 1000,
            },
        )
        .await
        .unwrap();
    let keys = result.objects.iter().map(|o| o.key.clone()).collect();
    (keys, result.common_prefixes)
}

/// Issue 12: keys ending in `/` (S3 directory markers, as s3a and pyarrow write them) are
/// stored beside the keys under them, created before or after those, on either set.
#[tokio::test]
async fn r12_keys_ending_in_a_slash_live_beside_the_keys_under_them() {
    let root = tempfile::tempdir().unwrap();
    let drives = drive_paths(root.path(), 8);
    let node = Node::open(config(drives.clone(), Some(4)), test_io())
        .await
        .unwrap();
    node.make_bucket("marks").await.unwrap();
    let big = pattern(3 * 1024 * 1024 + 11, 4);
    // `a/` after `a/b`, `c/` before `c/d`, a marker under a marker, a marker with data.
    let objects: Vec<(&str, Vec<u8>)> = vec![
        ("a/b", b"under a".to_vec()),
        ("a", b"plain a".to_vec()),
        ("a/", Vec::new()),
        ("c/", Vec::new()),
        ("c/d", b"under c".to_vec()),
        ("a/x/", Vec::new()),
        ("big/", big.clone()),
    ];
    for (key, data) in &objects {
        put(&node, "marks", key, data).await;
    }
    for (key, data) in &objects {
        assert_eq!(&read(&node, "marks", key, None).await, data, "{key}");
        let info = node.head_object("marks", key).await.unwrap();
        assert_eq!(info.size, data.len() as u64, "{key}");
    }
    // A folder that only holds keys under it is no object.
    for missing in ["a/x", "c/d/", "zz/"] {
        assert!(
            matches!(
                node.head_object("marks", missing).await,
                Err(StorageError::NoSuchKey { .. })
            ),
            "{missing}"
        );
    }
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        listed(&node, "", None, None).await,
        (
            strings(&["a", "a/", "a/b", "a/x/", "big/", "c/", "c/d"]),
            vec![]
        )
    );
    assert_eq!(
        listed(&node, "", Some("/"), None).await,
        (strings(&["a"]), strings(&["a/", "big/", "c/"]))
    );
    assert_eq!(
        listed(&node, "a/", Some("/"), None).await,
        (strings(&["a/", "a/b"]), strings(&["a/x/"]))
    );
    assert_eq!(
        listed(&node, "a/x/", Some("/"), None).await,
        (strings(&["a/x/"]), vec![])
    );
    assert_eq!(
        listed(&node, "a/", None, Some("a/")).await,
        (strings(&["a/b", "a/x/"]), vec![])
    );
    // Paging one key at a time gives the same order.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = node
            .list_objects("marks", ListRequest::flat("", after.clone(), 1))
            .await
            .unwrap();
        paged.extend(page.objects.iter().map(|o| o.key.clone()));
        if !page.is_truncated {
            break;
        }
        after = page.next_after;
    }
    assert_eq!(
        paged,
        strings(&["a", "a/", "a/b", "a/x/", "big/", "c/", "c/d"])
    );

    // Deleting a marker keeps the keys under it, and the other way round.
    node.delete_object("marks", "a/").await.unwrap();
    node.delete_object("marks", "c/d").await.unwrap();
    assert_eq!(read(&node, "marks", "a/b", None).await, b"under a");
    assert_eq!(read(&node, "marks", "c/", None).await, b"");
    assert_eq!(
        listed(&node, "", None, None).await,
        (strings(&["a", "a/b", "a/x/", "big/", "c/"]), vec![])
    );
    node.delete_object("marks", "c/").await.unwrap();
    assert_eq!(
        listed(&node, "", Some("/"), None).await,
        (strings(&["a"]), strings(&["a/", "big/"]))
    );
    for drive in [&drives[1], &drives[3], &drives[5], &drives[7]] {
        assert!(
            !drive.join("marks/c").exists(),
            "emptied folders are pruned"
        );
    }
    // Heal rebuilds wiped drives' markers like any object (one drive of each set).
    wipe(&drives[1]);
    wipe(&drives[5]);
    drop(node);
    let node = Node::open(config(drives.clone(), Some(4)), test_io())
        .await
        .unwrap();
    let report = node.heal(None, "").await.unwrap();
    assert_eq!(report.objects_failed, 0, "{report:?}");
    let holding = drives
        .iter()
        .filter(|drive| {
            drive
                .join("marks/a/x/lakeshare.dir/lakeshare.meta")
                .is_file()
        })
        .count();
    assert_eq!(holding, 4, "every drive of its set holds `a/x/`");
    for gone in [0, 2, 4, 6] {
        std::fs::remove_dir_all(&drives[gone]).unwrap();
    }
    for (key, data) in objects
        .iter()
        .filter(|(key, _)| !matches!(*key, "a/" | "c/d" | "c/"))
    {
        assert_eq!(&read(&node, "marks", key, None).await, data, "{key}");
    }
}

#[tokio::test]
async fn r12_the_directory_key_folder_name_is_no_key_segment() {
    let root = tempfile::tempdir().unwrap();
    let node = open(&drive_paths(root.path(), 1)).await;
    node.make_bucket("keys").await.unwrap();
    assert_invalid_keys(
        &node,
        &[
            "/",
            "a//",
            "//",
            "a/lakeshare.dir",
            "a/lakeshare.dir/",
            "lakeshare.dir/x",
        ],
    )
    .await;
}
