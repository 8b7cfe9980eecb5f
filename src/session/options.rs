//! [`LoginOptions`]: what a login may ask for besides the identity.

use std::time::Duration;

/// Options of one login, for [`Session::login_with`](crate::Session::login_with).
/// `LoginOptions::default()` is what [`Session::login`](crate::Session::login) does.
///
/// ```
/// use std::time::Duration;
/// use tower_session_guard::LoginOptions;
///
/// // "Keep me signed in on this device for two weeks."
/// let options = LoginOptions::new().remember_me(Duration::from_secs(14 * 24 * 3600));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct LoginOptions {
    pub(crate) remember_me: Option<Duration>,
}

impl LoginOptions {
    /// The options of a plain login: a session cookie (unless the layer's cookie is
    /// persistent) with the layer's idle timeout and absolute lifetime.
    pub fn new() -> Self {
        LoginOptions::default()
    }

    /// Remembers this login on this device for `lifetime`: the session gets its own absolute
    /// lifetime (capped by the layer's
    /// [`max_remember_me`](crate::SessionGuardBuilder::max_remember_me), 30 days by default),
    /// the longer idle timeout of remembered sessions
    /// ([`remember_me_idle_timeout`](crate::SessionGuardBuilder::remember_me_idle_timeout),
    /// 7 days by default), and a persistent cookie whose `Max-Age` is what is left of that
    /// lifetime, so it survives the browser being closed. Only this login: the user's other
    /// sessions and later logins keep the layer's settings.
    ///
    /// Everything else holds as for any session: the ID still rotates, the pin, the allowed
    /// ranges and the policy still apply, and logout or revocation ends it at once. A zero
    /// `lifetime` asks for nothing (a plain login).
    pub fn remember_me(mut self, lifetime: Duration) -> Self {
        self.remember_me = (!lifetime.is_zero()).then_some(lifetime);
        self
    }
}
