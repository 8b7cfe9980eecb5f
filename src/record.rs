//! What the store keeps for one session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Who is logged in: set by [`Session::login`](crate::Session::login).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The application's user id.
    pub user_id: String,
    /// Roles, for the post-authentication policy and the application.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Groups, for the post-authentication policy and the application.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Identity {
    /// An identity with no roles and no groups.
    pub fn new(user_id: impl Into<String>) -> Self {
        Identity {
            user_id: user_id.into(),
            roles: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// Adds roles.
    #[must_use]
    pub fn with_roles<I, R>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }

    /// Adds groups.
    #[must_use]
    pub fn with_groups<I, G>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: Into<String>,
    {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }
}

/// The logged-in [`Identity`] as [`Session::identity`](crate::Session::identity) hands it
/// out: a shared handle on the loaded record, so getting it, cloning it and reading it copy
/// nothing (an owned `Identity` would copy the user id and every role and group on each
/// request). It derefs to [`Identity`]; [`Identity::from`] makes an owned copy when one is
/// needed, and it serializes as the identity itself.
///
/// ```
/// # use tower_session_guard::{Identity, IdentityRef};
/// fn greet(who: &Identity) -> String {
///     format!("hello {}", who.user_id)
/// }
/// # fn use_it(id: IdentityRef) -> String {
/// greet(&id) // &IdentityRef derefs to &Identity
/// # }
/// ```
#[derive(Clone)]
pub struct IdentityRef(Arc<SessionRecord>);

impl IdentityRef {
    /// The identity of `record`, if it has one.
    pub(crate) fn of(record: Arc<SessionRecord>) -> Option<IdentityRef> {
        record.identity.is_some().then_some(IdentityRef(record))
    }
}

/// What an `IdentityRef` derefs to if its record had no identity, which [`IdentityRef::of`]
/// never lets happen; it keeps `deref` free of a panic path.
static NO_IDENTITY: Identity = Identity {
    user_id: String::new(),
    roles: Vec::new(),
    groups: Vec::new(),
};

impl std::ops::Deref for IdentityRef {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        self.0.identity.as_ref().unwrap_or(&NO_IDENTITY)
    }
}

impl AsRef<Identity> for IdentityRef {
    fn as_ref(&self) -> &Identity {
        self
    }
}

impl std::fmt::Debug for IdentityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Identity::fmt(self, f)
    }
}

impl PartialEq for IdentityRef {
    fn eq(&self, other: &IdentityRef) -> bool {
        **self == **other
    }
}

impl Eq for IdentityRef {}

impl PartialEq<Identity> for IdentityRef {
    fn eq(&self, other: &Identity) -> bool {
        **self == *other
    }
}

impl From<IdentityRef> for Identity {
    fn from(id: IdentityRef) -> Identity {
        Identity::clone(&id)
    }
}

impl Serialize for IdentityRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Identity::serialize(self, serializer)
    }
}

/// One session as the store holds it. The store never sees the token, only its key.
///
/// `version` starts at 1 and goes up by one on every write; stores use it for
/// compare-and-set so that no stale writer can overwrite a newer record or bring back a
/// deleted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionRecord {
    /// Incremented on every write; the compare-and-set guard.
    pub version: u64,
    /// When this session (this ID lineage) began. Login starts a new lineage.
    pub created_at: SystemTime,
    /// The last recorded activity (writes, and throttled touches on reads).
    pub last_seen: SystemTime,
    /// When the user logged in, if they did.
    pub authenticated_at: Option<SystemTime>,
    /// The logged-in user, if any. `None` is a guest session.
    pub identity: Option<Identity>,
    /// The client address captured at login: the IP pin.
    #[serde(default)]
    pub pinned_ip: Option<IpAddr>,
    /// The `User-Agent` at login (truncated), for "my sessions" lists.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Application data, as JSON values keyed by name.
    pub data: HashMap<String, serde_json::Value>,
    /// The lifetime this login asked to be remembered for
    /// ([`LoginOptions::remember_me`](crate::LoginOptions::remember_me)); `None` for a
    /// session that ends with the browser. The layer caps it by its current
    /// `max_remember_me` when it computes the deadlines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remember_me: Option<Duration>,
    /// The device binding (DBSC, feature `dbsc`): pending after login, bound once the
    /// browser registered its key. `None` for sessions that never offered binding. Boxed: it
    /// is large, and most records (and every record in a hot cache) have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Box<BoundDevice>>,
}

/// A session's Device Bound Session Credentials state, kept in its record so that every
/// store and every instance sees it. Written only by the layer (feature `dbsc`); plain data
/// here so that records decode the same with and without the feature.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BoundDevice {
    /// The DBSC session identifier the browser names in `Sec-Secure-Session-Id`: random,
    /// never derived from the token.
    pub session_id: String,
    /// The registered public key as a JWK (JSON text, only the key's public members); `None`
    /// while registration is pending.
    #[serde(default)]
    pub key: Option<String>,
    /// The algorithm the key signs with (`ES256` or `RS256`).
    #[serde(default)]
    pub alg: Option<String>,
    /// The pending challenge (single use: consumed by the compare-and-set that accepts it).
    #[serde(default)]
    pub challenge: Option<String>,
    /// When the pending challenge stops being accepted.
    #[serde(default)]
    pub challenge_expires: Option<SystemTime>,
    /// SHA-256 of the current bound cookie's value (hex); the value itself is never stored.
    #[serde(default)]
    pub cookie_hash: Option<String>,
    /// When the current bound cookie stops being accepted (the layer's clock).
    #[serde(default)]
    pub cookie_expires: Option<SystemTime>,
    /// When the key was registered (the layer's clock).
    #[serde(default)]
    pub bound_at: Option<SystemTime>,
}

impl BoundDevice {
    /// Whether a key is registered: every request then needs the bound cookie.
    pub fn is_bound(&self) -> bool {
        self.key.is_some()
    }
}

impl SessionRecord {
    /// A fresh record at `now`, version 1.
    pub fn new(now: SystemTime) -> Self {
        SessionRecord {
            version: 1,
            created_at: now,
            last_seen: now,
            authenticated_at: None,
            identity: None,
            pinned_ip: None,
            user_agent: None,
            data: HashMap::new(),
            remember_me: None,
            device: None,
        }
    }

    /// When this record stops being valid: the earlier of the idle and absolute deadlines.
    ///
    /// A deadline past what `SystemTime` can represent (a timestamp no clock of this crate
    /// writes, so a damaged or forged record from a shared store) counts as the epoch: such a
    /// record is expired, never a reason to panic.
    pub fn expires_at(&self, idle: Duration, absolute: Duration) -> SystemTime {
        deadline(self.last_seen, idle).min(deadline(self.created_at, absolute))
    }

    /// Why the record is expired at `now`, if it is.
    pub fn expiry(
        &self,
        now: SystemTime,
        idle: Duration,
        absolute: Duration,
    ) -> Option<ExpiryKind> {
        if now >= deadline(self.created_at, absolute) {
            Some(ExpiryKind::Absolute)
        } else if now >= deadline(self.last_seen, idle) {
            Some(ExpiryKind::Idle)
        } else {
            None
        }
    }
}

/// `start + lifetime`, or the epoch (already past) if that is beyond `SystemTime`'s range: a
/// record with such a timestamp is treated as expired (see [`SessionRecord::expires_at`]).
fn deadline(start: SystemTime, lifetime: Duration) -> SystemTime {
    start.checked_add(lifetime).unwrap_or(UNIX_EPOCH)
}

/// Which lifetime ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryKind {
    /// No activity for longer than the idle timeout.
    Idle,
    /// Older than the absolute lifetime.
    Absolute,
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(30 * 60);
    const ABSOLUTE: Duration = Duration::from_secs(8 * 3600);

    /// A record from the Redis store whose `created_at` was near the end of `SystemTime`'s
    /// range (`secs_since_epoch` 0x7fff_ffff_ffff_fff0, fuzz/seeds/redis_decode/
    /// far-future-created) decoded fine and then panicked the layer's expiry check with
    /// "overflow when adding duration to `SystemTime`".
    #[test]
    fn unrepresentable_deadlines_are_expired_not_a_panic() {
        let now = SystemTime::now();
        let far = UNIX_EPOCH
            .checked_add(Duration::from_secs(0x7fff_ffff_ffff_fff0))
            .expect("64-bit seconds since the epoch");
        let mut r = SessionRecord::new(far);
        assert_eq!(r.expiry(now, IDLE, ABSOLUTE), Some(ExpiryKind::Absolute));
        assert_eq!(r.expires_at(IDLE, ABSOLUTE), UNIX_EPOCH);
        r.created_at = now;
        assert_eq!(r.expiry(now, IDLE, ABSOLUTE), Some(ExpiryKind::Idle));
        assert_eq!(r.expires_at(IDLE, ABSOLUTE), UNIX_EPOCH);
    }

    #[test]
    fn deadlines_are_the_earlier_lifetime() {
        let now = SystemTime::now();
        let mut r = SessionRecord::new(now);
        assert_eq!(r.expiry(now, IDLE, ABSOLUTE), None);
        assert_eq!(r.expires_at(IDLE, ABSOLUTE), now + IDLE);
        r.last_seen = now + ABSOLUTE;
        assert_eq!(r.expires_at(IDLE, ABSOLUTE), now + ABSOLUTE);
        assert_eq!(
            r.expiry(now + ABSOLUTE, IDLE, ABSOLUTE),
            Some(ExpiryKind::Absolute)
        );
        assert_eq!(r.expiry(now + IDLE, IDLE, ABSOLUTE), None);
    }
}
