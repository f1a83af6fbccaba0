//! Drive health: whether a drive still carries this deployment's format stamp in the slot it
//! was opened in. A drive whose stamp is gone (wiped, replaced by a blank disk, unmounted) or
//! no longer matches (another deployment id or drive uuid) is offline: reads do not count it,
//! writes skip it, and nothing is created on it until the replacement pass stamps it again.
//!
//! Invariants: the answer costs one `is_linked` of the stamp file held open since the last
//! full check (an unlinked stamp has no links left) and at most one full re-read of the
//! stamp per `STAMP_CHECK_INTERVAL` per drive; `suspect` (called on a write path's
//! `NotFound`) forces the next answer to re-read the stamp. Time is tokio's, so a paused
//! test runtime controls it.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lakeshare_engine::io::{DriveFile, OpenMode};
use tokio::time::Instant;

use crate::drive::DriveRoot;
use crate::format::{self, FormatFile};

/// Longest time an answer from a full stamp check is reused.
pub(crate) const STAMP_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// One drive's identity and last known state.
pub(crate) struct DriveHealth {
    deployment_id: String,
    /// The uuid of the slot this drive was opened in.
    uuid: String,
    state: Mutex<Checked>,
}

struct Checked {
    online: bool,
    /// When the last full check started; `None` forces one.
    checked_at: Option<Instant>,
    /// The stamp file as of the last full check, kept open for the cheap link test.
    stamp: Option<DriveFile>,
}

impl DriveHealth {
    /// A drive that was just opened (and so stamped): online, with its first full check due.
    pub(crate) fn new(deployment_id: String, uuid: String) -> DriveHealth {
        DriveHealth {
            deployment_id,
            uuid,
            state: Mutex::new(Checked {
                online: true,
                checked_at: None,
                stamp: None,
            }),
        }
    }

    pub(crate) fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Whether the drive carries its stamp: the cached answer while it is fresh and the stamp
    /// file still has a link, else a full re-read of `.lakeshare.sys/format.json`.
    pub(crate) async fn online(&self, drive: &DriveRoot) -> bool {
        let now = Instant::now();
        let held = {
            let mut state = self.lock();
            let fresh = state
                .checked_at
                .is_some_and(|at| now.duration_since(at) < STAMP_CHECK_INTERVAL);
            if fresh && !state.online {
                return false;
            }
            match (&state.stamp, fresh) {
                // Another caller's full check is in flight.
                (None, true) => return true,
                (Some(stamp), true) => Some(stamp.clone()),
                (_, false) => {
                    // Claim the check, so concurrent callers reuse the cached answer meanwhile.
                    state.checked_at = Some(now);
                    None
                }
            }
        };
        if let Some(stamp) = held {
            if drive.is_linked(&stamp).await.unwrap_or(false) {
                return true;
            }
            // Unlinked since the last check (a wipe, a new stamp): check in full.
            self.lock().checked_at = Some(now);
        }
        let stamp = self.read_matching_stamp(drive).await;
        let online = stamp.is_some();
        let mut state = self.lock();
        if state.online != online {
            if online {
                tracing::info!(drive = %drive.root().display(), "drive is online");
            } else {
                tracing::warn!(
                    drive = %drive.root().display(),
                    "drive is offline: its format stamp is missing or belongs elsewhere"
                );
            }
        }
        state.online = online;
        state.stamp = stamp;
        online
    }

    /// A write met `NotFound` on this drive: re-read the stamp on the next question.
    pub(crate) fn suspect(&self) {
        self.lock().checked_at = None;
    }

    /// The matching stamp file, opened; `None` when it is missing, unreadable or foreign.
    async fn read_matching_stamp(&self, drive: &DriveRoot) -> Option<DriveFile> {
        let path = format::format_path();
        let file = drive.open(&path, OpenMode::Read).await.ok()?;
        let raw = drive.read_file(&path).await.ok()?;
        let stamp: FormatFile = serde_json::from_slice(&raw).ok()?;
        let matches = stamp.deployment_id == self.deployment_id && stamp.this == self.uuid;
        // The file read must be the file held: a stamp replaced in between is checked again.
        let linked = drive.is_linked(&file).await.unwrap_or(false);
        (matches && linked).then_some(file)
    }

    fn lock(&self) -> MutexGuard<'_, Checked> {
        // The state is a few plain fields, consistent after any panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
