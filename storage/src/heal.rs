//! Healing beyond one object: the full heal (blank replacement drives stamped back into their
//! slots, bucket folders and records made again, then every object of every bucket and of the
//! system area healed), and the background tasks: the MRF queue (objects met damaged on reads
//! and writes), the slow scanner (every object, one at a time, with a pause between), the
//! full heal after a replacement drive was stamped at open, and the drive watch, which stamps
//! a drive blanked while the node runs back into its slot and heals everything onto it.
//!
//! Invariant: the tasks hold only weak references, so they end when the node is dropped;
//! healing of an object always goes through `ErasureSet::heal_object`, under its lock.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::buckets::{Buckets, SYSTEM_BUCKET};
use crate::drive::Drive;
use crate::env::Environment;
use crate::error::Result;
use crate::format::{self, Adoption, FormatFile};
use crate::health::STAMP_CHECK_INTERVAL;
use crate::object::{HealReport, ListRequest};
use crate::set::HealTask;
use crate::sets::SetGroup;

/// Keys per page when heal and the scanner walk a bucket.
const HEAL_PAGE_KEYS: usize = 1000;

pub(crate) struct Healer {
    pub(crate) sets: Arc<SetGroup>,
    pub(crate) buckets: Arc<Buckets>,
    /// Every drive, in command-line order.
    drives: Vec<Arc<Drive>>,
    /// The deployment's layout, to stamp a blank replacement drive with.
    reference: FormatFile,
    env: Environment,
}

impl Healer {
    pub(crate) fn new(
        sets: Arc<SetGroup>,
        buckets: Arc<Buckets>,
        drives: Vec<Arc<Drive>>,
        reference: FormatFile,
        env: Environment,
    ) -> Healer {
        Healer {
            sets,
            buckets,
            drives,
            reference,
            env,
        }
    }

    /// Stamps blank drives that lost their stamp while the node runs back into their slots
    /// (see `format::adopt_blank_drive`); returns the drives stamped, which need a heal.
    pub(crate) async fn adopt_replacements(&self) -> Vec<PathBuf> {
        let mut adopted = Vec::new();
        for drive in &self.drives {
            if drive.online().await {
                continue;
            }
            let root = drive.root();
            let outcome =
                format::adopt_blank_drive(drive, &self.reference, drive.health.uuid(), &self.env)
                    .await;
            match outcome {
                Ok(Adoption::Stamped) => {}
                Ok(Adoption::Missing) => continue,
                Ok(Adoption::Refused(why)) => {
                    tracing::warn!(drive = %root.display(), "drive stays offline: {why}");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(drive = %root.display(), "stamping a blank drive: {error}");
                    continue;
                }
            }
            if let Err(error) = format::prepare_system_dirs(drive).await {
                tracing::warn!(drive = %root.display(), "preparing a blank drive: {error}");
                continue;
            }
            drive.suspect();
            if drive.online().await {
                tracing::info!(drive = %root.display(), "blank drive stamped into its slot");
                adopted.push(root.to_path_buf());
            }
        }
        adopted
    }

    /// Heals every object in every bucket and the system area, after adopting blank drives
    /// and making missing bucket folders again.
    pub(crate) async fn heal_everything(
        &self,
        prefix: &str,
        pause: Option<Duration>,
    ) -> Result<HealReport> {
        let mut report = self.heal_drives_and_buckets().await;
        let mut buckets = self.buckets.names();
        buckets.push(SYSTEM_BUCKET.to_string());
        for bucket in buckets {
            self.heal_bucket(&bucket, prefix, &mut report, pause)
                .await?;
        }
        Ok(report)
    }

    /// Heals the objects of one bucket under `prefix`, after making its folders again.
    pub(crate) async fn heal_one_bucket(&self, bucket: &str, prefix: &str) -> Result<HealReport> {
        let mut report = self.heal_drives_and_buckets().await;
        self.heal_bucket(bucket, prefix, &mut report, None).await?;
        Ok(report)
    }

    /// Stamps blank replacement drives, then makes missing bucket folders again.
    async fn heal_drives_and_buckets(&self) -> HealReport {
        let drives_adopted = self.adopt_replacements().await.len() as u64;
        let (buckets_healed, buckets_failed) = self.buckets.heal().await;
        HealReport {
            drives_adopted,
            buckets_healed,
            buckets_failed,
            ..HealReport::default()
        }
    }

    async fn heal_bucket(
        &self,
        bucket: &str,
        prefix: &str,
        report: &mut HealReport,
        pause: Option<Duration>,
    ) -> Result<()> {
        let mut after = None;
        loop {
            let request = ListRequest::flat(prefix, after.take(), HEAL_PAGE_KEYS);
            let page = self.sets.list_for_heal(bucket, &request).await?;
            for object in &page.objects {
                report.objects_scanned += 1;
                match self
                    .sets
                    .set_for(bucket, &object.key)
                    .heal_object(bucket, &object.key)
                    .await
                {
                    Ok(outcome) => {
                        report.objects_healed += u64::from(outcome.healed);
                        report.shards_rebuilt += outcome.shards_rebuilt;
                        report.objects_failed += u64::from(outcome.failed_drives > 0);
                    }
                    Err(error) => {
                        tracing::warn!("heal {bucket}/{}: {error}", object.key);
                        report.objects_failed += 1;
                    }
                }
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
            if !page.is_truncated {
                return Ok(());
            }
            after = page.next_after;
        }
    }
}

/// Starts the MRF healer and, unless `scanner_interval` is zero, the scanner and the drive
/// watch; with `heal_all_now`, a full heal at once (a replacement drive was stamped at open).
/// The node aborts the returned tasks when it is dropped, which releases its drive locks.
pub(crate) fn spawn_background(
    healer: &Arc<Healer>,
    mut mrf: mpsc::Receiver<HealTask>,
    scanner_interval: Duration,
    heal_all_now: bool,
) -> Vec<AbortHandle> {
    let mut tasks = Vec::new();
    let weak: Weak<Healer> = Arc::downgrade(healer);
    tasks.push(
        tokio::spawn(async move {
            while let Some(task) = mrf.recv().await {
                let Some(healer) = weak.upgrade() else { break };
                let Some(set) = healer.sets.sets.get(task.set) else {
                    continue;
                };
                if let Err(error) = set.heal_object(&task.bucket, &task.key).await {
                    tracing::warn!("heal {}/{}: {error}", task.bucket, task.key);
                }
            }
        })
        .abort_handle(),
    );
    if heal_all_now {
        let weak = Arc::downgrade(healer);
        tasks.push(
            tokio::spawn(async move {
                let Some(healer) = weak.upgrade() else { return };
                match healer.heal_everything("", None).await {
                    Ok(report) => tracing::info!(?report, "replacement drive healed"),
                    Err(error) => tracing::warn!("healing a replacement drive: {error}"),
                }
            })
            .abort_handle(),
        );
    }
    if scanner_interval.is_zero() {
        return tasks;
    }
    let weak = Arc::downgrade(healer);
    tasks.push(
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(STAMP_CHECK_INTERVAL).await;
                let Some(healer) = weak.upgrade() else { break };
                if healer.adopt_replacements().await.is_empty() {
                    continue;
                }
                match healer.heal_everything("", None).await {
                    Ok(report) => tracing::info!(?report, "blank drive healed"),
                    Err(error) => tracing::warn!("healing a blank drive: {error}"),
                }
            }
        })
        .abort_handle(),
    );
    let weak = Arc::downgrade(healer);
    tasks.push(
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(scanner_interval).await;
                let Some(healer) = weak.upgrade() else { break };
                if let Err(error) = healer.heal_everything("", Some(scanner_interval)).await {
                    tracing::warn!("scanner: {error}");
                }
            }
        })
        .abort_handle(),
    );
    tasks
}
