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
use crate::rejection::Rejection;
use forwarding::{chain_client, forwarded, x_forwarded_for, x_real_ip, Chain};

mod forwarding;

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

/// The client address the layer resolved. With axum it is an extractor (`ClientIp`, or
/// `Option<ClientIp>`, which is `None` when the address is unknown); elsewhere,
/// [`Session::client_ip`](crate::Session::client_ip) gives it. It is read through the
/// request's `Session`, not kept as a second extension.
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

    /// What a request that needs the address answers when it is unknown: the server passes no
    /// connection info (500), or a trusted proxy names no client (401). Never called for a
    /// known address, which needs no answer; it would get the second.
    pub(crate) fn rejection(self) -> Rejection {
        match self {
            ClientAddr::NoPeer => Rejection::ClientIpUnknown,
            _ => Rejection::ClientIpUnverifiable,
        }
    }
}

/// What the policy sees as the client address when none is known and nothing configured
/// reads it (see [`PostAuthPolicy::needs_client_ip`](crate::PostAuthPolicy::needs_client_ip)).
pub(crate) const UNKNOWN_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

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

#[cfg(test)]
mod tests;
