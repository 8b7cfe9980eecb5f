//! The operations, as methods of [`StoreShared`]: `load` (the near-cache, else one `HGET`)
//! and the scripted writes (one `EVALSHA` each), with what each does to the near-cache.

use std::sync::Arc;
use std::time::Duration;

use fred::error::Error as FredError;
use fred::interfaces::{HashesInterface, LuaInterface};
use fred::types::Value;

use super::codec::decode;
use super::scripts::{
    Call, CreateArgs, DeleteArgs, LoginArgs, RecordArgs, RetireArgs, RotateArgs, Script,
    UpdateArgs, UserSessionsArgs,
};
use super::shared::StoreShared;
use super::RedisStoreError;
use crate::id::SessionKey;
use crate::record::SessionRecord;
use crate::store::near_cache::Stamp;
use crate::store::{LoginOutcome, SessionLimit, WriteOutcome, MAX_FORWARD_HOPS};

impl StoreShared {
    /// Runs a script: `EVALSHA`, or `EVAL` if Redis lost its script cache. A `write`'s
    /// timeout or lost connection is [`RedisStoreError::OutcomeUnknown`].
    async fn eval(
        &self,
        script: &Script,
        call: Call,
        write: bool,
    ) -> Result<Value, RedisStoreError> {
        let (keys, args) = call.into_parts();
        let command = async {
            let result: Result<Value, FredError> = self
                .cmd
                .evalsha(script.sha.as_str(), keys.clone(), args.clone())
                .await;
            match result {
                // Redis restarted or flushed its script cache: EVAL runs and caches it again.
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    self.cmd.eval(script.body.as_str(), keys, args).await
                }
                other => other,
            }
        };
        self.send(command, write).await
    }

    /// A near-cache hit, if the near-cache may be used now.
    pub(super) fn load_cached(&self, key: &SessionKey) -> Option<Arc<SessionRecord>> {
        self.usable_stamp(key)?;
        let hit = self.near.get(key)?;
        self.near.count_hit();
        Some(hit)
    }

    pub(super) async fn load(
        &self,
        key: SessionKey,
    ) -> Result<Option<Arc<SessionRecord>>, RedisStoreError> {
        if let Some(hit) = self.load_cached(&key) {
            return Ok(Some(hit));
        }
        let stamp = self.usable_stamp(&key);
        self.near.count_miss();
        let reply: Value = self
            .send(self.cmd.hget(self.names.record_key(&key), "d"), false)
            .await?;
        if reply.is_null() {
            return Ok(None);
        }
        let blob = reply
            .as_bytes()
            .ok_or_else(|| RedisStoreError::Reply(format!("HGET answered {:?}", reply.kind())))?;
        let record = Arc::new(decode(blob)?);
        if let (Some(stamp), true) = (stamp, self.coherent()) {
            self.near.fill(key, record.clone(), stamp);
        }
        Ok(Some(record))
    }

    /// After a write: on success the new record is cached (if the near-cache may be used and
    /// nothing invalidated it meanwhile); on a conflict or an error the entry is dropped, so
    /// that the layer's re-read goes to Redis.
    fn settle(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        stamp: Option<Stamp>,
        applied: bool,
    ) {
        match stamp {
            Some(stamp) if applied && self.coherent() => self.near.fill(key, record, stamp),
            Some(_) if applied => self.near.clear(),
            _ => self.near.invalidate(&key),
        }
    }

    /// Sends one conditional write of `record` under `key` (`create`, `update`, `rotate`,
    /// `login`) and applies its reply to the near-cache: the record is cached if the write
    /// applied, else its key is dropped; the key it moved away from and the keys the script
    /// ended (evictions) are dropped whatever the outcome. Other instances drop them on the
    /// script's messages; this one ignores its own.
    async fn compare_and_set(&self, write: CasWrite<'_>) -> Result<Reply, RedisStoreError> {
        let CasWrite {
            script,
            call,
            key,
            record,
            moved_from,
            oom_is_full,
        } = write;
        let stamp = self.usable_stamp(&key);
        let reply = match self.eval(script, call, true).await {
            Err(e) if oom_is_full && e.is_oom() => Err(RedisStoreError::Full(Box::new(e))),
            other => other,
        };
        if let Some(old) = moved_from {
            // Gone (or changed meanwhile): either way, not cached any more.
            self.near.invalidate(&old);
        }
        let reply = reply.and_then(|value| self.reply(value));
        if let Ok(reply) = &reply {
            for gone in &reply.keys {
                self.near.invalidate(gone);
            }
        }
        let applied = matches!(&reply, Ok(r) if r.status == APPLIED);
        self.settle(key, record, stamp, applied);
        reply
    }

    /// A [`compare_and_set`](Self::compare_and_set) answered as [`WriteOutcome`].
    async fn write(&self, write: CasWrite<'_>) -> Result<WriteOutcome, RedisStoreError> {
        let reply = self.compare_and_set(write).await?;
        Ok(if flag(reply.status)? {
            WriteOutcome::Applied
        } else {
            WriteOutcome::Conflict
        })
    }

    pub(super) async fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, RedisStoreError> {
        let args = CreateArgs {
            key,
            record: RecordArgs::new(&record, ttl)?,
            // A guest bucket's share of the budget; the legacy set (keys without a tag) the
            // whole budget, as before tags.
            guest_capacity: match key.route() {
                Some(_) => self.names.per_guest_bucket(),
                None => self.guest_capacity,
            },
        };
        let call = args.call(&self.names);
        let write = CasWrite::new(&self.scripts.create, call, key, record);
        // Redis is full (noeviction): no room for a guest, which is not an outage.
        self.write(write.oom_is_full(args.record.is_guest())).await
    }

    pub(super) async fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, RedisStoreError> {
        let args = UpdateArgs {
            key,
            expected,
            record: RecordArgs::new(&record, ttl)?,
        };
        let call = args.call(&self.names);
        self.write(CasWrite::new(&self.scripts.update, call, key, record))
            .await
    }

    pub(super) async fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, RedisStoreError> {
        let args = RotateArgs {
            old,
            expected,
            new,
            record: RecordArgs::new(&record, ttl)?,
        };
        let call = args.call(&self.names);
        let write = CasWrite::new(&self.scripts.rotate, call, new, record);
        self.write(write.moved_from(Some(old))).await
    }

    pub(super) async fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, RedisStoreError> {
        // On a cluster a script touches one slot: a guest logging in from another slot (its
        // random guest tag, or the legacy one) goes in two steps, see `login_across_slots`.
        if let Some((old_key, expected)) = old {
            if self.cluster && !self.names.same_base(&old_key, &new) {
                return self
                    .login_across_slots(old_key, expected, new, record, ttl, limit)
                    .await;
            }
        }
        let args = LoginArgs {
            old,
            new,
            record: RecordArgs::new(&record, ttl)?,
            limit,
        };
        let call = args.call(&self.names);
        let write = CasWrite::new(&self.scripts.login, call, new, record);
        let reply = self
            .compare_and_set(write.moved_from(old.map(|(key, _)| key)))
            .await?;
        login_outcome(reply)
    }

    /// A login whose guest session is in another slot than the user's: the login script
    /// writes the new session in the user's slot (index and limit included, atomically
    /// there), then `retire` ends the guest session in its slot if it is still at the version
    /// the login read; if it is not (a concurrent write or logout), the new session is
    /// deleted again and the login answers `Conflict`, so the layer retries from the fresh
    /// state, as it does for a one-script conflict. Between the two steps both sessions exist,
    /// but nobody holds the new token yet. What cannot be undone: sessions the limit evicted
    /// in the first step stay ended.
    async fn login_across_slots(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, RedisStoreError> {
        let args = LoginArgs {
            old: None,
            new,
            record: RecordArgs::new(&record, ttl)?,
            limit,
        };
        let call = args.call(&self.names);
        let write = CasWrite::new(&self.scripts.login, call, new, record);
        let outcome = login_outcome(self.compare_and_set(write).await?)?;
        if !matches!(outcome, LoginOutcome::Applied { .. }) {
            return Ok(outcome);
        }
        let call = RetireArgs { old, expected, new }.call(&self.names);
        let retired = self.eval(&self.scripts.retire, call, true).await;
        self.near.invalidate(&old);
        let retired = match retired.and_then(|value| self.reply(value)) {
            Ok(reply) => flag(reply.status)?,
            Err(e) => {
                // Unknown whether the guest session was retired: do not leave a second,
                // unannounced session behind.
                let _ = self.delete(new).await;
                return Err(e);
            }
        };
        if retired {
            Ok(outcome)
        } else {
            self.delete(new).await?;
            Ok(LoginOutcome::Conflict)
        }
    }

    /// Deletes `key` and follows its forwarding entries: in one script within a slot, and
    /// with one more script per slot it crosses (a guest that logged in on a cluster forwards
    /// to the user's slot), at most [`MAX_FORWARD_HOPS`] scripts in all.
    pub(super) async fn delete(&self, key: SessionKey) -> Result<bool, RedisStoreError> {
        let mut at = key;
        for _ in 0..=MAX_FORWARD_HOPS {
            self.near.invalidate(&at);
            let call = DeleteArgs { key: at }.call(&self.names);
            let result = self.eval(&self.scripts.delete, call, true).await;
            // Again after the script, in case a fill raced with it.
            self.near.invalidate(&at);
            let mut reply = self.reply(result?)?;
            let next = match reply.status {
                CONTINUE => reply.keys.pop(),
                _ => None,
            };
            // The keys it forwarded to (this instance ignores its own messages).
            for gone in &reply.keys {
                self.near.invalidate(gone);
            }
            match next {
                Some(next) => at = next,
                None => return flag(reply.status),
            }
        }
        Ok(false)
    }

    /// Reads a `{status, key names...}` reply.
    fn reply(&self, value: Value) -> Result<Reply, RedisStoreError> {
        let mut items = value.into_array().into_iter();
        let status = match items.next() {
            Some(first) => first
                .as_i64()
                .ok_or_else(|| RedisStoreError::Reply(format!("{first:?}")))?,
            None => return Err(RedisStoreError::Reply("empty reply".into())),
        };
        let keys = items
            .map(|v| {
                v.as_bytes()
                    .ok_or_else(|| RedisStoreError::Reply(format!("{v:?}")))
                    .and_then(|name| self.names.key_of(name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Reply { status, keys })
    }

    /// The user's sessions from both their indexes (under their tag, and the legacy one):
    /// one script on one node, one each on a cluster (they are in different slots).
    pub(super) async fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<(SessionKey, Arc<SessionRecord>)>, RedisStoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let [routed, legacy] = self.names.user_indexes(user_id);
        // One script on one node; one per index (slot) on a cluster.
        let calls = if self.cluster {
            vec![(routed.as_str(), None), (legacy.as_str(), None)]
        } else {
            vec![(routed.as_str(), Some(legacy.as_str()))]
        };
        let mut out = Vec::new();
        for (index, legacy) in calls {
            let call = UserSessionsArgs {
                index,
                legacy,
                limit,
            }
            .call();
            let reply = self.eval(&self.scripts.user_sessions, call, false).await?;
            let items = reply.into_array();
            out.reserve(items.len() / 2);
            for pair in items.chunks_exact(2) {
                let (Some(name), Some(blob)) = (pair[0].as_bytes(), pair[1].as_bytes()) else {
                    return Err(RedisStoreError::Reply("user_sessions: not a string".into()));
                };
                let key = self.names.key_of(name)?;
                let record = decode(blob)?;
                if record
                    .identity
                    .as_ref()
                    .is_some_and(|i| i.user_id == user_id)
                {
                    out.push((key, Arc::new(record)));
                }
            }
        }
        out.sort_by_key(|(_, r)| r.created_at);
        out.truncate(limit);
        Ok(out)
    }
}

/// One conditional write of a record: a script call and what the near-cache needs to know.
struct CasWrite<'a> {
    script: &'a Script,
    call: Call,
    /// Where the record is written.
    key: SessionKey,
    record: Arc<SessionRecord>,
    /// The key the session moves away from (`rotate`, `login` of a guest).
    moved_from: Option<SessionKey>,
    /// Whether Redis refusing the write for lack of memory means "no room for a new guest"
    /// ([`RedisStoreError::Full`]) rather than an outage.
    oom_is_full: bool,
}

impl<'a> CasWrite<'a> {
    fn new(script: &'a Script, call: Call, key: SessionKey, record: Arc<SessionRecord>) -> Self {
        CasWrite {
            script,
            call,
            key,
            record,
            moved_from: None,
            oom_is_full: false,
        }
    }

    fn moved_from(self, old: Option<SessionKey>) -> Self {
        CasWrite {
            moved_from: old,
            ..self
        }
    }

    fn oom_is_full(self, oom_is_full: bool) -> Self {
        CasWrite {
            oom_is_full,
            ..self
        }
    }
}

/// What the write scripts answer: `{status, key names...}`, the keys being those the
/// script ended besides the one it was given (evictions, forwarded-to keys).
struct Reply {
    status: i64,
    keys: Vec<SessionKey>,
}

/// The login script's reply as a [`LoginOutcome`].
fn login_outcome(reply: Reply) -> Result<LoginOutcome, RedisStoreError> {
    match reply.status {
        APPLIED => Ok(LoginOutcome::Applied {
            evicted: reply.keys,
        }),
        CONFLICT => Ok(LoginOutcome::Conflict),
        LIMIT_REACHED => Ok(LoginOutcome::LimitReached),
        other => Err(RedisStoreError::Reply(format!("login answered {other}"))),
    }
}

// The statuses of a `Reply`, as the scripts return them.
const CONFLICT: i64 = 0;
const APPLIED: i64 = 1;
const LIMIT_REACHED: i64 = 2;
/// `delete`: no live record yet, and the forwarding chain goes on in another slot, at the
/// reply's last key.
const CONTINUE: i64 = 2;

/// A status that is 0 or 1: conflict or applied (`create`, `update`, `rotate`), or whether
/// a live record was removed (`delete`).
fn flag(status: i64) -> Result<bool, RedisStoreError> {
    match status {
        CONFLICT => Ok(false),
        APPLIED => Ok(true),
        other => Err(RedisStoreError::Reply(format!("status {other}"))),
    }
}
