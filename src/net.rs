//! Networks: the one place that parses CIDR lists and asks whether an address lies in them,
//! for the allowed ranges, the trusted proxies, the pin's subnet and the policy's rules.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Text that is not a network: neither CIDR notation (`10.0.0.0/8`, `2001:db8::/32`) nor a
/// bare address (which means that one host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCidr(pub String);

impl fmt::Display for InvalidCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a CIDR range (expected e.g. 10.0.0.0/8 or ::1/128)",
            self.0
        )
    }
}

impl std::error::Error for InvalidCidr {}

impl From<&str> for InvalidCidr {
    fn from(text: &str) -> Self {
        InvalidCidr(text.to_owned())
    }
}

/// A list of networks, parsed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cidrs(Vec<IpNet>);

impl Cidrs {
    /// Parses each entry (surrounding whitespace ignored; a bare address is one host; host
    /// bits are cleared, so `10.1.2.3/8` is `10.0.0.0/8`).
    pub(crate) fn parse<S: AsRef<str>>(list: &[S]) -> Result<Cidrs, InvalidCidr> {
        list.iter()
            .map(|s| {
                let s = s.as_ref().trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| InvalidCidr::from(s))
            })
            .collect::<Result<_, _>>()
            .map(Cidrs)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` lies in one of the networks (an IPv4-mapped IPv6 address counts as its
    /// IPv4 address). An empty list contains nothing.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether `ip` may pass a list of *allowed* networks: an empty list allows every address.
    pub(crate) fn admits(&self, ip: IpAddr) -> bool {
        self.is_empty() || self.contains(ip)
    }

    /// The networks of `self` that overlap a network of `other`, with that network.
    pub(crate) fn overlaps<'a>(
        &'a self,
        other: &'a Cidrs,
    ) -> impl Iterator<Item = (IpNet, IpNet)> + 'a {
        self.0.iter().flat_map(move |a| {
            other
                .0
                .iter()
                .filter(move |b| a.contains(&b.network()) || b.contains(&a.network()))
                .map(move |b| (*a, *b))
        })
    }

    pub(crate) fn as_slice(&self) -> &[IpNet] {
        &self.0
    }
}

impl From<Vec<IpNet>> for Cidrs {
    fn from(nets: Vec<IpNet>) -> Self {
        Cidrs(nets.into_iter().map(|n| n.trunc()).collect())
    }
}

/// Whether `a` and `b` share the network of `prefix` bits (per family); addresses of
/// different families never do. A prefix longer than the address never matches.
pub(crate) fn same_network(a: IpAddr, b: IpAddr, v4_prefix: u8, v6_prefix: u8) -> bool {
    let prefix = match (a.to_canonical(), b.to_canonical()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => v4_prefix,
        (IpAddr::V6(_), IpAddr::V6(_)) => v6_prefix,
        _ => return false,
    };
    IpNet::new(a.to_canonical(), prefix)
        .map(|net| net.trunc().contains(&b.to_canonical()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_cidrs_and_bare_addresses() {
        let c = Cidrs::parse(&[" 10.1.2.3/8 ", "192.0.2.7", "::1"]).unwrap();
        assert!(c.contains(ip("10.200.0.1")));
        assert!(c.contains(ip("192.0.2.7")) && !c.contains(ip("192.0.2.8")));
        assert!(c.contains(ip("::1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")), "v4-mapped is v4");
        assert_eq!(
            Cidrs::parse(&["10.0.0.0/40"]),
            Err(InvalidCidr("10.0.0.0/40".into()))
        );
        assert_eq!(Cidrs::parse(&["nope"]), Err("nope".into()));
    }

    #[test]
    fn empty_lists_contain_nothing_and_admit_everything() {
        let none = Cidrs::default();
        assert!(!none.contains(ip("192.0.2.1")));
        assert!(none.admits(ip("192.0.2.1")));
    }

    #[test]
    fn overlaps_both_ways() {
        let a = Cidrs::parse(&["127.0.0.1"]).unwrap();
        let b = Cidrs::parse(&["127.0.0.0/8", "10.0.0.0/8"]).unwrap();
        assert_eq!(a.overlaps(&b).count(), 1);
        assert_eq!(b.overlaps(&a).count(), 1);
    }

    #[test]
    fn same_network_per_family() {
        assert!(same_network(ip("192.0.2.1"), ip("192.0.2.200"), 24, 64));
        assert!(!same_network(ip("192.0.2.1"), ip("192.0.3.1"), 24, 64));
        assert!(same_network(
            ip("2001:db8::1"),
            ip("2001:db8::ffff"),
            24,
            64
        ));
        assert!(!same_network(ip("192.0.2.1"), ip("2001:db8::1"), 24, 64));
        assert!(!same_network(ip("192.0.2.1"), ip("192.0.2.1"), 33, 64));
    }
}
