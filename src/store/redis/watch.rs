//! The watcher: one task per store that applies fred's connection events and the other
//! instances' invalidation messages to the near-cache and the connection flags (see "The
//! near-cache and its coherence" in the module docs).

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, ClusterInterface, EventInterface, PubsubInterface};
use fred::types::config::Server;
use fred::types::Value;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;

use super::shared::StoreShared;
use super::RedisStoreError;

/// How long a (re)subscription may take before it is retried.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the watcher re-checks its connection flags against fred's state.
const WATCH_TICK: Duration = Duration::from_secs(1);
/// The pause between two failed (re)subscriptions.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(100);
/// While the main connection is down, how often the watcher probes it with a `PING`.
const PROBE_DELAY: Duration = Duration::from_millis(100);

pub(super) async fn subscribe(
    subscriber: &SubscriberClient,
    channel: &str,
) -> Result<(), RedisStoreError> {
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscriber.subscribe(channel)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RedisStoreError::Redis("SUBSCRIBE timed out".into())),
    }
}

/// The event streams of both connections and the invalidation messages.
pub(super) struct Events {
    main_errors: Receiver<(FredError, Option<Server>)>,
    main_reconnects: Receiver<Server>,
    sub_errors: Receiver<(FredError, Option<Server>)>,
    sub_reconnects: Receiver<Server>,
    messages: Receiver<fred::types::Message>,
}

impl Events {
    /// Listens to both connections; call it before connecting them, so that no event of the
    /// first connections is missed.
    pub(super) fn listen(client: &Client, subscriber: &SubscriberClient) -> Self {
        Events {
            main_errors: client.error_rx(),
            main_reconnects: client.reconnect_rx(),
            sub_errors: subscriber.error_rx(),
            sub_reconnects: subscriber.reconnect_rx(),
            messages: subscriber.message_rx(),
        }
    }

    /// Discards the connection events so far; answers whether any of them was an error.
    ///
    /// Once the first connections are in place, their events only cost a needless clear
    /// and resubscription. An error among them, though, means a connection dropped
    /// meanwhile: then the watcher must start from "not ready".
    pub(super) fn discard_pending(&mut self) -> bool {
        let disturbed = drain(&mut self.main_errors) + drain(&mut self.sub_errors) > 0;
        drain(&mut self.main_reconnects);
        drain(&mut self.sub_reconnects);
        disturbed
    }
}

/// Discards the pending events of `rx`; returns how many there were.
fn drain<T: Clone>(rx: &mut Receiver<T>) -> usize {
    let mut n = 0;
    loop {
        match rx.try_recv() {
            Ok(_) => n += 1,
            Err(TryRecvError::Lagged(missed)) => {
                n += usize::try_from(missed).unwrap_or(usize::MAX);
            }
            Err(_) => return n,
        }
    }
}

/// Applies connection events and invalidation messages to the near-cache until the store is
/// dropped (or fred closes the streams).
///
/// Error events are handled before reconnection events (`biased`). The main connection is
/// marked up again only by a `PING` that Redis answered (the probe), never by fred's own
/// state: after a `kill -9` fred keeps reporting `Connected` until a command finds the
/// connection dead (it reconnects only when a command fails), so trusting
/// `is_connected()` let every request of the next round wait out the whole command timeout
/// on a dead socket (issue 13: about 50 requests on one instance waited 300 ms each; the
/// test `after_a_kill_every_request_fails_at_once_and_recovers` in `tests/redis_faults.rs`).
/// While the connection is down, requests fail at once and the probe alone, every
/// [`PROBE_DELAY`], pays for finding out (and its `PING` is what makes fred reconnect).
pub(super) async fn watch(store: Weak<StoreShared>, mut ev: Events, mut resubscribe: bool) {
    // `resubscribe` is set while the subscriber is connected but not (yet) subscribed again.
    let mut tick = tokio::time::interval(WATCH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The `PING` in flight while the main connection is marked down, if any.
    let mut probe: Option<Probe> = None;
    // A resync was asked for while a probe was in flight: probe again after it.
    let mut resync_pending = false;
    loop {
        let retry = async {
            if resubscribe {
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        // Down, or (on a cluster) a command failed since the last probe: probe (and resync
        // the cluster's slot map) after a pause.
        let down = store.upgrade().is_some_and(|s| {
            !s.main_up.load(Ordering::SeqCst) || s.resync.swap(false, Ordering::SeqCst)
        }) || resync_pending;
        resync_pending = down && probe.is_some();
        let idle = probe.is_none();
        let next_probe = async move {
            if down && idle {
                tokio::time::sleep(PROBE_DELAY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let probed = async {
            match probe.as_mut() {
                Some(p) => p.await,
                None => std::future::pending::<bool>().await,
            }
        };
        tokio::select! {
            biased;
            e = ev.main_errors.recv() => {
                if matches!(e, Err(RecvError::Closed)) { return; }
                let Some(s) = store.upgrade() else { return };
                s.main_up.store(false, Ordering::SeqCst);
                s.lost.notify_waiters();
                s.near.clear();
            }
            e = ev.sub_errors.recv() => {
                if matches!(e, Err(RecvError::Closed)) { return; }
                let Some(s) = store.upgrade() else { return };
                s.sub_ready.store(false, Ordering::SeqCst);
                s.near.clear();
            }
            e = ev.main_reconnects.recv() => {
                if matches!(e, Err(RecvError::Closed)) { return; }
                let Some(s) = store.upgrade() else { return };
                // fred announces a reconnection before it has replayed its buffer and
                // marked itself connected: up once a PING has been answered.
                s.near.clear();
                probe = Some(start_probe(&s));
            }
            ok = probed => {
                probe = None;
                if ok {
                    let Some(s) = store.upgrade() else { return };
                    s.near.clear();
                    s.main_up.store(true, Ordering::SeqCst);
                }
            }
            () = next_probe => {
                let Some(s) = store.upgrade() else { return };
                probe = Some(start_probe(&s));
            }
            e = ev.sub_reconnects.recv() => {
                if matches!(e, Err(RecvError::Closed)) { return; }
                let Some(s) = store.upgrade() else { return };
                s.sub_ready.store(false, Ordering::SeqCst);
                s.near.clear();
                resubscribe = true;
            }
            m = ev.messages.recv() => {
                let Some(s) = store.upgrade() else { return };
                match m {
                    Ok(message) => s.apply(&message),
                    // Messages were dropped: anything may be stale.
                    Err(RecvError::Lagged(_)) => s.near.clear(),
                    Err(RecvError::Closed) => return,
                }
            }
            () = retry => {}
            _ = tick.tick() => {
                let Some(s) = store.upgrade() else { return };
                // An event lost or handled out of order must not leave a flag wrong for good
                // (the main connection's flag is the probe's business: see above).
                if !s.sub_ready.load(Ordering::SeqCst) && s.subscriber.is_connected() {
                    resubscribe = true;
                }
            }
        }
        if resubscribe {
            let Some(s) = store.upgrade() else { return };
            if subscribe(&s.subscriber, s.names.channel()).await.is_ok() {
                // Messages published while unsubscribed are lost: start from empty.
                s.near.clear();
                s.sub_ready.store(true, Ordering::SeqCst);
                resubscribe = false;
            }
        }
    }
}

/// A `PING` on the main connection: whether Redis answered it.
type Probe = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// On a cluster the probe first refreshes fred's map of the slots (`CLUSTER SLOTS`): after
/// a failover, fred would otherwise keep sending a lost primary's slots to the dead node.
/// Until a replica has taken over the refresh fails, and the probe is retried.
fn start_probe(s: &StoreShared) -> Probe {
    let (cmd, client, cluster) = (s.cmd.clone(), s.client.clone(), s.cluster);
    Box::pin(async move {
        if cluster {
            let synced = tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.sync_cluster()).await;
            if !matches!(synced, Ok(Ok(()))) {
                return false;
            }
        }
        cmd.ping::<Value>(None).await.is_ok()
    })
}

impl StoreShared {
    /// Drops the entry an invalidation message names, unless this store sent it; clears
    /// everything on a message it cannot read.
    fn apply(&self, message: &fred::types::Message) {
        if *message.channel != *self.names.channel() {
            return;
        }
        let Some(text) = message.value.as_bytes() else {
            return self.near.clear();
        };
        let Some(colon) = text.iter().position(|b| *b == b':') else {
            return self.near.clear();
        };
        let (instance, hex) = (&text[..colon], &text[colon + 1..]);
        if instance == self.names.instance().as_bytes() {
            return; // our own write: already applied locally
        }
        // The record key's full name (its base carries the routing tag). Anything else, such
        // as the bare hex an older version sends, clears everything: safe either way.
        match self.names.key_of(hex) {
            Ok(key) => self.near.invalidate(&key),
            Err(_) => self.near.clear(),
        }
    }
}
