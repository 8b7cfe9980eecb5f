//! Unit tests of the client address resolution and the forwarding-header parsers.

use super::forwarding::MAX_HOPS;
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
