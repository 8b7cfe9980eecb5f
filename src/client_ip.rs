//! Where a request comes from.
//!
//! The address comes from the connection: axum's `ConnectInfo<SocketAddr>` (feature `axum`,
//! with `into_make_service_with_connect_info::<SocketAddr>()`), tonic's `TcpConnectInfo`
//! (feature `tonic`) or `TlsConnectInfo<TcpConnectInfo>` (feature `tonic-tls`), or a
//! [`PeerAddr`] that any server inserts into the request extensions itself.
//!
//! A forwarding header is read only when that peer is one of the configured trusted proxies,
//! and then only the **one** header the operator named ([`ForwardedHeader`]): common proxies
//! (nginx's `proxy_add_x_forwarded_for`, HAProxy's `forwardfor`, cloud load balancers) write
//! one header and pass every other one through from the client untouched, so any other
//! header is the client's own claim. The named chain is walked from the right and the first
//! address that is not a trusted proxy is the client; the leftmost entries are whatever the
//! client claimed, so they are never taken on trust.
//!
//! When the peer is trusted but the chain is missing, malformed where it matters, or holds
//! nothing but trusted hops, the client address is **unknown** — never the proxy's own
//! address, which would let any client behind the proxy claim to be the proxy (and pass every
//! rule that trusts the proxy's network). Nothing that needs the address (the pin, allowed
//! ranges, the policy, login) passes with an unknown address.

use std::net::{IpAddr, SocketAddr};

use http::{Extensions, HeaderMap, HeaderName};

use crate::net::Cidrs;

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

/// The forwarding header your trusted proxies write, the only one the layer reads (see
/// [`SessionGuardBuilder::forwarded_header`](crate::SessionGuardBuilder::forwarded_header)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx `proxy_add_x_forwarded_for`,
    /// HAProxy `option forwardfor`, most cloud load balancers).
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1` (Envoy and some proxies, configured to).
    Forwarded,
    /// `X-Real-IP: client`, a single address that the proxy sets, replacing any value the
    /// client sent (nginx `proxy_set_header X-Real-IP $remote_addr`). More than one such
    /// header, or a list, is unusable.
    XRealIp,
}

impl ForwardedHeader {
    /// The header's name.
    pub fn name(self) -> HeaderName {
        match self {
            ForwardedHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ForwardedHeader::Forwarded => http::header::FORWARDED,
            ForwardedHeader::XRealIp => HeaderName::from_static("x-real-ip"),
        }
    }
}

impl std::str::FromStr for ForwardedHeader {
    type Err = String;

    /// `x-forwarded-for`, `forwarded` or `x-real-ip` (any case).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            "x-real-ip" => Ok(ForwardedHeader::XRealIp),
            _ => Err(format!(
                "{s:?} is not a forwarding header (x-forwarded-for, forwarded or x-real-ip)"
            )),
        }
    }
}

/// The trusted proxies and the header they write, as the request path needs them.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyConfig {
    pub(crate) trusted: Cidrs,
    /// Always `Some` when `trusted` is not empty (the builder refuses otherwise).
    pub(crate) header: Option<ForwardedHeader>,
}

/// Where a request comes from, as far as the layer can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAddr {
    /// The client's address.
    Known(IpAddr),
    /// The request carries no connection info: a server wiring problem.
    NoPeer,
    /// The peer is a trusted proxy, but its forwarding chain does not name a client.
    Unverifiable {
        /// The trusted proxy the request came through.
        proxy: IpAddr,
        /// Why, for the event.
        reason: &'static str,
    },
}

impl ClientAddr {
    pub(crate) fn ip(self) -> Option<IpAddr> {
        match self {
            ClientAddr::Known(ip) => Some(ip),
            _ => None,
        }
    }

    /// Whom per-address budgets charge: the client, or for an unverifiable chain the proxy it
    /// came through (so a flood with forged chains shares one budget instead of none).
    pub(crate) fn budget_key(self) -> Option<IpAddr> {
        match self {
            ClientAddr::Known(ip) => Some(ip),
            ClientAddr::Unverifiable { proxy, .. } => Some(proxy),
            ClientAddr::NoPeer => None,
        }
    }

    /// What the `ClientIpUnknown` event says.
    pub(crate) fn problem(self) -> &'static str {
        match self {
            ClientAddr::Known(_) => "",
            ClientAddr::NoPeer => HOW_TO_PROVIDE_PEER,
            ClientAddr::Unverifiable { reason, .. } => reason,
        }
    }
}

/// How a deployment without connection info can fix it; part of the error event.
pub(crate) const HOW_TO_PROVIDE_PEER: &str =
    "no peer address in the request extensions: serve axum with \
`into_make_service_with_connect_info::<SocketAddr>()`, enable feature `tonic` for tonic's \
TcpConnectInfo, or insert `tower_session_guard::PeerAddr` yourself";

const CHAIN_MISSING: &str =
    "request from a trusted proxy without the configured forwarding header: client address unknown";
const CHAIN_UNUSABLE: &str = "request from a trusted proxy whose forwarding header is malformed \
or names only trusted proxies: client address unknown";

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
/// untrusted hop of the configured forwarding header. IPv4-mapped IPv6 addresses come back
/// as IPv4.
pub(crate) fn resolve(headers: &HeaderMap, ext: &Extensions, proxies: &ProxyConfig) -> ClientAddr {
    let Some(peer) = peer_addr(ext).map(|ip| ip.to_canonical()) else {
        return ClientAddr::NoPeer;
    };
    let (true, Some(header)) = (proxies.trusted.contains(peer), proxies.header) else {
        return ClientAddr::Known(peer);
    };
    let hops = match header {
        ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
        ForwardedHeader::Forwarded => forwarded(headers),
        ForwardedHeader::XRealIp => x_real_ip(headers),
    };
    match chain_client(hops, &proxies.trusted) {
        Chain::Client(ip) => ClientAddr::Known(ip),
        Chain::Absent => ClientAddr::Unverifiable {
            proxy: peer,
            reason: CHAIN_MISSING,
        },
        Chain::Unusable => ClientAddr::Unverifiable {
            proxy: peer,
            reason: CHAIN_UNUSABLE,
        },
    }
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
fn chain_client(hops: Option<Vec<Option<IpAddr>>>, trusted: &Cidrs) -> Chain {
    let Some(hops) = hops else {
        return Chain::Absent;
    };
    for hop in hops.into_iter().rev() {
        match hop.map(|ip| ip.to_canonical()) {
            Some(ip) if trusted.contains(ip) => continue,
            Some(ip) => return Chain::Client(ip),
            // A hop we cannot read, written by (or passed through) a trusted proxy: anything
            // to its left is unverifiable.
            None => return Chain::Unusable,
        }
    }
    Chain::Unusable
}

/// Hops listed in one request's forwarding header are bounded: a longer chain is unusable,
/// so a client cannot make the walk arbitrarily long.
const MAX_HOPS: usize = 32;

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
    Some(bounded(hops))
}

/// A chain longer than [`MAX_HOPS`] keeps only an unreadable hop, so it resolves as unusable.
fn bounded(hops: Vec<Option<IpAddr>>) -> Vec<Option<IpAddr>> {
    if hops.len() > MAX_HOPS {
        vec![None]
    } else {
        hops
    }
}

/// The one `X-Real-IP` value; several headers or a list count as one unreadable hop.
fn x_real_ip(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut values = headers.get_all("x-real-ip").iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(vec![None]);
    }
    let hop = first.to_str().ok().and_then(|s| parse_node(s.trim()));
    Some(vec![hop])
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
    Some(bounded(hops))
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

    fn proxies(header: ForwardedHeader) -> ProxyConfig {
        ProxyConfig {
            trusted: Cidrs::parse(&["10.0.0.0/8", "fd00::/8"]).unwrap(),
            header: Some(header),
        }
    }

    fn xff() -> ProxyConfig {
        proxies(ForwardedHeader::XForwardedFor)
    }

    fn known(s: &str) -> ClientAddr {
        ClientAddr::Known(s.parse().unwrap())
    }

    fn unknown(addr: ClientAddr) -> bool {
        matches!(addr, ClientAddr::Unverifiable { .. })
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("forwarded", "for=192.0.2.1"),
            ("x-real-ip", "192.0.2.1"),
        ]);
        for header in [
            ForwardedHeader::XForwardedFor,
            ForwardedHeader::Forwarded,
            ForwardedHeader::XRealIp,
        ] {
            assert_eq!(
                resolve(&h, &ext("198.51.100.9"), &proxies(header)),
                known("198.51.100.9")
            );
        }
    }

    #[test]
    fn trusted_proxy_gives_rightmost_untrusted_hop() {
        let h = headers(&[("x-forwarded-for", "192.0.2.66, 203.0.113.5, 10.0.0.2")]);
        assert_eq!(resolve(&h, &ext("10.0.0.1"), &xff()), known("203.0.113.5"));
        let fwd = proxies(ForwardedHeader::Forwarded);
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.66, for=\"203.0.113.5:4711\";proto=https, for=10.0.0.2",
        )]);
        assert_eq!(resolve(&h, &ext("10.0.0.1"), &fwd), known("203.0.113.5"));
        let h = headers(&[("forwarded", "for=\"[2001:db8::17]:4711\"")]);
        assert_eq!(resolve(&h, &ext("fd00::1"), &fwd), known("2001:db8::17"));
        let real = proxies(ForwardedHeader::XRealIp);
        let h = headers(&[("x-real-ip", "203.0.113.5")]);
        assert_eq!(resolve(&h, &ext("10.0.0.1"), &real), known("203.0.113.5"));
    }

    #[test]
    fn only_the_named_header_is_read() {
        // The proxy writes X-Forwarded-For; a client-supplied Forwarded is passed through
        // and must change nothing, whatever it says.
        for fwd in ["for=unknown", "for=10.0.0.1", "for=192.0.2.1", "garbage"] {
            let h = headers(&[("x-forwarded-for", "203.0.113.5"), ("forwarded", fwd)]);
            assert_eq!(resolve(&h, &ext("10.0.0.1"), &xff()), known("203.0.113.5"));
        }
        // Only a Forwarded header, while the proxy writes X-Forwarded-For: unknown.
        let h = headers(&[("forwarded", "for=203.0.113.5")]);
        assert!(unknown(resolve(&h, &ext("10.0.0.1"), &xff())));
    }

    #[test]
    fn split_headers_are_joined_in_order() {
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.66"),
            ("x-forwarded-for", "203.0.113.5"),
        ]);
        assert_eq!(resolve(&h, &ext("10.0.0.1"), &xff()), known("203.0.113.5"));
    }

    #[test]
    fn unusable_chains_are_unknown_never_the_proxy() {
        for v in [
            "garbage",
            "203.0.113.5, nonsense",
            "unknown",
            "",
            "10.0.0.9",
        ] {
            let h = headers(&[("x-forwarded-for", v)]);
            assert!(unknown(resolve(&h, &ext("10.0.0.1"), &xff())), "{v}");
        }
        assert!(unknown(resolve(
            &HeaderMap::new(),
            &ext("10.0.0.1"),
            &xff()
        )));
        let fwd = proxies(ForwardedHeader::Forwarded);
        for v in ["for=_hidden", "for=unknown", "proto=https", "for=10.0.0.3"] {
            let h = headers(&[("forwarded", v)]);
            assert!(unknown(resolve(&h, &ext("10.0.0.1"), &fwd)), "{v}");
        }
        let real = proxies(ForwardedHeader::XRealIp);
        for h in [
            headers(&[("x-real-ip", "203.0.113.5, 192.0.2.1")]),
            headers(&[("x-real-ip", "203.0.113.5"), ("x-real-ip", "192.0.2.1")]),
            headers(&[("x-real-ip", "10.0.0.7")]),
            headers(&[("x-real-ip", "nope")]),
        ] {
            assert!(unknown(resolve(&h, &ext("10.0.0.1"), &real)), "{h:?}");
        }
        // Junk left of the first untrusted hop is the client's own claim and does not matter.
        let h = headers(&[("x-forwarded-for", "nonsense, 203.0.113.5")]);
        assert_eq!(resolve(&h, &ext("10.0.0.1"), &xff()), known("203.0.113.5"));
    }

    #[test]
    fn overlong_chains_are_unusable() {
        let long = vec!["203.0.113.5"; MAX_HOPS + 1].join(", ");
        let h = headers(&[("x-forwarded-for", &long)]);
        assert!(unknown(resolve(&h, &ext("10.0.0.1"), &xff())));
    }

    #[test]
    fn v4_mapped_addresses_are_normalised() {
        assert_eq!(
            resolve(
                &HeaderMap::new(),
                &ext("::ffff:192.0.2.1"),
                &ProxyConfig::default()
            ),
            known("192.0.2.1")
        );
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.5")]);
        assert_eq!(
            resolve(&h, &ext("::ffff:10.0.0.1"), &xff()),
            known("203.0.113.5")
        );
    }

    #[test]
    fn no_connection_info_means_unknown() {
        assert_eq!(
            resolve(&HeaderMap::new(), &Extensions::new(), &xff()),
            ClientAddr::NoPeer
        );
    }
}
