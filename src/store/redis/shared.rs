//! [`StoreShared`]: the connections, names, scripts, near-cache and connection flags that
//! every clone of a [`RedisStore`](super::RedisStore) shares, and that the watcher task
//! updates (through a weak reference, so that dropping the last clone ends it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use fred::clients::{Client, SubscriberClient, WithOptions};
use fred::interfaces::ClientLike;
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
    pub(super) names: Names,
    /// [`RedisStoreBuilder::guest_capacity`](super::RedisStoreBuilder::guest_capacity).
    pub(super) guest_capacity: u64,
    pub(super) scripts: Scripts,
    pub(super) near: NearCache,
    /// The main connection is up (cleared by its error events, set by its reconnections).
    pub(super) main_up: AtomicBool,
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

    /// Fails at once while the main connection is known to be down. fred itself only fails
    /// fast once its first reconnection attempt has begun; before that (its first backoff
    /// delay) a command would wait for the timeout instead.
    pub(super) fn ensure_up(&self) -> Result<(), RedisStoreError> {
        if self.main_up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(RedisStoreError::Redis(
                "the connection to Redis is down (reconnecting)".into(),
            ))
        }
    }
}
