//! The [`Harness`] a store's tests implement, and what every check shares: records that say
//! which write they are, reads across the two handles, waits that need no runtime, and
//! failures that name the rule.

use std::future::{ready, Future};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use crate::id::{SessionKey, SessionToken};
use crate::record::{Identity, SessionRecord};
use crate::store::{SessionStore, StoreError, WriteOutcome};

/// Opens stores for the suite: each check opens its own, so checks share no state.
///
/// Both handles [`open`](Self::open) returns must work on the same backing data: two
/// `RedisStore`s on one Redis and one key prefix (each with its own near-cache), or for an
/// in-process store the same store twice. Every opening must start empty, or at least share
/// nothing with earlier openings (a fresh key prefix): the checks count guests and list users'
/// sessions.
pub trait Harness {
    /// The store under test.
    type Store: SessionStore;

    /// Two handles on one fresh backing store. `guest_budget`: `Some(n)` for a store that
    /// holds at most `n` guest sessions (sessions without an identity; `n` is small, 3 in the
    /// suite), `None` for the store's defaults.
    fn open(&self, guest_budget: Option<u64>) -> impl Future<Output = (Self::Store, Self::Store)>;

    /// Two handles on one fresh backing store that holds at most `capacity` sessions in all,
    /// guests and users together (`capacity` is small, 4 in the suite), for the rule that a
    /// new guest is refused with [`StoreError::full`] when only users are left
    /// ([`guest_is_refused_when_only_users_are_left`](super::guest_is_refused_when_only_users_are_left)).
    ///
    /// `None` (the default) for a store without such a bound: that rule is then reported as
    /// not checked by [`run_all`](super::run_all). `RedisStore` has none: Redis's
    /// `maxmemory` is its bound, which its own tests fill.
    fn open_with_capacity(
        &self,
        capacity: u64,
    ) -> impl Future<Output = Option<(Self::Store, Self::Store)>> {
        let _ = capacity;
        ready(None)
    }
}

/// How long a handle may go on serving a record it read before, from a near-cache, after
/// the other handle changed or ended it. Writes never depend on it: they are checked against
/// the backing data, so a stale cache never makes a compare-and-set succeed. A key the handle
/// never read as present is read from the backing data at once.
pub const COHERENCE: Duration = Duration::from_secs(1);

/// How long after its ttl a record may still load: the suite writes records with a ttl of
/// 10 ms and polls for their end for at most this long.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(2);

/// The ttl of the records the expiry check waits out.
pub(super) const SHORT_TTL: Duration = Duration::from_millis(10);
/// The ttl of every other record: far beyond any check.
pub(super) const TTL: Duration = Duration::from_secs(600);

pub(super) const APPLIED: WriteOutcome = WriteOutcome::Applied;
pub(super) const CONFLICT: WriteOutcome = WriteOutcome::Conflict;

/// The data field that tells which write a loaded record is.
const TAG: &str = "store-contract";

/// A fresh random key.
pub(super) fn key() -> SessionKey {
    SessionToken::generate().key()
}

/// A user id no other check uses, even on a backing store that was not emptied.
pub(super) fn user_id(name: &str) -> String {
    format!("{name}-{}", key().fingerprint())
}

/// A guest record at `version`, tagged `tag`.
pub(super) fn guest(version: u64, tag: &str) -> Arc<SessionRecord> {
    record(None, version, SystemTime::now(), tag)
}

/// `user`'s record at version 1, created `secs` seconds after `t0`: creation is what a
/// user's list and the session limit order by.
pub(super) fn member(user: &str, t0: SystemTime, secs: u64, tag: &str) -> Arc<SessionRecord> {
    record(Some(user), 1, t0 + Duration::from_secs(secs), tag)
}

fn record(user: Option<&str>, version: u64, created: SystemTime, tag: &str) -> Arc<SessionRecord> {
    let mut r = SessionRecord::new(created);
    r.version = version;
    r.identity = user.map(Identity::new);
    r.authenticated_at = user.map(|_| created);
    r.data.insert(TAG.to_owned(), tag.into());
    Arc::new(r)
}

/// A start time for [`member`]s: an hour ago, so that no record is created in the future.
pub(super) fn t0() -> SystemTime {
    SystemTime::now() - Duration::from_secs(3600)
}

/// What a read shows of a record: its version and tag.
pub(super) type Seen = Option<(u64, String)>;

/// What a read shows of `r`.
pub(super) fn seen(r: Option<&Arc<SessionRecord>>) -> Seen {
    r.map(|r| {
        let tag = r.data.get(TAG).and_then(|v| v.as_str()).unwrap_or_default();
        (r.version, tag.to_owned())
    })
}

/// `Some((version, tag))`, as [`load`] shows it.
pub(super) fn at(version: u64, tag: &str) -> Seen {
    Some((version, tag.to_owned()))
}

/// The value of a store call, or a panic naming the rule that was being checked.
#[track_caller]
pub(super) fn ok<T>(result: Result<T, StoreError>, rule: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("store contract, {rule}: the store failed: {e}"),
    }
}

/// What `store` reads under `key`.
pub(super) async fn load<S: SessionStore>(store: &S, key: SessionKey, rule: &str) -> Seen {
    seen(ok(store.load(key).await, rule).as_ref())
}

/// The keys of `user`'s sessions that `store` lists, in its order.
pub(super) async fn listed<S: SessionStore>(
    store: &S,
    user: &str,
    limit: usize,
    rule: &str,
) -> Vec<SessionKey> {
    let list = ok(store.user_sessions(user, limit).await, rule);
    for (k, r) in &list {
        let owner = r.identity.as_ref().map(|i| i.user_id.as_str());
        assert_eq!(
            owner,
            Some(user),
            "store contract, {rule}: user_sessions({user:?}) listed {k:?}, a session of {owner:?}"
        );
    }
    list.into_iter().map(|(k, _)| k).collect()
}

/// Checks that a list of at most `limit` holds `limit` of `all` (or all of them, if fewer),
/// in `all`'s order: which ones a store picks when there are more is its own.
#[track_caller]
pub(super) fn assert_some_in_order(
    got: &[SessionKey],
    all: &[SessionKey],
    limit: usize,
    rule: &str,
) {
    let mut order = all.iter();
    let in_order = got.iter().all(|k| order.any(|o| o == k));
    assert!(
        got.len() == limit.min(all.len()) && in_order,
        "store contract, {rule}: a list of at most {limit} gave {got:?}, \
         not {limit} of {all:?} oldest first"
    );
}

/// Waits until `store` reads `want` under `key`, for at most [`COHERENCE`]: the other
/// handle's write reaches a near-cache asynchronously (Redis pub/sub). Returns at once when
/// it already does, which for a store without a cache is always.
pub(super) async fn eventually<S: SessionStore>(
    store: &S,
    key: SessionKey,
    want: Seen,
    rule: &str,
) {
    let start = Instant::now();
    loop {
        let got = load(store, key, rule).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < COHERENCE,
            "store contract, {rule}: {key:?} still reads {got:?} on the other handle {COHERENCE:?} \
             after a write that made it {want:?} (what one handle writes, the other reads)"
        );
        sleep(Duration::from_millis(5)).await;
    }
}

/// If `load_now` answers for `key`, it answers what `load` does.
pub(super) async fn load_now_agrees<S: SessionStore>(store: &S, key: SessionKey, rule: &str) {
    if let Some(now) = store.load_now(key) {
        let now = seen(ok(now, rule).as_ref());
        let later = load(store, key, rule).await;
        assert_eq!(
            now, later,
            "store contract, {rule}: load_now answered {now:?} for {key:?}, load {later:?}"
        );
    }
}

/// A timer that needs no runtime: a thread sleeps and wakes the task. Only the waits above
/// use it (a poll for coherence, and the expiry check).
pub(super) fn sleep(duration: Duration) -> impl Future<Output = ()> {
    let deadline = Instant::now() + duration;
    let waker: Arc<Mutex<Option<Waker>>> = Arc::default();
    let mut started = false;
    std::future::poll_fn(move |cx| {
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        *waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        if !started {
            started = true;
            let waker = waker.clone();
            let spawned = std::thread::Builder::new()
                .name("store-contract-timer".into())
                .spawn(move || {
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                    if let Some(w) = waker.lock().unwrap_or_else(PoisonError::into_inner).take() {
                        w.wake();
                    }
                });
            if spawned.is_err() {
                // No thread to spare: poll again at once (a busy wait, but a bounded one).
                started = false;
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    })
}
