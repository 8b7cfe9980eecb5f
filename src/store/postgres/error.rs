//! What can go wrong, and how it reaches the layer (inside a [`StoreError`]).

use std::error::Error as StdError;
use std::time::Duration;

use crate::store::blob::BlobError;
use crate::store::StoreError;

/// What can go wrong in the [`PostgresStore`]. The store returns it inside a
/// [`StoreError`] (see [`StoreError`]'s `source`), and [`PostgresStoreBuilder::build`] for
/// configuration, connection and migration problems. Every one of them makes the layer fail
/// closed (503, gRPC 14).
///
/// [`PostgresStore`]: super::PostgresStore
/// [`PostgresStoreBuilder::build`]: super::PostgresStoreBuilder::build
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresStoreError {
    /// The configuration is not usable (a malformed URL, a schema name that is not a plain
    /// lower-case identifier, ...).
    #[error("invalid PostgreSQL store configuration: {0}")]
    Config(String),
    /// PostgreSQL could not be reached, or answered with an error (a statement timeout
    /// included).
    #[error("postgres: {0}")]
    Postgres(#[source] Box<dyn StdError + Send + Sync + 'static>),
    /// An operation took longer than the command timeout (waiting for a pooled connection,
    /// connecting, and the statement together). A write that timed out may still have been
    /// applied: its outcome is unknown.
    #[error("postgres: no answer within {0:?} (outcome unknown)")]
    Timeout(Duration),
    /// The schema is missing or older than this version needs, and the builder was told not
    /// to migrate it.
    #[error("postgres schema: {0}")]
    Schema(String),
    /// A record was written in a format this version does not know (by a newer version,
    /// or not by this crate at all). The session is refused, not guessed at.
    #[error("session record has unknown format {0}")]
    UnknownFormat(u8),
    /// A record is empty or does not decode.
    #[error("session record could not be decoded: {0}")]
    Decode(String),
    /// A record could not be encoded (or holds a version beyond `i64::MAX`).
    #[error("session record could not be encoded: {0}")]
    Encode(String),
    /// PostgreSQL answered something the store did not expect.
    #[error("unexpected reply from PostgreSQL: {0}")]
    Reply(String),
}

impl From<tokio_postgres::Error> for PostgresStoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        PostgresStoreError::Postgres(Box::new(e))
    }
}

impl From<deadpool_postgres::PoolError> for PostgresStoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PostgresStoreError::Postgres(Box::new(e))
    }
}

impl From<BlobError> for PostgresStoreError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::UnknownFormat(b) => PostgresStoreError::UnknownFormat(b),
            BlobError::Decode(m) => PostgresStoreError::Decode(m),
            BlobError::Encode(m) => PostgresStoreError::Encode(m),
        }
    }
}

impl From<PostgresStoreError> for StoreError {
    fn from(e: PostgresStoreError) -> Self {
        StoreError::new(e)
    }
}
