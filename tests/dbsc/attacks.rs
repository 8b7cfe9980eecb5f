//! What a thief tries: stolen cookies, replays, forged proofs, other sessions' challenges,
//! re-registration, races and guessing; each is refused.

use super::*;

pub(crate) async fn stolen_cookies_without_the_key_stop_working_within_one_lifetime(
    store: impl SessionStore,
) {
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

pub(crate) async fn a_replayed_proof_gets_a_new_challenge_not_a_cookie(store: impl SessionStore) {
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
pub(crate) async fn expect_ended(h: &Harness, chrome: &mut Browser, proof: &str, reason: &str) {
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

pub(crate) fn reason_static(reason: &str) -> &'static str {
    match reason {
        "bad_signature" => "bad_signature",
        "algorithm_not_allowed" => "algorithm_not_allowed",
        "jwk_in_refresh" => "jwk_in_refresh",
        other => panic!("unexpected reason {other}"),
    }
}

pub(crate) async fn bound_and_challenged(h: &Harness, app: &Router) -> (Browser, String) {
    let mut chrome = Browser::new(app);
    chrome.login().await;
    chrome.register().await;
    h.clock.advance(LIFETIME);
    let challenge = chrome.challenge().await;
    (chrome, challenge)
}

pub(crate) async fn a_proof_by_another_key_ends_the_session(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let (mut chrome, challenge) = bound_and_challenged(&h, &app).await;
    let proof = DeviceKey::new().refresh_proof(&challenge);
    expect_ended(&h, &mut chrome, &proof, "bad_signature").await;
}

pub(crate) async fn alg_none_ends_the_session(store: impl SessionStore) {
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

pub(crate) async fn hs256_keyed_with_the_public_key_ends_the_session(store: impl SessionStore) {
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

pub(crate) async fn a_refresh_carrying_its_own_jwk_ends_the_session(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let (mut chrome, challenge) = bound_and_challenged(&h, &app).await;
    // Signed by a key of the attacker's, who names it in the header.
    let thief = DeviceKey::new();
    let proof = thief.registration_proof(&challenge);
    expect_ended(&h, &mut chrome, &proof, "jwk_in_refresh").await;
}

pub(crate) async fn a_challenge_from_another_session_is_refused(store: impl SessionStore) {
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

pub(crate) async fn a_bound_session_cannot_be_registered_again(store: impl SessionStore) {
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

/// Two refreshes race with the same valid proof (a replay sent alongside the real one, or
/// two instances behind a balancer): both load the record before either writes (the store
/// below holds the first two loads at a barrier), both verify, and the compare-and-set lets
/// one consume the challenge: one bound cookie comes out, the other request gets a fresh
/// challenge.
pub(crate) async fn racing_refreshes_with_one_proof_get_one_cookie(store: impl SessionStore) {
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
pub(crate) struct GateStore<S> {
    inner: S,
    gate: Gate,
}

#[derive(Clone)]
pub(crate) struct Gate {
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
