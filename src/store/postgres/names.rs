//! How the store names things in PostgreSQL: the schema (checked), the notification channel,
//! the instance id its notifications carry, and the advisory lock ids.

use sha2::{Digest, Sha256};

use super::PostgresStoreError;

/// The longest schema name accepted (PostgreSQL's identifiers end at 63 bytes, and the
/// channel adds `_inval`).
const MAX_SCHEMA: usize = 40;

/// The schema, the channel and the instance id.
#[derive(Debug)]
pub(super) struct Names {
    schema: String,
    /// `{schema}_inval`, the notification channel.
    channel: String,
    /// Random per store: names this store in its notifications.
    instance: String,
}

impl Names {
    pub(super) fn new(schema: String, instance: String) -> Result<Self, PostgresStoreError> {
        check_schema(&schema)?;
        Ok(Names {
            channel: format!("{schema}_inval"),
            schema,
            instance,
        })
    }

    pub(super) fn schema(&self) -> &str {
        &self.schema
    }

    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    /// The advisory lock of a user's logins in this schema.
    pub(super) fn user_lock(&self, user_id: &str) -> i64 {
        lock_id("login", &format!("{}\0{user_id}", self.schema))
    }
}

/// A schema name is spliced into SQL (identifiers cannot be bound as parameters), so only a
/// plain lower-case identifier is accepted: nothing to quote, nothing to inject.
pub(super) fn check_schema(schema: &str) -> Result<(), PostgresStoreError> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= MAX_SCHEMA && !schema.starts_with("pg_") {
        Ok(())
    } else {
        Err(PostgresStoreError::Config(format!(
            "schema {schema:?}: use 1 to {MAX_SCHEMA} characters of a-z, 0-9 and _, not starting \
             with a digit or pg_"
        )))
    }
}

/// A 64-bit advisory lock id for `what` on `name`: the first 8 bytes of a SHA-256, so that
/// different users (and schemas) share a lock only by a 2^-64 chance, which would merely
/// serialise their logins.
pub(super) fn lock_id(what: &str, name: &str) -> i64 {
    // Length-prefixed, so that no two (what, name) pairs hash the same bytes.
    let digest = Sha256::new()
        .chain_update(b"tower-session-guard\0")
        .chain_update((what.len() as u64).to_be_bytes())
        .chain_update(what.as_bytes())
        .chain_update(name.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}
