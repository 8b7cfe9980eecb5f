//! Login, rotation and logout: the writes that move a session to a new ID or end it.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::write::Attempts;
use super::{Loaded, LoginOptions, Session, SessionError};
use crate::client_ip::{ClientAddr, UNKNOWN_IP};
use crate::events::SessionEvent;
use crate::id::{Fingerprint, SessionToken};
use crate::policy::{Decision, PolicyContext};
use crate::record::{Identity, SessionRecord};
use crate::store::{LoginOutcome, WriteOutcome};

/// User agents are kept (for session lists) up to this many characters.
const MAX_USER_AGENT: usize = 256;
impl Session {
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
        self.login_with(identity, LoginOptions::default()).await
    }

    /// Logs `identity` in as [`login`](Self::login) does, with `options`: for example
    /// [`LoginOptions::remember_me`], a persistent cookie and a longer lifetime for this
    /// login only.
    ///
    /// # Errors
    ///
    /// As [`login`](Self::login).
    pub async fn login_with(
        &self,
        identity: Identity,
        options: LoginOptions,
    ) -> Result<(), SessionError> {
        let _w = self.shared.writes.lock().await;
        let now = self.now();
        let client = self.shared.client;
        // The address is pinned, checked against the ranges and shown to the policy; when
        // nothing configured reads it, a server without connection info still logs users in
        // (the session is then pinned to nothing, which only `PinMode::Off` accepts).
        let pinned = match client.ip() {
            Some(ip) => Some(ip),
            None if !self.env().config.needs_client_ip => None,
            None => {
                self.env().emit(SessionEvent::ClientIpUnknown {
                    session: self.fingerprint(),
                    error: client.problem(),
                });
                return Err(match client {
                    ClientAddr::NoPeer => SessionError::ClientIpUnknown,
                    _ => SessionError::ClientIpUnverifiable,
                });
            }
        };
        let client_ip = pinned.unwrap_or(UNKNOWN_IP);
        self.admit(&identity, client_ip).await?;
        let user_id = identity.user_id.clone();
        let max_remember_me = self.env().config.settings.max_remember_me;
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
            rec.pinned_ip = pinned;
            // Stored as granted, so a lower cap configured later still applies on read.
            rec.remember_me = options.remember_me.map(|d| d.min(max_remember_me));
            // A login is a new lineage: any earlier device binding ends, and (with DBSC on)
            // the response offers a fresh one.
            #[cfg(feature = "dbsc")]
            {
                rec.device = self
                    .env()
                    .config
                    .device_binding
                    .as_ref()
                    .map(|_| Box::new(crate::dbsc::bound::pending(now)));
            }
            #[cfg(not(feature = "dbsc"))]
            {
                rec.device = None;
            }
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
        let limit = self.env().config.settings.session_limit;
        let mut previous = self.state().current.clone();
        let mut attempts = Attempts::new();
        // The user's tag: on a store that routes by it, the user's sessions and index share
        // one place, so the login (with its session limit) stays one atomic step there.
        let route = self.store().user_route(&user_id);
        loop {
            let token = SessionToken::generate_routed(route);
            let key = token.key();
            attempts.take(self, "login", previous.as_ref().map_or(key, |l| l.key))?;
            let fresh = SessionRecord::new(now);
            let base = previous.as_ref().map_or(&fresh, |l| &*l.record);
            let (rec, ttl, ()) = self.next_record(base, 1, now, |rec| {
                login(rec);
                Ok(())
            })?;
            let old = previous.as_ref().map(|l| (l.key, l.record.version));
            let written = self.store().login(old, key, rec.clone(), ttl, limit).await;
            match self.stored("login", key, written)? {
                LoginOutcome::Applied { evicted } => {
                    self.install(key, rec, Some(token));
                    self.env().emit(SessionEvent::LoggedIn {
                        session: key.fingerprint(),
                        previous: previous.as_ref().map(|l| l.key.fingerprint()),
                        user_id: user_id.clone(),
                        client_ip: pinned,
                    });
                    for gone in evicted {
                        self.env().emit(SessionEvent::Revoked {
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
                    if let Some(live) = previous.take() {
                        previous = match self.reload(live.key, now).await {
                            Ok(record) => Some(Loaded {
                                key: live.key,
                                record,
                            }),
                            Err(SessionError::Ended) => None,
                            Err(e) => return Err(e),
                        };
                    }
                }
            }
        }
    }

    /// The allowed ranges and the policy, asked before a login writes anything.
    async fn admit(&self, identity: &Identity, client_ip: IpAddr) -> Result<(), SessionError> {
        let env = self.env();
        let reason = if !env.config.allowed_ranges.admits(client_ip) {
            Some("outside_allowed_ranges".to_owned())
        } else {
            let headers = http::HeaderMap::new();
            let (method, uri) = (&self.shared.method, &self.shared.uri);
            let ctx = PolicyContext {
                at_login: true,
                ..PolicyContext::new(client_ip, identity, method, uri, &headers)
            };
            match self.shared.core.login_decision(&ctx).await {
                Decision::Allow => None,
                Decision::Deny { reason } => Some(reason.into_owned()),
            }
        };
        let Some(reason) = reason else {
            return Ok(());
        };
        env.emit(SessionEvent::LoginDenied {
            user_id: identity.user_id.clone(),
            client_ip,
            reason: reason.clone(),
        });
        Err(SessionError::LoginDenied { reason })
    }

    /// Moves the session to a fresh ID, keeping its contents: call it on any privilege change
    /// (OWASP: renew the ID on every privilege level change). Does nothing without a session.
    ///
    /// # Errors
    ///
    /// [`SessionError::Ended`] if the session ended meanwhile; [`SessionError::Contention`] if
    /// other writers kept winning; store errors.
    pub async fn rotate(&self) -> Result<(), SessionError> {
        self.rotate_with(|_| {}).await
    }

    /// Changes the logged-in identity (roles, groups) and, since privilege changed, moves the
    /// session to a fresh ID. The post-authentication policy sees the change on the next
    /// request. Fails with [`SessionError::NotAuthenticated`] on a guest session.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotAuthenticated`] on a guest session; otherwise as
    /// [`rotate`](Self::rotate).
    pub async fn update_identity(&self, f: impl FnOnce(&mut Identity)) -> Result<(), SessionError> {
        let Some(mut identity) = self.identity().map(Identity::from) else {
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
                    self.env().emit(SessionEvent::Rotated { from, to, user_id });
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
        let deleted = self.store().delete(live.key).await;
        let existed = self.stored("logout", live.key, deleted)?;
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
            self.env().emit(SessionEvent::LoggedOut {
                session: live.key.fingerprint(),
                user_id: live.record.identity.as_ref().map(|i| i.user_id.clone()),
            });
        }
        Ok(())
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
        let from = live.key;
        let mut base = live.record;
        let mut attempts = Attempts::new();
        loop {
            attempts.take(self, "rotate", from)?;
            let (rec, ttl, ()) = self.next_record(&base, 1, now, |rec| {
                edit(rec);
                Ok(())
            })?;
            // Same tag as the key it replaces: a rotation stays where the session is.
            let token = SessionToken::generate_routed(from.route());
            let key = token.key();
            let written = self
                .store()
                .rotate(from, base.version, key, rec.clone(), ttl)
                .await;
            match self.stored("rotate", from, written)? {
                WriteOutcome::Applied => {
                    self.install(key, rec, Some(token));
                    return Ok(Some(from.fingerprint()));
                }
                WriteOutcome::Conflict => match self.reload(from, now).await {
                    Ok(fresh) => base = fresh,
                    // It ended meanwhile (a concurrent logout): nothing to move.
                    Err(SessionError::Ended) => return Ok(None),
                    Err(e) => return Err(e),
                },
            }
        }
    }
}
