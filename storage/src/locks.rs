//! Per-key namespace locks for this process: a sharded map from key to a tokio mutex.
//! Invariant: two holders of `lock(k)` for the same `k` never overlap; entries whose mutex
//! nobody holds are dropped when their shard is next touched, so the map stays bounded by the
//! keys in use.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;

const SHARD_COUNT: usize = 64;

type Shard = Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>;

pub(crate) struct KeyLocks {
    shards: Vec<Shard>,
}

impl KeyLocks {
    pub(crate) fn new() -> KeyLocks {
        KeyLocks {
            shards: (0..SHARD_COUNT)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    pub(crate) async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let mutex = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut hasher);
            let shard = &self.shards[(hasher.finish() as usize) % SHARD_COUNT];
            // A poisoned shard only means another thread panicked while holding it; the map
            // itself is still consistent (every operation on it is a single insert/retain).
            let mut map = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if map.len() > 1024 {
                map.retain(|_, weak| weak.strong_count() > 0);
            }
            match map.get(key).and_then(Weak::upgrade) {
                Some(mutex) => mutex,
                None => {
                    let mutex = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_string(), Arc::downgrade(&mutex));
                    mutex
                }
            }
        };
        mutex.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_is_exclusive_other_keys_are_not() {
        let locks = KeyLocks::new();
        let first = locks.lock("a").await;
        let _other = locks.lock("b").await;
        let locks = Arc::new(locks);
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _second = locks.lock("a").await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        waiting.await.unwrap();
    }
}
