//! [`StoreShared`]: the pool, names, statements, near-cache and listener flag that every
//! clone of a [`PostgresStore`](super::PostgresStore) shares, and that the listener task
//! updates (through a weak reference, so that dropping the last clone ends it).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::task::AbortHandle;

use super::names::Names;
use super::statements::Statements;
use super::PostgresStoreError;
use crate::id::SessionKey;
use crate::store::near_cache::{NearCache, Stamp};

/// What every clone of a `PostgresStore` shares; the operations are its methods (`ops`).
pub(super) struct StoreShared {
    pub(super) pool: Pool,
    pub(super) names: Names,
    pub(super) sql: Statements,
    /// [`PostgresStoreBuilder::guest_capacity`](super::PostgresStoreBuilder::guest_capacity).
    pub(super) guest_capacity: i64,
    /// The bound of one operation: pool wait, connecting and the statement together.
    pub(super) command_timeout: Duration,
    pub(super) near: NearCache,
    /// The notification connection is up and `LISTEN`s since its latest connection.
    pub(super) listening: AtomicBool,
    /// The listener and clean-up tasks, aborted when the store is dropped.
    pub(super) tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for StoreShared {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
    }
}

impl StoreShared {
    /// The notification connection listens: the near-cache can be trusted.
    pub(super) fn coherent(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// The stamp for a fill, or `None` if the near-cache must not be used now (in which case
    /// it is cleared: nothing from before an outage may survive it).
    pub(super) fn usable_stamp(&self, key: &SessionKey) -> Option<Stamp> {
        if !self.near.enabled() {
            return None;
        }
        if self.coherent() {
            Some(self.near.stamp(key))
        } else {
            self.near.clear();
            None
        }
    }

    /// Runs `op` on a pooled connection, the whole of it (waiting for the pool, connecting,
    /// the statement) bounded by the command timeout. The server's `statement_timeout` is the
    /// same, so a statement abandoned here does not go on holding locks there.
    pub(super) async fn with_client<T, F, Fut>(&self, op: F) -> Result<T, PostgresStoreError>
    where
        F: FnOnce(Object) -> Fut,
        Fut: Future<Output = Result<T, PostgresStoreError>>,
    {
        let work = async {
            let client = self.pool.get().await?;
            op(client).await
        };
        match tokio::time::timeout(self.command_timeout, work).await {
            Ok(result) => result,
            Err(_) => {
                // The abandoned connection went back to the pool with its statement still
                // in flight; if the server (or the path to it) stopped answering, it would
                // hang every later request it serves, and the pool's check only sees closed
                // connections. So a timeout empties the pool of idle connections: they are
                // cheap to open again, and a timeout is the sign of trouble.
                self.pool.retain(|_, _| false);
                Err(PostgresStoreError::Timeout(self.command_timeout))
            }
        }
    }
}
