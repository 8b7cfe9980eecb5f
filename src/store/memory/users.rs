//! A user's sessions: listing them from the per-user index, and logins under a session limit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::compact::now_ns;
use super::key_hasher::{prefix, BuildKeyHasher};
use super::shard::{lock, read_shard};
use super::state::StoreState;
use crate::id::SessionKey;
use crate::record::SessionRecord;
use crate::store::{LimitPolicy, LoginOutcome, SessionLimit, StoreError, WriteOutcome};

/// Oldest first (by creation, then key), at most `n`: O(len) to select, then a sort of `n`.
pub(super) fn oldest_first(
    mut sessions: Vec<(u64, SessionKey)>,
    n: usize,
) -> Vec<(u64, SessionKey)> {
    if n < sessions.len() {
        sessions.select_nth_unstable(n);
        sessions.truncate(n);
    }
    sessions.sort_unstable();
    sessions
}

impl StoreState {
    /// The user's live sessions (creation time, key), in no order: O(the user's index).
    /// Index entries whose session is gone (ended, expired, or never the user's) are pruned.
    pub(super) fn live_sessions_of(&self, user_id: &str) -> Vec<(u64, SessionKey)> {
        let prefixes = {
            let (index, h) = self.lock_user_index(user_id);
            index.get(h)
        };
        let now = now_ns();
        let mut live = Vec::with_capacity(prefixes.len());
        let mut gone = HashSet::<u64, BuildKeyHasher>::default();
        for p in prefixes {
            let shard = read_shard(self.shard(p));
            match shard.map.get(&p) {
                Some(b) if b.is_session() => match b.user_id() {
                    Some(u) if u == user_id && b.expires_at() > now => {
                        live.push((b.created_at(), b.key(p)));
                    }
                    Some(u) if u == user_id => {
                        gone.insert(p);
                    }
                    // Another user whose hash collides with this one's: theirs to prune.
                    Some(_) => {}
                    None => {
                        gone.insert(p);
                    }
                },
                _ => {
                    gone.insert(p);
                }
            }
        }
        if !gone.is_empty() {
            // Only what was seen gone: a session added meanwhile stays indexed.
            let (mut index, h) = self.lock_user_index(user_id);
            index.remove_all(h, &gone);
        }
        live
    }

    /// Decodes the session under `key` if it is still the user's and live.
    pub(super) fn decode_user_session(
        &self,
        key: SessionKey,
        user_id: &str,
    ) -> Option<Arc<SessionRecord>> {
        let p = prefix(&key);
        let shard = read_shard(self.shard(p));
        let blob = shard.map.get(&p).filter(|b| {
            b.is_session()
                && b.is_for(&key)
                && b.expires_at() > now_ns()
                && b.user_id() == Some(user_id)
        })?;
        blob.decode().map(Arc::new)
    }

    /// `login`: serialised, so that the session limit holds under concurrent logins.
    pub(super) fn login_now(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, StoreError> {
        let _serial = lock(&self.login_lock);
        // The session being logged in does not count against its own user. Without a limit
        // there is nothing to count, so a login costs no scan of the user's sessions.
        let others: Vec<_> = match (limit, &record.identity) {
            (Some(_), Some(identity)) => {
                let old = old.map(|(o, _)| o);
                let mut live = self.live_sessions_of(&identity.user_id);
                live.retain(|(_, k)| Some(*k) != old);
                live
            }
            _ => Vec::new(),
        };
        if let Some(SessionLimit {
            max,
            policy: LimitPolicy::RejectNew,
        }) = limit
        {
            if others.len() >= max {
                return Ok(LoginOutcome::LimitReached);
            }
        }
        let written = match old {
            Some((old, expected)) => self.rotate_now(old, expected, new, record, ttl),
            None => self.create_now(new, record, ttl)?,
        };
        if written == WriteOutcome::Conflict {
            return Ok(LoginOutcome::Conflict);
        }
        let mut evicted = Vec::new();
        if let Some(SessionLimit {
            max,
            policy: LimitPolicy::EvictOldest,
        }) = limit
        {
            // Keep room for the new session: the oldest of the others go.
            let excess = (others.len() + 1).saturating_sub(max.max(1));
            for (_, key) in oldest_first(others, excess) {
                if self.delete_now(key) {
                    evicted.push(key);
                }
            }
        }
        Ok(LoginOutcome::Applied { evicted })
    }
}
