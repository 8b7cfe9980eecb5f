//! Arbitrary bytes as `X-Forwarded-For`, `Forwarded` and `X-Real-IP` values, from a peer that
//! is (mostly) a trusted proxy, through the public layer on a `MemoryStore`.
//!
//! Input: one flags byte, then lines (`\n`-separated). A line starting with `f:` is a
//! `Forwarded` value, `r:` an `X-Real-IP` value, `x:` or anything else an `X-Forwarded-For`
//! value. Flags: bits 0-1 the peer (10.0.0.1, fd00::1, ::ffff:10.0.0.1, or the untrusted
//! 198.51.100.9); bit 2 presents an authenticated session pinned to 10.0.0.1; bits 3-4 pick
//! which forwarding header the layer is told the proxies write (see `HEADERS`).
//!
//! Checks: no panic; 200 from the handler, or 401 only for the pinned session; the resolved
//! client is the peer or an untrusted address, never a trusted proxy; headers from an
//! untrusted peer, and headers the layer does not read, change nothing; an `X-Forwarded-For`
//! chain alone resolves to its rightmost untrusted hop.
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, OnceLock};

use common::{Seen, Svc, TOKEN_HEADER};
use http::header::{HeaderName, FORWARDED};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use tower_session_guard::{MemoryStore, SessionGuardBuilder};

const PROXY_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const PROXY_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
const PROXY_MAPPED: IpAddr = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001));
const UNTRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
const PEERS: [IpAddr; 4] = [PROXY_V4, PROXY_V6, PROXY_MAPPED, UNTRUSTED];
const TRUSTED: [&str; 2] = ["10.0.0.0/8", "fd00::/8"];

/// Which headers the layer reads: X-Forwarded-For, Forwarded, X-Real-IP.
#[derive(Clone, Copy)]
struct Reads {
    xff: bool,
    forwarded: bool,
    real_ip: bool,
}

/// The layer's configuration for each value of flag bits 3-4, and which headers it then
/// reads. Today's builder takes only `trusted_proxies` and reads both X-Forwarded-For and
/// Forwarded (never X-Real-IP), so the three are the same. When the builder names the header
/// the proxies write, make each entry name one, e.g.
/// `|b| b.trusted_proxies(TRUSTED).forwarded_header(ForwardedHeader::XForwardedFor)`, and set
/// its `Reads` to that header alone.
type Configure = fn(SessionGuardBuilder<MemoryStore>) -> SessionGuardBuilder<MemoryStore>;
const HEADERS: [(Configure, Reads); 3] = [
    (|b| b.trusted_proxies(TRUSTED), TODAY),
    (|b| b.trusted_proxies(TRUSTED), TODAY),
    (|b| b.trusted_proxies(TRUSTED), TODAY),
];
const TODAY: Reads = Reads {
    xff: true,
    forwarded: true,
    real_ip: false,
};

struct World {
    services: Vec<Svc>,
    /// A session pinned to `PROXY_V4` on each service; a pin violation ends it, so it is
    /// replaced then.
    pinned: Vec<Mutex<String>>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let store = MemoryStore::new();
        let services: Vec<Svc> = HEADERS
            .iter()
            .map(|(configure, _)| common::service(configure, &store))
            .collect();
        let pinned = services
            .iter()
            .map(|svc| Mutex::new(common::seed(svc, "/login", PROXY_V4)))
            .collect();
        World { services, pinned }
    })
}

fn is_trusted(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.octets()[0] == 0xfd,
    }
}

/// Today's `X-Forwarded-For` rule, restated: every value's comma-separated entries in order
/// (a value that is not visible ASCII is one unreadable entry); from the right, skip trusted
/// proxies; the first other readable address is the client; an unreadable one before that,
/// or a chain of proxies only, leaves the peer.
fn xff_client(values: &[&[u8]]) -> Option<IpAddr> {
    let mut hops = Vec::new();
    for v in values {
        match std::str::from_utf8(v) {
            Ok(s) if common::is_visible_ascii(v) => {
                hops.extend(s.split(',').map(|h| node(h.trim())))
            }
            _ => hops.push(None),
        }
    }
    for hop in hops.into_iter().rev() {
        match hop.map(|ip| ip.to_canonical()) {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return Some(ip),
            None => return None,
        }
    }
    None
}

/// An address, optionally with a port, IPv6 optionally in brackets.
fn node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let peer = PEERS[usize::from(flags & 3)];
    let with_session = flags & 4 != 0;
    let choice = usize::from((flags >> 3) & 3) % HEADERS.len();
    let reads = HEADERS[choice].1;

    let mut req = common::request("/", peer);
    if with_session {
        let token = w.pinned[choice].lock().unwrap().clone();
        req.headers_mut().insert(
            TOKEN_HEADER,
            token.parse().expect("a token is a header value"),
        );
    }
    let (xff, real_ip) = (
        HeaderName::from_static("x-forwarded-for"),
        HeaderName::from_static("x-real-ip"),
    );
    let (mut xff_values, mut any_read) = (Vec::new(), false);
    let (mut any_forwarded, mut any_real_ip) = (false, false);
    for line in common::lines(rest) {
        let (name, value, read) = if let Some(v) = line.strip_prefix(b"f:") {
            (FORWARDED, v, reads.forwarded)
        } else if let Some(v) = line.strip_prefix(b"r:") {
            (real_ip.clone(), v, reads.real_ip)
        } else {
            let v = line.strip_prefix(b"x:").unwrap_or(line);
            (xff.clone(), v, reads.xff)
        };
        let (is_forwarded, is_real_ip, is_xff) = (name == FORWARDED, name == real_ip, name == xff);
        if common::append(&mut req, name, value) {
            any_read |= read;
            any_forwarded |= is_forwarded;
            any_real_ip |= is_real_ip;
            if is_xff {
                xff_values.push(value);
            }
        }
    }

    let res = common::call(&w.services[choice], req);
    let status = res.status();
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the peer is known"
    );
    let Some(&Seen {
        client_ip,
        authenticated,
        ..
    }) = res.extensions().get::<Seen>()
    else {
        // Only a pinned session can be refused here: it was used from another address.
        assert!(with_session, "refused without a session ({status})");
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let mut token = w.pinned[choice].lock().unwrap();
        *token = common::seed(&w.services[choice], "/login", PROXY_V4);
        return;
    };
    assert_eq!(status, StatusCode::OK);
    let client = client_ip.expect("the layer resolved a client address");
    let canonical_peer = peer.to_canonical();
    assert!(
        client == canonical_peer || !is_trusted(client),
        "a trusted proxy {client} taken for the client"
    );
    assert_eq!(
        client,
        client.to_canonical(),
        "IPv4-mapped addresses come back as IPv4"
    );
    if !is_trusted(peer) || !any_read {
        assert_eq!(
            client, canonical_peer,
            "headers that must not count were read"
        );
    }
    // X-Forwarded-For alone among the headers the layer reads.
    let others = (reads.forwarded && any_forwarded) || (reads.real_ip && any_real_ip);
    if reads.xff && !others && is_trusted(peer) {
        let expected = xff_client(&xff_values).unwrap_or(canonical_peer);
        assert_eq!(client, expected, "X-Forwarded-For {xff_values:?}");
    }
    assert_eq!(authenticated, with_session);
    if with_session {
        assert_eq!(client, PROXY_V4, "the pin let another address through");
    }
});
