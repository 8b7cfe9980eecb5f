//! Arbitrary bytes as `X-Forwarded-For`, `Forwarded` and `X-Real-IP` values, from a peer that
//! is (mostly) a trusted proxy, through the public layer on a `MemoryStore`.
//!
//! Input: one flags byte, then lines (`\n`-separated). A line starting with `f:` is a
//! `Forwarded` value, `r:` an `X-Real-IP` value, `x:` or anything else an `X-Forwarded-For`
//! value. Flags: bits 0-1 the peer (10.0.0.1, fd00::1, ::ffff:10.0.0.1, or the untrusted
//! 198.51.100.9); bit 2 presents an authenticated session pinned to `CLIENT`; bits 3-4 pick
//! which forwarding header the layer is told the proxies write (see `HEADERS`).
//!
//! Checks: no panic; no 500; the resolved client is the untrusted peer, or an untrusted
//! address from the one header the layer reads, or unknown, never a trusted proxy; headers
//! from an untrusted peer, and headers the layer does not read, change nothing; an
//! `X-Forwarded-For` chain resolves to its rightmost untrusted hop and an `X-Real-IP` to its
//! single value; the pinned session passes only from `CLIENT`, and an unknown address
//! refuses it without ending it.
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, OnceLock};

use common::{Seen, Svc, COOKIE_NAME};
use http::header::{HeaderName, COOKIE, FORWARDED};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use tower_session_guard::{ForwardedHeader, MemoryStore, Rejection, SessionGuardBuilder};

const PROXY_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const PROXY_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
const PROXY_MAPPED: IpAddr = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001));
const UNTRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
const PEERS: [IpAddr; 4] = [PROXY_V4, PROXY_V6, PROXY_MAPPED, UNTRUSTED];
const TRUSTED: [&str; 2] = ["10.0.0.0/8", "fd00::/8"];
/// Where the pinned session logged in from, through the proxy.
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 50));

/// The forwarding header each value of flag bits 3-4 configures (the layer reads only it).
type Configure = fn(SessionGuardBuilder) -> SessionGuardBuilder;
const HEADERS: [(Configure, ForwardedHeader); 3] = [
    (
        |b| {
            b.trusted_proxies(TRUSTED)
                .forwarded_header(ForwardedHeader::XForwardedFor)
        },
        ForwardedHeader::XForwardedFor,
    ),
    (
        |b| {
            b.trusted_proxies(TRUSTED)
                .forwarded_header(ForwardedHeader::Forwarded)
        },
        ForwardedHeader::Forwarded,
    ),
    (
        |b| {
            b.trusted_proxies(TRUSTED)
                .forwarded_header(ForwardedHeader::XRealIp)
        },
        ForwardedHeader::XRealIp,
    ),
];

struct World {
    services: Vec<Svc>,
    /// A session pinned to `CLIENT` on each service; a pin violation ends it, so it is
    /// replaced then.
    pinned: Vec<Mutex<String>>,
}

/// Logs in through the proxy, the configured header naming `CLIENT`.
fn seed_pinned(svc: &Svc, header: ForwardedHeader) -> String {
    let mut req = common::request("/login", PROXY_V4);
    let value = match header {
        ForwardedHeader::Forwarded => format!("for={CLIENT}"),
        _ => CLIENT.to_string(),
    };
    common::append(&mut req, header.name(), value.as_bytes());
    common::seed_with(svc, req)
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
            .zip(HEADERS)
            .map(|(svc, (_, header))| Mutex::new(seed_pinned(svc, header)))
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

/// The `X-Forwarded-For` rule, restated: every value's comma-separated entries in order (a
/// value that is not visible ASCII is one unreadable entry); from the right, skip trusted
/// proxies; the first other readable address is the client; an unreadable one before that,
/// a chain of proxies only, or more than 32 entries leave the client unknown.
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
    // The layer reads at most 32 hops; a longer chain is unusable.
    if hops.len() > 32 {
        return None;
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

/// The single `X-Real-IP` value's address, if it is exactly one readable, untrusted one.
fn real_ip_client(values: &[&[u8]]) -> Option<IpAddr> {
    let [value] = values else {
        return None;
    };
    let s = std::str::from_utf8(value).ok()?;
    if !common::is_visible_ascii(value) {
        return None;
    }
    let ip = node(s.trim())?.to_canonical();
    (!is_trusted(ip)).then_some(ip)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let peer = PEERS[usize::from(flags & 3)];
    let with_session = flags & 4 != 0;
    let choice = usize::from((flags >> 3) & 3) % HEADERS.len();
    let header = HEADERS[choice].1;

    let mut req = common::request("/", peer);
    if with_session {
        let token = w.pinned[choice].lock().unwrap().clone();
        let cookie = format!("{COOKIE_NAME}={token}");
        common::append(&mut req, COOKIE, cookie.as_bytes());
    }
    let (xff, real_ip) = (
        HeaderName::from_static("x-forwarded-for"),
        HeaderName::from_static("x-real-ip"),
    );
    let mut values: Vec<(HeaderName, &[u8])> = Vec::new();
    for line in common::lines(rest) {
        let (name, value) = if let Some(v) = line.strip_prefix(b"f:") {
            (FORWARDED, v)
        } else if let Some(v) = line.strip_prefix(b"r:") {
            (real_ip.clone(), v)
        } else {
            (xff.clone(), line.strip_prefix(b"x:").unwrap_or(line))
        };
        if common::append(&mut req, name.clone(), value) {
            values.push((name, value));
        }
    }
    let of = |n: &HeaderName| -> Vec<&[u8]> {
        values
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| *v)
            .collect()
    };

    let canonical_peer = peer.to_canonical();
    // What the layer must resolve: the untrusted peer itself, or what the one configured
    // header names (`None` where this model does not restate the parser: Forwarded).
    let expected: Option<Option<IpAddr>> = if !is_trusted(peer) {
        Some(Some(canonical_peer))
    } else {
        match header {
            ForwardedHeader::XForwardedFor => {
                let v = of(&xff);
                Some(if v.is_empty() { None } else { xff_client(&v) })
            }
            ForwardedHeader::XRealIp => Some(real_ip_client(&of(&real_ip))),
            _ => None,
        }
    };

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
        // Only the pinned session is refused: from an unknown address (kept), or from another
        // one (ended: a pin violation).
        assert!(with_session, "refused without a session ({status})");
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        match res.extensions().get::<Rejection>() {
            Some(Rejection::ClientIpUnverifiable) => {
                assert!(is_trusted(peer), "an untrusted peer is always known");
                if let Some(e) = expected {
                    assert_eq!(e, None, "refused as unknown, but the chain names a client");
                }
            }
            Some(Rejection::PinViolation) => {
                if let Some(Some(e)) = expected {
                    assert_ne!(e, CLIENT, "the pin refused its own address");
                }
                let mut token = w.pinned[choice].lock().unwrap();
                *token = seed_pinned(&w.services[choice], header);
            }
            other => panic!("unexpected rejection {other:?}"),
        }
        return;
    };
    assert_eq!(status, StatusCode::OK);
    if let Some(client) = client_ip {
        assert!(
            client == canonical_peer && !is_trusted(peer) || !is_trusted(client),
            "a trusted proxy {client} taken for the client"
        );
        assert_eq!(
            client,
            client.to_canonical(),
            "IPv4-mapped addresses come back as IPv4"
        );
    } else {
        assert!(is_trusted(peer), "an untrusted peer is always known");
    }
    if let Some(e) = expected {
        assert_eq!(client_ip, e, "{header:?} from {peer}: {values:?}");
    }
    assert_eq!(authenticated, with_session);
    if with_session {
        assert_eq!(
            client_ip,
            Some(CLIENT),
            "the pin let another address through"
        );
    }
});
