//! Lineage: forwarding entries after a rotation are never served, expire, and stay bounded.

use std::time::{Duration, SystemTime};

use super::{assert_books_balance, cold_version, create, indexed, user_rec, TTL};
use crate::id::SessionToken;
use crate::store::memory::builder::MIN_FORWARDS_PER_SHARD;
use crate::store::memory::compact::{now_ns, Blob};
use crate::store::memory::key_hasher::prefix;
use crate::store::memory::shard::{read_shard, shard_of, write_shard, SHARDS};
use crate::store::memory::MemoryStore;
use crate::store::{WriteOutcome, FORWARD_TTL};

#[test]
fn a_forward_is_never_served_nor_cached() {
    let s = MemoryStore::new();
    let (old, new) = (
        SessionToken::generate().key(),
        SessionToken::generate().key(),
    );
    let _ = create(&s, old, user_rec("u"), TTL);
    assert!(s.read(old).unwrap().is_some());
    assert_eq!(
        s.state.rotate_now(old, 1, new, user_rec("u"), TTL),
        WriteOutcome::Applied
    );
    for _ in 0..3 {
        // Repeated misses would pass the doorkeeper if the forward were a session.
        assert!(s.read(old).unwrap().is_none());
    }
    assert!(s.state.hot.get(&old).is_none());
    assert_eq!(indexed(&s, "u"), 1, "only the successor is indexed");
    assert_eq!(s.len(), 1);
    assert_books_balance(&s);
}

/// Forwards live `FORWARD_TTL`. Time is driven through the sweep's clock and through
/// a forward lifetime of zero, never by sleeping.
#[test]
fn a_forward_expires_leads_nowhere_then_and_is_swept() {
    let s = MemoryStore::new();
    let (old, new) = (
        SessionToken::generate().key(),
        SessionToken::generate().key(),
    );
    let _ = create(&s, old, user_rec("u"), TTL);
    assert_eq!(
        s.state.rotate_now(old, 1, new, user_rec("u"), TTL),
        WriteOutcome::Applied
    );
    let p = prefix(&old);
    let i = shard_of(p);
    assert!(
        read_shard(&s.state.shards[i]).map.contains_key(&p),
        "written"
    );
    // Past its lifetime (and not yet swept), a forward is not followed.
    let expired = Blob::forward(&old, &new, SystemTime::now() - Duration::from_secs(1));
    let live = std::mem::replace(
        write_shard(&s.state.shards[i]).map.get_mut(&p).unwrap(),
        expired,
    );
    assert!(!s.state.delete_now(old), "the forward had expired");
    assert!(cold_version(&s, new).is_some(), "so the successor lives");
    // A sweep at the end of its lifetime removes a forward.
    {
        let mut shard = write_shard(&s.state.shards[i]);
        shard.map.insert(p, live);
        shard.forward_count += 1;
        shard.forward_queue.push_back(p);
        let later = now_ns() + FORWARD_TTL.as_nanos() as u64 + 1;
        s.state.sweep(i, &mut shard, now_ns());
        assert!(shard.map.contains_key(&p), "not before");
        s.state.sweep(i, &mut shard, later);
        assert!(!shard.map.contains_key(&p));
        assert_eq!(shard.forward_count, 0);
        assert!(shard.forward_queue.is_empty());
    }
    // A forward of zero lifetime is dropped as soon as it is written.
    let s = MemoryStore::builder().forward_ttl(Duration::ZERO).build();
    let _ = create(&s, old, user_rec("u"), TTL);
    assert_eq!(
        s.state.rotate_now(old, 1, new, user_rec("u"), TTL),
        WriteOutcome::Applied
    );
    assert!(!read_shard(&s.state.shards[i]).map.contains_key(&p));
    assert!(!s.state.delete_now(old));
    assert!(cold_version(&s, new).is_some());
    assert_books_balance(&s);
}

#[test]
fn forwards_are_bounded_per_shard_and_expire_as_new_ones_come() {
    let s = MemoryStore::with_capacity(1000);
    let cap = s.state.forwards_per_shard;
    assert_eq!(cap, MIN_FORWARDS_PER_SHARD);
    let mut key = SessionToken::generate().key();
    let _ = create(&s, key, user_rec("u"), TTL);
    for _ in 0..SHARDS * cap * 3 {
        let next = SessionToken::generate().key();
        assert_eq!(
            s.state.rotate_now(key, 1, next, user_rec("u"), TTL),
            WriteOutcome::Applied
        );
        key = next;
    }
    let forwards: usize = s
        .state
        .shards
        .iter()
        .map(|x| read_shard(x).forward_count)
        .sum();
    assert!(forwards <= SHARDS * cap, "{forwards} forwards");
    assert_eq!(s.len(), 1, "forwards are not sessions");
    assert_books_balance(&s);

    // With a zero lifetime, each new forward drops its expired predecessors.
    let s = MemoryStore::builder().forward_ttl(Duration::ZERO).build();
    let mut key = SessionToken::generate().key();
    let _ = create(&s, key, user_rec("u"), TTL);
    for _ in 0..SHARDS * 50 {
        let next = SessionToken::generate().key();
        assert_eq!(
            s.state.rotate_now(key, 1, next, user_rec("u"), TTL),
            WriteOutcome::Applied
        );
        key = next;
    }
    let forwards: usize = s
        .state
        .shards
        .iter()
        .map(|x| read_shard(x).forward_count)
        .sum();
    assert!(forwards <= SHARDS, "{forwards} forwards");
    assert_books_balance(&s);
}
