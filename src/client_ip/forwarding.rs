//! Reading the forwarding headers: each named header's hops, and the walk from the right
//! that finds the client behind the trusted proxies.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::net::Cidrs;

pub(super) enum Chain {
    /// No such header.
    Absent,
    /// The header could not be trusted (malformed where it mattered, or nothing but proxies).
    Unusable,
    /// The rightmost untrusted hop.
    Client(IpAddr),
}

/// Walks hops from the right (the one our trusted peer appended) to the left.
pub(super) fn chain_client(hops: Option<Vec<Option<IpAddr>>>, trusted: &Cidrs) -> Chain {
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
pub(super) const MAX_HOPS: usize = 32;

/// Every `X-Forwarded-For` entry, in order, across all such headers. `None` if absent.
pub(super) fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
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
pub(super) fn x_real_ip(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
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
pub(super) fn forwarded(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
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
