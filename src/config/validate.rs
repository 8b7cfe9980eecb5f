//! Checking the settings once, into what the request path needs.

use cookie::SameSite;
use ipnet::IpNet;

use super::{Config, ConfigError, Env, Hooks, Settings, MAX_LIFETIME};
use crate::abuse::Budgets;
use crate::client_ip::ProxyConfig;
use crate::events::{Emitter, SessionEvent};
use crate::net::Cidrs;
use crate::pin::PinMode;
use crate::transport::Transport;

fn is_token_char(b: u8) -> bool {
    // RFC 7230 tchar, which RFC 6265 uses for cookie names.
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_attr_char(b: u8) -> bool {
    // Anything visible except ';' (which would start a new attribute).
    (0x21..0x7f).contains(&b) && b != b';'
}

impl Settings {
    /// Checks every setting, parses what the request path needs, and makes the hooks ready:
    /// the one place a configuration is validated. `policy_ranges` are the networks the
    /// policy's decisions depend on, for the overlap warning; `policy_needs_ip` whether it
    /// reads the client address at all.
    pub(crate) fn validate(
        self,
        hooks: Hooks,
        policy_ranges: Vec<IpNet>,
        policy_needs_ip: bool,
    ) -> Result<Env, ConfigError> {
        let c = &self.cookie;
        if c.name.is_empty() || !c.name.bytes().all(is_token_char) {
            return Err(ConfigError::InvalidCookieName(c.name.clone()));
        }
        for attr in std::iter::once(&c.path).chain(c.domain.as_ref()) {
            if attr.is_empty() || !attr.bytes().all(is_attr_char) {
                return Err(ConfigError::InvalidCookieAttribute(attr.clone()));
            }
        }
        if c.name.starts_with("__Host-") {
            if !c.secure {
                return Err(ConfigError::HostPrefixNeedsSecure);
            }
            if c.path != "/" {
                return Err(ConfigError::HostPrefixNeedsRootPath(c.path.clone()));
            }
            if let Some(domain) = &c.domain {
                return Err(ConfigError::HostPrefixForbidsDomain(domain.clone()));
            }
        }
        if c.name.starts_with("__Secure-") && !c.secure {
            return Err(ConfigError::SecurePrefixNeedsSecure);
        }
        if c.same_site == SameSite::None && !c.secure {
            return Err(ConfigError::SameSiteNoneNeedsSecure);
        }
        for (name, timeout) in [
            ("idle", self.idle_timeout),
            ("guest idle", self.guest_idle_timeout),
            ("absolute", self.absolute_timeout),
            ("remember-me", self.max_remember_me),
            ("remember-me idle", self.remember_me_idle_timeout),
        ] {
            if timeout.is_zero() {
                return Err(ConfigError::ZeroTimeout(name));
            }
            if timeout > MAX_LIFETIME {
                return Err(ConfigError::TimeoutTooLong(name, timeout));
            }
        }
        for (idle, absolute) in [
            (self.idle_timeout, self.absolute_timeout),
            (self.guest_idle_timeout, self.absolute_timeout),
            (self.remember_me_idle_timeout, self.max_remember_me),
        ] {
            if idle > absolute {
                return Err(ConfigError::IdleLongerThanAbsolute { idle, absolute });
            }
        }
        if self
            .guest_creation_limit
            .is_some_and(|l| l.max == 0 || l.per.is_zero())
        {
            return Err(ConfigError::InvalidLimit("guest creation"));
        }
        if self.guessing_limit.is_some_and(|l| {
            l.threshold == 0 || l.window.is_zero() || l.cooldown.is_some_and(|c| c.is_zero())
        }) {
            return Err(ConfigError::InvalidLimit("token guessing"));
        }
        if !self.pin.is_valid() {
            return Err(ConfigError::InvalidPinPrefix);
        }
        let token_header = http::HeaderName::from_bytes(self.token_header.as_bytes())
            .ok()
            .filter(|h| h != http::header::COOKIE && h != http::header::SET_COOKIE)
            .ok_or_else(|| ConfigError::InvalidTokenHeader(self.token_header.clone()))?;
        if self.session_limit.is_some_and(|l| l.max == 0) {
            return Err(ConfigError::ZeroSessionLimit);
        }
        let allowed_ranges = Cidrs::parse(&self.allowed_ranges)?;
        let trusted = Cidrs::parse(&self.trusted_proxies)?;
        if !trusted.is_empty() && self.forwarded_header.is_none() {
            return Err(ConfigError::ForwardedHeaderRequired);
        }
        let events = Emitter::new(hooks.events, self.event_interval);
        let policy_ranges = Cidrs::from(policy_ranges);
        for message in overlaps(&trusted, &allowed_ranges, &policy_ranges) {
            events.emit(SessionEvent::ConfigWarning { message }, || {
                hooks.clock.now()
            });
        }
        #[cfg(feature = "dbsc")]
        let device_binding = match self.device_binding.clone() {
            Some(b) => Some(
                b.validate(&self.cookie.name)
                    .map_err(ConfigError::InvalidDeviceBinding)?,
            ),
            None => None,
        };
        Ok(Env {
            budgets: Budgets::new(self.guest_creation_limit, self.guessing_limit),
            config: Config {
                needs_client_ip: self.pin != PinMode::Off
                    || !allowed_ranges.is_empty()
                    || policy_needs_ip,
                allowed_ranges,
                proxies: ProxyConfig {
                    trusted,
                    header: self.forwarded_header,
                },
                transport: Transport {
                    mode: self.token_transport,
                    header: token_header,
                    cookie: self.cookie.clone(),
                },
                #[cfg(feature = "dbsc")]
                device_binding,
                settings: self,
            },
            clock: hooks.clock,
            events,
            rejections: hooks.rejections,
        })
    }
}

/// A trusted proxy range that overlaps a range the pin or the policy trusts: a client inside
/// it connects as a "proxy" and may claim any address in a forwarding header, including one
/// the allowed ranges or a policy rule accept. A warning, not an error: a proxy that runs
/// inside an allowed network (a load balancer at 10.0.0.5 serving a 10.0.0.0/8 intranet) is
/// a legitimate setup, and refusing to start would push operators to weaken the ranges.
fn overlaps(trusted: &Cidrs, allowed: &Cidrs, policy: &Cidrs) -> Vec<String> {
    let mut out = Vec::new();
    for (what, ranges) in [("allowed range", allowed), ("policy range", policy)] {
        for (proxy, range) in trusted.overlaps(ranges) {
            out.push(format!(
                "trusted proxy range {proxy} overlaps the {what} {range}: a client inside \
{proxy} can claim any address in a forwarding header; trust only your proxies' own addresses"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::client_ip::ForwardedHeader;
    use crate::pin::PinMode;
    use crate::record::SessionRecord;

    fn check(f: impl FnOnce(&mut Settings)) -> Result<(), ConfigError> {
        let mut s = Settings::default();
        f(&mut s);
        s.validate(Hooks::default(), Vec::new(), true).map(|_| ())
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(check(|_| {}), Ok(()));
    }

    #[test]
    fn host_prefix_rules() {
        assert_eq!(
            check(|s| s.cookie.secure = false),
            Err(ConfigError::HostPrefixNeedsSecure)
        );
        assert!(matches!(
            check(|s| s.cookie.path = "/app".into()),
            Err(ConfigError::HostPrefixNeedsRootPath(_))
        ));
        assert!(matches!(
            check(|s| s.cookie.domain = Some("example.com".into())),
            Err(ConfigError::HostPrefixForbidsDomain(_))
        ));
        assert_eq!(
            check(|s| {
                s.cookie.name = "__Secure-id".into();
                s.cookie.secure = false;
            }),
            Err(ConfigError::SecurePrefixNeedsSecure)
        );
    }

    #[test]
    fn samesite_none_needs_secure() {
        assert_eq!(
            check(|s| {
                s.cookie.name = "sid".into();
                s.cookie.secure = false;
                s.cookie.same_site = SameSite::None;
            }),
            Err(ConfigError::SameSiteNoneNeedsSecure)
        );
    }

    #[test]
    fn timeouts_are_checked() {
        assert!(matches!(
            check(|s| s.idle_timeout = Duration::from_secs(9 * 3600)),
            Err(ConfigError::IdleLongerThanAbsolute { .. })
        ));
        assert_eq!(
            check(|s| s.idle_timeout = Duration::ZERO),
            Err(ConfigError::ZeroTimeout("idle"))
        );
    }

    #[test]
    fn bad_names_and_attributes() {
        for name in ["", "a b", "a;b", "sé"] {
            assert!(
                matches!(
                    check(|s| s.cookie.name = name.into()),
                    Err(ConfigError::InvalidCookieName(_))
                ),
                "{name}"
            );
        }
        assert!(matches!(
            check(|s| {
                s.cookie.name = "sid".into();
                s.cookie.path = "/; Domain=evil".into();
            }),
            Err(ConfigError::InvalidCookieAttribute(_))
        ));
    }

    #[test]
    fn cidrs_and_pins_are_checked() {
        assert_eq!(
            check(|s| {
                s.trusted_proxies = vec!["10.0.0.0/8".into(), "192.0.2.7".into(), "::1".into()];
                s.forwarded_header = Some(ForwardedHeader::XForwardedFor);
            }),
            Ok(())
        );
        assert_eq!(
            check(|s| s.allowed_ranges = vec!["10.0.0.0/40".into()]),
            Err(ConfigError::InvalidCidr("10.0.0.0/40".into()))
        );
        assert_eq!(
            check(|s| s.pin = PinMode::Subnet {
                v4_prefix: 33,
                v6_prefix: 64
            }),
            Err(ConfigError::InvalidPinPrefix)
        );
    }

    #[test]
    fn absurd_timeouts_are_refused() {
        for (name, f) in [
            (
                "idle",
                (|s: &mut Settings| s.idle_timeout = Duration::MAX) as fn(&mut Settings),
            ),
            ("absolute", |s| s.absolute_timeout = Duration::MAX),
            ("guest idle", |s| s.guest_idle_timeout = Duration::MAX),
        ] {
            assert!(
                matches!(check(f), Err(ConfigError::TimeoutTooLong(n, _)) if n == name),
                "{name}"
            );
        }
        assert_eq!(
            check(|s| {
                s.absolute_timeout = MAX_LIFETIME;
                s.idle_timeout = MAX_LIFETIME;
            }),
            Ok(())
        );
    }

    #[test]
    fn trusted_proxies_need_a_forwarding_header() {
        assert_eq!(
            check(|s| s.trusted_proxies = vec!["10.0.0.0/8".into()]),
            Err(ConfigError::ForwardedHeaderRequired)
        );
        assert_eq!(
            check(|s| {
                s.trusted_proxies = vec!["10.0.0.0/8".into()];
                s.forwarded_header = Some(ForwardedHeader::XForwardedFor);
            }),
            Ok(())
        );
    }

    #[test]
    fn overlapping_trusted_and_allowed_ranges_are_reported() {
        let nets = |s: &[&str]| Cidrs::parse(s).unwrap();
        let found = overlaps(
            &nets(&["127.0.0.1/32"]),
            &nets(&["127.0.0.0/8"]),
            &nets(&["10.0.0.0/8", "127.0.0.1/32"]),
        );
        assert_eq!(found.len(), 2, "{found:?}");
        let none = overlaps(
            &nets(&["10.1.0.0/16"]),
            &nets(&["192.0.2.0/24"]),
            &Cidrs::default(),
        );
        assert!(none.is_empty());
    }

    #[test]
    fn touch_interval_scales_with_idle_timeout() {
        let s = Settings {
            idle_timeout: Duration::from_secs(2),
            guest_idle_timeout: Duration::from_secs(1),
            ..Settings::default()
        };
        let config = s
            .validate(Hooks::default(), Vec::new(), true)
            .unwrap()
            .config;
        let mut record = SessionRecord::new(SystemTime::now());
        assert_eq!(
            config.touch_interval_for(&record),
            Duration::from_millis(50),
            "guest"
        );
        record.identity = Some(crate::record::Identity::new("u"));
        assert_eq!(
            config.touch_interval_for(&record),
            Duration::from_millis(100)
        );
    }
}
