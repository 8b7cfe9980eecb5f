//! How the store names things in Redis (the key layout of the module docs), how it routes
//! sessions over a cluster's slots ([`RouteTag`]s), and itself in its invalidation messages.
//!
//! **Bases.** Every key name is a *base* followed by `s:<key hex>` (a record), `u:<user id>`
//! (an index) or `guests` (a guest set). The *legacy base* is the prefix itself (`{tsg}:`):
//! where tokens without a tag live, as every session did before tags. A *routed base* puts
//! the tag inside the prefix's hash tag (`{tsg.AbC}:`), so all the names of one base share one
//! cluster slot, and different tags spread over the slots. A prefix without a hash tag (one
//! Redis node only) gets `prefix{AbC}:`.
//!
//! **Which tag.** A logged-in session carries its user's tag, HMAC-SHA-256 of the user id
//! under the deployment's routing secret, cut to 18 bits: the user's sessions, index and
//! session limit share one slot, and the tag does not name the user to anyone without the
//! secret. A guest carries one of a few hundred guest-bucket tags, drawn at random, each
//! bucket with its share of the guest budget. See the module docs ("Redis Cluster") for what
//! a tag reveals.

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use super::codec::parse_hex_key;
use super::RedisStoreError;
use crate::id::{RouteTag, SessionKey};

/// `s:` and 64 hex characters: what follows the base in a record key.
const RECORD_SUFFIX: usize = 2 + 64;
/// A guest bucket holds at least this many guests (so a small budget stays one bucket, and
/// its eviction order exact).
const MIN_PER_GUEST_BUCKET: u64 = 64;
/// At most this many guest buckets: enough to spread guests over every primary of a large
/// cluster, few enough that each holds a useful share of the budget.
pub(super) const MAX_GUEST_BUCKETS: u64 = 1024;

/// The prefix, the channel, the instance id and the routing: every name the store sends
/// to Redis.
#[derive(Debug)]
pub(super) struct Names {
    prefix: String,
    /// A routed base is `head` + tag + `tail`.
    head: String,
    tail: String,
    /// `{prefix}inval`, the invalidation channel.
    channel: String,
    /// Random per store: names this store in its invalidation messages.
    instance: String,
    /// The HMAC key for users' tags (see [`Names::user_route`]).
    secret: Vec<u8>,
    /// How many guest buckets there are, and the guest budget of each.
    guest_buckets: u32,
    per_guest_bucket: u64,
}

impl Names {
    pub(super) fn new(prefix: String, instance: String, secret: Vec<u8>, guests: u64) -> Self {
        let (head, tail) = match hash_tag_end(&prefix) {
            Some(close) => (format!("{}.", &prefix[..close]), prefix[close..].to_owned()),
            None => (format!("{prefix}{{"), "}:".to_owned()),
        };
        let buckets = (guests / MIN_PER_GUEST_BUCKET).clamp(1, MAX_GUEST_BUCKETS);
        Names {
            channel: format!("{prefix}inval"),
            prefix,
            head,
            tail,
            instance,
            secret,
            guest_buckets: u32::try_from(buckets).unwrap_or(1),
            per_guest_bucket: guests.div_ceil(buckets).max(1),
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    /// The guest budget of one guest set (each base has its own).
    pub(super) fn per_guest_bucket(&self) -> u64 {
        self.per_guest_bucket
    }

    /// The tag of a new guest: one of the guest buckets, at random.
    pub(super) fn guest_route(&self) -> RouteTag {
        RouteTag::from_index(rand::rng().random_range(0..self.guest_buckets))
    }

    /// The tag of `user_id`'s sessions: the first 18 bits of HMAC-SHA-256(secret, user id).
    pub(super) fn user_route(&self, user_id: &str) -> RouteTag {
        // HMAC takes keys of any length; this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return RouteTag::from_index(0);
        };
        mac.update(user_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let n = u32::from_be_bytes([0, digest[0], digest[1], digest[2]]) >> 6;
        RouteTag::from_index(n)
    }

    /// The base of `route`'s names: the prefix for none (the legacy layout), else the routed
    /// base.
    pub(super) fn base(&self, route: Option<RouteTag>) -> String {
        match route {
            None => self.prefix.clone(),
            Some(tag) => format!("{}{}{}", self.head, tag.as_str(), self.tail),
        }
    }

    /// `<base>s:<key hex>`: a session's record (or forwarding entry), under its token's tag.
    pub(super) fn record_key(&self, key: &SessionKey) -> String {
        format!("{}s:{}", self.base(key.route()), key.to_hex())
    }

    /// `<base>u:<user id>`: the index of `user_id`'s sessions that live under `key`'s base,
    /// the one a script writing `key` keeps (a session's index entry lives beside it).
    pub(super) fn index_beside(&self, key: &SessionKey, user_id: &str) -> String {
        format!("{}u:{user_id}", self.base(key.route()))
    }

    /// The indexes `user_id`'s sessions can be in: under the user's tag (every login since
    /// tags), then under the legacy base (sessions written before them, and keys without a
    /// tag that a store API caller chose).
    pub(super) fn user_indexes(&self, user_id: &str) -> [String; 2] {
        [
            format!("{}u:{user_id}", self.base(Some(self.user_route(user_id)))),
            format!("{}u:{user_id}", self.prefix),
        ]
    }

    /// Whether two keys' names share a base (hence a cluster slot).
    pub(super) fn same_base(&self, a: &SessionKey, b: &SessionKey) -> bool {
        a.route() == b.route()
    }

    /// The session key (with its tag) of a record key name, as the scripts answer them.
    pub(super) fn key_of(&self, name: &[u8]) -> Result<SessionKey, RedisStoreError> {
        self.parse(name).ok_or_else(|| {
            RedisStoreError::Reply(format!(
                "not a session key: {:?}",
                String::from_utf8_lossy(name)
            ))
        })
    }

    fn parse(&self, name: &[u8]) -> Option<SessionKey> {
        let split = name.len().checked_sub(RECORD_SUFFIX)?;
        let (base, record) = name.split_at(split);
        let key = parse_hex_key(record.strip_prefix(b"s:")?)?;
        if base == self.prefix.as_bytes() {
            return Some(key);
        }
        let tag = base
            .strip_prefix(self.head.as_bytes())?
            .strip_suffix(self.tail.as_bytes())?;
        Some(key.with_route(Some(RouteTag::from_bytes(tag)?)))
    }
}

/// Where the prefix's hash tag closes (the first `}` after the first `{`, non-empty between),
/// if it has one.
pub(super) fn hash_tag_end(prefix: &str) -> Option<usize> {
    let open = prefix.find('{')?;
    let len = prefix[open + 1..].find('}')?;
    (len > 0).then_some(open + 1 + len)
}
