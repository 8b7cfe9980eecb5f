//! Where a request comes from.
//!
//! The address comes from the connection: axum's `ConnectInfo<SocketAddr>` (feature `axum`,
//! with `into_make_service_with_connect_info::<SocketAddr>()`), tonic's `TcpConnectInfo`
//! (feature `tonic`) or `TlsConnectInfo<TcpConnectInfo>` (feature `tonic-tls`), or a
//! [`PeerAddr`] that any server inserts into the request extensions itself.
//!
//! Forwarding headers are read only when that peer is one of the configured trusted proxies,
//! and then only the part the trusted proxies wrote: the chain is walked from the right and
//! the first address that is not a trusted proxy is the client. The leftmost entry is whatever
//! the client claimed, so it is never taken on trust. A header that cannot be parsed up to that
//! point is ignored, as is a `Forwarded` / `X-Forwarded-For` pair that disagrees (a proxy that
//! appends to one passes the other through from the client untouched).

use std::net::{IpAddr, SocketAddr};

use http::{Extensions, HeaderMap};
use ipnet::IpNet;

/// The peer address of the connection, for servers whose connection info the layer does not
/// know: insert it into each request's extensions before the layer runs.
///
/// ```
/// use std::net::SocketAddr;
/// use tower_session_guard::PeerAddr;
///
/// let mut req = http::Request::new(());
/// let peer: SocketAddr = "203.0.113.7:51234".parse().unwrap();
/// req.extensions_mut().insert(PeerAddr(peer));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The client address the layer resolved; the layer puts it into the request extensions for
/// the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// How a deployment without connection info can fix it; part of the error event.
pub(crate) const HOW_TO_PROVIDE_PEER: &str =
    "no peer address in the request extensions: serve axum with \
`into_make_service_with_connect_info::<SocketAddr>()`, enable feature `tonic` for tonic's \
TcpConnectInfo, or insert `tower_session_guard::PeerAddr` yourself";

/// The connection's peer address, from whichever connection info is present.
pub(crate) fn peer_addr(ext: &Extensions) -> Option<IpAddr> {
    if let Some(PeerAddr(addr)) = ext.get::<PeerAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = ext.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = ext
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
    {
        return Some(addr.ip());
    }
    #[cfg(feature = "tonic-tls")]
    if let Some(addr) = ext
        .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
        .and_then(|info| info.get_ref().remote_addr())
    {
        return Some(addr.ip());
    }
    None
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the rightmost
/// untrusted hop of the forwarding chain. IPv4-mapped IPv6 addresses come back as IPv4.
pub(crate) fn resolve(headers: &HeaderMap, ext: &Extensions, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer_addr(ext)?.to_canonical();
    if !is_trusted(trusted, peer) {
        return Some(peer);
    }
    let xff = chain_client(x_forwarded_for(headers), trusted);
    let fwd = chain_client(forwarded(headers), trusted);
    let client = match (xff, fwd) {
        (Chain::Client(a), Chain::Client(b)) if a == b => Some(a),
        (Chain::Client(_), Chain::Client(_)) => None,
        (Chain::Client(a), Chain::Absent) | (Chain::Absent, Chain::Client(a)) => Some(a),
        _ => None,
    };
    Some(client.unwrap_or(peer))
}

fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

enum Chain {
    /// No such header.
    Absent,
    /// The header could not be trusted (malformed where it mattered, or nothing but proxies).
    Unusable,
    /// The rightmost untrusted hop.
    Client(IpAddr),
}

/// Walks hops from the right (the one our trusted peer appended) to the left.
fn chain_client(hops: Option<Vec<Option<IpAddr>>>, trusted: &[IpNet]) -> Chain {
    let Some(hops) = hops else {
        return Chain::Absent;
    };
    for hop in hops.into_iter().rev() {
        match hop.map(|ip| ip.to_canonical()) {
            Some(ip) if is_trusted(trusted, ip) => continue,
            Some(ip) => return Chain::Client(ip),
            // A hop we cannot read, written by (or passed through) a trusted proxy: anything
            // to its left is unverifiable.
            None => return Chain::Unusable,
        }
    }
    Chain::Unusable
}

/// Every `X-Forwarded-For` entry, in order, across all such headers. `None` if absent.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut values = headers.get_all("x-forwarded-for").iter().peekable();
    values.peek()?;
    let mut hops = Vec::new();
    for value in values {
        match value.to_str() {
            Ok(s) => hops.extend(s.split(',').map(|h| parse_node(h.trim()))),
            Err(_) => hops.push(None),
        }
    }
    Some(hops)
}

/// Every `for=` node of RFC 7239 `Forwarded` headers, in order. `None` if absent. An element
/// without `for=` or with an unknown / obfuscated node counts as an unreadable hop.
fn forwarded(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut values = headers.get_all(http::header::FORWARDED).iter().peekable();
    values.peek()?;
    let mut hops = Vec::new();
    for value in values {
        let Ok(s) = value.to_str() else {
            hops.push(None);
            continue;
        };
        // Quoted strings may not contain ',' or ';' in any value we accept (IPs and ports), so a
        // plain split is enough; anything odd simply fails to parse as an address.
        for element in s.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            hops.push(node.and_then(|n| parse_node(unquote(n))));
        }
    }
    Some(hops)
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ext(peer: &str) -> Extensions {
        let mut e = Extensions::new();
        e.insert(PeerAddr(SocketAddr::new(peer.parse().unwrap(), 40000)));
        e
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn trusted() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("forwarded", "for=192.0.2.1"),
        ]);
        assert_eq!(
            resolve(&h, &ext("198.51.100.9"), &trusted()),
            Some(ip("198.51.100.9"))
        );
    }

    #[test]
    fn trusted_proxy_gives_rightmost_untrusted_hop() {
        let h = headers(&[("x-forwarded-for", "192.0.2.66, 203.0.113.5, 10.0.0.2")]);
        assert_eq!(
            resolve(&h, &ext("10.0.0.1"), &trusted()),
            Some(ip("203.0.113.5"))
        );
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.66, for=\"203.0.113.5:4711\";proto=https, for=10.0.0.2",
        )]);
        assert_eq!(
            resolve(&h, &ext("10.0.0.1"), &trusted()),
            Some(ip("203.0.113.5"))
        );
        let h = headers(&[("forwarded", "for=\"[2001:db8::17]:4711\"")]);
        assert_eq!(
            resolve(&h, &ext("fd00::1"), &trusted()),
            Some(ip("2001:db8::17"))
        );
    }

    #[test]
    fn split_headers_are_joined_in_order() {
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.66"),
            ("x-forwarded-for", "203.0.113.5"),
        ]);
        assert_eq!(
            resolve(&h, &ext("10.0.0.1"), &trusted()),
            Some(ip("203.0.113.5"))
        );
    }

    #[test]
    fn malformed_chains_fall_back_to_the_peer() {
        for v in ["garbage", "203.0.113.5, nonsense", "unknown", ""] {
            let h = headers(&[("x-forwarded-for", v)]);
            assert_eq!(
                resolve(&h, &ext("10.0.0.1"), &trusted()),
                Some(ip("10.0.0.1")),
                "{v}"
            );
        }
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(
            resolve(&h, &ext("10.0.0.1"), &trusted()),
            Some(ip("10.0.0.1"))
        );
        // Junk left of the first untrusted hop is the client's own claim and does not matter.
        let h = headers(&[("x-forwarded-for", "nonsense, 203.0.113.5")]);
        assert_eq!(
            resolve(&h, &ext("10.0.0.1"), &trusted()),
            Some(ip("203.0.113.5"))
        );
    }

    #[test]
    fn disagreeing_headers_are_both_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.5"),
            ("forwarded", "for=192.0.2.66"),
        ]);
        assert_eq!(
            resolve(&h, &ext("10.0.0.1"), &trusted()),
            Some(ip("10.0.0.1"))
        );
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.5"),
            ("forwarded", "for=203.0.113.5"),
        ]);
        assert_eq!(
            resolve(&h, &ext("10.0.0.1"), &trusted()),
            Some(ip("203.0.113.5"))
        );
    }

    #[test]
    fn v4_mapped_addresses_are_normalised() {
        let h = HeaderMap::new();
        assert_eq!(
            resolve(&h, &ext("::ffff:192.0.2.1"), &[]),
            Some(ip("192.0.2.1"))
        );
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.5")]);
        assert_eq!(
            resolve(&h, &ext("::ffff:10.0.0.1"), &trusted()),
            Some(ip("203.0.113.5"))
        );
    }

    #[test]
    fn no_connection_info_means_unknown() {
        assert_eq!(resolve(&HeaderMap::new(), &Extensions::new(), &[]), None);
    }
}
