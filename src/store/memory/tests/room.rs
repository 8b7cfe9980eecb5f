//! Room: the capacity is a bound, guests leave oldest first and never displace users, a login
//! evicts a user sampled at random, and a guest flood stays out of the hot tier.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{
    assert_books_balance, cold_version, create, indexed, key_in_shard, rec, user_rec, TTL,
};
use crate::id::{SessionKey, SessionToken};
use crate::store::memory::shard::{read_shard, write_shard, SHARDS};
use crate::store::memory::sweep::SWEEP_EVERY;
use crate::store::memory::MemoryStore;
use crate::store::WriteOutcome;

#[test]
fn a_store_filled_to_capacity_keeps_every_session() {
    let s = MemoryStore::with_capacity(1000);
    let keys: Vec<_> = (0..1000).map(|_| SessionToken::generate().key()).collect();
    for k in &keys {
        assert_eq!(create(&s, *k, user_rec("x"), TTL), WriteOutcome::Applied);
    }
    assert_eq!(s.len(), 1000);
    assert!(keys.iter().all(|k| cold_version(&s, *k).is_some()));
    let _ = create(&s, SessionToken::generate().key(), user_rec("x"), TTL);
    assert_eq!(s.len(), 1000, "one more evicts one");
    assert_books_balance(&s);
}

#[test]
fn capacity_is_a_bound_and_evictions_leave_the_index_consistent() {
    let s = MemoryStore::with_capacity(SHARDS as u64 * 4);
    let keys: Vec<_> = (0..SHARDS * 10)
        .map(|_| SessionToken::generate().key())
        .collect();
    for k in &keys {
        let _ = create(&s, *k, user_rec("many"), TTL);
    }
    assert!(s.len() <= SHARDS as u64 * 4, "{} sessions", s.len());
    assert_eq!(indexed(&s, "many") as u64, s.len());
    assert_books_balance(&s);
}

/// The old eviction looked only at the shard being written: with every session in
/// another shard it found no victim and the store grew past its bound.
#[test]
fn a_login_finds_its_victim_in_any_shard() {
    let s = MemoryStore::with_capacity(10);
    let held: Vec<_> = (0..10).map(|_| key_in_shard(0)).collect();
    for k in &held {
        assert_eq!(create(&s, *k, user_rec("u"), TTL), WriteOutcome::Applied);
    }
    let newcomer = key_in_shard(1);
    assert_eq!(
        create(&s, newcomer, user_rec("v"), TTL),
        WriteOutcome::Applied
    );
    assert_eq!(s.len(), 10);
    assert!(cold_version(&s, newcomer).is_some());
    assert_eq!(
        held.iter()
            .filter(|k| cold_version(&s, **k).is_none())
            .count(),
        1
    );
    assert_books_balance(&s);
}

/// The old eviction took the nearest expiry among the first 16 sessions of the shard's
/// iteration order. Give exactly those the *latest* expiry: the old code evicts them (the
/// worst choice, every time); a random sample almost never consists of them alone.
#[test]
fn users_are_evicted_from_a_random_sample_not_the_start_of_iteration() {
    let s = MemoryStore::with_capacity(256);
    for _ in 0..256 {
        let _ = create(
            &s,
            key_in_shard(0),
            user_rec("u"),
            Duration::from_secs(3600),
        );
    }
    let first: Vec<SessionKey> = {
        let shard = read_shard(&s.state.shards[0]);
        shard.map.iter().take(16).map(|(p, b)| b.key(*p)).collect()
    };
    for k in &first {
        assert_eq!(
            s.state
                .update_now(*k, 1, user_rec("u"), Duration::from_secs(7200)),
            WriteOutcome::Applied
        );
    }
    for _ in 0..32 {
        let _ = create(
            &s,
            key_in_shard(0),
            user_rec("u"),
            Duration::from_secs(10_800),
        );
    }
    assert_eq!(s.len(), 256);
    let lost = first
        .iter()
        .filter(|k| cold_version(&s, **k).is_none())
        .count();
    assert!(
        lost <= 2,
        "{lost} of the first 16 in iteration order evicted"
    );
    assert_books_balance(&s);
}

#[test]
fn the_guest_books_balance_however_guests_end() {
    let s = MemoryStore::builder()
        .capacity(400)
        .guest_capacity(100)
        .build();
    let mut guests: Vec<SessionKey> = Vec::new();
    for _ in 0..300 {
        let k = SessionToken::generate().key();
        assert_eq!(create(&s, k, rec(1), TTL), WriteOutcome::Applied);
        guests.push(k);
    }
    assert_books_balance(&s);
    let live: Vec<_> = guests
        .iter()
        .copied()
        .filter(|k| cold_version(&s, *k).is_some())
        .collect();
    assert_eq!(live, guests[200..], "the newest hundred");
    // Ended by delete, by login (rotation to a user), by an update that gives the guest
    // an identity (the layer never does; the books must follow anyway), by expiry.
    assert!(s.state.delete_now(live[0]));
    let user = SessionToken::generate().key();
    assert_eq!(
        s.state.rotate_now(live[1], 1, user, user_rec("u"), TTL),
        WriteOutcome::Applied
    );
    assert_eq!(
        s.state.update_now(live[2], 1, user_rec("w"), TTL),
        WriteOutcome::Applied
    );
    assert_eq!(s.state.live_sessions_of("w").len(), 1);
    assert_eq!(
        s.state.update_now(live[3], 1, rec(2), Duration::ZERO),
        WriteOutcome::Applied
    );
    assert_books_balance(&s);
    for i in 0..SHARDS {
        let mut shard = write_shard(&s.state.shards[i]);
        shard.writes = SWEEP_EVERY;
        s.state.sweep_if_due(i, &mut shard, false);
    }
    assert_books_balance(&s);
    assert_eq!(s.state.guest_slots.load(Ordering::Relaxed), 96);
    // A user turned back into a guest joins the queue as its newest.
    let _ = s.state.update_now(live[2], 1, rec(2), TTL);
    assert_books_balance(&s);
    assert_eq!(indexed(&s, "w"), 0);
}

#[test]
fn the_guest_queue_is_compacted() {
    let s = MemoryStore::with_capacity(10_000);
    for _ in 0..5_000 {
        let k = SessionToken::generate().key();
        let _ = create(&s, k, rec(1), TTL);
        // A guest in the middle of its shard's queue ends: its entry goes stale.
        let keep = SessionToken::generate().key();
        let _ = create(&s, keep, rec(1), TTL);
        assert!(s.state.delete_now(k));
        let _ = s.state.delete_now(keep);
    }
    let queued: usize = s
        .state
        .shards
        .iter()
        .map(|x| read_shard(x).guest_queue.len())
        .sum();
    assert!(queued <= SHARDS * 16, "{queued} queue entries for no guest");
    assert_books_balance(&s);
}

#[test]
fn a_guest_flood_leaves_the_hot_tier_to_logged_in_users() {
    let s = MemoryStore::with_capacities(100_000, 64);
    let users: Vec<_> = (0..32).map(|_| SessionToken::generate().key()).collect();
    for k in &users {
        let _ = create(&s, *k, user_rec("u"), TTL);
    }
    for _ in 0..10_000 {
        let _ = create(&s, SessionToken::generate().key(), rec(1), TTL);
    }
    s.state.hot.run_pending_tasks();
    for k in &users {
        assert!(
            s.state.hot.contains_key(k),
            "a user's session was pushed out"
        );
    }
    assert_eq!(
        s.state.hot.entry_count(),
        32,
        "no guest entered the hot tier"
    );
}
