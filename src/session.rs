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

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin::{self, SessionInfo};
use crate::client_ip::ClientAddr;
use crate::config::Config;
use crate::events::SessionEvent;
use crate::id::{Fingerprint, SessionKey, SessionToken};
use crate::layer::Backend;
use crate::policy::{Decision, PolicyContext};
use crate::record::{Identity, SessionRecord};
use crate::store::{DynStore, LoginOutcome, StoreError, WriteOutcome};

/// How many times a write re-reads and re-applies itself after losing a compare-and-set race
/// before giving up with [`SessionError::Contention`]. Each retry means another writer won,
/// so this bounds the work without starving ordinary contention.
const MAX_WRITE_ATTEMPTS: usize = 32;
/// User agents are kept (for session lists) up to this many characters.
const MAX_USER_AGENT: usize = 256;
/// Attempts at drawing a fresh key; a 256-bit collision will not happen, but the loop is
/// bounded anyway.
const MAX_CREATE_ATTEMPTS: usize = 3;
/// The deepest a session value may nest. Every store must read back what it accepted:
/// serde_json refuses input nested deeper than 128 levels, and a record wraps a value in two
/// more, so a deeper value would be written, then fail to load on every later request
/// (logout included) until it expired. 64 leaves room and is far beyond real session data.
pub const MAX_VALUE_DEPTH: usize = 64;

/// What went wrong with a session operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session was logged out, revoked, rotated away or expired (possibly by a
    /// concurrent request); the write was not applied and the session stays ended.
    #[error("the session has ended")]
    Ended,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// A value could not be converted to or from JSON.
    #[error("session value {key:?} could not be (de)serialized: {source}")]
    Value {
        /// The value's name.
        key: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The user already holds the most sessions allowed, and the limit policy is
    /// [`LimitPolicy::RejectNew`](crate::LimitPolicy::RejectNew). With feature `axum` this
    /// answers 409 Conflict.
    #[error("too many sessions for this user (limit {limit}); log out elsewhere first")]
    TooManySessions {
        /// The configured limit.
        limit: usize,
    },
    /// Too many concurrent writers kept winning the race for this session.
    #[error("too many concurrent writes to this session")]
    Contention,
    /// `login` needs the client address to pin the session, and the request has no
    /// connection info. A server wiring problem: see [`PeerAddr`](crate::PeerAddr).
    #[error("{}", crate::client_ip::HOW_TO_PROVIDE_PEER)]
    ClientIpUnknown,
    /// `login` needs the client address, and the request came through a trusted proxy whose
    /// forwarding header does not name one (missing, malformed, or only trusted hops). The
    /// layer never falls back to the proxy's own address. With feature `axum` this answers
    /// 400.
    #[error("the client address cannot be verified: the trusted proxy's forwarding header does not name a client")]
    ClientIpUnverifiable,
    /// The login was refused before anything was written: the address is outside the
    /// allowed ranges, or the post-authentication policy denies this identity from here.
    /// With feature `axum` this answers 403.
    #[error("login refused: {reason}")]
    LoginDenied {
        /// Why (also in the `LoginDenied` event).
        reason: String,
    },
    /// This address has created too many guest sessions recently (or is cooling down after
    /// guessing session IDs). With feature `axum` this answers 429 with `Retry-After`.
    #[error("too many new sessions from this address; retry in {} s", retry_after.as_secs())]
    RateLimited {
        /// When the address may try again.
        retry_after: Duration,
    },
    /// The operation needs a logged-in session.
    #[error("no user is logged in on this session")]
    NotAuthenticated,
    /// The store has no room for a new guest session: its guest budget is spent and every
    /// other slot holds a logged-in user, whom a guest never displaces. With feature `axum`
    /// this answers 503 with `Retry-After`.
    #[error("no room for a new guest session; try again later")]
    StoreFull,
}

#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) key: SessionKey,
    pub(crate) record: Arc<SessionRecord>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) current: Option<Live>,
    /// A token created or rotated during this request: goes out in `Set-Cookie`.
    pub(crate) issued: Option<SessionToken>,
    /// The session was ended by `logout` during this request: send the removal cookie.
    pub(crate) ended: bool,
    /// The handler wrote, so the activity is already recorded.
    pub(crate) wrote: bool,
}

pub(crate) struct Shared {
    /// The layer's store and configuration (one reference count for both).
    core: Arc<dyn Backend>,
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
        core: Arc<dyn Backend>,
        current: Option<Live>,
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

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State half-written (every update is a
        // single assignment), so a poisoned lock is still consistent.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The layer's store and configuration, for the layer's commit step.
    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.shared.core
    }

    fn config(&self) -> &Config {
        self.shared.core.config()
    }

    fn store(&self) -> &dyn DynStore {
        self.shared.core.store()
    }

    fn now(&self) -> SystemTime {
        self.config().clock.now()
    }

    fn ttl(&self, record: &SessionRecord, now: SystemTime) -> Duration {
        self.config().store_ttl(record, now)
    }

    fn install(&self, key: SessionKey, record: Arc<SessionRecord>, issued: Option<SessionToken>) {
        let mut st = self.state();
        st.current = Some(Live { key, record });
        st.wrote = true;
        if issued.is_some() {
            st.issued = issued;
        }
        drop(st);
        self.shared.changed.store(true, Ordering::Release);
    }

    /// Whether the handler changed anything the commit step must act on (see `changed`).
    pub(crate) fn changed(&self) -> bool {
        self.shared.changed.load(Ordering::Acquire)
    }

    // ----- reads -----

    /// Reads a value. `Ok(None)` if there is no session or no such value.
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

    /// The logged-in identity, if any.
    pub fn identity(&self) -> Option<Identity> {
        self.record().and_then(|r| r.identity.clone())
    }

    /// Whether a user is logged in on this session.
    pub fn is_authenticated(&self) -> bool {
        self.record().is_some_and(|r| r.identity.is_some())
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
        self.record().map(|r| self.config().expires_at(&r))
    }

    /// When the absolute lifetime ends, whatever the activity.
    pub fn absolute_expiry(&self) -> Option<SystemTime> {
        let c = self.config();
        self.record()
            .map(|r| r.expires_at(c.absolute_timeout, c.absolute_timeout))
    }

    /// The address the session is pinned to (captured at login).
    pub fn pinned_ip(&self) -> Option<IpAddr> {
        self.record().and_then(|r| r.pinned_ip)
    }

    /// This request's client address, as the layer resolved it.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.shared.client.ip()
    }

    /// The session's fingerprint, safe to log or show.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.state().current.as_ref().map(|l| l.key.fingerprint())
    }

    // ----- writes -----

    /// Stores a value, creating a guest session if there is none.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let json = to_json(key, &value)?;
        self.mutate(|rec| {
            rec.data.insert(key.to_owned(), json.clone());
            Ok(())
        })
        .await
    }

    /// Removes a value and returns it. Does nothing (and creates nothing) if absent.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        if self.record().is_none_or(|r| !r.data.contains_key(key)) {
            return Ok(None);
        }
        let old = self.mutate(|rec| Ok(rec.data.remove(key))).await?;
        old.map(|v| {
            serde_json::from_value(v).map_err(|source| SessionError::Value {
                key: key.to_owned(),
                source,
            })
        })
        .transpose()
    }

    /// Atomic read-modify-write of one value: `f` gets the current value (or `None`) and
    /// returns the new one, which is also returned. If another request wrote the session in
    /// between, `f` runs again on the fresh value, so `f` must not have side effects.
    /// Creates a guest session if there is none.
    ///
    /// ```no_run
    /// # async fn handler(session: tower_session_guard::Session) -> Result<(), tower_session_guard::SessionError> {
    /// let count: u64 = session.update("count", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update<T, F>(&self, key: &str, mut f: F) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        self.mutate(|rec| {
            let old = rec
                .data
                .get(key)
                .map(T::deserialize)
                .transpose()
                .map_err(|source| SessionError::Value {
                    key: key.to_owned(),
                    source,
                })?;
            let new = f(old);
            rec.data.insert(key.to_owned(), to_json(key, &new)?);
            Ok(new)
        })
        .await
    }

    /// Logs `identity` in. The session moves to a fresh ID at once (the old one is dead
    /// before the response leaves: no fixation), the authentication time is recorded, the
    /// absolute lifetime starts over and the client address is pinned. Guest data is kept;
    /// data of a different user who was logged in on this session is dropped.
    ///
    /// Before anything is written, the login is checked as its first request would be: the
    /// address must lie in the allowed ranges and the post-authentication policy must allow
    /// this identity from here (with [`PolicyContext::at_login`] set). A login that would be
    /// thrown out on its next request fails now instead.
    ///
    /// # Errors
    ///
    /// [`SessionError::ClientIpUnknown`] without connection info and
    /// [`SessionError::ClientIpUnverifiable`] behind a trusted proxy whose forwarding header
    /// names no client (an authenticated session must be pinned to a known address);
    /// [`SessionError::LoginDenied`] outside the allowed ranges or on a policy deny;
    /// [`SessionError::TooManySessions`] at the per-user limit with
    /// [`LimitPolicy::RejectNew`](crate::LimitPolicy::RejectNew); store errors.
    pub async fn login(&self, identity: Identity) -> Result<(), SessionError> {
        let _w = self.shared.writes.lock().await;
        let now = self.now();
        let client = self.shared.client;
        let Some(client_ip) = client.ip() else {
            self.config().emit(SessionEvent::ClientIpUnknown {
                session: self.fingerprint(),
                error: client.problem(),
            });
            return Err(match client {
                ClientAddr::NoPeer => SessionError::ClientIpUnknown,
                _ => SessionError::ClientIpUnverifiable,
            });
        };
        self.admit(&identity, client_ip).await?;
        let user_id = identity.user_id.clone();
        let login = |rec: &mut SessionRecord| {
            let other_user = rec
                .identity
                .as_ref()
                .is_some_and(|i| i.user_id != identity.user_id);
            if other_user {
                rec.data.clear();
            }
            rec.identity = Some(identity.clone());
            rec.authenticated_at = Some(now);
            rec.created_at = now;
            rec.pinned_ip = Some(client_ip);
        };
        let user_agent = self.shared.user_agent.as_ref().map(|ua| {
            // Only for "my sessions" lists; bounded so a huge header cannot bloat the store.
            let ua = String::from_utf8_lossy(ua.as_bytes());
            ua.chars().take(MAX_USER_AGENT).collect::<String>()
        });
        let login = |rec: &mut SessionRecord| {
            login(rec);
            rec.user_agent = user_agent.clone();
        };
        let limit = self.config().session_limit;
        let store = self.store();
        let mut previous = self.state().current.clone();
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let mut rec = match &previous {
                Some(live) => SessionRecord::clone(&live.record),
                None => SessionRecord::new(now),
            };
            login(&mut rec);
            rec.version = 1;
            rec.last_seen = now;
            let ttl = self.ttl(&rec, now);
            let rec = Arc::new(rec);
            let token = SessionToken::generate();
            let key = token.key();
            let old = previous.as_ref().map(|l| (l.key, l.record.version));
            match store.login(old, key, rec.clone(), ttl, limit).await? {
                LoginOutcome::Applied { evicted } => {
                    self.install(key, rec, Some(token));
                    self.config().emit(SessionEvent::LoggedIn {
                        session: key.fingerprint(),
                        previous: previous.as_ref().map(|l| l.key.fingerprint()),
                        user_id: user_id.clone(),
                        client_ip: Some(client_ip),
                    });
                    for gone in evicted {
                        self.config().emit(SessionEvent::Revoked {
                            session: gone.fingerprint(),
                            user_id: user_id.clone(),
                            reason: "session_limit",
                        });
                    }
                    return Ok(());
                }
                LoginOutcome::LimitReached => {
                    return Err(SessionError::TooManySessions {
                        limit: limit.map(|l| l.max).unwrap_or(0),
                    })
                }
                // The old session changed meanwhile: log in from its fresh state; if it ended
                // (a concurrent logout), log in on a fresh session. A new-key collision simply
                // retries with another key.
                LoginOutcome::Conflict => {
                    if let Some(live) = &previous {
                        previous = match self.reload(live.key, now).await {
                            Ok(fresh) => Some(Live {
                                key: live.key,
                                record: fresh,
                            }),
                            Err(SessionError::Ended) => None,
                            Err(e) => return Err(e),
                        };
                    }
                }
            }
        }
        Err(SessionError::Contention)
    }

    /// The allowed ranges and the policy, asked before a login writes anything.
    async fn admit(&self, identity: &Identity, client_ip: IpAddr) -> Result<(), SessionError> {
        let config = self.config();
        let reason = if !crate::pin::in_ranges(&config.allowed_ranges, client_ip) {
            Some("outside_allowed_ranges".to_owned())
        } else {
            let headers = http::HeaderMap::new();
            let ctx = PolicyContext {
                client_ip,
                pinned_ip: Some(client_ip),
                identity,
                session_age: Duration::ZERO,
                idle_time: Duration::ZERO,
                since_authentication: Duration::ZERO,
                method: &self.shared.method,
                uri: &self.shared.uri,
                headers: &headers,
                at_login: true,
            };
            match self.shared.core.login_decision(&ctx).await {
                Decision::Allow => None,
                Decision::Deny { reason } => Some(reason.into_owned()),
            }
        };
        let Some(reason) = reason else {
            return Ok(());
        };
        config.emit(SessionEvent::LoginDenied {
            user_id: identity.user_id.clone(),
            client_ip,
            reason: reason.clone(),
        });
        Err(SessionError::LoginDenied { reason })
    }

    /// Moves the session to a fresh ID, keeping its contents: call it on any privilege change
    /// (OWASP: renew the ID on every privilege level change). Does nothing without a session.
    pub async fn rotate(&self) -> Result<(), SessionError> {
        self.rotate_with(|_| {}).await
    }

    /// Changes the logged-in identity (roles, groups) and, since privilege changed, moves the
    /// session to a fresh ID. The post-authentication policy sees the change on the next
    /// request. Fails with [`SessionError::NotAuthenticated`] on a guest session.
    pub async fn update_identity(&self, f: impl FnOnce(&mut Identity)) -> Result<(), SessionError> {
        let Some(mut identity) = self.identity() else {
            return Err(SessionError::NotAuthenticated);
        };
        f(&mut identity);
        self.rotate_with(move |rec| rec.identity = Some(identity.clone()))
            .await
    }

    async fn rotate_with(&self, edit: impl FnMut(&mut SessionRecord)) -> Result<(), SessionError> {
        let _w = self.shared.writes.lock().await;
        let now = self.now();
        let had_session = self.exists();
        match self.move_to_new_key(now, edit).await? {
            Some(from) => {
                let (to, user_id) = {
                    let st = self.state();
                    let live = st.current.as_ref();
                    (
                        live.map(|l| l.key.fingerprint()),
                        live.and_then(|l| l.record.identity.as_ref().map(|i| i.user_id.clone())),
                    )
                };
                if let Some(to) = to {
                    self.config()
                        .emit(SessionEvent::Rotated { from, to, user_id });
                }
                Ok(())
            }
            None if had_session => Err(SessionError::Ended),
            None => Ok(()),
        }
    }

    /// Ends the session on the server and sends the removal cookie. After this, the old ID is
    /// refused everywhere, including by requests already in flight, and so is the ID a
    /// concurrent login or rotation moved the session to meanwhile (the store follows the
    /// rotation). Does nothing without a session.
    ///
    /// # Errors
    ///
    /// A store error; the session is then left as it was.
    pub async fn logout(&self) -> Result<(), SessionError> {
        let _w = self.shared.writes.lock().await;
        let Some(live) = self.state().current.clone() else {
            return Ok(());
        };
        let existed = self.store().delete(live.key).await?;
        let mut st = self.state();
        st.current = None;
        st.issued = None;
        self.shared.changed.store(true, Ordering::Release);
        // The store's delete follows a rotation that raced this request (the session's
        // lineage), so `existed` means the session this request loaded is now ended wherever
        // it had moved, and the removal cookie cannot clobber a live one. Nothing existed:
        // another request ended it first, and its response carried the removal.
        if existed {
            st.ended = true;
            drop(st);
            self.config().emit(SessionEvent::LoggedOut {
                session: live.key.fingerprint(),
                user_id: live.record.identity.as_ref().map(|i| i.user_id.clone()),
            });
        }
        Ok(())
    }

    // ----- the user's other sessions -----

    fn user(&self) -> Result<(String, Option<SessionKey>), SessionError> {
        let st = self.state();
        let live = st.current.as_ref().ok_or(SessionError::NotAuthenticated)?;
        let identity = live
            .record
            .identity
            .as_ref()
            .ok_or(SessionError::NotAuthenticated)?;
        Ok((identity.user_id.clone(), Some(live.key)))
    }

    /// The logged-in user's live sessions on every device, oldest first, with this one marked
    /// `current` (OWASP ASVS 3.3.4).
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, SessionError> {
        let (user_id, current) = self.user()?;
        let c = self.config();
        let list = admin::list(self.store(), c, &user_id, current).await?;
        Ok(list.into_iter().map(|(_, info)| info).collect())
    }

    /// Ends one of the user's other sessions, named by its fingerprint (from
    /// [`sessions`](Self::sessions)). Returns whether it was live. Revoking the current
    /// session is [`logout`](Self::logout).
    pub async fn revoke(&self, id: Fingerprint) -> Result<bool, SessionError> {
        let (user_id, current) = self.user()?;
        if current.map(|k| k.fingerprint()) == Some(id) {
            self.logout().await?;
            return Ok(true);
        }
        let c = self.config();
        let n = admin::revoke(self.store(), c, &user_id, |s| s.id == id, "user").await?;
        Ok(n > 0)
    }

    /// "Log out my other devices": ends every session of the user but this one. Returns how
    /// many were ended.
    pub async fn revoke_others(&self) -> Result<usize, SessionError> {
        let (user_id, current) = self.user()?;
        let current = current.map(|k| k.fingerprint());
        let c = self.config();
        let n = admin::revoke(self.store(), c, &user_id, |s| Some(s.id) != current, "user").await?;
        Ok(n)
    }

    // ----- machinery -----

    /// Applies `f` to the session with compare-and-set, creating a guest session if needed.
    async fn mutate<R>(
        &self,
        mut f: impl FnMut(&mut SessionRecord) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        let _w = self.shared.writes.lock().await;
        let now = self.now();
        let Some(live) = self.state().current.clone() else {
            if self.state().ended {
                return Err(SessionError::Ended);
            }
            let mut rec = SessionRecord::new(now);
            let out = f(&mut rec)?;
            self.charge_guest(now)?;
            let session = match self.create(rec, now).await {
                Err(SessionError::StoreFull) => {
                    self.config().emit(SessionEvent::GuestRefused {
                        client_ip: self.client_ip(),
                        reason: "store_full",
                    });
                    return Err(SessionError::StoreFull);
                }
                other => other?,
            };
            self.config().emit(SessionEvent::Created {
                session,
                client_ip: self.client_ip(),
            });
            return Ok(out);
        };
        let mut base = live.record;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let mut rec = SessionRecord::clone(&base);
            let out = f(&mut rec)?;
            rec.version = base.version + 1;
            rec.last_seen = now;
            let ttl = self.ttl(&rec, now);
            let rec = Arc::new(rec);
            match self
                .store()
                .update(live.key, base.version, rec.clone(), ttl)
                .await?
            {
                WriteOutcome::Applied => {
                    self.install(live.key, rec, None);
                    return Ok(out);
                }
                WriteOutcome::Conflict => base = self.reload(live.key, now).await?,
            }
        }
        Err(SessionError::Contention)
    }

    /// Charges a new guest session to this address's creation budget.
    fn charge_guest(&self, now: SystemTime) -> Result<(), SessionError> {
        let Some(ip) = self.shared.client.budget_key() else {
            return Ok(());
        };
        self.config()
            .budgets
            .create_guest(ip, now)
            .map_err(|retry_after| {
                self.config().emit(SessionEvent::GuestRefused {
                    client_ip: self.client_ip(),
                    reason: "rate_limited",
                });
                SessionError::RateLimited { retry_after }
            })
    }

    /// After a lost race: the freshest live record, or `Ended` (and the handle forgets it).
    async fn reload(
        &self,
        key: SessionKey,
        now: SystemTime,
    ) -> Result<Arc<SessionRecord>, SessionError> {
        let c = self.config();
        match self.store().load(key).await? {
            Some(r) if c.expiry(&r, now).is_none() => Ok(r),
            _ => {
                self.state().current = None;
                Err(SessionError::Ended)
            }
        }
    }

    /// Creates `rec` under a fresh key and attaches it; returns its fingerprint.
    async fn create(
        &self,
        rec: SessionRecord,
        now: SystemTime,
    ) -> Result<Fingerprint, SessionError> {
        let ttl = self.ttl(&rec, now);
        let rec = Arc::new(rec);
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let token = SessionToken::generate();
            let key = token.key();
            if self.store().create(key, rec.clone(), ttl).await? == WriteOutcome::Applied {
                self.install(key, rec, Some(token));
                return Ok(key.fingerprint());
            }
        }
        Err(SessionError::Contention)
    }

    /// Moves the live session to a fresh key with `edit` applied. Returns the old
    /// fingerprint, or `None` if there was no live session (or it ended concurrently).
    async fn move_to_new_key(
        &self,
        now: SystemTime,
        mut edit: impl FnMut(&mut SessionRecord),
    ) -> Result<Option<Fingerprint>, SessionError> {
        let Some(live) = self.state().current.clone() else {
            return Ok(None);
        };
        let mut base = live.record;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let mut rec = SessionRecord::clone(&base);
            edit(&mut rec);
            rec.version = 1;
            rec.last_seen = now;
            let ttl = self.ttl(&rec, now);
            let rec = Arc::new(rec);
            let token = SessionToken::generate();
            let key = token.key();
            match self
                .store()
                .rotate(live.key, base.version, key, rec.clone(), ttl)
                .await?
            {
                WriteOutcome::Applied => {
                    self.install(key, rec, Some(token));
                    return Ok(Some(live.key.fingerprint()));
                }
                WriteOutcome::Conflict => match self.reload(live.key, now).await {
                    Ok(fresh) => base = fresh,
                    Err(SessionError::Ended) => return Ok(None),
                    Err(e) => return Err(e),
                },
            }
        }
        Err(SessionError::Contention)
    }
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        if e.is_full() {
            SessionError::StoreFull
        } else {
            SessionError::Store(e)
        }
    }
}

fn to_json<T: Serialize>(key: &str, value: &T) -> Result<serde_json::Value, SessionError> {
    let value = serde_json::to_value(value).map_err(|source| SessionError::Value {
        key: key.to_owned(),
        source,
    })?;
    if depth(&value) > MAX_VALUE_DEPTH {
        return Err(SessionError::Value {
            key: key.to_owned(),
            source: <serde_json::Error as serde::ser::Error>::custom(format!(
                "nested deeper than {MAX_VALUE_DEPTH} levels, which no store could read back"
            )),
        });
    }
    Ok(value)
}

/// How deeply `value` nests (a scalar is 1), without recursion, so a hostile value cannot
/// overflow the stack here either.
fn depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            serde_json::Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            serde_json::Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}
