//! The expiry clean-up: one task per store that deletes rows past their deadline in bounded
//! batches, off the request path. Reads and writes already treat such rows as absent, so
//! the clean-up only returns their space; instances that share a schema all run it, and
//! `SKIP LOCKED` keeps them from waiting on each other or on requests.

use std::sync::Weak;
use std::time::Duration;

use super::shared::StoreShared;
use super::PostgresStoreError;

/// At most this many batches per round, so that one round's work stays bounded too.
pub(super) const MAX_BATCHES: u32 = 10;

/// Runs a clean-up round every `every` until the store is dropped.
pub(super) async fn sweep(store: Weak<StoreShared>, every: Duration, batch: i64) {
    let start = tokio::time::Instant::now() + every;
    let mut tick = tokio::time::interval_at(start, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = store.upgrade() else { return };
        if let Err(e) = s.sweep_round(batch).await {
            tracing::debug!(error = %e, "session store: expiry clean-up failed; retried next round");
        }
    }
}

impl StoreShared {
    /// Deletes up to [`MAX_BATCHES`] × `batch` expired rows; returns how many it deleted.
    pub(super) async fn sweep_round(&self, batch: i64) -> Result<u64, PostgresStoreError> {
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            let n = self.sweep_batch(batch).await?;
            total += n;
            if i64::try_from(n).unwrap_or(i64::MAX) < batch {
                break;
            }
        }
        Ok(total)
    }
}
