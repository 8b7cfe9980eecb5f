//! The operations, as methods of [`StoreShared`]: `load` (the near-cache, else one `HGET`)
//! and the scripted writes (one `EVALSHA` each), with what each does to the near-cache.

use std::sync::Arc;
use std::time::Duration;

use fred::error::Error as FredError;
use fred::interfaces::{HashesInterface, LuaInterface};
use fred::types::Value;

use super::codec::decode;
use super::near_cache::Stamp;
use super::scripts::{
    Call, CreateArgs, DeleteArgs, LoginArgs, RecordArgs, RotateArgs, Script, UpdateArgs,
    UserSessionsArgs,
};
use super::shared::StoreShared;
use super::RedisStoreError;
use crate::id::SessionKey;
use crate::record::SessionRecord;
use crate::store::{LoginOutcome, SessionLimit, WriteOutcome};

impl StoreShared {
    async fn eval(&self, script: &Script, call: Call) -> Result<Value, RedisStoreError> {
        self.ensure_up()?;
        let (keys, args) = call.into_parts();
        let result: Result<Value, FredError> = self
            .cmd
            .evalsha(script.sha.as_str(), keys.clone(), args.clone())
            .await;
        match result {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                // Redis restarted or flushed its script cache: EVAL runs and caches it again.
                Ok(self.cmd.eval(script.body.as_str(), keys, args).await?)
            }
            other => Ok(other?),
        }
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
        self.ensure_up()?;
        let reply: Value = self.cmd.hget(self.names.record_key(&key), "d").await?;
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

    pub(super) async fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, RedisStoreError> {
        let args = CreateArgs {
            key,
            record: RecordArgs::new(&record, ttl)?,
            guest_capacity: self.guest_capacity,
        };
        let guest = args.record.is_guest();
        let stamp = self.usable_stamp(&key);
        let call = args.call(&self.names);
        let result = match self.eval(&self.scripts.create, call).await {
            // Redis is full (noeviction): no room for a guest, which is not an outage.
            Err(e) if guest && e.is_oom() => Err(RedisStoreError::Full(Box::new(e))),
            other => other,
        };
        let write = result.and_then(|reply| {
            let (ok, evicted) = self.applied_and_keys(reply)?;
            // Other instances drop them on the messages; this one ignores its own.
            for gone in &evicted {
                self.near.invalidate(gone);
            }
            Ok(applied(ok))
        });
        self.settle(
            key,
            record,
            stamp,
            matches!(write, Ok(WriteOutcome::Applied)),
        );
        write
    }

    /// A `{0 or 1, key names...}` reply: the flag and the keys.
    fn applied_and_keys(&self, reply: Value) -> Result<(bool, Vec<SessionKey>), RedisStoreError> {
        let mut items = reply.into_array().into_iter();
        let ok = match items.next() {
            Some(first) => flag(&first)?,
            None => return Err(RedisStoreError::Reply("empty reply".into())),
        };
        let keys = items
            .map(|v| {
                v.as_bytes()
                    .ok_or_else(|| RedisStoreError::Reply(format!("{v:?}")))
                    .and_then(|name| self.names.key_of(name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((ok, keys))
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
        let stamp = self.usable_stamp(&key);
        let result = self
            .eval(&self.scripts.update, args.call(&self.names))
            .await;
        let write = result.and_then(|v| flag(&v)).map(applied);
        self.settle(
            key,
            record,
            stamp,
            matches!(write, Ok(WriteOutcome::Applied)),
        );
        write
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
        let stamp = self.usable_stamp(&new);
        let result = self
            .eval(&self.scripts.rotate, args.call(&self.names))
            .await;
        let write = result.and_then(|v| flag(&v)).map(applied);
        // The old key is gone (or changed meanwhile): either way, not cached any more.
        self.near.invalidate(&old);
        self.settle(
            new,
            record,
            stamp,
            matches!(write, Ok(WriteOutcome::Applied)),
        );
        write
    }

    pub(super) async fn delete(&self, key: SessionKey) -> Result<bool, RedisStoreError> {
        self.near.invalidate(&key);
        let call = DeleteArgs { key }.call(&self.names);
        let result = self.eval(&self.scripts.delete, call).await;
        // Again after the script, in case a fill raced with it.
        self.near.invalidate(&key);
        let (live, followed) = self.applied_and_keys(result?)?;
        // The keys it forwarded to (this instance ignores its own messages).
        for gone in &followed {
            self.near.invalidate(gone);
        }
        Ok(live)
    }

    pub(super) async fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, RedisStoreError> {
        let args = LoginArgs {
            old,
            new,
            record: RecordArgs::new(&record, ttl)?,
            limit,
        };
        let stamp = self.usable_stamp(&new);
        let result = self.eval(&self.scripts.login, args.call(&self.names)).await;
        if let Some((old, _)) = old {
            self.near.invalidate(&old);
        }
        let outcome = result.and_then(|v| self.login_outcome(v));
        if let Ok(LoginOutcome::Applied { evicted }) = &outcome {
            for key in evicted {
                self.near.invalidate(key);
            }
        }
        let ok = matches!(outcome, Ok(LoginOutcome::Applied { .. }));
        self.settle(new, record, stamp, ok);
        outcome
    }

    fn login_outcome(&self, reply: Value) -> Result<LoginOutcome, RedisStoreError> {
        let mut items = reply.into_array().into_iter();
        match items.next().and_then(|v| v.as_i64()) {
            Some(1) => {
                let evicted = items
                    .map(|v| {
                        v.as_bytes()
                            .ok_or_else(|| RedisStoreError::Reply(format!("{v:?}")))
                            .and_then(|name| self.names.key_of(name))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(LoginOutcome::Applied { evicted })
            }
            Some(0) => Ok(LoginOutcome::Conflict),
            Some(2) => Ok(LoginOutcome::LimitReached),
            other => Err(RedisStoreError::Reply(format!("login answered {other:?}"))),
        }
    }

    pub(super) async fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<(SessionKey, Arc<SessionRecord>)>, RedisStoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let call = UserSessionsArgs { user_id, limit }.call(&self.names);
        let reply = self.eval(&self.scripts.user_sessions, call).await?;
        let items = reply.into_array();
        let mut out = Vec::with_capacity(items.len() / 2);
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
        out.sort_by_key(|(_, r)| r.created_at);
        Ok(out)
    }
}

fn flag(reply: &Value) -> Result<bool, RedisStoreError> {
    match reply.as_i64() {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        _ => Err(RedisStoreError::Reply(format!("{reply:?}"))),
    }
}

fn applied(ok: bool) -> WriteOutcome {
    if ok {
        WriteOutcome::Applied
    } else {
        WriteOutcome::Conflict
    }
}
