//! Arbitrary bytes as `Cookie` headers and `x-session-token` headers, through the public
//! layer on a `MemoryStore` that holds one authenticated and one guest session.
//!
//! Input: one flags byte, then lines (`\n`-separated). A line starting with `t:` is a token
//! header value, any other line a `Cookie` header value. In a line, byte 0x01 stands for the
//! authenticated session's token, 0x02 for the guest session's, 0x03 for a well-formed token
//! no store holds. Flags: bits 0-1 the token transport (1 cookie only, 2 header only, else
//! both), bit 2 a gRPC content type.
//!
//! Checks: no panic; the layer always hands the request to the handler (same peer as the
//! login, permit-all policy, a store that cannot fail: no rejection is possible, and never a
//! 500); a session is found only when its token was presented the way the transport reads
//! (`Both` reads the token header only on gRPC requests); an unambiguous presentation finds
//! it, and of several tokens the first live one counts.
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use common::{Seen, Svc, COOKIE_NAME, TOKEN_HEADER};
use http::header::{HeaderName, CONTENT_TYPE, COOKIE};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use tower_session_guard::store::SessionKey;
use tower_session_guard::{Fingerprint, MemoryStore, TokenTransport};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
/// 43 base64url characters decoding to 32 zero bytes: well-formed, in no store.
const UNKNOWN_TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

struct World {
    /// Indexed by the transport bits: both, cookie only, header only.
    services: [Svc; 3],
    auth_token: String,
    guest_token: String,
    auth: Fingerprint,
    guest: Fingerprint,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let store = MemoryStore::new();
        let services = [
            TokenTransport::Both,
            TokenTransport::Cookie,
            TokenTransport::Header,
        ]
        .map(|t| common::service(|b| b.token_transport(t), &store));
        let auth_token = common::seed(&services[0], "/login", PEER);
        let guest_token = common::seed(&services[0], "/guest", PEER);
        let fp = |t: &str| {
            SessionKey::from_token_str(t)
                .expect("the layer issues well-formed tokens")
                .fingerprint()
        };
        World {
            auth: fp(&auth_token),
            guest: fp(&guest_token),
            services,
            auth_token,
            guest_token,
        }
    })
}

struct Line {
    header: bool,
    value: Vec<u8>,
    sent: bool,
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let grpc = flags & 4 != 0;
    // `Both` reads the token header only on gRPC requests (HTTP requests use the cookie).
    let (index, reads_cookie, reads_header) = match flags & 3 {
        1 => (1, true, false),
        2 => (2, false, true),
        _ => (0, true, grpc),
    };
    let placeholders = [
        (1u8, w.auth_token.as_str()),
        (2u8, w.guest_token.as_str()),
        (3u8, UNKNOWN_TOKEN),
    ];

    let mut req = common::request("/", PEER);
    if grpc {
        req.headers_mut().insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
    }
    let token_header = HeaderName::from_static(TOKEN_HEADER);
    let mut sent = Vec::new();
    for line in common::lines(rest) {
        let (header, raw) = match line.strip_prefix(b"t:") {
            Some(v) => (true, v),
            None => (false, line),
        };
        let value = common::expand(raw, &placeholders);
        let name = if header { token_header.clone() } else { COOKIE };
        let ok = common::append(&mut req, name, &value);
        sent.push(Line {
            header,
            value,
            sent: ok,
        });
    }

    let res = common::call(&w.services[index], req);
    let status = res.status();
    assert!(
        [
            StatusCode::OK,
            StatusCode::UNAUTHORIZED,
            StatusCode::SERVICE_UNAVAILABLE
        ]
        .contains(&status),
        "undocumented status {status}"
    );
    let seen: Seen = *res
        .extensions()
        .get::<Seen>()
        .unwrap_or_else(|| panic!("the layer refused the request ({status})"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.client_ip, Some(PEER));
    assert_eq!(seen.authenticated, seen.fingerprint == Some(w.auth));

    // Soundness: a session is found only if its token went the way the transport reads.
    let presented = |token: &str| {
        sent.iter().any(|l| {
            l.sent
                && ((l.header && reads_header) || (!l.header && reads_cookie))
                && l.value
                    .windows(token.len())
                    .any(|win| win == token.as_bytes())
        })
    };
    match seen.fingerprint {
        None => {}
        Some(fp) if fp == w.auth => assert!(presented(&w.auth_token), "auth session unasked"),
        Some(fp) if fp == w.guest => assert!(presented(&w.guest_token), "guest session unasked"),
        Some(fp) => panic!("a session that does not exist: {fp}"),
    }

    // Completeness for unambiguous inputs. The token header wins when it holds a token: of
    // its first four distinct well-formed values (visible ASCII, trimmed), the first live one
    // decides, and none live means no session.
    let expect = |token: &str| {
        if token == w.auth_token {
            Some(w.auth)
        } else if token == w.guest_token {
            Some(w.guest)
        } else {
            None
        }
    };
    let mut header_tokens: Vec<&str> = Vec::new();
    for v in sent
        .iter()
        .filter(|l| l.sent && l.header && reads_header && common::is_visible_ascii(&l.value))
        .filter_map(|l| std::str::from_utf8(&l.value).ok())
        .map(str::trim)
        .filter(|v| SessionKey::from_token_str(v).is_some())
    {
        if !header_tokens.contains(&v) {
            header_tokens.push(v);
        }
    }
    header_tokens.truncate(4);
    if !header_tokens.is_empty() {
        let first_live = header_tokens.iter().find_map(|t| expect(t));
        assert_eq!(
            seen.fingerprint, first_live,
            "token header {header_tokens:?}"
        );
    } else if reads_cookie {
        // The first Cookie line is exactly the layer's own form for a live session.
        let first = sent.iter().find(|l| l.sent && !l.header);
        if let Some(value) = first.and_then(|l| std::str::from_utf8(&l.value).ok()) {
            if let Some(token) = value
                .strip_prefix(COOKIE_NAME)
                .and_then(|v| v.strip_prefix('='))
            {
                if let Some(fp) = expect(token) {
                    assert_eq!(seen.fingerprint, Some(fp), "cookie {value:?}");
                }
            }
        }
    }
});
