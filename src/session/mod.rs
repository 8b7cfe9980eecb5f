//! The [`Session`] handle that handlers use.
//!
//! Reads are synchronous: the layer has already loaded (and checked) the record before the
//! handler runs. Writes are asynchronous and go to the store at once, as compare-and-set on
//! the record's version with a bounded retry on conflict, so:
//!
//! * concurrent [`update`](Session::update)s on one session never lose an increment;
//! * concurrent writes to different keys both survive (each retry re-applies its own change
//!   to the freshest record);
//! * a write from a request that loaded the session before another request logged it out
//!   fails with [`SessionError::Ended`] instead of bringing the session back.
//!
//! [`login`](Session::login) and [`rotate`](Session::rotate) move the session to a fresh ID
//! before the handler returns, so the old ID is dead by the time the response leaves; the
//! layer puts the new ID in the response's `Set-Cookie`.

mod devices;
mod error;
mod login;
mod options;
mod write;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;

use crate::client_ip::ClientAddr;
use crate::config::Env;
use crate::core::DynCore;
use crate::id::{Fingerprint, SessionKey, SessionToken};
use crate::record::{IdentityRef, SessionRecord};
use crate::store::DynStore;

pub use error::SessionError;
pub use options::LoginOptions;
pub use write::MAX_VALUE_DEPTH;

/// A session as loaded from the store (and checked by the layer): its key and record.
#[derive(Clone)]
pub(crate) struct Loaded {
    pub(crate) key: SessionKey,
    pub(crate) record: Arc<SessionRecord>,
}

/// What this request has done to its session so far.
#[derive(Default)]
struct State {
    current: Option<Loaded>,
    /// A token created or rotated during this request: goes out in `Set-Cookie`.
    issued: Option<SessionToken>,
    /// The session was ended by `logout` during this request: send the removal cookie.
    ended: bool,
    /// The handler wrote, so the activity is already recorded.
    wrote: bool,
}

/// What the request did to its session, as the layer's commit step needs it.
pub(crate) enum Outcome {
    /// Nothing to send or write.
    Unchanged,
    /// The session moved to a new ID (created, logged in or rotated): hand out `token`.
    Issued {
        token: SessionToken,
        record: Arc<SessionRecord>,
    },
    /// The request ended the session: tell the client to drop its token.
    Ended,
    /// Nothing was written and the activity touch is due: record activity on this session.
    TouchDue(Loaded),
}

struct Shared {
    /// The layer's store, policy and environment (one reference count for all).
    core: Arc<dyn DynCore>,
    state: Mutex<State>,
    /// This request's client address (resolved by the layer), pinned at login.
    client: ClientAddr,
    /// This request's method and URI, for the policy check at login.
    method: http::Method,
    uri: http::Uri,
    /// This request's `User-Agent`, recorded at login for session lists.
    user_agent: Option<http::HeaderValue>,
    /// Serialises this request's own writes (e.g. two joined futures), so that a lazy guest
    /// session is created once and a rotation is not raced by a write from the same request.
    writes: tokio::sync::Mutex<()>,
    /// Set after this request wrote, was issued a token or ended the session. The layer's
    /// commit step reads `state` only then (or when an activity touch is due), so a plain
    /// read costs it no lock.
    changed: AtomicBool,
}

/// The current request's session. Cheap to clone; clones share state.
///
/// Get it from the request extensions, or with the axum extractor (feature `axum`).
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("session", &self.fingerprint())
            .field("authenticated", &self.is_authenticated())
            .finish()
    }
}

impl Session {
    pub(crate) fn new(
        core: Arc<dyn DynCore>,
        current: Option<Loaded>,
        client: ClientAddr,
        request: (&http::Method, &http::Uri, Option<http::HeaderValue>),
    ) -> Self {
        let (method, uri, user_agent) = request;
        Session {
            shared: Arc::new(Shared {
                core,
                client,
                method: method.clone(),
                uri: uri.clone(),
                user_agent,
                state: Mutex::new(State {
                    current,
                    ..State::default()
                }),
                writes: tokio::sync::Mutex::new(()),
                changed: AtomicBool::new(false),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State half-written (every update is a
        // single assignment), so a poisoned lock is still consistent.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The layer's core, for the layer's commit step.
    pub(crate) fn core(&self) -> &Arc<dyn DynCore> {
        &self.shared.core
    }

    fn env(&self) -> &Env {
        self.shared.core.env()
    }

    fn store(&self) -> &dyn DynStore {
        self.shared.core.store()
    }

    fn now(&self) -> SystemTime {
        self.env().now()
    }

    fn ttl(&self, record: &SessionRecord, now: SystemTime) -> Duration {
        self.env().config.store_ttl(record, now)
    }

    fn install(&self, key: SessionKey, record: Arc<SessionRecord>, issued: Option<SessionToken>) {
        let mut st = self.state();
        st.current = Some(Loaded { key, record });
        st.wrote = true;
        if issued.is_some() {
            st.issued = issued;
        }
        drop(st);
        self.shared.changed.store(true, Ordering::Release);
    }

    /// What the request did to its session, for the commit step, which calls this once,
    /// after the handler. `touch_due`: the loaded session's activity touch is due.
    #[inline]
    pub(crate) fn outcome(&self, touch_due: bool) -> Outcome {
        // The common case, a read between touches: nothing to do, and no lock taken.
        if !touch_due && !self.shared.changed.load(Ordering::Acquire) {
            return Outcome::Unchanged;
        }
        let mut st = self.state();
        let issued = st.issued.take();
        match (&st.current, issued) {
            (Some(live), Some(token)) => Outcome::Issued {
                token,
                record: live.record.clone(),
            },
            _ if st.ended => Outcome::Ended,
            // Without a write, `current` is still the record `touch_due` was computed from.
            (Some(live), None) if !st.wrote && touch_due => Outcome::TouchDue(live.clone()),
            _ => Outcome::Unchanged,
        }
    }

    // ----- reads -----

    /// Reads a value. `Ok(None)` if there is no session or no such value.
    ///
    /// # Errors
    ///
    /// [`SessionError::Value`] if the stored value does not deserialize into `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let Some(record) = self.record() else {
            return Ok(None);
        };
        record
            .data
            .get(key)
            .map(|v| {
                T::deserialize(v).map_err(|source| SessionError::Value {
                    key: key.to_owned(),
                    source,
                })
            })
            .transpose()
    }

    /// Whether a live session is attached to this request (guest or authenticated).
    pub fn exists(&self) -> bool {
        self.state().current.is_some()
    }

    /// The whole record as loaded (identity, times, pin, data), shared rather than copied:
    /// the cheapest way for a hot handler to read several fields.
    pub fn record(&self) -> Option<Arc<SessionRecord>> {
        self.state().current.as_ref().map(|l| l.record.clone())
    }

    /// The logged-in identity, if any: a shared handle on the loaded record (no copy; it
    /// derefs to [`Identity`](crate::Identity), and `Identity::from` makes an owned one).
    pub fn identity(&self) -> Option<IdentityRef> {
        self.record().and_then(IdentityRef::of)
    }

    /// Whether a user is logged in on this session.
    pub fn is_authenticated(&self) -> bool {
        self.record().is_some_and(|r| r.identity.is_some())
    }

    /// Whether this session is a remembered login
    /// ([`LoginOptions::remember_me`](crate::LoginOptions::remember_me)): an application may
    /// ask for a fresh login before sensitive actions on such a session.
    pub fn is_remembered(&self) -> bool {
        self.record()
            .is_some_and(|r| r.identity.is_some() && r.remember_me.is_some())
    }

    /// When this session began (login starts a new one).
    pub fn created_at(&self) -> Option<SystemTime> {
        self.record().map(|r| r.created_at)
    }

    /// The last recorded activity.
    pub fn last_seen(&self) -> Option<SystemTime> {
        self.record().map(|r| r.last_seen)
    }

    /// When the user logged in.
    pub fn authenticated_at(&self) -> Option<SystemTime> {
        self.record().and_then(|r| r.authenticated_at)
    }

    /// When the session will expire if there is no further activity: the earlier of the
    /// idle and absolute deadlines.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.record().map(|r| self.env().config.expires_at(&r))
    }

    /// When the absolute lifetime ends, whatever the activity.
    pub fn absolute_expiry(&self) -> Option<SystemTime> {
        self.record().map(|r| self.env().config.absolute_expiry(&r))
    }

    /// The address the session is pinned to (captured at login).
    pub fn pinned_ip(&self) -> Option<IpAddr> {
        self.record().and_then(|r| r.pinned_ip)
    }

    /// This request's client address, as the layer resolved it (`None` when it is unknown).
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.shared.client.ip()
    }

    /// This request's client address with the reason when it is unknown.
    pub(crate) fn client_addr(&self) -> ClientAddr {
        self.shared.client
    }

    /// The session's fingerprint, safe to log or show.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.state().current.as_ref().map(|l| l.key.fingerprint())
    }
}
