//! The memory store's compact record encoding: one heap block per session instead of a
//! struct with a dozen allocations (identity strings, vectors, a map), so a million live
//! sessions fit in a couple of hundred megabytes.
//!
//! Layout (little-endian), fixed header first so that sweeps and compare-and-set read the
//! expiry and the version without decoding anything:
//!
//! ```text
//! 0      format (1)
//! 1..25  bytes 8..32 of the session key (the map is keyed by the first 8)
//! 25..33 expires_at, ns since the epoch (when the store may drop it)
//! 33..41 version
//! 41..49 created_at ns   49..57 last_seen ns   57..65 authenticated_at ns (u64::MAX = none)
//! 65..   pinned ip (tag 0 | 4 + 4 bytes | 6 + 16 bytes)
//!        identity (tag 0 | 1, user id, roles, groups as u16-length strings / u16 counts)
//!        optional fields: a flags byte (bit 0: user agent, bit 1: remember-me lifetime,
//!        bit 2: device binding), then the user agent (u16-length string) if bit 0, the
//!        lifetime (u64 ns) if bit 1, the device binding (u16-length JSON of `BoundDevice`)
//!        if bit 2
//!        data: the rest, a JSON object (empty when there is no data)
//! ```
//!
//! A key that was rotated away is kept for a while as a **forwarding entry** to its successor
//! (see [`SessionStore`](crate::store::SessionStore)): same key and expiry fields, so sweeps and
//! lookups treat both kinds alike, then the successor's full key.
//!
//! ```text
//! 0      format (2)
//! 1..25  bytes 8..32 of the rotated-away key
//! 25..33 expires_at, ns since the epoch (when the forward ends)
//! 33..65 the successor's key
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::id::SessionKey;
use crate::record::{Identity, SessionRecord};

const FORMAT: u8 = 1;
const FORWARD: u8 = 2;
const KEY_AT: usize = 1;
/// The map key holds the first 8 bytes of the session key; the blob keeps the other 24.
const KEY_TAIL: usize = 24;
const EXPIRES_AT: usize = 25;
const VERSION_AT: usize = 33;
const CREATED_AT: usize = 41;
const LAST_SEEN_AT: usize = 49;
const AUTHENTICATED_AT: usize = 57;
const HEADER: usize = 65;
const FORWARD_TO: usize = 33;
const FORWARD_LEN: usize = FORWARD_TO + 32;
const NO_TIME: u64 = u64::MAX;
/// The flags byte of the optional fields.
const HAS_USER_AGENT: u8 = 1;
const HAS_REMEMBER_ME: u8 = 2;
const HAS_DEVICE: u8 = 4;

/// One encoded session.
pub(crate) struct Blob(Box<[u8]>);

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(NO_TIME - 1))
        .unwrap_or(0)
}

fn time(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

/// Now, in the unit of the blobs' times (ns since the epoch): what sweeps and reads compare a
/// blob's expiry with.
#[inline]
pub(super) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The header field at `at`; 0 if the blob is too short to hold it. The store only holds
/// blobs it encoded, which always have the whole header, but a blob's accessors answer for
/// any bytes: a short blob reads as expired at the epoch (so a sweep drops it) and as
/// version 0 (which no compare-and-set expects: versions start at 1).
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
        .map_or(0, u64::from_le_bytes)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Strings longer than 64 KiB are cut (identities and user agents are far shorter), at a
    // character boundary so that the cut string still decodes.
    let mut n = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    let bytes = &s.as_bytes()[..n];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_strs(out: &mut Vec<u8>, list: &[String]) {
    let n = list.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_le_bytes());
    for s in &list[..n] {
        put_str(out, s);
    }
}

impl Blob {
    pub(crate) fn encode(key: &SessionKey, record: &SessionRecord, expires_at: SystemTime) -> Blob {
        let mut out = Vec::with_capacity(HEADER + 48);
        out.push(FORMAT);
        out.extend_from_slice(&key.as_bytes()[32 - KEY_TAIL..]);
        out.extend_from_slice(&nanos(expires_at).to_le_bytes());
        out.extend_from_slice(&record.version.to_le_bytes());
        out.extend_from_slice(&nanos(record.created_at).to_le_bytes());
        out.extend_from_slice(&nanos(record.last_seen).to_le_bytes());
        out.extend_from_slice(
            &record
                .authenticated_at
                .map(nanos)
                .unwrap_or(NO_TIME)
                .to_le_bytes(),
        );
        match record.pinned_ip {
            None => out.push(0),
            Some(IpAddr::V4(ip)) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            Some(IpAddr::V6(ip)) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        match &record.identity {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                put_str(&mut out, &id.user_id);
                put_strs(&mut out, &id.roles);
                put_strs(&mut out, &id.groups);
            }
        }
        // A binding is a few hundred bytes (a JWK, two nonces), far below the u16 cap.
        let device = record
            .device
            .as_ref()
            .and_then(|d| serde_json::to_string(d).ok())
            .filter(|json| json.len() <= usize::from(u16::MAX));
        let flags = (if record.user_agent.is_some() {
            HAS_USER_AGENT
        } else {
            0
        }) | (if record.remember_me.is_some() {
            HAS_REMEMBER_ME
        } else {
            0
        }) | (if device.is_some() { HAS_DEVICE } else { 0 });
        out.push(flags);
        if let Some(ua) = &record.user_agent {
            put_str(&mut out, ua);
        }
        if let Some(lifetime) = record.remember_me {
            let ns = u64::try_from(lifetime.as_nanos()).unwrap_or(u64::MAX);
            out.extend_from_slice(&ns.to_le_bytes());
        }
        if let Some(json) = &device {
            put_str(&mut out, json);
        }
        if !record.data.is_empty() {
            // Serialising a map of JSON values to JSON cannot fail.
            if let Ok(json) = serde_json::to_vec(&record.data) {
                out.extend_from_slice(&json);
            }
        }
        Blob(out.into_boxed_slice())
    }

    /// A forwarding entry: `key` was rotated away to `to`; it forwards until `expires_at`.
    pub(crate) fn forward(key: &SessionKey, to: &SessionKey, expires_at: SystemTime) -> Blob {
        let mut out = Vec::with_capacity(FORWARD_LEN);
        out.push(FORWARD);
        out.extend_from_slice(&key.as_bytes()[32 - KEY_TAIL..]);
        out.extend_from_slice(&nanos(expires_at).to_le_bytes());
        out.extend_from_slice(to.as_bytes());
        Blob(out.into_boxed_slice())
    }

    /// Whether this is a session (not a forwarding entry).
    pub(crate) fn is_session(&self) -> bool {
        self.0.first() != Some(&FORWARD)
    }

    /// Where a forwarding entry leads; `None` for a session.
    pub(crate) fn forward_target(&self) -> Option<SessionKey> {
        if self.is_session() {
            return None;
        }
        let to = self.0.get(FORWARD_TO..FORWARD_LEN)?;
        <[u8; 32]>::try_from(to).ok().map(SessionKey::from_bytes)
    }

    /// Whether this is a guest session (no identity), read from the identity's tag so that
    /// the answer never depends on the user id decoding.
    pub(crate) fn is_guest(&self) -> bool {
        if !self.is_session() {
            return false;
        }
        let mut r = Reader {
            b: &self.0,
            at: HEADER,
        };
        r.skip_ip().is_some() && r.u8() == Some(0)
    }

    /// Whether this blob belongs to `key` (whose first 8 bytes the map already matched).
    pub(crate) fn is_for(&self, key: &SessionKey) -> bool {
        self.0.get(KEY_AT..KEY_AT + KEY_TAIL) == Some(&key.as_bytes()[32 - KEY_TAIL..])
    }

    /// The full session key, given the first 8 bytes the map is keyed by. A blob too short
    /// to hold the rest (never one the store encoded) gives zeros for it.
    pub(crate) fn key(&self, head: u64) -> SessionKey {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&head.to_le_bytes());
        if let Some(tail) = self.0.get(KEY_AT..KEY_AT + KEY_TAIL) {
            bytes[8..].copy_from_slice(tail);
        }
        SessionKey::from_bytes(bytes)
    }

    pub(crate) fn expires_at(&self) -> u64 {
        u64_at(&self.0, EXPIRES_AT)
    }

    /// The version of a session (meaningless for a forwarding entry: check
    /// [`is_session`](Self::is_session) first).
    pub(crate) fn version(&self) -> u64 {
        u64_at(&self.0, VERSION_AT)
    }

    /// When a session was created, ns since the epoch (meaningless for a forwarding entry).
    pub(crate) fn created_at(&self) -> u64 {
        u64_at(&self.0, CREATED_AT)
    }

    /// The user this session belongs to, without decoding the rest.
    pub(crate) fn user_id(&self) -> Option<&str> {
        if !self.is_session() {
            return None;
        }
        let mut r = Reader {
            b: &self.0,
            at: HEADER,
        };
        r.skip_ip()?;
        (r.u8()? == 1).then(|| r.str()).flatten()
    }

    pub(crate) fn decode(&self) -> Option<SessionRecord> {
        let b = &self.0;
        if b.first() != Some(&FORMAT) || b.len() < HEADER {
            return None;
        }
        let mut record = SessionRecord::new(time(u64_at(b, CREATED_AT)));
        record.version = u64_at(b, VERSION_AT);
        record.last_seen = time(u64_at(b, LAST_SEEN_AT));
        let auth = u64_at(b, AUTHENTICATED_AT);
        record.authenticated_at = (auth != NO_TIME).then(|| time(auth));
        let mut r = Reader { b, at: HEADER };
        record.pinned_ip = match r.u8()? {
            0 => None,
            4 => Some(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(r.take(4)?).ok()?,
            ))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(r.take(16)?).ok()?,
            ))),
            _ => return None,
        };
        if r.u8()? == 1 {
            record.identity = Some(Identity {
                user_id: r.str()?.to_owned(),
                roles: r.strs()?,
                groups: r.strs()?,
            });
        }
        let flags = r.u8()?;
        if flags & !(HAS_USER_AGENT | HAS_REMEMBER_ME | HAS_DEVICE) != 0 {
            return None;
        }
        if flags & HAS_USER_AGENT != 0 {
            record.user_agent = Some(r.str()?.to_owned());
        }
        if flags & HAS_REMEMBER_ME != 0 {
            let ns = u64::from_le_bytes(<[u8; 8]>::try_from(r.take(8)?).ok()?);
            record.remember_me = Some(Duration::from_nanos(ns));
        }
        if flags & HAS_DEVICE != 0 {
            record.device = Some(Box::new(serde_json::from_str(r.str()?).ok()?));
        }
        let rest = &b[r.at..];
        if !rest.is_empty() {
            record.data =
                serde_json::from_slice::<HashMap<String, serde_json::Value>>(rest).ok()?;
        }
        Some(record)
    }

    /// A blob of arbitrary bytes, for the fuzz targets.
    #[cfg(fuzzing)]
    pub(crate) fn from_boxed(bytes: Box<[u8]>) -> Blob {
        Blob(bytes)
    }

    /// The encoded bytes, for the fuzz targets.
    #[cfg(fuzzing)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Heap bytes held by this blob.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|s| usize::from(u16::from_le_bytes([s[0], s[1]])))
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.u16()?;
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn strs(&mut self) -> Option<Vec<String>> {
        let n = self.u16()?;
        (0..n).map(|_| self.str().map(str::to_owned)).collect()
    }

    fn skip_ip(&mut self) -> Option<()> {
        match self.u8()? {
            0 => {}
            4 => {
                self.take(4)?;
            }
            6 => {
                self.take(16)?;
            }
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests;
