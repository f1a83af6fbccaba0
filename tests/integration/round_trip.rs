//! put / get / list / delete through `object_store`, the client delta-rs writes tables with.

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::server::Node;

fn payload_of(size_bytes: usize, seed: u8) -> Vec<u8> {
    (0..size_bytes)
        .map(|index| {
            (index as u64)
                .wrapping_mul(2654435761)
                .wrapping_add(seed as u64) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_list_delete_round_trip() {
    let node = Node::start(1);
    node.create_bucket("round-trip");
    let store = node.store("round-trip");

    let small = payload_of(1000, 1);
    let large = payload_of(3 * 1024 * 1024 + 11, 2);
    let objects = [
        ("table/_delta_log/00000000000000000000.json", small.clone()),
        ("table/part-0001.parquet", large.clone()),
        ("table/part-0002.parquet", small.clone()),
        ("other/file.txt", b"other".to_vec()),
    ];
    for (key, data) in &objects {
        store
            .put(&Path::from(*key), PutPayload::from(data.clone()))
            .await
            .expect("put");
    }

    for (key, data) in &objects {
        let got = store
            .get(&Path::from(*key))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        assert_eq!(got.as_ref(), data.as_slice(), "{key}");
    }
    let range = store
        .get_range(&Path::from("table/part-0001.parquet"), 1_048_000..1_049_000)
        .await
        .expect("ranged get");
    assert_eq!(range.as_ref(), &large[1_048_000..1_049_000]);
    let head = store
        .head(&Path::from("table/part-0001.parquet"))
        .await
        .expect("head");
    assert_eq!(head.size, large.len() as u64);

    let mut listed: Vec<String> = store
        .list(Some(&Path::from("table")))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list");
    listed.sort();
    assert_eq!(
        listed,
        [
            "table/_delta_log/00000000000000000000.json",
            "table/part-0001.parquet",
            "table/part-0002.parquet"
        ]
    );
    let after: Vec<String> = store
        .list_with_offset(
            Some(&Path::from("table")),
            &Path::from("table/part-0001.parquet"),
        )
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list with offset");
    assert_eq!(after, ["table/part-0002.parquet"]);
    let by_folder = store
        .list_with_delimiter(None)
        .await
        .expect("list with delimiter");
    let folders: Vec<String> = by_folder
        .common_prefixes
        .iter()
        .map(|prefix| prefix.to_string())
        .collect();
    assert_eq!(folders, ["other", "table"]);
    assert!(by_folder.objects.is_empty());

    store
        .delete(&Path::from("table/part-0002.parquet"))
        .await
        .expect("delete");
    let missing = store.get(&Path::from("table/part-0002.parquet")).await;
    assert!(
        matches!(missing, Err(object_store::Error::NotFound { .. })),
        "deleted object must be NotFound, got {missing:?}"
    );
    let remaining: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert_eq!(remaining.len(), 3);
}
