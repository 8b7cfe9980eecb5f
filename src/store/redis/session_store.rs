//! [`RedisStore`] as a [`SessionStore`]: each operation of `ops`, its error boxed into a
//! [`StoreError`].

use std::sync::Arc;
use std::time::Duration;

use super::RedisStore;
use crate::id::{RouteTag, SessionKey};
use crate::record::SessionRecord;
use crate::store::{LoginOutcome, SessionLimit, SessionStore, StoreError, WriteOutcome};

impl SessionStore for RedisStore {
    /// One of the guest buckets, at random (see "Redis Cluster" in the module docs).
    fn guest_route(&self) -> Option<RouteTag> {
        Some(self.shared.names.guest_route())
    }

    /// The user's keyed tag: their sessions and index share one slot.
    fn user_route(&self, user_id: &str) -> Option<RouteTag> {
        Some(self.shared.names.user_route(user_id))
    }

    /// A near-cache hit answers at once (0 round trips); anything else goes to Redis.
    fn load_now(&self, key: SessionKey) -> Option<Result<Option<Arc<SessionRecord>>, StoreError>> {
        self.shared.load_cached(&key).map(|hit| Ok(Some(hit)))
    }

    async fn load(&self, key: SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        Ok(self.shared.load(key).await?)
    }

    async fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        Ok(self.shared.create(key, record, ttl).await?)
    }

    async fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        Ok(self.shared.update(key, expected, record, ttl).await?)
    }

    async fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        Ok(self.shared.rotate(old, expected, new, record, ttl).await?)
    }

    async fn delete(&self, key: SessionKey) -> Result<bool, StoreError> {
        Ok(self.shared.delete(key).await?)
    }

    async fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, StoreError> {
        Ok(self.shared.login(old, new, record, ttl, limit).await?)
    }

    /// At most `limit` sessions: all of the user's if they are no more (the per-user limit
    /// makes it so), else the `limit` whose deadlines come first. One script examines at
    /// most `limit` + 64 index entries, whatever the size of the index.
    async fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError> {
        Ok(self.shared.user_sessions(user_id, limit).await?)
    }
}
