//! The bound cookie and the nonces: minted from the OS-seeded CSPRNG; the record keeps only
//! the SHA-256 of the cookie's value and its expiry (by the layer's clock), so neither a
//! store leak nor a client can forge or extend one.

use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::COOKIE;
use http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::binding::{bound_cookie, Binding, CHALLENGE_LIFETIME, REGISTRATION_GRACE};
use crate::record::BoundDevice;

/// `n` random bytes, base64url without padding.
pub(crate) fn nonce(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh challenge (256 bits) on `device`, accepted until the challenge lifetime ends.
pub(crate) fn set_challenge(device: &mut BoundDevice, now: SystemTime) -> String {
    let challenge = nonce(32);
    device.challenge = Some(challenge.clone());
    device.challenge_expires = now.checked_add(CHALLENGE_LIFETIME);
    challenge
}

/// Whether `device`'s pending challenge is `jti` and still accepted at `now`.
pub(crate) fn challenge_pending(device: &BoundDevice, jti: &str, now: SystemTime) -> bool {
    device.challenge.as_deref() == Some(jti) && device.challenge_expires.is_some_and(|t| now < t)
}

/// A pending binding for a session that just logged in: a new DBSC session id (128 random
/// bits, unrelated to the token) and a registration challenge.
pub(crate) fn pending(now: SystemTime) -> BoundDevice {
    let mut device = BoundDevice {
        session_id: nonce(16),
        ..BoundDevice::default()
    };
    set_challenge(&mut device, now);
    device
}

fn digest(value: &str) -> String {
    let hash = Sha256::digest(value.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Mints a bound cookie on `device` (consuming its challenge) and returns its `Set-Cookie`.
pub(crate) fn mint(binding: &Binding, device: &mut BoundDevice, now: SystemTime) -> String {
    let value = nonce(32);
    device.cookie_hash = Some(digest(&value));
    device.cookie_expires = now.checked_add(binding.lifetime);
    device.challenge = None;
    device.challenge_expires = None;
    bound_cookie(&binding.cookie_name, &value, Some(binding.lifetime))
}

/// Why a bound session's request has no valid bound cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// The request carries no bound cookie.
    Absent,
    /// It carries one that is not the current one (forged, or an older one).
    Invalid,
    /// The current one, past its lifetime.
    Expired,
}

impl Missing {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Missing::Absent => "absent",
            Missing::Invalid => "invalid",
            Missing::Expired => "expired",
        }
    }
}

/// Whether the request carries `device`'s current bound cookie, unexpired at `now`.
pub(crate) fn check(
    binding: &Binding,
    device: &BoundDevice,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<(), Missing> {
    let mut seen = false;
    for value in headers.get_all(COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for c in cookie::Cookie::split_parse(text).flatten() {
            if c.name() != binding.cookie_name {
                continue;
            }
            seen = true;
            if device.cookie_hash.as_deref() == Some(digest(c.value()).as_str()) {
                return match device.cookie_expires {
                    Some(until) if now < until => Ok(()),
                    _ => Err(Missing::Expired),
                };
            }
        }
    }
    if seen {
        return Err(Missing::Invalid);
    }
    // A request that raced the registration (no bound cookie at all, just after it).
    let racing = device
        .bound_at
        .and_then(|at| at.checked_add(REGISTRATION_GRACE))
        .is_some_and(|until| now < until);
    if racing {
        Ok(())
    } else {
        Err(Missing::Absent)
    }
}
