//! The erasure sets of a node and which set holds which object.
//!
//! Invariant: an object lives in exactly one set, chosen by SipHash-2-4 (keyed with the
//! deployment id) of `bucket/key` modulo the set count, so every node process opening the
//! same drives agrees.

use std::sync::Arc;

use crate::drive::Drive;
use crate::set::ErasureSet;

pub(crate) struct SetGroup {
    pub(crate) sets: Vec<Arc<ErasureSet>>,
    hash_key: [u8; 16],
}

impl SetGroup {
    pub(crate) fn new(sets: Vec<Arc<ErasureSet>>, hash_key: [u8; 16]) -> SetGroup {
        SetGroup { sets, hash_key }
    }

    pub(crate) fn set_for(&self, bucket: &str, key: &str) -> &Arc<ErasureSet> {
        use std::hash::Hasher;
        let mut hasher = siphasher::sip::SipHasher24::new_with_key(&self.hash_key);
        hasher.write(bucket.as_bytes());
        hasher.write(b"/");
        hasher.write(key.as_bytes());
        &self.sets[(hasher.finish() % self.sets.len() as u64) as usize]
    }

    /// Every drive of every set.
    pub(crate) fn drives(&self) -> impl Iterator<Item = &Arc<Drive>> {
        self.sets.iter().flat_map(|set| set.drives.iter())
    }
}
