//! The store contract (feature `test-util`): what every
//! [`SessionStore`](crate::store::SessionStore) must do, as checks
//! a store's tests run. `MemoryStore` and `RedisStore` run it in this crate's tests; the
//! author of another store runs it the same way.
//!
//! Each rule is a public async fn named after it, which opens its own stores through a
//! [`Harness`] and panics, naming the rule, when the store breaks it; [`run_all`] runs them
//! all. They need no runtime of their own (no tokio macros, no timers but a thread): run them
//! under the runtime your store needs.
//!
//! # Two handles
//!
//! A harness opens **two handles on the same backing data**, and the checks write through
//! one and read through the other: two `RedisStore`s on one Redis (each with its own
//! near-cache), or for an in-process store the same store twice. So what one instance of an
//! application writes, another reads, and a near-cache's coherence is part of the contract:
//! a handle may serve a record it read before for at most [`COHERENCE`] (1 s) after the
//! other handle changed or ended it; a key it never read as present, it reads at once; and
//! writes are checked against the backing data, never against a cache.
//!
//! # Rules
//!
//! * [`create_refuses_an_existing_key`]
//! * [`update_is_compare_and_set`]: wrong version, missing key, stale handle
//! * [`stale_writer_cannot_bring_back_a_deleted_record`]
//! * [`rotate_needs_the_expected_version`]: the new key appears and the old one disappears
//!   only at the expected version; nothing changes otherwise
//! * [`rotate_refuses_a_taken_key`]
//! * [`delete_is_final`], and answers whether it ended a live record
//! * [`delete_follows_a_rotation_to_its_successor`] (the lineage of
//!   [`FORWARD_TTL`](crate::store::FORWARD_TTL)) and
//!   [`delete_follows_at_most_max_forward_hops`]
//! * [`login_with_and_without_an_old_session`], [`login_limit_rejects_new_sessions`] and
//!   [`login_limit_evicts_the_oldest`]
//! * [`user_sessions_lists_oldest_first_within_the_limit`] and
//!   [`user_sessions_leave_out_ended_sessions`]
//! * [`guest_budget_ends_the_oldest_guests_first`], [`guest_budget_counts_only_guests`] and
//!   [`guest_is_refused_when_only_users_are_left`] (only for a store with a total bound: see
//!   [`Harness::open_with_capacity`])
//! * [`load_now_agrees_with_load`]
//! * [`records_come_back_with_every_field`]: to the nanosecond, after an update and a login
//! * [`records_expire_after_their_ttl`]: store ttls are wall-clock time, so this is the
//!   suite's one real-time wait (ttls of 10 ms, polled for at most [`EXPIRY_GRACE`], 2 s)
//!
//! # Example
//!
//! A store's author implements [`Harness`] in the store's tests (here for `MemoryStore`,
//! whose two handles are the store twice; a remote store would connect twice under a fresh
//! key prefix) and calls [`run_all`]:
//!
//! ```
//! use tower_session_guard::store::contract::{self, Harness};
//! use tower_session_guard::MemoryStore;
//!
//! struct MemoryHarness;
//!
//! impl Harness for MemoryHarness {
//!     type Store = MemoryStore;
//!
//!     async fn open(&self, guest_budget: Option<u64>) -> (MemoryStore, MemoryStore) {
//!         let mut builder = MemoryStore::builder();
//!         if let Some(n) = guest_budget {
//!             builder = builder.guest_capacity(n);
//!         }
//!         let store = builder.build();
//!         (store.clone(), store)
//!     }
//!
//!     async fn open_with_capacity(&self, capacity: u64) -> Option<(MemoryStore, MemoryStore)> {
//!         let store = MemoryStore::with_capacity(capacity);
//!         Some((store.clone(), store))
//!     }
//! }
//!
//! #[tokio::test]
//! async fn my_store_keeps_the_store_contract() {
//!     let not_checked = contract::run_all(&MemoryHarness).await;
//!     assert!(not_checked.is_empty(), "{not_checked:?}");
//! }
//! # fn main() {} // compiled only: `tests/store_contract.rs` runs the suite
//! ```
//!
//! A failure names the rule and what broke it, e.g.
//! `store contract, update is compare-and-set: a wrong expected version`.

mod harness;
mod lineage;
mod one_session;
mod per_user;
mod reads;
mod room;

pub use harness::{Harness, COHERENCE, EXPIRY_GRACE};
pub use lineage::{
    delete_follows_a_rotation_to_its_successor, delete_follows_at_most_max_forward_hops,
};
pub use one_session::{
    create_refuses_an_existing_key, delete_is_final, rotate_needs_the_expected_version,
    rotate_refuses_a_taken_key, stale_writer_cannot_bring_back_a_deleted_record,
    update_is_compare_and_set,
};
pub use per_user::{
    login_limit_evicts_the_oldest, login_limit_rejects_new_sessions,
    login_with_and_without_an_old_session, user_sessions_leave_out_ended_sessions,
    user_sessions_lists_oldest_first_within_the_limit,
};
pub use reads::{
    load_now_agrees_with_load, records_come_back_with_every_field, records_expire_after_their_ttl,
};
pub use room::{
    guest_budget_counts_only_guests, guest_budget_ends_the_oldest_guests_first,
    guest_is_refused_when_only_users_are_left,
};

/// Runs every rule, in the order of the list above (the slow one, expiry, last), and returns the names of the rules the
/// harness could not check (so far only
/// [`guest_is_refused_when_only_users_are_left`], for a harness without
/// [`Harness::open_with_capacity`]). Panics at the first rule the store breaks.
pub async fn run_all<H: Harness>(h: &H) -> Vec<&'static str> {
    create_refuses_an_existing_key(h).await;
    update_is_compare_and_set(h).await;
    stale_writer_cannot_bring_back_a_deleted_record(h).await;
    rotate_needs_the_expected_version(h).await;
    rotate_refuses_a_taken_key(h).await;
    delete_is_final(h).await;
    delete_follows_a_rotation_to_its_successor(h).await;
    delete_follows_at_most_max_forward_hops(h).await;
    login_with_and_without_an_old_session(h).await;
    login_limit_rejects_new_sessions(h).await;
    login_limit_evicts_the_oldest(h).await;
    user_sessions_lists_oldest_first_within_the_limit(h).await;
    user_sessions_leave_out_ended_sessions(h).await;
    guest_budget_ends_the_oldest_guests_first(h).await;
    guest_budget_counts_only_guests(h).await;
    let mut not_checked = Vec::new();
    if !guest_is_refused_when_only_users_are_left(h).await {
        not_checked.push("guest_is_refused_when_only_users_are_left");
    }
    load_now_agrees_with_load(h).await;
    records_come_back_with_every_field(h).await;
    // Last: the one real-time wait.
    records_expire_after_their_ttl(h).await;
    not_checked
}
