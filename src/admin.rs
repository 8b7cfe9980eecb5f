//! Per-user session control: "my sessions", "log out my other devices", and an administrator
//! ending all of a user's sessions. Works on every store through its per-user index.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::Env;
use crate::events::SessionEvent;
use crate::id::{Fingerprint, SessionKey};
use crate::store::{DynStore, StoreError};

/// One live session of a user, as a session list shows it. It names the session by
/// fingerprint only, so a list can be shown to the user or an administrator without leaking
/// anything replayable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session's fingerprint (what `revoke` takes).
    pub id: Fingerprint,
    /// When the session began (its login).
    pub created_at: SystemTime,
    /// The last recorded activity.
    pub last_seen: SystemTime,
    /// The address it is pinned to.
    pub ip: Option<IpAddr>,
    /// The `User-Agent` at login.
    pub user_agent: Option<String>,
    /// Whether this is the session of the request asking.
    pub current: bool,
    /// Whether the session is bound to a device key (DBSC, feature `dbsc`).
    pub device_bound: bool,
}

/// The user's live sessions, oldest first; expired ones are left out.
pub(crate) async fn list(
    store: &dyn DynStore,
    env: &Env,
    user_id: &str,
    current: Option<SessionKey>,
) -> Result<Vec<(SessionKey, SessionInfo)>, StoreError> {
    let now = env.now();
    let mut out: Vec<_> = store
        .user_sessions(user_id, env.config.list_limit())
        .await?
        .into_iter()
        .filter(|(_, r)| env.config.expiry(r, now).is_none())
        .map(|(key, r)| {
            let info = SessionInfo {
                id: key.fingerprint(),
                created_at: r.created_at,
                last_seen: r.last_seen,
                ip: r.pinned_ip,
                user_agent: r.user_agent.clone(),
                current: Some(key) == current,
                device_bound: r.device.as_ref().is_some_and(|d| d.is_bound()),
            };
            (key, info)
        })
        .collect();
    out.sort_by_key(|(_, i)| i.created_at);
    Ok(out)
}

/// Rounds of "list, then delete" in [`revoke`]: a list is capped at the per-user limit, so a
/// user who somehow holds more (logins racing the limit on a store without it) needs another
/// round. Bounded, so a revocation never loops.
const REVOKE_ROUNDS: usize = 8;

/// Ends the user's sessions that `which` selects; returns how many were live. A session
/// that rotates between the list and the delete is still ended: the store's delete follows
/// the rotation (see [`SessionStore`](crate::store::SessionStore)).
pub(crate) async fn revoke(
    store: &dyn DynStore,
    env: &Env,
    user_id: &str,
    which: impl Fn(&SessionInfo) -> bool,
    reason: &'static str,
) -> Result<usize, StoreError> {
    let mut count = 0;
    for _ in 0..REVOKE_ROUNDS {
        let listed = list(store, env, user_id, None).await?;
        let full = listed.len() >= env.config.list_limit();
        let mut ended = 0;
        for (key, info) in listed {
            if which(&info) && store.delete(key).await? {
                ended += 1;
                env.emit(SessionEvent::Revoked {
                    session: info.id,
                    user_id: user_id.to_owned(),
                    reason,
                });
            }
        }
        count += ended;
        // Only a full list can hide more sessions; a round that ended none cannot progress.
        if !full || ended == 0 {
            break;
        }
    }
    Ok(count)
}
