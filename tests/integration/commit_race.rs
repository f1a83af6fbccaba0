//! The Delta commit race: two writers `put_opts(PutMode::Create)` the same keys at once.
//! Exactly one wins each key, the loser gets `AlreadyExists`, and the winner's bytes stay.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::server::Node;

const COMMIT_COUNT: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_puts_race_with_exactly_one_winner_per_key() {
    let node = Node::start(1);
    node.create_bucket("race");
    let store = Arc::new(node.store("race"));
    let racers: Vec<_> = ["writer-a", "writer-b"]
        .into_iter()
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut outcomes = Vec::with_capacity(COMMIT_COUNT);
                for version in 0..COMMIT_COUNT {
                    let key = Path::from(format!("table/_delta_log/{version:020}.json"));
                    let body = format!("{{\"commitInfo\":{{\"writer\":\"{writer}\"}}}}");
                    let options = PutOptions::from(PutMode::Create);
                    let result = store.put_opts(&key, PutPayload::from(body), options).await;
                    outcomes.push(result);
                }
                (writer, outcomes)
            })
        })
        .collect();

    let mut winners = vec![Vec::new(); COMMIT_COUNT];
    for racer in racers {
        let (writer, outcomes) = racer.await.expect("racer task");
        for (version, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(_) => winners[version].push(writer),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(other) => panic!("{writer} version {version}: unexpected {other:?}"),
            }
        }
    }
    for (version, version_winners) in winners.iter().enumerate() {
        assert_eq!(
            version_winners.len(),
            1,
            "version {version} winners: {version_winners:?}"
        );
        let key = Path::from(format!("table/_delta_log/{version:020}.json"));
        let body = store
            .get(&key)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        let expected = format!(
            "{{\"commitInfo\":{{\"writer\":\"{}\"}}}}",
            version_winners[0]
        );
        assert_eq!(
            body.as_ref(),
            expected.as_bytes(),
            "version {version} holds the winner"
        );
    }

    // A create on an existing key loses even without a race.
    let again = store
        .put_opts(
            &Path::from("table/_delta_log/00000000000000000000.json"),
            PutPayload::from_static(b"late"),
            PutOptions::from(PutMode::Create),
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
}
