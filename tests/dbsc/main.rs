//! Device Bound Session Credentials through the layer, with a Rust client that plays the
//! browser (Chromium 156's behaviour, issue 15): it makes a P-256 key, logs in, registers,
//! lets the bound cookie run out through the injected clock, refreshes through the 403
//! challenge and carries on. Then the attacks: stolen cookies without the key, a replayed
//! proof, a proof by another key, `alg: none`, HS256 keyed with the public key, a refresh
//! carrying its own `jwk`, another session's challenge, a second registration, and
//! garbage or oversized headers (never a 500).
//!
//! Every scenario runs on the memory store, on Redis (`tsg_redis`, `REDIS_URL`) and on
//! PostgreSQL (`tsg_postgres`, `POSTGRES_URL`); the remote ones are listed as ignored without
//! their server and fail where CI provides it.
//!
//! One folder, one concern per file: `browser.rs` (the client that plays Chromium),
//! `flows.rs` (what a real browser does), `attacks.rs` (what a thief tries), `policy.rs`
//! (the validation policy and the pin with binding).

#[path = "../common/mod.rs"]
mod common;
#[path = "../postgres_support/mod.rs"]
mod postgres_support;
#[path = "../redis_support/mod.rs"]
mod redis_support;

mod attacks;
mod browser;
mod flows;
mod policy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{body_text, Harness, CLIENT};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_session_guard::dbsc::DeviceBinding;
use tower_session_guard::store::{
    LoginOutcome, SessionKey, SessionLimit, SessionStore, StoreError, WriteOutcome,
};
use tower_session_guard::{
    MemoryStore, PeerAddr, PinMode, PolicyMode, RedisStore, Rule, SessionEvent, SessionRecord,
    ValidationPolicy,
};

const LIFETIME: Duration = Duration::from_secs(60);
const REGISTRATION: &str = "/dbsc/registration";
const REFRESH: &str = "/dbsc/refresh";
const BOUND: &str = "__Host-bound";

use attacks::*;
use browser::*;
use flows::*;

// ----- the stores -----

pub(crate) fn app(h: &Harness, store: impl SessionStore) -> Router {
    let layer = h
        .builder(store)
        .device_binding(DeviceBinding::new().bound_cookie_lifetime(LIFETIME))
        .build()
        .expect("valid config");
    common::app(layer)
}

pub(crate) async fn redis_store() -> RedisStore {
    RedisStore::builder(redis_support::redis_url())
        .prefix(redis_support::unique_prefix())
        .build()
        .await
        .expect("RedisStore connects")
}

/// Each scenario as a test on the memory store and one on Redis.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(tower_session_guard::MemoryStore::new()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[cfg_attr(not(tsg_postgres), ignore = "set POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test (TSG_REQUIRE_POSTGRES=1 in CI)")]
                async fn $name() {
                    let url = super::postgres_support::postgres_url();
                    let schema = super::postgres_support::unique_schema();
                    // Drops the test's schema when the test ends, passed or not.
                    let _cleanup = super::postgres_support::Cleanup {
                        url: url.clone(),
                        schema: schema.clone(),
                    };
                    let store = super::postgres_support::builder(&url, &schema)
                        .build()
                        .await
                        .expect("PostgresStore connects");
                    super::$name(store).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                #[cfg_attr(not(tsg_redis), ignore = "set REDIS_URL=redis://127.0.0.1:6379 (TSG_REQUIRE_REDIS=1 in CI)")]
                async fn $name() {
                    super::$name(super::redis_store().await).await;
                }
            )*
        }
    };
}

on_every_store!(
    the_browser_registers_refreshes_and_carries_on,
    stolen_cookies_without_the_key_stop_working_within_one_lifetime,
    a_replayed_proof_gets_a_new_challenge_not_a_cookie,
    a_proof_by_another_key_ends_the_session,
    alg_none_ends_the_session,
    hs256_keyed_with_the_public_key_ends_the_session,
    a_refresh_carrying_its_own_jwk_ends_the_session,
    a_challenge_from_another_session_is_refused,
    a_bound_session_cannot_be_registered_again,
    garbage_and_oversized_headers_never_answer_500,
    logout_ends_the_binding_and_refresh_cannot_revive_it,
    sessions_that_never_register_keep_working,
    a_rotation_offers_registration_again_and_keeps_a_binding,
    a_registration_challenge_expires,
    racing_refreshes_with_one_proof_get_one_cookie,
    a_request_racing_the_registration_is_served,
);

pub(crate) fn events_of(h: &Harness, kind: &str) -> Vec<SessionEvent> {
    h.events
        .all()
        .into_iter()
        .filter(|e| e.kind() == kind)
        .collect()
}

pub(crate) fn proof_refusals(h: &Harness) -> Vec<(&'static str, bool)> {
    events_of(h, "device_proof_refused")
        .into_iter()
        .map(|e| match e {
            SessionEvent::DeviceProofRefused { reason, ended, .. } => (reason, ended),
            _ => unreachable!(),
        })
        .collect()
}
