//! Background healing: the MRF queue (objects met damaged on reads and writes), the slow
//! scanner (every object, one at a time, with a pause between), the full heal after an
//! empty replacement drive was stamped at open, and the drive watch, which stamps a drive
//! blanked while the node runs back into its slot and heals everything onto it.
//!
//! Invariant: the tasks hold only a weak reference to the node, so they end when it is
//! dropped; healing itself goes through `ErasureSet::heal_object`, under the key lock.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::health::STAMP_CHECK_INTERVAL;
use crate::node::Inner;
use crate::set::HealTask;

pub(crate) fn spawn_background(
    inner: &Arc<Inner>,
    mut mrf: mpsc::Receiver<HealTask>,
    scanner_interval: Duration,
    heal_all_now: bool,
) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    tokio::spawn(async move {
        while let Some(task) = mrf.recv().await {
            let Some(inner) = weak.upgrade() else { break };
            let Some(set) = inner.sets.get(task.set) else {
                continue;
            };
            if let Err(error) = set.heal_object(&task.bucket, &task.key).await {
                tracing::warn!("heal {}/{}: {error}", task.bucket, task.key);
            }
        }
    });
    if heal_all_now {
        let weak = Arc::downgrade(inner);
        tokio::spawn(async move {
            let Some(inner) = weak.upgrade() else { return };
            match inner.heal_everything("", None).await {
                Ok(report) => tracing::info!(?report, "replacement drive healed"),
                Err(error) => tracing::warn!("healing a replacement drive: {error}"),
            }
        });
    }
    if !scanner_interval.is_zero() {
        let weak = Arc::downgrade(inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(STAMP_CHECK_INTERVAL).await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.adopt_replacements().await.is_empty() {
                    continue;
                }
                match inner.heal_everything("", None).await {
                    Ok(report) => tracing::info!(?report, "blank drive healed"),
                    Err(error) => tracing::warn!("healing a blank drive: {error}"),
                }
            }
        });
        let weak = Arc::downgrade(inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(scanner_interval).await;
                let Some(inner) = weak.upgrade() else { break };
                if let Err(error) = inner.heal_everything("", Some(scanner_interval)).await {
                    tracing::warn!("scanner: {error}");
                }
            }
        });
    }
}
