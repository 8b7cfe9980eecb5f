//! The store's behaviour, one session at a time and per user, with its books checked after
//! each change; `room.rs` fills it, `lineage.rs` follows rotations.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::compact::Blob;
use super::key_hasher::prefix;
use super::shard::{read_shard, shard_of, write_shard};
use super::sweep::SWEEP_EVERY;
use super::MemoryStore;
use crate::id::{SessionKey, SessionToken};
use crate::record::{Identity, SessionRecord};
use crate::store::WriteOutcome;

mod lineage;
mod room;

fn rec(version: u64) -> Arc<SessionRecord> {
    let mut r = SessionRecord::new(SystemTime::now());
    r.version = version;
    Arc::new(r)
}

fn user_rec(user: &str) -> Arc<SessionRecord> {
    let mut r = SessionRecord::new(SystemTime::now());
    r.identity = Some(Identity::new(user));
    Arc::new(r)
}

const TTL: Duration = Duration::from_secs(60);

fn indexed(s: &MemoryStore, user: &str) -> usize {
    let (index, h) = s.state.lock_user_index(user);
    index.get(h).len()
}

fn cold_version(s: &MemoryStore, k: SessionKey) -> Option<u64> {
    s.state.hot.invalidate(&k);
    s.read(k).unwrap().map(|r| r.version)
}

fn create(s: &MemoryStore, k: SessionKey, r: Arc<SessionRecord>, ttl: Duration) -> WriteOutcome {
    s.state.create_now(k, r, ttl).unwrap()
}

/// A fresh key whose session lands in shard `i`.
fn key_in_shard(i: usize) -> SessionKey {
    loop {
        let k = SessionToken::generate().key();
        if shard_of(prefix(&k)) == i {
            return k;
        }
    }
}

/// Every counter agrees with what the maps hold, and every shard's guest queue starts
/// with a live guest whose number is published.
fn assert_books_balance(s: &MemoryStore) {
    let (mut sessions, mut guests) = (0, 0);
    for (i, shard) in s.state.shards.iter().enumerate() {
        let shard = read_shard(shard);
        let forwards = shard.map.values().filter(|b| !b.is_session()).count();
        let g = shard.map.values().filter(|b| b.is_guest()).count();
        assert_eq!(shard.forward_count, forwards, "shard {i}: forwards");
        assert_eq!(shard.guest_count, g, "shard {i}: guests");
        assert!(shard.forward_queue.len() <= s.state.forwards_per_shard);
        let front = shard.guest_queue.front().copied();
        if let Some((p, _)) = front {
            assert!(shard.map.get(&p).is_some_and(Blob::is_guest), "shard {i}");
        }
        assert_eq!(
            s.state.oldest_guest[i].load(Ordering::Relaxed),
            front.map_or(u64::MAX, |(_, seq)| seq)
        );
        sessions += shard.map.len() - forwards;
        guests += g;
    }
    assert_eq!(
        s.state.session_slots.load(Ordering::Relaxed),
        sessions,
        "sessions"
    );
    assert_eq!(
        s.state.guest_slots.load(Ordering::Relaxed),
        guests,
        "guests"
    );
    assert_eq!(s.len(), sessions as u64);
}

#[test]
fn create_refuses_existing_key() {
    let s = MemoryStore::new();
    let k = SessionToken::generate().key();
    assert_eq!(create(&s, k, rec(1), TTL), WriteOutcome::Applied);
    assert_eq!(create(&s, k, rec(7), TTL), WriteOutcome::Conflict);
    assert_eq!(cold_version(&s, k), Some(1));
}

#[test]
fn update_is_compare_and_set() {
    let s = MemoryStore::new();
    let k = SessionToken::generate().key();
    assert_eq!(
        s.state.update_now(k, 1, rec(2), TTL),
        WriteOutcome::Conflict,
        "absent stays absent"
    );
    assert_eq!(cold_version(&s, k), None);
    let _ = create(&s, k, rec(1), TTL);
    assert_eq!(s.state.update_now(k, 1, rec(2), TTL), WriteOutcome::Applied);
    assert_eq!(
        s.state.update_now(k, 1, rec(2), TTL),
        WriteOutcome::Conflict,
        "stale version"
    );
    assert_eq!(cold_version(&s, k), Some(2));
}

#[test]
fn rotate_moves_only_from_expected_version() {
    let s = MemoryStore::new();
    let (old, new) = (
        SessionToken::generate().key(),
        SessionToken::generate().key(),
    );
    let _ = create(&s, old, rec(3), TTL);
    assert_eq!(
        s.state.rotate_now(old, 2, new, rec(1), TTL),
        WriteOutcome::Conflict
    );
    assert_eq!(
        cold_version(&s, new),
        None,
        "a failed rotation leaves no new record"
    );
    assert_eq!(
        s.state.rotate_now(old, 3, new, rec(1), TTL),
        WriteOutcome::Applied
    );
    assert_eq!(cold_version(&s, old), None);
    assert_eq!(cold_version(&s, new), Some(1));
    assert_books_balance(&s);
}

#[test]
fn delete_removes_hot_copy_and_index_entry() {
    let s = MemoryStore::new();
    let k = SessionToken::generate().key();
    let _ = create(&s, k, user_rec("u"), TTL);
    assert!(s.read(k).unwrap().is_some(), "hot");
    assert_eq!(s.state.live_sessions_of("u").len(), 1);
    assert!(s.state.delete_now(k));
    assert!(s.read(k).unwrap().is_none());
    assert!(s.state.live_sessions_of("u").is_empty());
    assert_eq!(indexed(&s, "u"), 0);
    assert!(!s.state.delete_now(k));
}

#[test]
fn many_sessions_of_one_user_are_all_indexed() {
    let s = MemoryStore::with_capacity(20_000);
    for _ in 0..20_000 {
        let _ = create(&s, SessionToken::generate().key(), user_rec("alice"), TTL);
    }
    assert_eq!(indexed(&s, "alice"), 20_000);
}

#[test]
fn expired_sessions_are_not_served_and_are_swept() {
    let s = MemoryStore::new();
    let k = SessionToken::generate().key();
    let g = SessionToken::generate().key();
    let _ = create(&s, k, user_rec("gone"), Duration::ZERO);
    let _ = create(&s, g, rec(1), Duration::ZERO);
    for key in [k, g] {
        s.state.hot.invalidate(&key);
        assert!(s.read(key).unwrap().is_none());
        // Enough writes to the same shard trigger a sweep.
        let p = prefix(&key);
        let i = shard_of(p);
        let mut shard = write_shard(&s.state.shards[i]);
        shard.writes = SWEEP_EVERY;
        s.state.sweep_if_due(i, &mut shard, false);
        assert!(!shard.map.contains_key(&p));
    }
    assert_eq!(indexed(&s, "gone"), 0);
    assert_books_balance(&s);
    assert!(s.is_empty());
}

#[test]
fn listing_prunes_ended_sessions_from_the_index_only() {
    let s = MemoryStore::new();
    for _ in 0..5 {
        let _ = create(
            &s,
            SessionToken::generate().key(),
            user_rec("u"),
            Duration::ZERO,
        );
    }
    let live: Vec<_> = (0..3).map(|_| SessionToken::generate().key()).collect();
    for k in &live {
        let _ = create(&s, *k, user_rec("u"), TTL);
    }
    assert_eq!(indexed(&s, "u"), 8);
    assert_eq!(s.state.live_sessions_of("u").len(), 3);
    assert_eq!(indexed(&s, "u"), 3, "expired ones pruned");
    assert_books_balance(&s);
}
