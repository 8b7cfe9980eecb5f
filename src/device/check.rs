//! The two touches DBSC adds to ordinary requests: the registration offer on the response
//! that hands out a logged-in session's new token, and the bound-cookie check on every
//! request of a bound session.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};

use crate::config::{Config, Env};
use crate::dbsc::{bound, header};
use crate::events::SessionEvent;
use crate::id::SessionKey;
use crate::pin::PinMode;
use crate::record::{BoundDevice, SessionRecord};

/// Adds `Secure-Session-Registration` when `record` (just logged in or rotated) has a
/// pending registration.
pub(crate) fn offer(config: &Config, record: &SessionRecord, headers: &mut HeaderMap) {
    let (Some(binding), Some(device)) = (&config.device_binding, &record.device) else {
        return;
    };
    if device.is_bound() || record.identity.is_none() {
        return;
    }
    let Some(challenge) = &device.challenge else {
        return;
    };
    let value = header::registration(&binding.algorithms, &binding.registration_path, challenge)
        .and_then(|v| HeaderValue::from_str(&v).ok());
    if let Some(value) = value {
        headers.insert(header::REGISTRATION, value);
    }
}

/// What a request proves about a session that has a device binding (pending or bound).
pub(crate) enum Proof {
    /// Not bound (registration pending), or binding turned off: served as before.
    Unbound,
    /// Bound, and the request carries its current, unexpired bound cookie; `pin` is the
    /// bound-session pin mode, if the option sets one.
    Bound { pin: Option<PinMode> },
    /// Bound, without a valid bound cookie: not served as the session (which is kept).
    Refused,
}

/// Whether a request of a session with `device` may be served as that session: always for
/// a session that is not bound (or with binding turned off), and for a bound one only with
/// its current, unexpired bound cookie. A refusal is reported; the session is kept.
pub(crate) fn bound_cookie(
    env: &Env,
    key: SessionKey,
    record: &SessionRecord,
    device: &BoundDevice,
    headers: &HeaderMap,
    now: SystemTime,
) -> Proof {
    let Some(binding) = &env.config.device_binding else {
        return Proof::Unbound;
    };
    if !device.is_bound() {
        return Proof::Unbound;
    }
    match bound::check(binding, device, headers, now) {
        Ok(()) => Proof::Bound {
            pin: binding.bound_pin_mode,
        },
        Err(missing) => {
            env.emit(SessionEvent::BoundCookieRefused {
                session: key.fingerprint(),
                user_id: record.identity.as_ref().map(|i| i.user_id.clone()),
                reason: missing.reason(),
            });
            Proof::Refused
        }
    }
}
