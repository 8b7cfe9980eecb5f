//! The operations, as methods of [`StoreShared`]: `load` (the near-cache, else one
//! `SELECT`) and the writes (one statement each, most of them a call of a function from
//! `sql/`), with what each does to the near-cache. Other instances learn of each change
//! from the `NOTIFY` its transaction sends; this one applies its own writes directly.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_postgres::types::ToSql;

use super::shared::StoreShared;
use super::PostgresStoreError;
use crate::id::SessionKey;
use crate::record::SessionRecord;
use crate::store::blob::{decode, encode};
use crate::store::near_cache::Stamp;
use crate::store::{
    LimitPolicy, LoginOutcome, SessionLimit, WriteOutcome, FORWARD_TTL, MAX_FORWARD_HOPS,
};

/// At most this many guests are evicted by one guest `create` (the work stays bounded).
const GUEST_EVICT: i32 = 8;
/// The longest ttl written: PostgreSQL's intervals end long before `Duration::MAX`.
const MAX_TTL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// What the writes of a record send besides its key: the columns derived from the record.
struct RecordArgs {
    version: i64,
    blob: Vec<u8>,
    user: Option<String>,
    created: SystemTime,
    ttl_ms: i64,
}

impl RecordArgs {
    fn new(record: &SessionRecord, ttl: Duration) -> Result<Self, PostgresStoreError> {
        Ok(RecordArgs {
            version: i64::try_from(record.version).map_err(|_| {
                PostgresStoreError::Encode(format!("version {} beyond i64", record.version))
            })?,
            blob: encode(record)?,
            user: record.identity.as_ref().map(|i| i.user_id.clone()),
            created: record.created_at,
            ttl_ms: millis(ttl),
        })
    }
}

/// `d` in whole milliseconds, at most [`MAX_TTL_MS`].
pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis())
        .unwrap_or(i64::MAX)
        .min(MAX_TTL_MS)
}

fn key_of(bytes: &[u8]) -> Result<SessionKey, PostgresStoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(SessionKey::from_bytes)
        .map_err(|_| PostgresStoreError::Reply(format!("a key of {} bytes", bytes.len())))
}

fn keys_of(list: Vec<Vec<u8>>) -> Result<Vec<SessionKey>, PostgresStoreError> {
    list.iter().map(|k| key_of(k)).collect()
}

impl StoreShared {
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
    ) -> Result<Option<Arc<SessionRecord>>, PostgresStoreError> {
        if let Some(hit) = self.load_cached(&key) {
            return Ok(Some(hit));
        }
        let stamp = self.usable_stamp(&key);
        self.near.count_miss();
        let k: &[u8] = key.as_bytes();
        let row = self
            .with_client(|c| async move {
                let stmt = c.prepare_cached(&self.sql.load).await?;
                Ok(c.query_opt(&stmt, &[&k]).await?)
            })
            .await?;
        let Some(row) = row else { return Ok(None) };
        let blob: Vec<u8> = row.try_get(0)?;
        let record = Arc::new(decode(&blob)?);
        if let (Some(stamp), true) = (stamp, self.coherent()) {
            self.near.fill(key, record.clone(), stamp);
        }
        Ok(Some(record))
    }

    /// After a write of `record` under `key`: cached if it applied (and the near-cache may be
    /// used and nothing invalidated it meanwhile), else the key is dropped, so that the
    /// layer's re-read goes to PostgreSQL; `ended` keys (moved away from, evicted) are
    /// dropped whatever the outcome.
    fn settle(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        stamp: Option<Stamp>,
        applied: bool,
        ended: &[SessionKey],
    ) {
        for gone in ended {
            self.near.invalidate(gone);
        }
        match stamp {
            Some(stamp) if applied && self.coherent() => self.near.fill(key, record, stamp),
            Some(_) if applied => self.near.clear(),
            _ => self.near.invalidate(&key),
        }
    }

    /// Sends one statement that answers a status (and maybe ended keys) on a pooled
    /// connection.
    async fn call(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, PostgresStoreError> {
        self.with_client(|c| async move {
            let stmt = c.prepare_cached(sql).await?;
            Ok(c.query_one(&stmt, params).await?)
        })
        .await
    }

    pub(super) async fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, PostgresStoreError> {
        let a = RecordArgs::new(&record, ttl)?;
        let stamp = self.usable_stamp(&key);
        let k: &[u8] = key.as_bytes();
        let result = self
            .call(
                &self.sql.create,
                &[
                    &k,
                    &a.version,
                    &a.blob,
                    &a.user,
                    &a.created,
                    &a.ttl_ms,
                    &self.guest_capacity,
                    &GUEST_EVICT,
                ],
            )
            .await
            .and_then(|row| {
                let status: i32 = row.try_get(0)?;
                let ended = keys_of(row.try_get(1)?)?;
                Ok((status, ended))
            });
        let (applied, ended) = match &result {
            Ok((status, ended)) => (*status == 1, ended.as_slice()),
            Err(_) => (false, &[][..]),
        };
        self.settle(key, record, stamp, applied, ended);
        let (status, _) = result?;
        flag(status)
    }

    pub(super) async fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, PostgresStoreError> {
        let a = RecordArgs::new(&record, ttl)?;
        // A version beyond i64 was never written: nothing can be at it.
        let Ok(expected) = i64::try_from(expected) else {
            self.near.invalidate(&key);
            return Ok(WriteOutcome::Conflict);
        };
        let stamp = self.usable_stamp(&key);
        let k: &[u8] = key.as_bytes();
        let params: [&(dyn ToSql + Sync); 7] = [
            &k, &expected, &a.version, &a.blob, &a.user, &a.created, &a.ttl_ms,
        ];
        let result = self
            .with_client(|c| async move {
                let stmt = c.prepare_cached(&self.sql.update).await?;
                Ok(c.execute(&stmt, &params).await?)
            })
            .await;
        let applied = matches!(result, Ok(1));
        self.settle(key, record, stamp, applied, &[]);
        Ok(if result? == 1 {
            WriteOutcome::Applied
        } else {
            WriteOutcome::Conflict
        })
    }

    pub(super) async fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, PostgresStoreError> {
        let a = RecordArgs::new(&record, ttl)?;
        let Ok(expected) = i64::try_from(expected) else {
            self.near.invalidate(&old);
            return Ok(WriteOutcome::Conflict);
        };
        let stamp = self.usable_stamp(&new);
        let (o, n): (&[u8], &[u8]) = (old.as_bytes(), new.as_bytes());
        let forward_ms = millis(FORWARD_TTL);
        let result = self
            .call(
                &self.sql.rotate,
                &[
                    &o,
                    &expected,
                    &n,
                    &a.version,
                    &a.blob,
                    &a.user,
                    &a.created,
                    &a.ttl_ms,
                    &forward_ms,
                ],
            )
            .await
            .and_then(|row| Ok(row.try_get::<_, i32>(0)?));
        // Gone (or changed meanwhile): either way, not cached any more.
        let applied = matches!(result, Ok(1));
        self.settle(new, record, stamp, applied, &[old]);
        flag(result?)
    }

    pub(super) async fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, PostgresStoreError> {
        let a = RecordArgs::new(&record, ttl)?;
        let Some(user) = a.user.as_deref() else {
            return Err(PostgresStoreError::Encode(
                "login of a record without an identity".into(),
            ));
        };
        let old_key = old.map(|(k, _)| k);
        let (old_bytes, expected) = match old {
            Some((k, v)) => match i64::try_from(v) {
                Ok(v) => (Some(k.as_bytes().to_vec()), Some(v)),
                Err(_) => return Ok(LoginOutcome::Conflict),
            },
            None => (None, None),
        };
        let max = limit.map(|l| i64::try_from(l.max).unwrap_or(i64::MAX));
        let evict = limit.is_some_and(|l| l.policy == LimitPolicy::EvictOldest);
        let lock = self.names.user_lock(user);
        let stamp = self.usable_stamp(&new);
        let n: &[u8] = new.as_bytes();
        let forward_ms = millis(FORWARD_TTL);
        let result = self
            .call(
                &self.sql.login,
                &[
                    &old_bytes,
                    &expected,
                    &n,
                    &a.version,
                    &a.blob,
                    &a.user,
                    &a.created,
                    &a.ttl_ms,
                    &forward_ms,
                    &max,
                    &evict,
                    &lock,
                ],
            )
            .await
            .and_then(|row| {
                let status: i32 = row.try_get(0)?;
                let ended = keys_of(row.try_get(1)?)?;
                Ok((status, ended))
            });
        let mut ended: Vec<SessionKey> = old_key.into_iter().collect();
        let applied = match &result {
            Ok((status, evicted)) => {
                ended.extend_from_slice(evicted);
                *status == 1
            }
            Err(_) => false,
        };
        self.settle(new, record, stamp, applied, &ended);
        let (status, evicted) = result?;
        match status {
            1 => Ok(LoginOutcome::Applied { evicted }),
            0 => Ok(LoginOutcome::Conflict),
            2 => Ok(LoginOutcome::LimitReached),
            other => Err(PostgresStoreError::Reply(format!("login answered {other}"))),
        }
    }

    pub(super) async fn delete(&self, key: SessionKey) -> Result<bool, PostgresStoreError> {
        self.near.invalidate(&key);
        let k: &[u8] = key.as_bytes();
        let hops = i32::try_from(MAX_FORWARD_HOPS).unwrap_or(i32::MAX);
        let result = self.call(&self.sql.delete, &[&k, &hops]).await;
        // Again after the statement, in case a fill raced with it.
        self.near.invalidate(&key);
        let row = result?;
        let live: bool = row.try_get(0)?;
        // The keys it forwarded to (this instance ignores its own notifications).
        for gone in keys_of(row.try_get(1)?)? {
            self.near.invalidate(&gone);
        }
        Ok(live)
    }

    pub(super) async fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<(SessionKey, Arc<SessionRecord>)>, PostgresStoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let max = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .with_client(|c| async move {
                let stmt = c.prepare_cached(&self.sql.user_sessions).await?;
                Ok(c.query(&stmt, &[&user_id, &max]).await?)
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key = key_of(row.try_get::<_, &[u8]>(0)?)?;
            let record = decode(row.try_get::<_, &[u8]>(1)?)?;
            if record
                .identity
                .as_ref()
                .is_some_and(|i| i.user_id == user_id)
            {
                out.push((key, Arc::new(record)));
            }
        }
        Ok(out)
    }

    /// One bounded batch of the expiry clean-up; returns how many rows it deleted.
    pub(super) async fn sweep_batch(&self, batch: i64) -> Result<u64, PostgresStoreError> {
        self.with_client(|c| async move {
            let stmt = c.prepare_cached(&self.sql.sweep).await?;
            Ok(c.execute(&stmt, &[&batch]).await?)
        })
        .await
    }
}

/// A status that is 0 or 1: conflict or applied.
fn flag(status: i32) -> Result<WriteOutcome, PostgresStoreError> {
    match status {
        0 => Ok(WriteOutcome::Conflict),
        1 => Ok(WriteOutcome::Applied),
        other => Err(PostgresStoreError::Reply(format!("status {other}"))),
    }
}
