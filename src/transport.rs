//! Token transport: reading the token from requests and writing it into responses: the cookie (with the
//! `cookie` crate) for browsers, and a plain header (default `x-session-token`) for clients
//! that keep no cookie jar, such as gRPC clients.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::header::{HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, COOKIE, SET_COOKIE};

use crate::id::{SessionKey, SessionToken};

/// How the token travels between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenTransport {
    /// Only the cookie: for browser-only applications.
    Cookie,
    /// Only the token header: for APIs whose clients keep no cookie jar.
    Header,
    /// The cookie for HTTP requests, the header for gRPC requests (the default, for a server
    /// with browser and gRPC clients). An HTTP request's token header is ignored, so a
    /// browser never receives its token in a header that page scripts could read (`HttpOnly`
    /// keeps its meaning) and an unknown header token can never shadow a valid cookie. A
    /// gRPC request uses its token header, or its cookie if it sends no header, and gets a
    /// new token back the way it sent one (the header if it sent none).
    #[default]
    Both,
}

/// The cookie's attributes, as the builder set them (checked by the configuration).
#[derive(Debug, Clone)]
pub(crate) struct CookieSettings {
    pub(crate) name: String,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) persistent: bool,
}

/// Everything this module needs to read and write tokens, validated: the transport, the
/// token header's name and the cookie.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    pub(crate) mode: TokenTransport,
    pub(crate) header: HeaderName,
    pub(crate) cookie: CookieSettings,
}

/// How many session cookies (or token headers) of a request are tried. Several cookies with
/// our name are a sign of cookie tossing (a sibling subdomain planting one); the layer uses
/// the first that is live, not merely the first that is well-formed, and bounds the work.
pub(crate) const MAX_CANDIDATES: usize = 4;

/// The presented session keys, in order, without duplicates. The first is kept inline; the
/// rest (only a request that carries our cookie or header more than once has any) in a box,
/// so the common case moves a few dozen bytes through the request path, not four keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct Candidates {
    first: Option<SessionKey>,
    more: Option<Box<[Option<SessionKey>; MAX_CANDIDATES - 1]>>,
}

impl Candidates {
    fn push(&mut self, key: SessionKey) -> bool {
        let Some(first) = self.first else {
            self.first = Some(key);
            return true;
        };
        if first == key {
            return true;
        }
        for slot in self.more.get_or_insert_with(Box::default).iter_mut() {
            match slot {
                Some(k) if *k == key => return true,
                Some(_) => {}
                None => {
                    *slot = Some(key);
                    return true;
                }
            }
        }
        false
    }

    pub(crate) fn first(&self) -> Option<SessionKey> {
        self.first
    }

    /// The key at position `i`, if there are that many.
    pub(crate) fn get(&self, i: usize) -> Option<SessionKey> {
        match i {
            0 => self.first,
            _ => *self.more.as_ref()?.get(i - 1)?,
        }
    }

    /// The keys from position `from` on.
    pub(crate) fn from(&self, from: usize) -> impl Iterator<Item = (usize, SessionKey)> + '_ {
        (from..MAX_CANDIDATES).map_while(|i| self.get(i).map(|k| (i, k)))
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

/// Which way a token is sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Cookie,
    Header,
}

/// The presented session keys and the way a new token must go back.
pub(crate) fn read_token(headers: &HeaderMap, transport: &Transport) -> (Candidates, Via) {
    let grpc = || crate::rejection::is_grpc(headers);
    let (cookie_ok, header_ok) = match transport.mode {
        TokenTransport::Cookie => (true, false),
        TokenTransport::Header => (false, true),
        TokenTransport::Both if grpc() => (true, true),
        TokenTransport::Both => (true, false),
    };
    // For gRPC, an explicit header wins over an ambient cookie: only code that holds the
    // token can set it.
    if header_ok {
        let keys = keys_from_header(headers, &transport.header);
        if !keys.is_empty() {
            return (keys, Via::Header);
        }
    }
    if cookie_ok {
        let keys = keys_from_headers(headers, &transport.cookie.name);
        if !keys.is_empty() {
            return (keys, Via::Cookie);
        }
    }
    let reply = if header_ok { Via::Header } else { Via::Cookie };
    (Candidates::default(), reply)
}

/// Marks the request's session cookie and token header values sensitive, so that their
/// `Debug` (in a policy's log line, a handler's `?headers`) is redacted.
pub(crate) fn mark_sensitive(headers: &mut HeaderMap, transport: &Transport) {
    // One pass over the (few) headers: `entry` would reserve room in the map first, and a
    // second name would mean a second lookup.
    for (name, value) in headers.iter_mut() {
        if name == COOKIE || name == transport.header {
            value.set_sensitive(true);
        }
    }
}

fn keys_from_header(headers: &HeaderMap, name: &HeaderName) -> Candidates {
    let mut keys = Candidates::default();
    for key in headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| SessionKey::from_token_str(v.trim()))
    {
        if !keys.push(key) {
            break;
        }
    }
    keys
}

/// Hands a new token to the client the way it expects it.
pub(crate) fn issue_token(
    headers: &mut HeaderMap,
    transport: &Transport,
    via: Via,
    token: &SessionToken,
    max_age: Option<Duration>,
) {
    match via {
        Via::Cookie => append(
            headers,
            SET_COOKIE,
            issue(&transport.cookie, token, max_age),
        ),
        Via::Header => append(
            headers,
            transport.header.clone(),
            HeaderValue::from_str(token.as_str()).ok(),
        ),
    }
}

/// Tells a cookie client to drop its token. A header client simply stops sending it (its
/// token is dead on the server either way), so it gets nothing.
pub(crate) fn remove_token(headers: &mut HeaderMap, transport: &Transport, via: Via) {
    if via == Via::Cookie {
        append(headers, SET_COOKIE, removal(&transport.cookie));
    }
}

/// `Cookie` header lines longer than this are skipped unparsed. Browsers cap a cookie at
/// 4 KiB and servers usually cap a header near 8 KiB; this only bounds the work an abusive
/// client can cause.
pub const MAX_COOKIE_HEADER: usize = 16 * 1024;

/// Finds the session tokens in every `Cookie` header (HTTP/2 sends one header per cookie)
/// and returns their store keys, in order, at most [`MAX_CANDIDATES`]. Non-UTF-8, oversized
/// or malformed headers and cookies are skipped; a cookie with our name whose value is not a
/// well-formed token counts as absent.
pub(crate) fn keys_from_headers(headers: &HeaderMap, name: &str) -> Candidates {
    let mut keys = Candidates::default();
    for value in headers.get_all(COOKIE) {
        // A line with anything but visible ASCII is skipped whole (conservative: such a
        // line did not come from a browser's cookie jar as we set it).
        if value.len() > MAX_COOKIE_HEADER || value.to_str().is_err() {
            continue;
        }
        let mut rest = Some(value.as_bytes());
        while let Some(text) = rest {
            // memchr finds the separator a vector at a time; the value of our own cookie is
            // most of the line.
            let pair = match memchr::memchr(b';', text) {
                Some(end) => {
                    rest = text.get(end + 1..);
                    &text[..end]
                }
                None => {
                    rest = None;
                    text
                }
            };
            if let Some(key) = key_from_pair(pair, name.as_bytes()) {
                if !keys.push(key) {
                    return keys;
                }
            }
        }
    }
    keys
}

/// The first session key of the `Cookie` headers, if any.
#[cfg(test)]
fn key_from_headers(headers: &HeaderMap, name: &str) -> Option<SessionKey> {
    keys_from_headers(headers, name).first()
}

/// The key in one `name=value` pair, if the pair has our name. The form the layer itself
/// sets and browsers send back (`name=` and exactly a token, no spaces or quotes) is read
/// directly; any other form with our name (whitespace around `=`, a quoted value, ...) goes
/// through the `cookie` crate. Both give the same answer for the direct form; the direct read
/// only skips building a whole `Cookie` (about 5% of an authenticated request, measured with
/// `perf`). Other cookies never reach the `cookie` crate: parsing the whole jar on every
/// request was a fifth of the layer's cost.
fn key_from_pair(pair: &[u8], name: &[u8]) -> Option<SessionKey> {
    let rest = pair.trim_ascii_start().strip_prefix(name)?;
    if let Some(value) = rest.strip_prefix(b"=") {
        if value.len() == crate::id::TOKEN_LEN || value.len() == crate::id::ROUTED_TOKEN_LEN {
            return SessionKey::from_token_bytes(value);
        }
    }
    // Another cookie whose name merely starts with ours.
    if !rest.trim_ascii_start().starts_with(b"=") {
        return None;
    }
    let pair = std::str::from_utf8(pair).ok()?;
    let cookie = Cookie::parse(pair.trim()).ok()?;
    (cookie.name().as_bytes() == name)
        .then(|| SessionKey::from_token_str(cookie.value()))
        .flatten()
}

fn base<'a>(cfg: &'a CookieSettings, value: &'a str) -> cookie::CookieBuilder<'a> {
    let mut b = Cookie::build((cfg.name.as_str(), value))
        .path(cfg.path.as_str())
        .secure(cfg.secure)
        .http_only(true)
        .same_site(cfg.same_site);
    if let Some(domain) = &cfg.domain {
        b = b.domain(domain.as_str());
    }
    b
}

/// The `Set-Cookie` value that hands `token` to the client. With `max_age` the cookie is
/// persistent; without, it is a session cookie.
pub(crate) fn issue(
    cfg: &CookieSettings,
    token: &SessionToken,
    max_age: Option<Duration>,
) -> Option<HeaderValue> {
    let mut b = base(cfg, token.as_str());
    if let Some(age) = max_age {
        let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        b = b.max_age(cookie::time::Duration::seconds(secs));
    }
    HeaderValue::from_str(&b.build().to_string()).ok()
}

/// The `Set-Cookie` value that removes the cookie: same name, path, domain and flags (or the
/// browser would treat it as a different cookie), empty value, `Max-Age=0` and a past expiry.
pub(crate) fn removal(cfg: &CookieSettings) -> Option<HeaderValue> {
    let mut c = base(cfg, "").build();
    c.make_removal();
    HeaderValue::from_str(&c.to_string()).ok()
}

/// Adds a token-carrying header (`Set-Cookie` or the token header) and marks the response
/// uncacheable: a cached response that hands out a session would hand it to the next client
/// of the cache.
fn append(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    if let Some(v) = value {
        headers.append(name, v);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CookieSettings {
        CookieSettings {
            name: "__Host-session".into(),
            secure: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
            persistent: false,
        }
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn finds_token_in_any_cookie_header() {
        let t = SessionToken::generate();
        let ours = format!("__Host-session={}", t.as_str());
        let h = headers(&[b"a=1; b=2", b"\xff\xfe=junk", ours.as_bytes()]);
        assert_eq!(key_from_headers(&h, "__Host-session"), Some(t.key()));
    }

    #[test]
    fn only_the_exact_name_matches() {
        let (a, b) = (SessionToken::generate(), SessionToken::generate());
        let v = format!(
            "__Host-sessionX={}; x=__Host-session={}; __Host-session = {}",
            a.as_str(),
            a.as_str(),
            b.as_str()
        );
        let h = headers(&[v.as_bytes()]);
        assert_eq!(key_from_headers(&h, "__Host-session"), Some(b.key()));
        let v = format!("__Host-sessionX={}", a.as_str());
        assert_eq!(
            key_from_headers(&headers(&[v.as_bytes()]), "__Host-session"),
            None
        );
    }

    #[test]
    fn skips_malformed_and_oversized() {
        let t = SessionToken::generate();
        let big = format!(
            "x={}; __Host-session={}",
            "a".repeat(MAX_COOKIE_HEADER),
            t.as_str()
        );
        for h in [
            headers(&[b"__Host-session=not-a-token"]),
            headers(&[b";;;===;;"]),
            headers(&[b"__Host-session"]),
            headers(&[big.as_bytes()]),
        ] {
            assert_eq!(key_from_headers(&h, "__Host-session"), None);
        }
    }

    #[test]
    fn every_session_cookie_is_a_candidate_in_order_and_bounded() {
        let tokens: Vec<_> = (0..6).map(|_| SessionToken::generate()).collect();
        let line = tokens
            .iter()
            .map(|t| format!("__Host-session={}", t.as_str()))
            .collect::<Vec<_>>()
            .join("; ");
        let keys = keys_from_headers(&headers(&[line.as_bytes()]), "__Host-session");
        let got: Vec<_> = keys.from(0).map(|(_, k)| k).collect();
        let want: Vec<_> = tokens[..MAX_CANDIDATES].iter().map(|t| t.key()).collect();
        assert_eq!(got, want);
        let dup = format!("__Host-session={0}; __Host-session={0}", tokens[0].as_str());
        let keys = keys_from_headers(&headers(&[dup.as_bytes()]), "__Host-session");
        assert_eq!(keys.from(0).count(), 1);
    }

    #[test]
    fn set_cookie_has_secure_attributes_and_no_max_age() {
        let t = SessionToken::generate();
        let v = issue(&cfg(), &t, None).unwrap();
        let s = v.to_str().unwrap();
        assert!(s.starts_with(&format!("__Host-session={}", t.as_str())));
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(s.contains(attr), "{s}");
        }
        assert!(!s.contains("Max-Age") && !s.contains("Domain"), "{s}");
    }

    #[test]
    fn removal_keeps_attributes() {
        let s = removal(&cfg()).unwrap().to_str().unwrap().to_owned();
        assert!(s.starts_with("__Host-session=;"), "{s}");
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=0",
            "Expires=",
        ] {
            assert!(s.contains(attr), "{s}");
        }
    }
}
