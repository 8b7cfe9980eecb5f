//! The listener: one task per store that keeps a dedicated connection `LISTEN`ing on the
//! schema's channel, applies the other instances' notifications to the near-cache, and
//! clears and bypasses the near-cache whenever that connection is down (see "The
//! near-cache and its coherence" in the module docs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use super::shared::StoreShared;
use super::PostgresStoreError;
use crate::id::SessionKey;

/// How many notifications wait for the listener task before it counts as lagging (and
/// clears the near-cache).
const MESSAGE_BUFFER: usize = 4096;
/// How often the listener checks that its connection still answers: a server that stops
/// answering (a network partition, a paused host) closes no socket.
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long that check may take.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// The first pause between two reconnection attempts; it doubles up to the maximum.
const FIRST_DELAY: Duration = Duration::from_millis(50);

/// How the listener (re)connects.
#[derive(Clone)]
pub(super) struct ListenSettings {
    pub(super) config: tokio_postgres::Config,
    pub(super) channel: String,
    pub(super) connect_timeout: Duration,
    pub(super) max_delay: Duration,
}

/// A connection that listens: its client (for `LISTEN` and the pings), the task that drives
/// it and forwards notifications, and their queue.
pub(super) struct Listener {
    client: tokio_postgres::Client,
    notes: mpsc::Receiver<String>,
    /// Set when a notification could not be queued: something may be stale.
    lagged: Arc<AtomicBool>,
    driver: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connects and `LISTEN`s, within the connect timeout.
pub(super) async fn connect(settings: &ListenSettings) -> Result<Listener, PostgresStoreError> {
    let work = async {
        let (client, mut connection) = settings.config.connect(NoTls).await?;
        let (tx, notes) = mpsc::channel(MESSAGE_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        let lag = lagged.clone();
        let driver = tokio::spawn(async move {
            // Ends (dropping `tx`, which the listener sees) when the connection does.
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let AsyncMessage::Notification(n) = message {
                    if let Err(mpsc::error::TrySendError::Full(_)) =
                        tx.try_send(n.payload().to_owned())
                    {
                        lag.store(true, Ordering::SeqCst);
                    }
                }
            }
        });
        let listener = Listener {
            client,
            notes,
            lagged,
            driver,
        };
        // The channel is a checked identifier (names.rs): nothing to quote.
        listener
            .client
            .batch_execute(&format!("LISTEN {}", settings.channel))
            .await?;
        Ok(listener)
    };
    match tokio::time::timeout(settings.connect_timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(PostgresStoreError::Timeout(settings.connect_timeout)),
    }
}

/// Keeps a listener up until the store is dropped: serves `first`, then reconnects with
/// exponential backoff whenever the connection is lost. The near-cache is cleared and
/// bypassed from the moment the connection is known lost until a new one listens, and
/// cleared again once it does (notifications sent meanwhile are lost).
pub(super) async fn watch(store: Weak<StoreShared>, settings: ListenSettings, first: Listener) {
    let mut current = Some(first);
    let mut delay = FIRST_DELAY;
    loop {
        if let Some(listener) = current.take() {
            {
                let Some(s) = store.upgrade() else { return };
                s.near.clear();
                s.listening.store(true, Ordering::SeqCst);
            }
            delay = FIRST_DELAY;
            serve(&store, listener).await;
            let Some(s) = store.upgrade() else { return };
            s.listening.store(false, Ordering::SeqCst);
            s.near.clear();
            tracing::warn!(
                schema = s.names.schema(),
                "session store: the PostgreSQL notification connection was lost; the near-cache is bypassed until it is back"
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(settings.max_delay.max(FIRST_DELAY));
        if store.strong_count() == 0 {
            return;
        }
        current = connect(&settings).await.ok();
    }
}

/// Applies notifications until the connection ends or stops answering.
async fn serve(store: &Weak<StoreShared>, mut listener: Listener) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            biased;
            note = listener.notes.recv() => {
                let Some(note) = note else { return };
                let Some(s) = store.upgrade() else { return };
                if listener.lagged.swap(false, Ordering::SeqCst) {
                    s.near.clear();
                }
                s.apply(&note);
            }
            _ = ping.tick() => {
                let answered = tokio::time::timeout(
                    PING_TIMEOUT,
                    listener.client.simple_query("SELECT 1"),
                )
                .await;
                if !matches!(answered, Ok(Ok(_))) {
                    return;
                }
                let Some(s) = store.upgrade() else { return };
                if listener.lagged.swap(false, Ordering::SeqCst) {
                    s.near.clear();
                }
            }
        }
    }
}

impl StoreShared {
    /// Drops the entry a notification names, unless this store sent it; clears everything
    /// on a notification it cannot read.
    pub(super) fn apply(&self, payload: &str) {
        let Some((instance, hex)) = payload.split_once(':') else {
            return self.near.clear();
        };
        if instance == self.names.instance() {
            return; // our own write: already applied locally
        }
        match SessionKey::from_hex(hex.as_bytes()) {
            Some(key) => self.near.invalidate(&key),
            None => self.near.clear(),
        }
    }
}
