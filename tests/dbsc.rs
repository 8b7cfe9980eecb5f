//! Device Bound Session Credentials through the layer, with a Rust client that plays the
//! browser (Chromium 156's behaviour, issue 15): it makes a P-256 key, logs in, registers,
//! lets the bound cookie run out through the injected clock, refreshes through the 403
//! challenge and carries on. Then the attacks: stolen cookies without the key, a replayed
//! proof, a proof by another key, `alg: none`, HS256 keyed with the public key, a refresh
//! carrying its own `jwk`, another session's challenge, a second registration, and
//! garbage or oversized headers (never a 500).
//!
//! Every scenario runs on the memory store and on Redis (`tsg_redis`, `REDIS_URL`; listed as
//! ignored without it, failing where CI provides Redis).

mod common;
mod redis_support;

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

// ----- the browser -----

/// A device key, as Chromium keeps one (software key here, TPM there).
struct DeviceKey(EcdsaKeyPair);

impl DeviceKey {
    fn new() -> DeviceKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        DeviceKey(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    fn jwk(&self) -> Value {
        let p = self.0.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256",
               "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])})
    }

    fn sign(&self, header: &Value, payload: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn registration_proof(&self, challenge: &str) -> String {
        self.sign(
            &json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": self.jwk()}),
            &json!({ "jti": challenge }),
        )
    }

    fn refresh_proof(&self, challenge: &str) -> String {
        self.sign(
            &json!({"alg": "ES256", "typ": "dbsc+jwt"}),
            &json!({ "jti": challenge }),
        )
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn sets_cookie(&self, name: &str) -> bool {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|v| v.to_str().unwrap().starts_with(&format!("{name}=")))
    }
}

/// A cookie jar, a device key and the DBSC session id: what Chromium keeps per site.
struct Browser {
    app: Router,
    jar: BTreeMap<String, String>,
    key: DeviceKey,
    dbsc_id: Option<String>,
    registration: Option<(String, String)>,
    peer: std::net::SocketAddr,
}

impl Browser {
    fn new(app: &Router) -> Browser {
        Browser {
            app: app.clone(),
            jar: BTreeMap::new(),
            key: DeviceKey::new(),
            dbsc_id: None,
            registration: None,
            peer: CLIENT,
        }
    }

    /// A thief with a copy of this browser's cookies, but not its key.
    fn copy_cookies(&self) -> Browser {
        Browser {
            jar: self.jar.clone(),
            dbsc_id: self.dbsc_id.clone(),
            registration: self.registration.clone(),
            ..Browser::new(&self.app)
        }
    }

    async fn send(&mut self, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::builder().method(method).uri(uri);
        if !self.jar.is_empty() {
            let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            b = b.header(header::COOKIE, cookies.join("; "));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .extension(PeerAddr(self.peer))
            .body(Body::empty())
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        for v in res.headers().get_all(header::SET_COOKIE) {
            let text = v.to_str().unwrap();
            let (pair, attrs) = text.split_once("; ").unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attrs.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        let (status, headers) = (res.status(), res.headers().clone());
        Reply {
            status,
            headers,
            body: body_text(res).await,
        }
    }

    async fn get_me(&mut self) -> StatusCode {
        self.send(Method::GET, "/me", &[]).await.status
    }

    /// Logs in and reads the registration offer: `(path, challenge)`.
    async fn login(&mut self) -> Reply {
        let r = self.send(Method::POST, "/login", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let offer = r
            .header("secure-session-registration")
            .expect("a login offers registration")
            .to_owned();
        self.registration = Some(parse_offer(&offer));
        r
    }

    async fn register_with(&mut self, proof: &str) -> Reply {
        let path = self.registration.clone().unwrap().0;
        let r = self
            .send(Method::POST, &path, &[("secure-session-response", proof)])
            .await;
        if r.status == StatusCode::OK {
            self.dbsc_id = r.json()["session_identifier"].as_str().map(str::to_owned);
        }
        r
    }

    async fn register(&mut self) -> Reply {
        let challenge = self.registration.clone().unwrap().1;
        let proof = self.key.registration_proof(&challenge);
        let r = self.register_with(&proof).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r
    }

    /// A refresh without a proof: the 403 and its challenge.
    async fn challenge(&mut self) -> String {
        let id = self.dbsc_id.clone().unwrap();
        let r = self
            .send(Method::POST, REFRESH, &[("sec-secure-session-id", &id)])
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(!r.sets_cookie(BOUND));
        let header = r.header("secure-session-challenge").expect("a challenge");
        let (challenge, rest) = header[1..].split_once('"').unwrap();
        assert_eq!(rest, format!(";id=\"{id}\""));
        challenge.to_owned()
    }

    async fn refresh_with(&mut self, proof: &str) -> Reply {
        let id = self.dbsc_id.clone().unwrap();
        self.send(
            Method::POST,
            REFRESH,
            &[
                ("sec-secure-session-id", &id),
                ("secure-session-response", proof),
            ],
        )
        .await
    }

    /// The whole refresh as Chromium does it: 403 challenge, then the signed proof.
    async fn refresh(&mut self) -> String {
        let challenge = self.challenge().await;
        let proof = self.key.refresh_proof(&challenge);
        let r = self.refresh_with(&proof).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.sets_cookie(BOUND));
        proof
    }
}

/// `(ES256 RS256);path="…";challenge="…"` → (path, challenge).
fn parse_offer(offer: &str) -> (String, String) {
    assert!(offer.starts_with("(ES256 RS256);"), "{offer}");
    let param = |name: &str| {
        let start = offer.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        offer[start..].split('"').next().unwrap().to_owned()
    };
    (param("path"), param("challenge"))
}

// ----- the stores -----

fn app(h: &Harness, store: impl SessionStore) -> Router {
    let layer = h
        .builder(store)
        .device_binding(DeviceBinding::new().bound_cookie_lifetime(LIFETIME))
        .build()
        .expect("valid config");
    common::app(layer)
}

async fn redis_store() -> RedisStore {
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
);

fn events_of(h: &Harness, kind: &str) -> Vec<SessionEvent> {
    h.events
        .all()
        .into_iter()
        .filter(|e| e.kind() == kind)
        .collect()
}

fn proof_refusals(h: &Harness) -> Vec<(&'static str, bool)> {
    events_of(h, "device_proof_refused")
        .into_iter()
        .map(|e| match e {
            SessionEvent::DeviceProofRefused { reason, ended, .. } => (reason, ended),
            _ => unreachable!(),
        })
        .collect()
}

// ----- the scenarios -----

async fn the_browser_registers_refreshes_and_carries_on(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    assert_eq!(chrome.registration.as_ref().unwrap().0, REGISTRATION);
    // Before registering, the session works as any other.
    assert_eq!(chrome.get_me().await, StatusCode::OK);

    let r = chrome.register().await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["refresh_url"], REFRESH);
    assert_eq!(
        body["scope"],
        json!({"include_site": false, "scope_specification": []})
    );
    let cred = &body["credentials"][0];
    assert_eq!(
        (cred["type"].as_str(), cred["name"].as_str()),
        (Some("cookie"), Some(BOUND))
    );
    // The JSON's attributes are the Set-Cookie's, byte for byte, up to its Max-Age (the
    // expiry is no part of what the browser compares; Chromium 156 refuses it there).
    let set_cookie = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(BOUND))
        .unwrap();
    let attributes = cred["attributes"].as_str().unwrap();
    assert_eq!(
        set_cookie.split_once("; ").unwrap().1,
        format!("{attributes}; Max-Age={}", LIFETIME.as_secs())
    );
    assert!(!attributes.contains("Max-Age"));
    assert!(set_cookie.contains("Secure") && set_cookie.contains("HttpOnly"));
    assert!(set_cookie.contains("Max-Age=60"));
    assert_eq!(events_of(&h, "device_registered").len(), 1);
    assert_eq!(chrome.get_me().await, StatusCode::OK);

    // The bound cookie runs out: the session is not served as itself...
    h.clock.advance(LIFETIME + Duration::from_secs(1));
    assert_eq!(chrome.get_me().await, StatusCode::UNAUTHORIZED);
    assert!(matches!(
        events_of(&h, "bound_cookie_refused").last(),
        Some(SessionEvent::BoundCookieRefused {
            reason: "expired",
            ..
        })
    ));
    // ...until the browser refreshes through the challenge, and then it is, several times.
    for _ in 0..3 {
        chrome.refresh().await;
        assert_eq!(chrome.get_me().await, StatusCode::OK);
        h.clock.advance(LIFETIME / 2);
        assert_eq!(chrome.get_me().await, StatusCode::OK);
        h.clock.advance(LIFETIME / 2);
    }
    assert_eq!(events_of(&h, "device_refreshed").len(), 3);
    assert!(proof_refusals(&h).is_empty());
}

async fn stolen_cookies_without_the_key_stop_working_within_one_lifetime(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    chrome.register().await;
    // Malware copies both cookies off the disk, then replays them from its own client.
    let mut thief = chrome.copy_cookies();
    assert_eq!(
        thief.get_me().await,
        StatusCode::OK,
        "within the lifetime the copy works"
    );
    h.clock.advance(LIFETIME);
    assert_eq!(thief.get_me().await, StatusCode::UNAUTHORIZED);
    // Without the key the thief can get a challenge but no cookie.
    let challenge = thief.challenge().await;
    assert!(!challenge.is_empty());
    assert_eq!(thief.get_me().await, StatusCode::UNAUTHORIZED);
    // The real browser is untouched: it refreshes and goes on, and the thief's old bound
    // cookie is no good any more.
    chrome.refresh().await;
    assert_eq!(chrome.get_me().await, StatusCode::OK);
    assert_eq!(thief.get_me().await, StatusCode::UNAUTHORIZED);
    // A session cookie alone (no bound cookie at all) is refused as well.
    thief.jar.remove(BOUND);
    assert_eq!(thief.get_me().await, StatusCode::UNAUTHORIZED);
    let reasons: Vec<_> = events_of(&h, "bound_cookie_refused")
        .into_iter()
        .map(|e| match e {
            SessionEvent::BoundCookieRefused { reason, .. } => reason,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(reasons, ["expired", "expired", "invalid", "absent"]);
}

async fn a_replayed_proof_gets_a_new_challenge_not_a_cookie(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    chrome.register().await;
    h.clock.advance(LIFETIME);
    let proof = chrome.refresh().await;
    // Someone who saw that request replays it: the challenge was consumed.
    let mut thief = chrome.copy_cookies();
    thief.jar.remove(BOUND);
    let r = thief.refresh_with(&proof).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.sets_cookie(BOUND));
    assert!(r.header("secure-session-challenge").is_some());
    assert_eq!(thief.get_me().await, StatusCode::UNAUTHORIZED);
    // Replayed against a fresh pending challenge it is a stale one: challenged again.
    let _pending = chrome.challenge().await;
    let r = thief.refresh_with(&proof).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.sets_cookie(BOUND));
    assert_eq!(proof_refusals(&h).last(), Some(&("wrong_challenge", false)));
    assert_eq!(chrome.get_me().await, StatusCode::OK);
}

/// A refresh proof that fails in a way only an attacker's can: the session ends, the
/// browser is told `{"continue": false}`, and nobody can use it any more.
async fn expect_ended(h: &Harness, chrome: &mut Browser, proof: &str, reason: &str) {
    let cookies = chrome.jar.clone();
    let r = chrome.refresh_with(proof).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"continue": false}));
    assert_eq!(
        proof_refusals(h).last(),
        Some(&(reason_static(reason), true))
    );
    // Ended on the server: even with the old cookies, the real browser's next refresh is
    // told to stop and nothing is served as the session.
    let id = chrome.dbsc_id.clone().unwrap();
    chrome.jar = cookies;
    let r = chrome
        .send(Method::POST, REFRESH, &[("sec-secure-session-id", &id)])
        .await;
    assert_eq!(r.json(), json!({"continue": false}));
    assert_eq!(chrome.get_me().await, StatusCode::UNAUTHORIZED);
}

fn reason_static(reason: &str) -> &'static str {
    match reason {
        "bad_signature" => "bad_signature",
        "algorithm_not_allowed" => "algorithm_not_allowed",
        "jwk_in_refresh" => "jwk_in_refresh",
        other => panic!("unexpected reason {other}"),
    }
}

async fn bound_and_challenged(h: &Harness, app: &Router) -> (Browser, String) {
    let mut chrome = Browser::new(app);
    chrome.login().await;
    chrome.register().await;
    h.clock.advance(LIFETIME);
    let challenge = chrome.challenge().await;
    (chrome, challenge)
}

async fn a_proof_by_another_key_ends_the_session(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let (mut chrome, challenge) = bound_and_challenged(&h, &app).await;
    let proof = DeviceKey::new().refresh_proof(&challenge);
    expect_ended(&h, &mut chrome, &proof, "bad_signature").await;
}

async fn alg_none_ends_the_session(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let (mut chrome, challenge) = bound_and_challenged(&h, &app).await;
    let proof = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "dbsc+jwt"})),
        b64(&json!({ "jti": challenge }))
    );
    expect_ended(&h, &mut chrome, &proof, "algorithm_not_allowed").await;
}

async fn hs256_keyed_with_the_public_key_ends_the_session(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let (mut chrome, challenge) = bound_and_challenged(&h, &app).await;
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "typ": "dbsc+jwt"})),
        b64(&json!({ "jti": challenge }))
    );
    let public = chrome.key.jwk().to_string();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public.as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    let proof = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    expect_ended(&h, &mut chrome, &proof, "algorithm_not_allowed").await;
}

async fn a_refresh_carrying_its_own_jwk_ends_the_session(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let (mut chrome, challenge) = bound_and_challenged(&h, &app).await;
    // Signed by a key of the attacker's, who names it in the header.
    let thief = DeviceKey::new();
    let proof = thief.registration_proof(&challenge);
    expect_ended(&h, &mut chrome, &proof, "jwk_in_refresh").await;
}

async fn a_challenge_from_another_session_is_refused(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let (mut alice, _) = bound_and_challenged(&h, &app).await;
    let (mut other, other_challenge) = bound_and_challenged(&h, &app).await;
    // Alice's own key signs the other session's challenge: valid signature, wrong session.
    let proof = alice.key.refresh_proof(&other_challenge);
    let r = alice.refresh_with(&proof).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.sets_cookie(BOUND));
    assert_eq!(alice.get_me().await, StatusCode::UNAUTHORIZED);
    assert_eq!(proof_refusals(&h).last(), Some(&("wrong_challenge", false)));
    // Both sessions still refresh properly.
    alice.refresh().await;
    other.refresh().await;
    assert_eq!(alice.get_me().await, StatusCode::OK);
    assert_eq!(other.get_me().await, StatusCode::OK);
}

async fn a_bound_session_cannot_be_registered_again(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    chrome.register().await;
    // An attacker with the cookies tries to bind the session to their own key, with the
    // login's challenge (now consumed) and with a fresh one from the refresh endpoint.
    let mut thief = chrome.copy_cookies();
    let login_challenge = chrome.registration.clone().unwrap().1;
    let r = thief
        .register_with(&thief.key.registration_proof(&login_challenge))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let fresh = thief.challenge().await;
    let r = thief
        .register_with(&thief.key.registration_proof(&fresh))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.sets_cookie(BOUND));
    assert_eq!(
        proof_refusals(&h),
        [("already_bound", false), ("already_bound", false)]
    );
    // The key that counts is still the browser's.
    h.clock.advance(LIFETIME);
    chrome.refresh().await;
    assert_eq!(chrome.get_me().await, StatusCode::OK);
}

async fn garbage_and_oversized_headers_never_answer_500(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    let huge = "A".repeat(20_000);
    let dots = "a.b.c.d.e";
    let padded = format!("{}=", chrome.key.registration_proof("x"));
    // Registration with garbage: refused, the session stays pending and registers after.
    for proof in [
        huge.as_str(),
        dots,
        padded.as_str(),
        "\"unterminated",
        "%%%",
    ] {
        let r = chrome.register_with(proof).await;
        assert!(
            matches!(r.status, StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN),
            "{proof:.20}: {}",
            r.status
        );
    }
    chrome.register().await;
    h.clock.advance(LIFETIME);
    // Refresh with a garbage or huge session id: 400, nothing ended.
    for id in [huge.as_str(), "a b c", "", "\"x"] {
        let r = chrome
            .send(Method::POST, REFRESH, &[("sec-secure-session-id", id)])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{id:.20}");
    }
    // No session at all: the browser is told to stop, not an error.
    let mut stranger = Browser::new(&app);
    stranger.dbsc_id = chrome.dbsc_id.clone();
    let r = stranger.refresh_with("a.b.c").await;
    assert_eq!(r.json(), json!({"continue": false}));
    let r = stranger.register_with_path("x").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Huge proof at refresh: bounded, refused, never a 500 (and it ends the session: only
    // a forger sends one).
    chrome.challenge().await;
    let r = chrome.refresh_with(&huge).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"continue": false}));
}

impl Browser {
    async fn register_with_path(&mut self, proof: &str) -> Reply {
        self.send(
            Method::POST,
            REGISTRATION,
            &[("secure-session-response", proof)],
        )
        .await
    }
}

async fn logout_ends_the_binding_and_refresh_cannot_revive_it(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    chrome.register().await;
    let before_logout = chrome.jar.clone();
    let r = chrome.send(Method::POST, "/logout", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    // The browser (or anyone holding the old cookies) refreshes: told to stop, no cookie.
    chrome.jar = before_logout;
    let r = chrome.refresh_with("a.b.c").await;
    assert_eq!(r.json(), json!({"continue": false}));
    assert!(!r.sets_cookie(BOUND));
    let id = chrome.dbsc_id.clone().unwrap();
    let r = chrome
        .send(Method::POST, REFRESH, &[("sec-secure-session-id", &id)])
        .await;
    assert_eq!(r.json(), json!({"continue": false}));
    assert_eq!(chrome.get_me().await, StatusCode::UNAUTHORIZED);
}

async fn sessions_that_never_register_keep_working(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut other_browser = Browser::new(&app);
    other_browser.login().await;
    for _ in 0..3 {
        h.clock.advance(LIFETIME);
        assert_eq!(other_browser.get_me().await, StatusCode::OK);
    }
    assert!(events_of(&h, "bound_cookie_refused").is_empty());
}

/// Without the option nothing changes: no offer, and the paths are the application's.
#[tokio::test]
async fn without_the_option_there_is_no_offer_and_no_endpoint() {
    let h = Harness::new();
    let app = h.app(MemoryStore::new());
    let mut chrome = Browser::new(&app);
    let r = chrome.send(Method::POST, "/login", &[]).await;
    assert!(r.header("secure-session-registration").is_none());
    let r = chrome.send(Method::POST, REFRESH, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "the app's own 404");
}

#[test]
fn build_refuses_unworkable_options() {
    let bad = [
        DeviceBinding::new().registration_path("relative"),
        DeviceBinding::new().refresh_path("/a?b=c"),
        DeviceBinding::new().refresh_path(REGISTRATION),
        DeviceBinding::new().bound_cookie_name("__Host-session"),
        DeviceBinding::new().bound_cookie_name("bad name"),
        DeviceBinding::new().bound_cookie_lifetime(Duration::ZERO),
        DeviceBinding::new().bound_cookie_lifetime(Duration::from_secs(2 * 3600)),
        DeviceBinding::new().algorithms([]),
    ];
    for option in bad {
        let err = tower_session_guard::SessionGuardLayer::builder(MemoryStore::new())
            .device_binding(option.clone())
            .build()
            .err();
        assert!(
            matches!(
                err,
                Some(tower_session_guard::ConfigError::InvalidDeviceBinding(_))
            ),
            "{option:?}"
        );
    }
}

// ----- policy -----

/// "Admins must be on a bound device": an admin session that has not registered within the
/// grace period is denied (and ended); one that registered keeps going.
#[tokio::test]
async fn the_policy_can_require_binding_for_a_role_after_a_grace_period() {
    const GRACE: Duration = Duration::from_secs(30);
    let h = Harness::new();
    let policy = ValidationPolicy::builder()
        .mode(PolicyMode::Deny)
        .require_device_binding(Rule::new("admins").roles(["admin"]), GRACE)
        .build()
        .unwrap();
    let layer = h
        .builder(MemoryStore::new())
        .device_binding(DeviceBinding::new().bound_cookie_lifetime(LIFETIME))
        .policy(policy)
        .build()
        .unwrap();
    let app = common::app(layer);
    let (mut bound, mut unbound) = (Browser::new(&app), Browser::new(&app));
    bound.login().await;
    bound.register().await;
    unbound.login().await;
    // Within the grace period both work (`/login` logs in alice, role admin).
    assert_eq!(unbound.get_me().await, StatusCode::OK);
    h.clock.advance(GRACE);
    assert_eq!(bound.get_me().await, StatusCode::OK);
    assert_eq!(unbound.get_me().await, StatusCode::UNAUTHORIZED);
    assert!(matches!(
        events_of(&h, "policy_denied").as_slice(),
        [SessionEvent::PolicyDenied { reason, .. }] if reason.contains("device-bound")
    ));
    // Denied means ended: the unbound session does not come back.
    assert_eq!(unbound.get_me().await, StatusCode::UNAUTHORIZED);
    // A user without the role is not concerned.
    let mut user = Browser::new(&app);
    let r = user.send(Method::POST, "/login/bob", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    h.clock.advance(GRACE);
    assert_eq!(user.get_me().await, StatusCode::OK);
}

/// A bound session may move (mobile, roaming) when the bound-session pin is relaxed; an
/// unbound one stays pinned exactly.
#[tokio::test]
async fn a_relaxed_pin_for_bound_sessions_leaves_unbound_ones_pinned() {
    let h = Harness::new();
    let layer = h
        .builder(MemoryStore::new())
        .device_binding(
            DeviceBinding::new()
                .bound_cookie_lifetime(LIFETIME)
                .bound_session_pin_mode(PinMode::Off),
        )
        .build()
        .unwrap();
    let app = common::app(layer);
    let (mut bound, mut unbound) = (Browser::new(&app), Browser::new(&app));
    bound.login().await;
    bound.register().await;
    unbound.login().await;
    let elsewhere = common::peer("198.51.100.7");
    bound.peer = elsewhere;
    unbound.peer = elsewhere;
    assert_eq!(bound.get_me().await, StatusCode::OK);
    assert_eq!(unbound.get_me().await, StatusCode::UNAUTHORIZED);
    assert_eq!(events_of(&h, "pin_violation").len(), 1);
    // The bound session still needs its bound cookie from the new address.
    h.clock.advance(LIFETIME);
    assert_eq!(bound.get_me().await, StatusCode::UNAUTHORIZED);
    bound.refresh().await;
    assert_eq!(bound.get_me().await, StatusCode::OK);
}

// ----- rotation, expiry, races -----

async fn a_rotation_offers_registration_again_and_keeps_a_binding(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    let offered = chrome.registration.clone().unwrap();
    // A privilege change before registering: the new token comes with the offer again.
    let r = chrome.send(Method::POST, "/rotate", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let again = parse_offer(
        r.header("secure-session-registration")
            .expect("offered again"),
    );
    assert_eq!(again, offered, "the same pending registration");
    chrome.register().await;
    // A rotation of a bound session keeps the binding: no new offer, the bound cookie and
    // the key still count under the new token.
    let r = chrome.send(Method::POST, "/rotate", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("secure-session-registration").is_none());
    assert_eq!(chrome.get_me().await, StatusCode::OK);
    h.clock.advance(LIFETIME);
    assert_eq!(chrome.get_me().await, StatusCode::UNAUTHORIZED);
    chrome.refresh().await;
    assert_eq!(chrome.get_me().await, StatusCode::OK);
}

async fn a_registration_challenge_expires(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    h.clock
        .advance(tower_session_guard::dbsc::CHALLENGE_LIFETIME + Duration::from_secs(1));
    let challenge = chrome.registration.clone().unwrap().1;
    let r = chrome
        .register_with(&chrome.key.registration_proof(&challenge))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.sets_cookie(BOUND));
    assert_eq!(proof_refusals(&h), [("challenge_expired", false)]);
    // The session itself is untouched (unbound, as if the browser had no DBSC).
    assert_eq!(chrome.get_me().await, StatusCode::OK);
}

/// Two refreshes race with the same valid proof (a replay sent alongside the real one, or
/// two instances behind a balancer): both load the record before either writes (the store
/// below holds the first two loads at a barrier), both verify, and the compare-and-set lets
/// one consume the challenge: one bound cookie comes out, the other request gets a fresh
/// challenge.
async fn racing_refreshes_with_one_proof_get_one_cookie(store: impl SessionStore) {
    let h = Harness::new();
    let store = GateStore::new(store);
    let gate = store.gate.clone();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    chrome.register().await;
    h.clock.advance(LIFETIME);
    let challenge = chrome.challenge().await;
    let proof = chrome.key.refresh_proof(&challenge);
    let id = chrome.dbsc_id.clone().unwrap();
    let cookies: Vec<String> = chrome.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let request = || {
        Request::builder()
            .method(Method::POST)
            .uri(REFRESH)
            .header(header::COOKIE, cookies.join("; "))
            .header("sec-secure-session-id", &id)
            .header("secure-session-response", &proof)
            .extension(PeerAddr(CLIENT))
            .body(Body::empty())
            .unwrap()
    };
    gate.arm();
    let both = async {
        tokio::join!(
            app.clone().oneshot(request()),
            app.clone().oneshot(request())
        )
    };
    let (a, b) = tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("both requests finish");
    assert_eq!(gate.held(), 2, "both requests loaded before either wrote");
    let mut statuses = [a.unwrap().status(), b.unwrap().status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::FORBIDDEN]);
    assert_eq!(events_of(&h, "device_refreshed").len(), 1);
}

/// A store that, once armed, holds its first two loads at a barrier: two requests then both
/// read the same record version before either can write.
struct GateStore<S> {
    inner: S,
    gate: Gate,
}

#[derive(Clone)]
struct Gate {
    armed: Arc<std::sync::atomic::AtomicBool>,
    loads: Arc<std::sync::atomic::AtomicUsize>,
    barrier: Arc<tokio::sync::Barrier>,
}

impl<S> GateStore<S> {
    fn new(inner: S) -> Self {
        GateStore {
            inner,
            gate: Gate {
                armed: Default::default(),
                loads: Default::default(),
                barrier: Arc::new(tokio::sync::Barrier::new(2)),
            },
        }
    }
}

impl Gate {
    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn held(&self) -> usize {
        self.loads.load(std::sync::atomic::Ordering::SeqCst).min(2)
    }
}

impl<S: SessionStore> SessionStore for GateStore<S> {
    async fn load(&self, key: SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let loaded = self.inner.load(key).await;
        let gate = &self.gate;
        if gate.armed.load(std::sync::atomic::Ordering::SeqCst)
            && gate.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2
        {
            gate.barrier.wait().await;
        }
        loaded
    }

    async fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.inner.create(key, record, ttl).await
    }

    async fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.inner.update(key, expected, record, ttl).await
    }

    async fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.inner.rotate(old, expected, new, record, ttl).await
    }

    async fn delete(&self, key: SessionKey) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }

    async fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, StoreError> {
        self.inner.login(old, new, record, ttl, limit).await
    }

    async fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError> {
        self.inner.user_sessions(user_id, limit).await
    }
}

/// The endpoints are no way around ID-guessing detection: unknown tokens sent to them are
/// counted like any others, and an address cooling down gets 429 there too.
#[tokio::test]
async fn unknown_tokens_at_the_endpoints_count_as_guessing() {
    let h = Harness::new();
    let layer = h
        .builder(MemoryStore::new())
        .device_binding(DeviceBinding::new().bound_cookie_lifetime(LIFETIME))
        .token_guessing(Some(tower_session_guard::GuessingLimit {
            threshold: 3,
            window: Duration::from_secs(60),
            cooldown: Some(Duration::from_secs(60)),
        }))
        .build()
        .unwrap();
    let app = common::app(layer);
    let mut guesser = Browser::new(&app);
    guesser.dbsc_id = Some("guess".into());
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let token = tower_session_guard::SessionToken::generate();
        guesser
            .jar
            .insert(common::COOKIE.to_owned(), token.as_str().to_owned());
        statuses.push(guesser.refresh_with("a.b.c").await.status);
    }
    assert_eq!(events_of(&h, "token_guessing").len(), 1);
    assert_eq!(events_of(&h, "unknown_token").len(), 5);
    assert_eq!(statuses[..3], [StatusCode::OK; 3], "continue: false");
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
}
