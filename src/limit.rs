//! The per-user session limit, shared by the settings and the store contract.

/// A cap on how many live sessions one user may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimit {
    /// The most live authenticated sessions per user (at least 1).
    pub max: usize,
    /// What happens at a login beyond it.
    pub policy: LimitPolicy,
}

/// What a login beyond the per-user limit ([`SessionGuardBuilder::max_sessions_per_user`](crate::SessionGuardBuilder::max_sessions_per_user)) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitPolicy {
    /// The login succeeds and the user's oldest sessions (by creation) are ended (the default:
    /// a user who lost a device can always log in again).
    #[default]
    EvictOldest,
    /// The login fails with [`SessionError::TooManySessions`](crate::SessionError::TooManySessions)
    /// and nothing changes.
    RejectNew,
}
