//! The registration and refresh endpoints, answered by the layer itself (the application
//! changes nothing but the builder option).
//!
//! * Registration (`POST`, empty body, the session cookie and `Secure-Session-Response`):
//!   the proof must be signed by the key in its own header over the challenge offered at
//!   login; the key, the algorithm and a first bound cookie are stored by compare-and-set, so
//!   two racing registrations cannot both win and a bound session is never re-bound.
//! * Refresh (`POST`, `Sec-Secure-Session-Id`, the session cookie): without a proof, a fresh
//!   challenge (403 + `Secure-Session-Challenge`; never 401, on which the browser gives up);
//!   with one, it must verify with the stored key over the pending challenge, which the same
//!   compare-and-set consumes (single use across instances) as it mints the new bound
//!   cookie. A signature that does not verify ends the session. A session that is gone
//!   (logout, revocation, expiry) answers `{"continue": false}`, which ends the browser's
//!   DBSC session: a refresh never brings a session back.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HOST, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use super::reply::{end, Reply};
use crate::core::DynCore;
use crate::dbsc::binding::Binding;
use crate::dbsc::jws::{self, Expect, Jwk, ProofError};
use crate::dbsc::{bound, header};
use crate::events::SessionEvent;
use crate::id::SessionKey;
use crate::record::{BoundDevice, SessionRecord};
use crate::store::{StoreError, WriteOutcome};
use crate::transport::{self, Via};

/// Compare-and-set attempts before answering 503: each conflict means another request of
/// the same session wrote meanwhile, which is rare and short.
const MAX_ATTEMPTS: usize = 4;

/// Which endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Registration,
    Refresh,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Registration => "registration",
            Endpoint::Refresh => "refresh",
        }
    }
}

/// The endpoint `req` is for, if any: a `POST` to one of the two paths.
pub(crate) fn endpoint_for<B>(binding: &Binding, req: &Request<B>) -> Option<Endpoint> {
    if req.method() != Method::POST {
        return None;
    }
    let path = req.uri().path();
    if path == binding.registration_path {
        Some(Endpoint::Registration)
    } else if path == binding.refresh_path {
        Some(Endpoint::Refresh)
    } else {
        None
    }
}

/// A session the request names, live at `now`.
struct Live {
    key: SessionKey,
    record: Arc<SessionRecord>,
}

/// Reports a presented key the store does not know (the layer's ID-guessing detection);
/// `true` when the client's address is cooling down after guessing.
pub(crate) type Unknown<'a> = &'a (dyn Fn(SessionKey) -> bool + Sync);

/// Answers a request for `endpoint`. Never fails: store errors are 503, bad input 400/403,
/// an address cooling down after ID guessing 429.
pub(crate) async fn answer<B: Default + 'static>(
    core: Arc<dyn DynCore>,
    endpoint: Endpoint,
    headers: HeaderMap,
    now: SystemTime,
    unknown: Unknown<'_>,
) -> Response<B> {
    let env = core.env();
    let reply = match &env.config.device_binding {
        None => Ok(Reply::status(StatusCode::NOT_FOUND)),
        Some(binding) => {
            let ctx = Ctx {
                core: &*core,
                binding,
                headers: &headers,
                now,
                unknown,
            };
            match endpoint {
                Endpoint::Registration => ctx.register().await,
                Endpoint::Refresh => ctx.refresh().await,
            }
        }
    };
    let reply = reply.unwrap_or_else(|e| {
        env.emit(SessionEvent::StoreFailed {
            session: None,
            error: e.to_string(),
        });
        Reply::unavailable()
    });
    reply.into_response(env, endpoint.name())
}

struct Ctx<'a> {
    core: &'a dyn DynCore,
    binding: &'a Binding,
    headers: &'a HeaderMap,
    now: SystemTime,
    unknown: Unknown<'a>,
}

/// The session a request names at an endpoint.
enum Found {
    Live(Live, Via),
    /// No live session: the browser is told to stop (refresh) or refused (registration).
    None,
    /// No live session, from an address cooling down after ID guessing.
    Blocked,
}

impl Ctx<'_> {
    /// The first live session the request's token names, and which way a token goes back.
    /// Unknown keys are reported to the ID-guessing detection.
    async fn find(&self) -> Result<Found, StoreError> {
        let env = self.core.env();
        let (candidates, via) = transport::read_token(self.headers, &env.config.transport);
        let mut blocked = false;
        for (_, key) in candidates.from(0) {
            match self.core.store().load(key).await? {
                Some(record) if env.config.expiry(&record, self.now).is_none() => {
                    return Ok(Found::Live(Live { key, record }, via));
                }
                // Expired: gone for the endpoints; the next ordinary request deletes it.
                Some(_) => {}
                None => blocked |= (self.unknown)(key),
            }
        }
        Ok(if blocked { Found::Blocked } else { Found::None })
    }

    async fn reload(&self, key: SessionKey) -> Result<Option<Live>, StoreError> {
        let env = self.core.env();
        Ok(match self.core.store().load(key).await? {
            Some(record) if env.config.expiry(&record, self.now).is_none() => {
                Some(Live { key, record })
            }
            _ => None,
        })
    }

    /// Writes `record` over `live` if it is still at its version.
    async fn write(&self, live: &Live, mut record: SessionRecord) -> Result<bool, StoreError> {
        let env = self.core.env();
        record.version = live.record.version + 1;
        record.last_seen = self.now;
        let ttl = env.config.store_ttl(&record, self.now);
        let outcome = self
            .core
            .store()
            .update(live.key, live.record.version, Arc::new(record), ttl)
            .await?;
        Ok(outcome == WriteOutcome::Applied)
    }

    fn refused(&self, live: Option<&Live>, endpoint: Endpoint, reason: &'static str, ended: bool) {
        self.core.env().emit(SessionEvent::DeviceProofRefused {
            session: live.map(|l| l.key.fingerprint()),
            user_id: live.and_then(user_of),
            endpoint: endpoint.name(),
            reason,
            ended,
        });
    }

    fn expect<'e>(&'e self, challenge: &'e str, path: &'e str) -> Expect<'e> {
        Expect {
            algorithms: &self.binding.algorithms,
            challenge,
            path,
            host: self.headers.get(HOST).and_then(|h| h.to_str().ok()),
        }
    }

    /// The JSON of a registration or refresh that succeeded, with the new bound cookie.
    fn bound(&self, device: &BoundDevice, set_cookie: &str) -> Reply {
        let b = self.binding;
        let mut reply = Reply::status(StatusCode::OK).with_json(serde_json::json!({
            "session_identifier": device.session_id,
            "refresh_url": b.refresh_path,
            "scope": {"include_site": false, "scope_specification": []},
            "credentials": [{
                "type": "cookie",
                "name": b.cookie_name,
                "attributes": b.attributes,
            }],
        }));
        if let Ok(v) = HeaderValue::from_str(set_cookie) {
            reply.headers.insert(SET_COOKIE, v);
        }
        reply
    }

    async fn register(&self) -> Result<Reply, StoreError> {
        const EP: Endpoint = Endpoint::Registration;
        let refuse = |live: Option<&Live>, reason| {
            self.refused(live, EP, reason, false);
            Ok(Reply::status(StatusCode::FORBIDDEN))
        };
        let mut live = match self.find().await? {
            Found::Live(live, _) => live,
            Found::None => return refuse(None, "no_session"),
            Found::Blocked => return Ok(Reply::status(StatusCode::TOO_MANY_REQUESTS)),
        };
        let Some(proof) = self.headers.get(header::RESPONSE).and_then(header::proof) else {
            self.refused(Some(&live), EP, ProofError::Malformed.reason(), false);
            return Ok(Reply::status(StatusCode::BAD_REQUEST));
        };
        for _ in 0..MAX_ATTEMPTS {
            let device = match &live.record.device {
                Some(d) if live.record.identity.is_some() => d,
                _ => return refuse(Some(&live), "not_offered"),
            };
            if device.is_bound() {
                return refuse(Some(&live), "already_bound");
            }
            let Some(challenge) = device
                .challenge
                .as_deref()
                .filter(|c| bound::challenge_pending(device, c, self.now))
            else {
                return refuse(Some(&live), "challenge_expired");
            };
            let path = &self.binding.registration_path;
            let verified = match jws::verify_registration(proof, &self.expect(challenge, path)) {
                Ok(v) => v,
                Err(e) => {
                    self.refused(Some(&live), EP, e.reason(), false);
                    return Ok(Reply::status(StatusCode::BAD_REQUEST));
                }
            };
            let mut device = device.clone();
            device.key = Some(verified.key.to_json());
            device.alg = Some(verified.alg.name().to_owned());
            device.bound_at = Some(self.now);
            let set_cookie = bound::mint(self.binding, &mut device, self.now);
            let mut record = SessionRecord::clone(&live.record);
            record.device = Some(device.clone());
            if self.write(&live, record).await? {
                self.core.env().emit(SessionEvent::DeviceRegistered {
                    session: live.key.fingerprint(),
                    user_id: user_of(&live),
                    alg: verified.alg.name(),
                });
                return Ok(self.bound(&device, &set_cookie));
            }
            match self.reload(live.key).await? {
                Some(fresh) => live = fresh,
                None => return refuse(None, "no_session"),
            }
        }
        Ok(Reply::status(StatusCode::SERVICE_UNAVAILABLE))
    }

    async fn refresh(&self) -> Result<Reply, StoreError> {
        const EP: Endpoint = Endpoint::Refresh;
        let Some(id) = self
            .headers
            .get(header::SESSION_ID)
            .and_then(header::session_id)
        else {
            self.refused(None, EP, "malformed", false);
            return Ok(Reply::status(StatusCode::BAD_REQUEST));
        };
        let (mut live, via) = match self.find().await? {
            Found::Live(live, via) => (live, via),
            Found::None => return Ok(end()),
            Found::Blocked => return Ok(Reply::status(StatusCode::TOO_MANY_REQUESTS)),
        };
        for _ in 0..MAX_ATTEMPTS {
            let device = match &live.record.device {
                Some(d) if d.is_bound() && d.session_id == id => d.clone(),
                // Not ours (any more): a re-login made a new binding, or it never was bound.
                _ => return Ok(end()),
            };
            let proof = self.headers.get(header::RESPONSE);
            let pending = device
                .challenge
                .clone()
                .filter(|c| bound::challenge_pending(&device, c, self.now));
            let outcome = match (proof, pending) {
                (None, _) => Step::Challenge,
                (Some(_), None) => {
                    self.refused(Some(&live), EP, "challenge_expired", false);
                    Step::Challenge
                }
                (Some(proof), Some(challenge)) => {
                    self.check_refresh(&live, &device, proof, &challenge)
                }
            };
            let mut record = SessionRecord::clone(&live.record);
            let mut device = device;
            let reply = match outcome {
                Step::End(reason) => {
                    self.refused(Some(&live), EP, reason, true);
                    if let Err(e) = self.core.store().delete(live.key).await {
                        self.core.env().emit(SessionEvent::StoreFailed {
                            session: Some(live.key.fingerprint()),
                            error: e.to_string(),
                        });
                    }
                    let mut reply = end();
                    let transport = &self.core.env().config.transport;
                    transport::remove_token(&mut reply.headers, transport, via);
                    return Ok(reply);
                }
                Step::Challenge => {
                    let challenge = bound::set_challenge(&mut device, self.now);
                    let mut reply = Reply::status(StatusCode::FORBIDDEN);
                    let value = header::challenge(&challenge, Some(&device.session_id))
                        .and_then(|v| HeaderValue::from_str(&v).ok());
                    if let Some(v) = value {
                        reply.headers.insert(header::CHALLENGE, v);
                    }
                    reply
                }
                Step::Renew => {
                    let set_cookie = bound::mint(self.binding, &mut device, self.now);
                    self.bound(&device, &set_cookie)
                }
            };
            let renewed = reply.status == StatusCode::OK;
            record.device = Some(device);
            if self.write(&live, record).await? {
                if renewed {
                    self.core.env().emit(SessionEvent::DeviceRefreshed {
                        session: live.key.fingerprint(),
                        user_id: user_of(&live),
                    });
                }
                return Ok(reply);
            }
            // Another request wrote meanwhile (perhaps a refresh that consumed this very
            // challenge): decide again on the fresh record.
            match self.reload(live.key).await? {
                Some(fresh) => live = fresh,
                None => return Ok(end()),
            }
        }
        Ok(Reply::status(StatusCode::SERVICE_UNAVAILABLE))
    }

    /// What a refresh proof earns: a new bound cookie, a new challenge (a stale or foreign
    /// one: the proof may be an old one replayed, which is no reason to end the session), or
    /// the end of the session (a proof the registered key did not make).
    fn check_refresh(
        &self,
        live: &Live,
        device: &BoundDevice,
        proof: &HeaderValue,
        challenge: &str,
    ) -> Step {
        let Some(proof) = header::proof(proof) else {
            return Step::End(ProofError::TooLarge.reason());
        };
        let stored = device.key.as_deref().and_then(Jwk::from_json);
        let alg = device.alg.as_deref().and_then(jws::algorithm_named);
        let (Some(stored), Some(alg)) = (stored, alg) else {
            // A damaged record cannot be refreshed; fail closed.
            return Step::End(ProofError::Key.reason());
        };
        let path = &self.binding.refresh_path;
        match jws::verify_refresh(proof, &self.expect(challenge, path), &stored, alg) {
            Ok(_) => Step::Renew,
            Err(ProofError::Challenge) => {
                self.refused(Some(live), Endpoint::Refresh, "wrong_challenge", false);
                Step::Challenge
            }
            Err(e) => Step::End(e.reason()),
        }
    }
}

enum Step {
    Renew,
    Challenge,
    End(&'static str),
}

fn user_of(live: &Live) -> Option<String> {
    live.record.identity.as_ref().map(|i| i.user_id.clone())
}
