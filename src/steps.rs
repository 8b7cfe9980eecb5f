//! The layer's steps before the handler, one function per step of the request flow in
//! [`service`](crate::service): what a loaded candidate means (unknown, expired, live), the
//! pin and allowed ranges, the policy, and ending a refused or expired session. Each step
//! answers with the [`Next`] one, so the synchronous and asynchronous paths share them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Request, Response};

use crate::abuse::Guess;
use crate::client_ip::{ClientAddr, UNKNOWN_IP};
use crate::config::{Config, Env};
use crate::events::SessionEvent;
use crate::id::SessionKey;
use crate::pin::PinMode;
use crate::policy::{Decision, PolicyContext, PostAuthPolicy};
use crate::record::{ExpiryKind, Identity, SessionRecord};
use crate::rejection::{respond, Rejection};
use crate::session::Loaded;
use crate::store::{DynStore, StoreError};
use crate::transport::{self, Candidates, Via};

/// The step at which the synchronous path had to wait.
pub(crate) enum Stage {
    /// The store cannot answer the load of candidate `from` without a round trip. Boxed:
    /// the pending load (the candidates and what the loaded ones left behind) is large, and
    /// this stage is taken only on the asynchronous path, which allocates anyway, so every
    /// `Next` the synchronous path moves around stays small.
    Load(Box<PendingLoad>),
    /// The record has expired: delete it, then go on without a session.
    Expired(Loaded, ExpiryKind),
    /// The session passed its pin; the policy must be awaited.
    Policy(Loaded, IpAddr),
    /// The session was refused: end it on the server, then answer.
    Terminate(Loaded, Rejection),
}

/// The candidates left to load, from position `from`, and what the loaded ones left behind.
pub(crate) struct PendingLoad {
    pub(crate) candidates: Candidates,
    pub(crate) from: usize,
    pub(crate) pick: Pick,
}

/// What the synchronous steps decided.
pub(crate) enum Next {
    /// On to the handler, with this session (or none).
    Go(Option<Loaded>),
    /// Answer now, ending nothing (a store failure, a missing peer address).
    Stop(Rejection),
    /// Continue asynchronously from this stage.
    Then(Stage),
}

/// What the candidates loaded so far left behind: the first expired one (deleted and
/// reported if no candidate is live) and whether an unknown one came from an address that is
/// cooling down after ID guessing.
#[derive(Default)]
pub(crate) struct Pick {
    expired: Option<(Loaded, ExpiryKind)>,
    blocked: bool,
}

impl Pick {
    /// No candidate was live.
    pub(crate) fn finish(self) -> Next {
        match self.expired {
            Some((live, kind)) => Next::Then(Stage::Expired(live, kind)),
            None if self.blocked => Next::Stop(Rejection::TooManyUnknownTokens),
            None => Next::Go(None),
        }
    }
}

/// One candidate's load, and everything after it that needs no waiting: the outcome of the
/// load, expiry, the pin, and the policy if it can answer now. `None`: try the next candidate.
#[allow(clippy::too_many_arguments)]
pub(crate) fn consider<P: PostAuthPolicy>(
    policy: &P,
    env: &Env,
    key: SessionKey,
    loaded: Result<Option<Arc<SessionRecord>>, StoreError>,
    client: ClientAddr,
    req: RequestView<'_>,
    now: SystemTime,
    pick: &mut Pick,
) -> Option<Next> {
    let record = match loaded {
        Ok(Some(record)) => record,
        // An unknown key is "no session" (never adopted).
        Ok(None) => {
            unknown_token(env, key, client, now, pick);
            return None;
        }
        // A store error fails closed.
        Err(e) => {
            env.emit(SessionEvent::StoreFailed {
                session: Some(key.fingerprint()),
                error: e.to_string(),
            });
            return Some(Next::Stop(Rejection::StoreUnavailable));
        }
    };
    let live = Loaded { key, record };
    if let Some(kind) = env.config.expiry(&live.record, now) {
        pick.expired.get_or_insert((live, kind));
        return None;
    }
    Some(check(policy, env, live, client, req, now))
}

/// An unknown token: reported (aggregated), and counted towards ID-guessing detection.
pub(crate) fn unknown_token(
    env: &Env,
    key: SessionKey,
    client: ClientAddr,
    now: SystemTime,
    pick: &mut Pick,
) {
    env.emit(SessionEvent::UnknownToken {
        session: key.fingerprint(),
        client_ip: client.ip(),
    });
    let Some(ip) = client.budget_key() else {
        return;
    };
    match env.budgets.unknown_token(ip, key, now) {
        Guess::Normal => {}
        Guess::Blocked => pick.blocked = true,
        Guess::Detected { count } => {
            let limit = env.budgets.guessing();
            env.emit(SessionEvent::TokenGuessing {
                client_ip: ip,
                unknown_tokens: count,
                window_secs: limit.map_or(0, |l| l.window.as_secs()),
                cooldown_secs: limit.and_then(|l| l.cooldown).map(|c| c.as_secs()),
            });
        }
    }
}

/// The pin, then the policy (if it can answer now), for an authenticated session; guests
/// pass untouched.
pub(crate) fn check<P: PostAuthPolicy>(
    policy: &P,
    env: &Env,
    live: Loaded,
    client: ClientAddr,
    req: RequestView<'_>,
    now: SystemTime,
) -> Next {
    let record = &live.record;
    let Some(identity) = &record.identity else {
        return Next::Go(Some(live));
    };
    #[allow(unused_mut)]
    let (mut pin, mut device_bound) = (env.config.settings.pin, false);
    // A device-bound session (DBSC) is served as itself only with its bound cookie; without
    // it the request is not authenticated, and the session is kept for the real device. One
    // branch for a session that never offered binding.
    #[cfg(feature = "dbsc")]
    if let Some(device) = &record.device {
        use crate::device::Proof;
        match crate::device::bound_cookie(env, live.key, record, device, req.headers, now) {
            Proof::Refused => return Next::Go(None),
            Proof::Bound { pin: relaxed } => {
                device_bound = true;
                pin = relaxed.unwrap_or(pin);
            }
            Proof::Unbound => {}
        }
    }
    // An unknown address never passes the pin, the ranges or a policy that reads it. The
    // session is kept (a wiring problem or a forged header is no proof of a hijack). When
    // nothing configured reads the address, there is nothing to check it against.
    let ip = match client.ip() {
        Some(ip) => ip,
        None if !env.config.needs_client_ip => UNKNOWN_IP,
        None => {
            env.emit(SessionEvent::ClientIpUnknown {
                session: Some(live.key.fingerprint()),
                error: client.problem(),
            });
            return Next::Stop(client.rejection());
        }
    };
    if let Some(reason) = pin_failure(&env.config, pin, record.pinned_ip, ip) {
        env.emit(SessionEvent::PinViolation {
            session: live.key.fingerprint(),
            user_id: identity.user_id.clone(),
            expected: record.pinned_ip,
            actual: ip,
            reason,
        });
        return Next::Then(Stage::Terminate(live, Rejection::PinViolation));
    }
    let ctx = policy_context(identity, record, ip, req, now, device_bound);
    match policy.evaluate_now(&ctx) {
        Some(decision) => decided(env, live, ip, decision),
        None => Next::Then(Stage::Policy(live, ip)),
    }
}

/// A policy's decision, as the next step.
pub(crate) fn decided(env: &Env, live: Loaded, client_ip: IpAddr, decision: Decision) -> Next {
    match decision {
        Decision::Allow => Next::Go(Some(live)),
        Decision::Deny { reason } => {
            env.emit(SessionEvent::PolicyDenied {
                session: live.key.fingerprint(),
                user_id: live
                    .record
                    .identity
                    .as_ref()
                    .map(|i| i.user_id.clone())
                    .unwrap_or_default(),
                client_ip,
                reason: reason.into_owned(),
            });
            Next::Then(Stage::Terminate(live, Rejection::PolicyDenied))
        }
    }
}

/// An expired session: refused whether or not the delete succeeds; the delete only frees
/// the slot early (the store's own TTL would drop it too).
pub(crate) async fn expire(store: &dyn DynStore, env: &Env, live: Loaded, kind: ExpiryKind) {
    let session = live.key.fingerprint();
    if let Err(e) = store.delete(live.key).await {
        env.emit(SessionEvent::store_error(Some(session), "delete", &e));
    }
    env.emit(SessionEvent::Expired {
        session,
        kind,
        user_id: live.record.identity.as_ref().map(|i| i.user_id.clone()),
    });
}

/// Why `actual` fails the pin (`pin`: the configured mode, or the bound-session mode for a
/// device-bound session) or the allowed ranges, if it does.
pub(crate) fn pin_failure(
    config: &Config,
    pin: PinMode,
    pinned: Option<IpAddr>,
    actual: IpAddr,
) -> Option<&'static str> {
    let pin_ok = match pinned {
        Some(pinned) => pin.allows(pinned, actual),
        // An authenticated record without a pin cannot be verified: refuse unless pinning is off.
        None => pin == PinMode::Off,
    };
    if !pin_ok {
        Some("address_changed")
    } else if !config.allowed_ranges.admits(actual) {
        Some("outside_allowed_ranges")
    } else {
        None
    }
}

/// The parts of the request a policy sees. Borrowed separately from the body so the future
/// stays `Send` for bodies that are not `Sync`.
#[derive(Clone, Copy)]
pub(crate) struct RequestView<'a> {
    method: &'a http::Method,
    uri: &'a http::Uri,
    pub(crate) headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    pub(crate) fn of<B>(req: &'a Request<B>) -> Self {
        RequestView {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
        }
    }
}

pub(crate) fn policy_context<'a>(
    identity: &'a Identity,
    record: &SessionRecord,
    client_ip: IpAddr,
    req: RequestView<'a>,
    now: SystemTime,
    device_bound: bool,
) -> PolicyContext<'a> {
    let since = |t: SystemTime| now.duration_since(t).unwrap_or(Duration::ZERO);
    PolicyContext {
        client_ip,
        pinned_ip: record.pinned_ip,
        identity,
        session_age: since(record.created_at),
        idle_time: since(record.last_seen),
        since_authentication: record.authenticated_at.map(since).unwrap_or(Duration::ZERO),
        method: req.method,
        uri: req.uri,
        headers: req.headers,
        at_login: false,
        device_bound,
    }
}

/// A pin or policy failure: destroy the session on the server, then refuse with the removal
/// cookie. A refused request never reaches the handler. If the delete fails the request is
/// still refused; the record stays expired-by-TTL at worst, and every later request from the
/// wrong address is refused again.
pub(crate) async fn terminate<B: Default>(
    store: &dyn DynStore,
    env: &Env,
    live: &Loaded,
    rejection: Rejection,
    reply: Via,
    request_headers: &HeaderMap,
) -> Response<B> {
    let mut res = respond(&*env.rejections, rejection, request_headers);
    if let Err(e) = store.delete(live.key).await {
        env.emit(SessionEvent::store_error(
            Some(live.key.fingerprint()),
            "delete",
            &e,
        ));
    }
    transport::remove_token(res.headers_mut(), &env.config.transport, reply);
    res
}
