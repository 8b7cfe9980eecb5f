//! What the PostgreSQL tests share (`tests/postgres.rs`, `tests/store_contract.rs`): the
//! server they are given, a schema of their own per test (dropped when it ends), a plain
//! client for inspecting PostgreSQL, and the store contract's harness for `PostgresStore`.
//!
//! The tests that need PostgreSQL carry `#[cfg_attr(not(tsg_postgres), ignore = "...")]`
//! (`build.rs` sets `tsg_postgres` when `POSTGRES_URL` is set or `TSG_REQUIRE_POSTGRES=1`),
//! so without it `cargo test` lists them as ignored, with the reason; when they run, a
//! missing or unreachable server fails them.
#![allow(dead_code)]

use std::sync::Mutex;

use tokio_postgres::NoTls;
use tower_session_guard::store::contract::Harness;
use tower_session_guard::{PostgresStore, PostgresStoreBuilder, SessionToken};

/// The PostgreSQL the tests use: `POSTGRES_URL`. A test that calls this without it fails (it
/// runs only when `build.rs` saw `POSTGRES_URL` or `TSG_REQUIRE_POSTGRES=1`).
pub fn postgres_url() -> String {
    match std::env::var("POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "POSTGRES_URL is not set: this test needs a PostgreSQL, e.g. \
             POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test (TSG_REQUIRE_POSTGRES=1, as in \
             .ci/run, makes its absence a failure)"
        ),
    }
}

pub fn random_id() -> String {
    SessionToken::generate().key().fingerprint().to_string()
}

/// A schema no other test uses.
pub fn unique_schema() -> String {
    format!("tsg_test_{}", random_id())
}

/// A plain client on `url`, its connection driven by a task of the current runtime.
pub async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("PostgreSQL answers on POSTGRES_URL");
    tokio::spawn(connection);
    client
}

/// Drops `schema` with everything in it, on a runtime of its own (this runs in `Drop`).
pub fn drop_schema(url: &str, schema: &str) {
    let (url, schema) = (url.to_owned(), schema.to_owned());
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            if let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await {
                let driver = tokio::spawn(connection);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
                drop(client);
                let _ = driver.await;
            }
        });
    })
    .join();
}

/// Drops the test's schema when the test ends, pass or fail.
pub struct Cleanup {
    pub url: String,
    pub schema: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        drop_schema(&self.url, &self.schema);
    }
}

/// A builder on `url` and `schema`, with a short clean-up interval left at its default.
pub fn builder(url: &str, schema: &str) -> PostgresStoreBuilder {
    PostgresStore::builder(url).schema(schema)
}

/// The store contract's harness for `PostgresStore`: two stores (two pools, two listeners,
/// two near-caches) on `url` in a fresh schema per opening, dropped with the harness.
pub struct PostgresHarness {
    url: String,
    cleanups: Mutex<Vec<Cleanup>>,
}

impl PostgresHarness {
    pub fn new(url: &str) -> Self {
        PostgresHarness {
            url: url.to_owned(),
            cleanups: Mutex::default(),
        }
    }
}

impl Harness for PostgresHarness {
    type Store = PostgresStore;

    async fn open(&self, guest_budget: Option<u64>) -> (PostgresStore, PostgresStore) {
        let schema = unique_schema();
        self.cleanups.lock().unwrap().push(Cleanup {
            url: self.url.clone(),
            schema: schema.clone(),
        });
        let build = || {
            let mut b = builder(&self.url, &schema);
            if let Some(n) = guest_budget {
                b = b.guest_capacity(n);
            }
            b.build()
        };
        let a = build().await.expect("PostgresStore connects");
        let b = build().await.expect("PostgresStore connects");
        (a, b)
    }
}
