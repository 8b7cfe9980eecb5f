//! What the store keeps for one session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

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
        }
    }

    /// When this record stops being valid: the earlier of the idle and absolute deadlines.
    /// A deadline that does not fit in a `SystemTime` (a corrupt record) is the record's own
    /// time, so such a record counts as expired rather than eternal.
    pub fn expires_at(&self, idle: Duration, absolute: Duration) -> SystemTime {
        let idle_end = self.last_seen.checked_add(idle).unwrap_or(self.last_seen);
        let absolute_end = self
            .created_at
            .checked_add(absolute)
            .unwrap_or(self.created_at);
        idle_end.min(absolute_end)
    }

    /// Why the record is expired at `now`, if it is. Checked arithmetic throughout: absurd
    /// times (from a corrupt or hostile store) expire the record instead of panicking.
    pub fn expiry(
        &self,
        now: SystemTime,
        idle: Duration,
        absolute: Duration,
    ) -> Option<ExpiryKind> {
        match self.created_at.checked_add(absolute) {
            Some(end) if now < end => {}
            _ => return Some(ExpiryKind::Absolute),
        }
        match self.last_seen.checked_add(idle) {
            Some(end) if now < end => None,
            _ => Some(ExpiryKind::Idle),
        }
    }
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
