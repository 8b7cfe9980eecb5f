//! Writes: values, the compare-and-set loop every write shares, and lazy guest creation.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Session, SessionError};
use crate::events::SessionEvent;
use crate::id::{Fingerprint, SessionKey, SessionToken};
use crate::record::SessionRecord;
use crate::store::WriteOutcome;

/// before giving up with [`SessionError::Contention`]. Each retry means another writer won,
/// so this bounds the work without starving ordinary contention.
const MAX_WRITE_ATTEMPTS: usize = 32;
/// Attempts at drawing a fresh key; a 256-bit collision will not happen, but the loop is
/// bounded anyway.
const MAX_CREATE_ATTEMPTS: usize = 3;
/// The deepest a session value may nest. Every store must read back what it accepted:
/// serde_json refuses input nested deeper than 128 levels, and a record wraps a value in two
/// more, so a deeper value would be written, then fail to load on every later request
/// (logout included) until it expired. 64 leaves room and is far beyond real session data.
pub const MAX_VALUE_DEPTH: usize = 64;

impl Session {
    // ----- writes -----

    /// Stores a value, creating a guest session if there is none.
    ///
    /// # Errors
    ///
    /// [`SessionError::Value`] if the value does not serialize (or nests deeper than
    /// [`MAX_VALUE_DEPTH`](crate::MAX_VALUE_DEPTH)); for a new guest session
    /// [`SessionError::RateLimited`] or [`SessionError::StoreFull`]; [`SessionError::Ended`] if
    /// the session ended meanwhile; [`SessionError::Contention`]; store errors.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let json = to_json(key, &value)?;
        self.mutate(|rec| {
            rec.data.insert(key.to_owned(), json.clone());
            Ok(())
        })
        .await
    }

    /// Removes a value and returns it. Does nothing (and creates nothing) if absent.
    ///
    /// # Errors
    ///
    /// [`SessionError::Value`] if the removed value does not deserialize into `T` (it is
    /// removed all the same); [`SessionError::Ended`] if the session ended meanwhile;
    /// [`SessionError::Contention`]; store errors.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        if self.record().is_none_or(|r| !r.data.contains_key(key)) {
            return Ok(None);
        }
        let old = self.mutate(|rec| Ok(rec.data.remove(key))).await?;
        old.map(|v| {
            serde_json::from_value(v).map_err(|source| SessionError::Value {
                key: key.to_owned(),
                source,
            })
        })
        .transpose()
    }

    /// Removes every value and keeps the session: its ID, its logged-in identity, its pin
    /// and its lifetimes stay as they are (unlike [`logout`](Self::logout), which ends it).
    /// For "forget my cart" or "reset this wizard" without logging the user out. Does
    /// nothing, and creates nothing, without a session or values.
    ///
    /// # Errors
    ///
    /// [`SessionError::Ended`] if the session ended meanwhile; store errors.
    pub async fn clear(&self) -> Result<(), SessionError> {
        if self.record().is_none_or(|r| r.data.is_empty()) {
            return Ok(());
        }
        self.mutate(|rec| {
            rec.data.clear();
            Ok(())
        })
        .await
    }

    /// Atomic read-modify-write of one value: `f` gets the current value (or `None`) and
    /// returns the new one, which is also returned. If another request wrote the session in
    /// between, `f` runs again on the fresh value, so `f` must not have side effects.
    /// Creates a guest session if there is none.
    ///
    /// ```no_run
    /// # async fn handler(session: tower_session_guard::Session) -> Result<(), tower_session_guard::SessionError> {
    /// let count: u64 = session.update("count", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert), and [`SessionError::Value`] if the current value does not
    /// deserialize into `T`.
    pub async fn update<T, F>(&self, key: &str, mut f: F) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        self.mutate(|rec| {
            let old = rec
                .data
                .get(key)
                .map(T::deserialize)
                .transpose()
                .map_err(|source| SessionError::Value {
                    key: key.to_owned(),
                    source,
                })?;
            let new = f(old);
            rec.data.insert(key.to_owned(), to_json(key, &new)?);
            Ok(new)
        })
        .await
    }

    // ----- machinery -----

    /// Applies `f` to the session with compare-and-set, creating a guest session if needed.
    async fn mutate<R>(
        &self,
        mut f: impl FnMut(&mut SessionRecord) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        let _w = self.shared.writes.lock().await;
        let now = self.now();
        let Some(live) = self.state().current.clone() else {
            if self.state().ended {
                return Err(SessionError::Ended);
            }
            let mut rec = SessionRecord::new(now);
            let out = f(&mut rec)?;
            self.charge_guest(now)?;
            let session = match self.create(rec, now).await {
                Err(SessionError::StoreFull) => {
                    self.env().emit(SessionEvent::GuestRefused {
                        client_ip: self.client_ip(),
                        reason: "store_full",
                    });
                    return Err(SessionError::StoreFull);
                }
                other => other?,
            };
            self.env().emit(SessionEvent::Created {
                session,
                client_ip: self.client_ip(),
            });
            return Ok(out);
        };
        let key = live.key;
        let mut base = live.record;
        let mut attempts = Attempts::new();
        loop {
            attempts.take(self, "write", key)?;
            let (rec, ttl, out) = self.next_record(&base, base.version + 1, now, &mut f)?;
            let written = self
                .store()
                .update(key, base.version, rec.clone(), ttl)
                .await;
            match self.stored("write", key, written)? {
                WriteOutcome::Applied => {
                    self.install(key, rec, None);
                    return Ok(out);
                }
                WriteOutcome::Conflict => base = self.reload(key, now).await?,
            }
        }
    }

    /// Charges a new guest session to this address's creation budget.
    fn charge_guest(&self, now: SystemTime) -> Result<(), SessionError> {
        let Some(ip) = self.shared.client.budget_key() else {
            return Ok(());
        };
        self.env()
            .budgets
            .create_guest(ip, now)
            .map_err(|retry_after| {
                self.env().emit(SessionEvent::GuestRefused {
                    client_ip: self.client_ip(),
                    reason: "rate_limited",
                });
                SessionError::RateLimited { retry_after }
            })
    }

    /// After a lost race: the freshest live record, or `Ended` (and the handle forgets it).
    pub(super) async fn reload(
        &self,
        key: SessionKey,
        now: SystemTime,
    ) -> Result<Arc<SessionRecord>, SessionError> {
        match self.store().load(key).await? {
            Some(r) if self.env().config.expiry(&r, now).is_none() => Ok(r),
            _ => {
                self.state().current = None;
                Err(SessionError::Ended)
            }
        }
    }

    /// Creates `rec` under a fresh key and attaches it; returns its fingerprint.
    async fn create(
        &self,
        rec: SessionRecord,
        now: SystemTime,
    ) -> Result<Fingerprint, SessionError> {
        let ttl = self.ttl(&rec, now);
        let rec = Arc::new(rec);
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let token = SessionToken::generate_routed(self.store().guest_route());
            let key = token.key();
            let created = self.store().create(key, rec.clone(), ttl).await;
            if self.stored("create", key, created)? == WriteOutcome::Applied {
                self.install(key, rec, Some(token));
                return Ok(key.fingerprint());
            }
        }
        Err(SessionError::Contention)
    }

    /// The record a write puts in place of `base`: `edit` applied, at `version`, with this
    /// request's activity; and how long the store keeps it.
    pub(super) fn next_record<R>(
        &self,
        base: &SessionRecord,
        version: u64,
        now: SystemTime,
        edit: impl FnOnce(&mut SessionRecord) -> Result<R, SessionError>,
    ) -> Result<(Arc<SessionRecord>, Duration, R), SessionError> {
        let mut rec = base.clone();
        let out = edit(&mut rec)?;
        rec.version = version;
        rec.last_seen = now;
        let ttl = self.ttl(&rec, now);
        Ok((Arc::new(rec), ttl, out))
    }
}

/// The bound every compare-and-set loop of a session shares. Each lost race means another
/// writer won, so [`MAX_WRITE_ATTEMPTS`] bounds the work without starving ordinary
/// contention; beyond it the write fails with [`SessionError::Contention`] (429 with
/// `Retry-After`, gRPC `ABORTED`: not 503, which means an outage) and the layer emits
/// [`SessionEvent::Contention`], so monitoring tells the two apart.
pub(super) struct Attempts(usize);

impl Attempts {
    pub(super) fn new() -> Self {
        Attempts(MAX_WRITE_ATTEMPTS)
    }

    /// Takes one attempt, or, when none is left, reports the contention on `key` and fails.
    pub(super) fn take(
        &mut self,
        session: &Session,
        operation: &'static str,
        key: SessionKey,
    ) -> Result<(), SessionError> {
        match self.0.checked_sub(1) {
            Some(left) => {
                self.0 = left;
                Ok(())
            }
            None => {
                session.env().emit(SessionEvent::Contention {
                    session: key.fingerprint(),
                    operation,
                    attempts: MAX_WRITE_ATTEMPTS,
                });
                Err(SessionError::Contention)
            }
        }
    }
}

impl Session {
    /// A store write's result, with a failure reported: a write that may have been applied
    /// as [`SessionEvent::WriteOutcomeUnknown`], any other as [`SessionEvent::StoreFailed`].
    pub(super) fn stored<T>(
        &self,
        operation: &'static str,
        key: SessionKey,
        result: Result<T, crate::store::StoreError>,
    ) -> Result<T, SessionError> {
        result.map_err(|e| {
            if !e.is_full() {
                self.env().emit(SessionEvent::store_error(
                    Some(key.fingerprint()),
                    operation,
                    &e,
                ));
            }
            SessionError::from(e)
        })
    }
}

fn to_json<T: Serialize>(key: &str, value: &T) -> Result<serde_json::Value, SessionError> {
    let value = serde_json::to_value(value).map_err(|source| SessionError::Value {
        key: key.to_owned(),
        source,
    })?;
    if depth(&value) > MAX_VALUE_DEPTH {
        return Err(SessionError::Value {
            key: key.to_owned(),
            source: <serde_json::Error as serde::ser::Error>::custom(format!(
                "nested deeper than {MAX_VALUE_DEPTH} levels, which no store could read back"
            )),
        });
    }
    Ok(value)
}

/// How deeply `value` nests (a scalar is 1), without recursion, so a hostile value cannot
/// overflow the stack here either.
fn depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            serde_json::Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            serde_json::Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}
