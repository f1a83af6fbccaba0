//! Asynchronous snapshot queries (`delta-sharing-capabilities: asyncquery=true`).
//!
//! A first-page snapshot query with that capability and an idempotency key is answered at
//! once with one `queryStatus` line naming a query id, unless its file list is already
//! cached (then the answer is the query's own, which the client also accepts). The snapshot
//! is resolved and its active-file list built in the background, into the file-list cache
//! (at most `REPLAYS_MAX` lists are built at once, as for any query); `POST .../queries/{id}`
//! answers `queryStatus` while that runs, the build's error (with its own status) if it
//! failed, and then pages of the query pinned to the resolved snapshot.
//!
//! Invariants: a query is found only by the token that started it, on the table it was
//! started on (any other lookup is a 404, so query ids reveal nothing across recipients);
//! the same idempotency key from the same token on the same table names the same query
//! while it lives; a query lives `ASYNC_QUERY_IDLE_SECONDS` after its last use and at most
//! `ASYNC_QUERIES_MAX` are kept. Nothing here holds a file list: a list evicted from the
//! cache before the answer is replayed by the answer itself, as a synchronous query would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{ErrorKind, Result, SharingError};
use crate::routes::request::QueryRequest;
use crate::tables::TableSnapshot;

/// A query is forgotten this long after it was last started, polled or answered.
pub const ASYNC_QUERY_IDLE_SECONDS: u64 = 3600;
/// Queries kept at once (the oldest are forgotten first).
const ASYNC_QUERIES_MAX: u64 = 10_000;

/// Who may see a query: the bearer token that started it, on one table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueryOwner {
    pub token_id: String,
    pub table_id: String,
}

/// Where a query stands.
#[derive(Clone)]
pub enum QueryState {
    /// The snapshot or its file list is still being read.
    Pending,
    /// The list was built (and cached, if it fit the budget); answers read this snapshot.
    Ready(Box<TableSnapshot>),
    /// Resolving or listing failed; every poll answers this error.
    Failed(ErrorKind, String),
}

/// One asynchronous query.
pub struct AsyncQuery {
    pub id: String,
    pub owner: QueryOwner,
    /// The first request's body, as parsed.
    pub request: QueryRequest,
    state: Mutex<QueryState>,
}

impl AsyncQuery {
    pub fn state(&self) -> QueryState {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records how the background work ended.
    pub fn finish(&self, outcome: Result<TableSnapshot>) {
        let state = match outcome {
            Ok(snapshot) => QueryState::Ready(Box::new(snapshot)),
            Err(error) => {
                tracing::warn!(query = %self.id, %error, "asynchronous query failed");
                QueryState::Failed(error.kind, error.message)
            }
        };
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
    }
}

/// The node's asynchronous queries.
pub struct AsyncQueries {
    by_id: moka::sync::Cache<String, Arc<AsyncQuery>>,
    /// (owner, idempotency key) → query id.
    by_idempotency_key: moka::sync::Cache<(QueryOwner, String), String>,
}

impl Default for AsyncQueries {
    fn default() -> Self {
        let idle = Duration::from_secs(ASYNC_QUERY_IDLE_SECONDS);
        AsyncQueries {
            by_id: moka::sync::Cache::builder()
                .max_capacity(ASYNC_QUERIES_MAX)
                .time_to_idle(idle)
                .build(),
            by_idempotency_key: moka::sync::Cache::builder()
                .max_capacity(ASYNC_QUERIES_MAX)
                .time_to_idle(idle)
                .build(),
        }
    }
}

impl AsyncQueries {
    /// The query `owner` started with `idempotency_key`, if it still lives.
    pub fn find_by_key(
        &self,
        owner: &QueryOwner,
        idempotency_key: &str,
    ) -> Option<Arc<AsyncQuery>> {
        let id = self
            .by_idempotency_key
            .get(&(owner.clone(), idempotency_key.to_string()))?;
        self.find(owner, &id)
    }

    /// The query `id`, when `owner` started it.
    pub fn find(&self, owner: &QueryOwner, id: &str) -> Option<Arc<AsyncQuery>> {
        self.by_id.get(id).filter(|query| query.owner == *owner)
    }

    /// A new pending query.
    pub fn register(
        &self,
        owner: QueryOwner,
        idempotency_key: String,
        request: QueryRequest,
    ) -> Arc<AsyncQuery> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let query = Arc::new(AsyncQuery {
            id: id.clone(),
            owner: owner.clone(),
            request,
            state: Mutex::new(QueryState::Pending),
        });
        self.by_id.insert(id.clone(), query.clone());
        self.by_idempotency_key.insert((owner, idempotency_key), id);
        query
    }
}

/// The 404 of a query id that is unknown, expired or another token's.
pub fn query_not_found(id: &str) -> SharingError {
    SharingError::not_found(format!("query '{id}' does not exist or has expired"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(token: &str, table: &str) -> QueryOwner {
        QueryOwner {
            token_id: token.into(),
            table_id: table.into(),
        }
    }

    #[test]
    fn queries_are_found_only_by_their_owner() {
        let queries = AsyncQueries::default();
        let started = queries.register(owner("t1", "a"), "key".into(), QueryRequest::default());
        assert!(queries.find(&owner("t1", "a"), &started.id).is_some());
        assert!(queries.find(&owner("t2", "a"), &started.id).is_none());
        assert!(queries.find(&owner("t1", "b"), &started.id).is_none());
        assert!(queries.find(&owner("t1", "a"), "other").is_none());
        let again = queries.find_by_key(&owner("t1", "a"), "key").unwrap();
        assert_eq!(again.id, started.id);
        assert!(queries.find_by_key(&owner("t2", "a"), "key").is_none());
        assert!(queries
            .find_by_key(&owner("t1", "a"), "other key")
            .is_none());
    }

    #[test]
    fn a_failed_query_keeps_its_error() {
        let queries = AsyncQueries::default();
        let started = queries.register(owner("t", "a"), "k".into(), QueryRequest::default());
        assert!(matches!(started.state(), QueryState::Pending));
        started.finish(Err(SharingError::not_found("gone")));
        match started.state() {
            QueryState::Failed(kind, message) => {
                assert_eq!(kind, ErrorKind::NotFound);
                assert_eq!(message, "gone");
            }
            _ => panic!("not failed"),
        }
    }
}
