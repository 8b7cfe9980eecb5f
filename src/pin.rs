//! Binding an authenticated session to where it logged in from.
//!
//! At login the client's address is stored in the session record. On every later request of
//! that session the layer compares the request's address with it, and with the optional
//! allowed ranges, before anything else sees the request. A mismatch is treated as a hijack:
//! the session is destroyed on the server and the request refused.

use std::net::IpAddr;

use crate::net::same_network;

/// How strictly a session is bound to its login address. At login the client's address is
/// stored in the session record; on every later request the layer compares the request's
/// address with it (and with the optional allowed ranges) before anything else sees the
/// request, and a mismatch destroys the session on the server and refuses the request.
///
/// Choosing a mode:
///
/// * [`PinMode::Exact`] (the default) is the strongest: a stolen cookie is useless from any
///   other address. It logs out users whose address changes mid-session: mobile clients moving
///   between networks, IPv6 privacy addresses rotating, load-balanced egress NATs.
/// * [`PinMode::Subnet`] tolerates changes inside a /24 (IPv4) or /64 (IPv6) by default: one
///   IPv6 host's privacy addresses share a /64, and many carrier NATs hand out addresses from
///   one /24. An attacker on the same network segment is not stopped.
/// * [`PinMode::Off`] pins nothing; allowed ranges and policies still apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinMode {
    /// The exact address of the login (the default).
    #[default]
    Exact,
    /// Any address in the same network as the login address, with these prefix lengths.
    Subnet {
        /// IPv4 prefix length (default 24).
        v4_prefix: u8,
        /// IPv6 prefix length (default 64).
        v6_prefix: u8,
    },
    /// No pinning.
    Off,
}

impl PinMode {
    /// `Subnet` with /24 for IPv4 and /64 for IPv6.
    pub const fn subnet() -> Self {
        PinMode::Subnet {
            v4_prefix: 24,
            v6_prefix: 64,
        }
    }

    /// Whether a request from `actual` may use a session pinned to `pinned`.
    pub fn allows(self, pinned: IpAddr, actual: IpAddr) -> bool {
        let (pinned, actual) = (pinned.to_canonical(), actual.to_canonical());
        match self {
            PinMode::Off => true,
            PinMode::Exact => pinned == actual,
            PinMode::Subnet {
                v4_prefix,
                v6_prefix,
            } => same_network(pinned, actual, v4_prefix, v6_prefix),
        }
    }

    /// Checks prefix lengths (at most 32 for IPv4, 128 for IPv6).
    pub(crate) fn is_valid(self) -> bool {
        match self {
            PinMode::Subnet {
                v4_prefix,
                v6_prefix,
            } => v4_prefix <= 32 && v6_prefix <= 128,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_mode() {
        assert!(PinMode::Exact.allows(ip("192.0.2.1"), ip("192.0.2.1")));
        assert!(!PinMode::Exact.allows(ip("192.0.2.1"), ip("192.0.2.2")));
        assert!(PinMode::Exact.allows(ip("2001:db8::1"), ip("2001:db8::1")));
        assert!(!PinMode::Exact.allows(ip("2001:db8::1"), ip("2001:db8::2")));
        // v4-mapped v6 is the same host as its v4 address.
        assert!(PinMode::Exact.allows(ip("192.0.2.1"), ip("::ffff:192.0.2.1")));
        assert!(!PinMode::Exact.allows(ip("192.0.2.1"), ip("::ffff:192.0.2.2")));
    }

    #[test]
    fn subnet_mode() {
        let m = PinMode::subnet();
        assert!(m.allows(ip("192.0.2.1"), ip("192.0.2.254")));
        assert!(!m.allows(ip("192.0.2.1"), ip("192.0.3.1")));
        assert!(m.allows(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9")));
        assert!(!m.allows(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1")));
        assert!(m.allows(ip("::ffff:192.0.2.1"), ip("192.0.2.77")));
        assert!(
            !m.allows(ip("192.0.2.1"), ip("2001:db8::1")),
            "families never match"
        );
        let narrow = PinMode::Subnet {
            v4_prefix: 32,
            v6_prefix: 128,
        };
        assert!(!narrow.allows(ip("192.0.2.1"), ip("192.0.2.2")));
    }

    #[test]
    fn off_mode_allows_anything() {
        assert!(PinMode::Off.allows(ip("192.0.2.1"), ip("2001:db8::1")));
    }
}
