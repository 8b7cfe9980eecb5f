//! Migrations: the versioned, idempotent creation of the store's schema (see "Table layout"
//! in the module docs). `{schema}.schema_version` holds the versions applied; a migration
//! runs once, in one transaction, under an advisory lock, so instances that start together
//! neither race nor apply one twice.

use tokio_postgres::{Client, GenericClient};

use super::names::lock_id;
use super::statements::with_schema;
use super::PostgresStoreError;

/// The migrations, in order: version `i + 1` is `MIGRATIONS[i]`. Never edit one that has
/// shipped; add the next.
const MIGRATIONS: &[&str] = &[include_str!("sql/v1.sql")];

/// The schema version this code needs.
pub(super) const LATEST: i32 = MIGRATIONS.len() as i32;

const PREPARE: &str = "CREATE SCHEMA IF NOT EXISTS {schema}; \
     CREATE TABLE IF NOT EXISTS {schema}.schema_version (\
         version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())";

/// Brings `schema` up to [`LATEST`]; returns the version it was at.
pub(super) async fn migrate(client: &mut Client, schema: &str) -> Result<i32, PostgresStoreError> {
    let tx = client.transaction().await?;
    // Serialises concurrent migrations of this schema (CREATE SCHEMA IF NOT EXISTS alone
    // can still fail with a unique violation when two run at once).
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_id("migrate", schema)],
    )
    .await?;
    tx.batch_execute(&with_schema(PREPARE, schema)).await?;
    let before = current(&tx, schema).await?;
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(before).unwrap_or(0))
    {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.batch_execute(&with_schema(sql, schema)).await?;
        tx.execute(
            &with_schema(
                "INSERT INTO {schema}.schema_version (version) VALUES ($1)",
                schema,
            ),
            &[&version],
        )
        .await?;
    }
    tx.commit().await?;
    if before > LATEST {
        tracing::warn!(
            schema,
            version = before,
            known = LATEST,
            "session store schema is newer than this version of tower-session-guard knows"
        );
    }
    Ok(before)
}

/// Checks, without changing anything, that `schema` is at [`LATEST`] or later.
pub(super) async fn check(client: &Client, schema: &str) -> Result<(), PostgresStoreError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{schema}.schema_version")],
        )
        .await?
        .get(0);
    let version = if exists {
        current(client, schema).await?
    } else {
        0
    };
    if version < LATEST {
        return Err(PostgresStoreError::Schema(format!(
            "schema {schema:?} is at version {version}, this store needs {LATEST}: \
             run the migrations (PostgresStoreBuilder::run_migrations(true), the default)"
        )));
    }
    Ok(())
}

async fn current<C: GenericClient>(client: &C, schema: &str) -> Result<i32, PostgresStoreError> {
    let row = client
        .query_one(
            &with_schema(
                "SELECT coalesce(max(version), 0) FROM {schema}.schema_version",
                schema,
            ),
            &[],
        )
        .await?;
    Ok(row.get(0))
}
