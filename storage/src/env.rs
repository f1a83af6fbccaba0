//! What storage takes from the world besides drives: the wall clock and fresh ids. Both come
//! through handles, so the simulation test runs on a virtual clock and seeded ids and a
//! failing seed replays exactly. Elapsed time (timeouts, check intervals) uses
//! `tokio::time::Instant`, which a paused test runtime controls.

use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

/// The wall clock objects are stamped with.
pub trait Clock: Send + Sync + 'static {
    fn now_utc(&self) -> OffsetDateTime;
}

/// Fresh ids for object versions, parts, uploads and temp files.
pub trait IdSource: Send + Sync + 'static {
    fn new_id(&self) -> Uuid;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_utc(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Random (v4) ids.
pub struct RandomIds;

impl IdSource for RandomIds {
    fn new_id(&self) -> Uuid {
        Uuid::new_v4()
    }
}

/// The clock and id source of one node.
#[derive(Clone)]
pub struct Environment {
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
}

impl Environment {
    /// The system clock and random ids.
    pub fn real() -> Environment {
        Environment {
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
        }
    }

    pub fn now_utc(&self) -> OffsetDateTime {
        self.clock.now_utc()
    }

    pub fn new_id(&self) -> Uuid {
        self.ids.new_id()
    }
}

impl Default for Environment {
    fn default() -> Environment {
        Environment::real()
    }
}
