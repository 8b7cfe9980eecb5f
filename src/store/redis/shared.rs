//! [`StoreShared`]: the connections, names, scripts, near-cache and connection flags that
//! every clone of a [`RedisStore`](super::RedisStore) shares, and that the watcher task
//! updates (through a weak reference, so that dropping the last clone ends it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use std::future::Future;

use fred::clients::{Client, SubscriberClient, WithOptions};
use fred::error::Error as FredError;
use fred::interfaces::ClientLike;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::names::Names;
use super::scripts::Scripts;
use super::RedisStoreError;
use crate::id::SessionKey;
use crate::store::near_cache::{NearCache, Stamp};

/// What every clone of a `RedisStore` shares; the operations are its methods (`ops`).
pub(super) struct StoreShared {
    /// The main connection, with fail-fast options for every command.
    pub(super) cmd: WithOptions<Client>,
    pub(super) client: Client,
    pub(super) subscriber: SubscriberClient,
    /// Connected to a Redis Cluster: a script may touch one slot only.
    pub(super) cluster: bool,
    pub(super) names: Names,
    /// [`RedisStoreBuilder::guest_capacity`](super::RedisStoreBuilder::guest_capacity): the
    /// budget of the legacy guest set; each guest bucket has its share
    /// ([`Names::per_guest_bucket`]).
    pub(super) guest_capacity: u64,
    pub(super) scripts: Scripts,
    pub(super) near: NearCache,
    /// The main connection is up (cleared by its error events, set by its reconnections).
    pub(super) main_up: AtomicBool,
    /// Woken (all waiters) when the main connection is lost: commands pending on it fail
    /// at once instead of waiting in fred's queue for a reconnection until they time out.
    pub(super) lost: Notify,
    /// On a cluster: a command failed on its connection, so fred's map of the slots may be
    /// stale (a replica took over): the watcher resyncs it (`CLUSTER SLOTS`), at most once
    /// per probe delay.
    pub(super) resync: AtomicBool,
    /// The subscriber is connected and subscribed since its latest connection.
    pub(super) sub_ready: AtomicBool,
    /// fred's connection tasks and the watcher, aborted when the store is dropped.
    pub(super) tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for StoreShared {
    fn drop(&mut self) {
        abort_all(&self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

pub(super) fn abort_all(tasks: &[AbortHandle]) {
    for t in tasks {
        t.abort();
    }
}

impl StoreShared {
    /// Both connections are up and the invalidation channel is subscribed: the near-cache
    /// can be trusted.
    pub(super) fn coherent(&self) -> bool {
        self.main_up.load(Ordering::SeqCst)
            && self.sub_ready.load(Ordering::SeqCst)
            && self.client.is_connected()
            && self.subscriber.is_connected()
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

    /// Sends one command on the main connection: fails at once while the connection is known
    /// to be down ([`ensure_up`](Self::ensure_up)) and as soon as it is lost while the
    /// command is pending (fred would keep the command queued through its reconnection
    /// delay, so that it waited for the whole command timeout). For a `write`, an error
    /// after sending (timeout, lost connection) is [`RedisStoreError::OutcomeUnknown`].
    pub(super) async fn send<T>(
        &self,
        command: impl Future<Output = Result<T, FredError>>,
        write: bool,
    ) -> Result<T, RedisStoreError> {
        let lost = self.lost.notified();
        tokio::pin!(lost);
        // Registered before the check, so that a loss right after it still wakes us.
        lost.as_mut().enable();
        self.ensure_up()?;
        let lost = async {
            if self.cluster {
                // One node lost: the others' commands are unaffected (see `ensure_up`).
                std::future::pending::<()>().await;
            } else {
                lost.await;
            }
        };
        tokio::select! {
            biased;
            result = command => result.map_err(|e| {
                if self.cluster {
                    self.resync.store(true, Ordering::SeqCst);
                }
                if write { RedisStoreError::from_write(e) } else { e.into() }
            }),
            () = lost => {
                let e = "the connection to Redis was lost while the command was pending";
                Err(if write {
                    RedisStoreError::OutcomeUnknown(e.into())
                } else {
                    RedisStoreError::Redis(e.into())
                })
            }
        }
    }

    /// Fails at once while the main connection is known to be down. fred itself only fails
    /// fast once its first reconnection attempt has begun; before that (its first backoff
    /// delay) a command would wait for the timeout instead.
    ///
    /// Not on a cluster: there one node's loss must not stop the commands to the others
    /// (fred fails fast per node, and reroutes once a replica has taken over), so the flag
    /// only keeps the near-cache out of use.
    fn ensure_up(&self) -> Result<(), RedisStoreError> {
        if self.cluster || self.main_up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(RedisStoreError::Redis(
                "the connection to Redis is down (reconnecting)".into(),
            ))
        }
    }
}
