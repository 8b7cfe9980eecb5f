//! How the store names things in Redis (the key layout of the module docs) and itself in
//! its invalidation messages.

use super::codec::parse_hex_key;
use super::RedisStoreError;
use crate::id::SessionKey;

/// The prefix, the channel and the instance id: every name the store sends to Redis.
#[derive(Debug)]
pub(super) struct Names {
    prefix: String,
    /// `{prefix}inval`, the invalidation channel.
    channel: String,
    /// Random per store: names this store in its invalidation messages.
    instance: String,
}

impl Names {
    pub(super) fn new(prefix: String, instance: String) -> Self {
        Names {
            channel: format!("{prefix}inval"),
            prefix,
            instance,
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    /// `{prefix}s:<key hex>`: a session's record (or forwarding entry).
    pub(super) fn record_key(&self, key: &SessionKey) -> String {
        format!("{}s:{}", self.prefix, key.to_hex())
    }

    /// `{prefix}u:<user id>`: a user's index.
    pub(super) fn index_key(&self, user_id: &str) -> String {
        format!("{}u:{user_id}", self.prefix)
    }

    /// The session key of a record key name, as the scripts answer them.
    pub(super) fn key_of(&self, name: &[u8]) -> Result<SessionKey, RedisStoreError> {
        let prefix = format!("{}s:", self.prefix);
        name.strip_prefix(prefix.as_bytes())
            .and_then(parse_hex_key)
            .ok_or_else(|| {
                RedisStoreError::Reply(format!(
                    "not a session key: {:?}",
                    String::from_utf8_lossy(name)
                ))
            })
    }
}
