//! Per-address budgets against anonymous floods: how many guest sessions one address may
//! create, and how many unknown tokens it may present, per window.
//!
//! Both are kept in one bounded moka cache keyed by address (an IPv6 address by its /64,
//! since one host commonly holds a whole /64), so a flood from many addresses costs bounded
//! memory: an address that falls out of the cache simply starts a fresh window. Windows are
//! measured on the layer's clock, so tests drive them without sleeping.
//!
//! Logged-in users are never charged: a request with a live session passes without touching
//! these budgets, and an address in a guessing cool-down still has its live sessions served
//! (invariant 9 of `DESIGN.md`: nothing an anonymous client does can slow a logged-in user).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use moka::sync::Cache;

use crate::id::SessionKey;

/// How many addresses the budgets remember at once.
const TRACKED_ADDRESSES: u64 = 65_536;
/// Distinct unknown tokens are told apart by the last few seen from an address: a browser
/// that keeps sending one stale cookie counts once, a guesser counts every guess.
const RECENT_UNKNOWN: usize = 8;

/// A budget of `max` events per `per`, for one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Events allowed per window.
    pub max: u32,
    /// The window.
    pub per: Duration,
}

/// ID-guessing detection: more than `threshold` distinct unknown tokens from one address
/// within `window` emit [`SessionEvent::TokenGuessing`](crate::SessionEvent::TokenGuessing);
/// with a `cooldown`, that address's unknown tokens are then answered 429 and it may create
/// no guest session until the cool-down ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessingLimit {
    /// Distinct unknown tokens per window before the event.
    pub threshold: u32,
    /// The window.
    pub window: Duration,
    /// How long the address is refused after detection (`None`: only the event).
    pub cooldown: Option<Duration>,
}

/// What an unknown token from an address amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guess {
    /// Nothing unusual.
    Normal,
    /// The threshold was just crossed (reported once per window).
    Detected { count: u32 },
    /// The address is cooling down: refuse.
    Blocked,
}

#[derive(Default)]
struct Window {
    creations_since: Option<SystemTime>,
    creations: u32,
    unknown_since: Option<SystemTime>,
    unknown: u32,
    recent: [u64; RECENT_UNKNOWN],
    next: usize,
    reported: bool,
    blocked_until: Option<SystemTime>,
}

/// Starts a new window at `now` if the current one began `len` ago or more (or never, or
/// in the future: a clock stepped back starts over rather than blocking forever).
fn roll(since: &mut Option<SystemTime>, now: SystemTime, len: Duration) -> bool {
    let fresh = match *since {
        None => true,
        Some(start) => now.duration_since(start).map_or(true, |age| age >= len),
    };
    if fresh {
        *since = Some(now);
    }
    fresh
}

pub(crate) struct Budgets {
    addresses: Cache<u128, Arc<Mutex<Window>>>,
    creation: Option<RateLimit>,
    guessing: Option<GuessingLimit>,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("creation", &self.creation)
            .field("guessing", &self.guessing)
            .finish_non_exhaustive()
    }
}

/// An address as a budget key: IPv4 as itself, IPv6 by its /64.
fn bucket(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) & !u128::from(u64::MAX)) | (1 << 127),
    }
}

impl Budgets {
    pub(crate) fn new(creation: Option<RateLimit>, guessing: Option<GuessingLimit>) -> Self {
        let idle = [
            creation.map(|c| c.per),
            guessing.map(|g| g.window),
            guessing.and_then(|g| g.cooldown),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(Duration::from_secs(60));
        Budgets {
            addresses: Cache::builder()
                .max_capacity(TRACKED_ADDRESSES)
                .time_to_idle(idle)
                .build(),
            creation,
            guessing,
        }
    }

    pub(crate) fn guessing(&self) -> Option<GuessingLimit> {
        self.guessing
    }

    fn window(&self, ip: IpAddr) -> Arc<Mutex<Window>> {
        self.addresses.get_with(bucket(ip), Arc::default)
    }

    /// Charges one guest-session creation to `ip`; `Err(retry_after)` if over budget or
    /// cooling down after ID guessing.
    pub(crate) fn create_guest(&self, ip: IpAddr, now: SystemTime) -> Result<(), Duration> {
        if self.creation.is_none() && self.guessing.is_none_or(|g| g.cooldown.is_none()) {
            return Ok(());
        }
        let window = self.window(ip);
        let mut w = lock(&window);
        if let Some(until) = w.blocked_until {
            if let Ok(left) = until.duration_since(now) {
                if !left.is_zero() {
                    return Err(left);
                }
            }
        }
        let Some(limit) = self.creation else {
            return Ok(());
        };
        if roll(&mut w.creations_since, now, limit.per) {
            w.creations = 0;
        }
        w.creations = w.creations.saturating_add(1);
        if w.creations > limit.max {
            let since = w.creations_since.unwrap_or(now);
            let left = (since + limit.per)
                .duration_since(now)
                .unwrap_or(Duration::ZERO);
            return Err(left.max(Duration::from_secs(1)));
        }
        Ok(())
    }

    /// Records an unknown token presented by `ip`.
    pub(crate) fn unknown_token(&self, ip: IpAddr, key: SessionKey, now: SystemTime) -> Guess {
        let Some(limit) = self.guessing else {
            return Guess::Normal;
        };
        let window = self.window(ip);
        let mut w = lock(&window);
        if w.blocked_until.is_some_and(|until| until > now) {
            return Guess::Blocked;
        }
        if roll(&mut w.unknown_since, now, limit.window) {
            w.unknown = 0;
            w.reported = false;
        }
        let mut head = [0u8; 8];
        head.copy_from_slice(&key.as_bytes()[..8]);
        let tag = u64::from_le_bytes(head);
        if w.recent.contains(&tag) {
            return Guess::Normal;
        }
        let slot = w.next;
        w.recent[slot] = tag;
        w.next = (slot + 1) % RECENT_UNKNOWN;
        w.unknown = w.unknown.saturating_add(1);
        if w.unknown <= limit.threshold || w.reported {
            return Guess::Normal;
        }
        w.reported = true;
        if let Some(cooldown) = limit.cooldown {
            w.blocked_until = now.checked_add(cooldown);
        }
        Guess::Detected { count: w.unknown }
    }
}

fn lock(m: &Mutex<Window>) -> std::sync::MutexGuard<'_, Window> {
    // A window is a few counters, each updated by single assignments.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionToken;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn creation_budget_is_per_address_and_window() {
        let b = Budgets::new(
            Some(RateLimit {
                max: 3,
                per: Duration::from_secs(60),
            }),
            None,
        );
        for _ in 0..3 {
            assert_eq!(b.create_guest(ip("192.0.2.1"), t0()), Ok(()));
        }
        let later = t0() + Duration::from_secs(20);
        assert_eq!(
            b.create_guest(ip("192.0.2.1"), later),
            Err(Duration::from_secs(40))
        );
        assert_eq!(
            b.create_guest(ip("192.0.2.2"), later),
            Ok(()),
            "another address"
        );
        let next = t0() + Duration::from_secs(60);
        assert_eq!(b.create_guest(ip("192.0.2.1"), next), Ok(()), "new window");
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let b = Budgets::new(
            Some(RateLimit {
                max: 1,
                per: Duration::from_secs(60),
            }),
            None,
        );
        assert_eq!(b.create_guest(ip("2001:db8:1:2::1"), t0()), Ok(()));
        assert!(b.create_guest(ip("2001:db8:1:2::ffff"), t0()).is_err());
        assert_eq!(b.create_guest(ip("2001:db8:1:3::1"), t0()), Ok(()));
    }

    #[test]
    fn guessing_counts_distinct_tokens_and_reports_once() {
        let b = Budgets::new(
            None,
            Some(GuessingLimit {
                threshold: 5,
                window: Duration::from_secs(60),
                cooldown: Some(Duration::from_secs(300)),
            }),
        );
        let stale = SessionToken::generate().key();
        for _ in 0..100 {
            assert_eq!(b.unknown_token(ip("192.0.2.1"), stale, t0()), Guess::Normal);
        }
        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(b.unknown_token(ip("192.0.2.9"), SessionToken::generate().key(), t0()));
        }
        assert_eq!(seen[..4], [Guess::Normal; 4]);
        assert_eq!(seen[5], Guess::Detected { count: 6 });
        assert!(seen[6..].iter().all(|g| *g == Guess::Blocked));
        assert!(
            b.create_guest(ip("192.0.2.9"), t0()).is_err(),
            "cooling down"
        );
        assert_eq!(b.create_guest(ip("192.0.2.1"), t0()), Ok(()));
        let after = t0() + Duration::from_secs(300);
        assert_eq!(b.create_guest(ip("192.0.2.9"), after), Ok(()));
        let fresh = SessionToken::generate().key();
        assert_eq!(
            b.unknown_token(ip("192.0.2.9"), fresh, after),
            Guess::Normal
        );
    }
}
