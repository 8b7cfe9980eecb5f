//! A user's view of their sessions through the layer, on the memory store: `Session::sessions`
//! (bounded by the per-user cap), `revoke`, `revoke_others`, and the layer's `revoke_user`,
//! `user_sessions` and `revoke_session` (OWASP ASVS 5.0 7.4.2, 7.4.3, 7.4.5, 7.5.2); and their
//! abuse: a guest calling them, a user naming another user's session.

mod common;

use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::*;
use tower_session_guard::{
    Fingerprint, LimitPolicy, MemoryStore, Session, SessionError, SessionEvent, SessionGuardLayer,
    SessionInfo,
};

async fn list(session: Session) -> Result<Json<Vec<SessionInfo>>, SessionError> {
    Ok(Json(session.sessions().await?))
}

async fn revoke(session: Session, Path(id): Path<String>) -> Result<String, SessionError> {
    let id: Fingerprint = id.parse().map_err(|_| SessionError::NotAuthenticated)?;
    Ok(session.revoke(id).await?.to_string())
}

async fn revoke_others(session: Session) -> Result<String, SessionError> {
    Ok(session.revoke_others().await?.to_string())
}

/// A call's outcome as text: its value, or its error's name (`NotAuthenticated`), so a test
/// tells which error it was, not only its status.
fn outcome<T: ToString>(result: Result<T, SessionError>) -> String {
    match result {
        Ok(v) => v.to_string(),
        Err(e) => format!("{e:?}"),
    }
}

async fn try_sessions(session: Session) -> String {
    outcome(session.sessions().await.map(|list| list.len()))
}

async fn try_revoke(session: Session, Path(id): Path<String>) -> String {
    let id: Fingerprint = id.parse().expect("a fingerprint");
    outcome(session.revoke(id).await)
}

async fn try_revoke_others(session: Session) -> String {
    outcome(session.revoke_others().await)
}

fn sessions_app(h: &Harness, cap: usize) -> (Router, SessionGuardLayer) {
    let layer = h
        .builder(MemoryStore::new())
        .max_sessions_per_user(cap, LimitPolicy::EvictOldest)
        .build()
        .expect("valid config");
    let app = Router::new()
        .route("/sessions", get(list))
        .route("/revoke/{id}", post(revoke))
        .route("/revoke-others", post(revoke_others))
        .route("/try/sessions", get(try_sessions))
        .route("/try/revoke/{id}", post(try_revoke))
        .route("/try/revoke-others", post(try_revoke_others))
        .merge(routes())
        .layer(layer.clone());
    (app, layer)
}

async fn listed(app: &Router, token: &str) -> Vec<serde_json::Value> {
    let res = call(app, Method::GET, "/sessions", Some(token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    serde_json::from_str(&body_text(res).await).expect("a JSON list")
}

async fn alice_on(app: &Router, h: &Harness, devices: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for _ in 0..devices {
        tokens.push(login_from(app, CLIENT, "alice", &[], &[]).await);
        h.clock.advance(std::time::Duration::from_secs(1));
    }
    tokens
}

#[tokio::test]
async fn a_user_sees_their_sessions_oldest_first_with_this_one_marked() {
    let h = Harness::new();
    let (app, _) = sessions_app(&h, 20);
    let tokens = alice_on(&app, &h, 3).await;
    login_from(&app, CLIENT, "bob", &[], &[]).await;
    let list = listed(&app, &tokens[1]).await;
    assert_eq!(list.len(), 3, "only alice's: {list:?}");
    let ids: Vec<_> = list
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<_> = tokens.iter().map(|t| fp(t).to_string()).collect();
    assert_eq!(ids, expected, "oldest first");
    let current: Vec<_> = list
        .iter()
        .map(|s| s["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current, [false, true, false]);
    // A guest has no sessions to list.
    let guest = token_of(&call(&app, Method::POST, "/counter", None).await).unwrap();
    let res = call(&app, Method::GET, "/sessions", Some(&guest)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_list_is_bounded_by_the_per_user_cap() {
    let h = Harness::new();
    let (app, _) = sessions_app(&h, 5);
    let tokens = alice_on(&app, &h, 8).await;
    let list = listed(&app, tokens.last().unwrap()).await;
    assert_eq!(list.len(), 5);
}

#[tokio::test]
async fn revoking_one_device_ends_only_that_session() {
    let h = Harness::new();
    let (app, _) = sessions_app(&h, 20);
    let tokens = alice_on(&app, &h, 3).await;
    let uri = format!("/revoke/{}", fp(&tokens[0]));
    assert_eq!(
        call_text(&app, Method::POST, &uri, Some(&tokens[2]))
            .await
            .1,
        "true"
    );
    assert_eq!(
        call(&app, Method::GET, "/me", Some(&tokens[0]))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, Method::GET, "/me", Some(&tokens[1]))
            .await
            .status(),
        StatusCode::OK
    );
    // Revoking it again, or another user's session, ends nothing.
    assert_eq!(
        call_text(&app, Method::POST, &uri, Some(&tokens[2]))
            .await
            .1,
        "false"
    );
    let bob = login_from(&app, CLIENT, "bob", &[], &[]).await;
    let uri = format!("/revoke/{}", fp(&bob));
    assert_eq!(
        call_text(&app, Method::POST, &uri, Some(&tokens[2]))
            .await
            .1,
        "false"
    );
    assert_eq!(
        call(&app, Method::GET, "/me", Some(&bob)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn logging_out_other_devices_keeps_this_one() {
    let h = Harness::new();
    let (app, _) = sessions_app(&h, 20);
    let tokens = alice_on(&app, &h, 4).await;
    assert_eq!(
        call_text(&app, Method::POST, "/revoke-others", Some(&tokens[1]))
            .await
            .1,
        "3"
    );
    for (i, t) in tokens.iter().enumerate() {
        let want = if i == 1 {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(
            call(&app, Method::GET, "/me", Some(t)).await.status(),
            want,
            "device {i}"
        );
    }
    assert!(h.events.kinds().iter().filter(|k| **k == "revoked").count() == 3);
}

#[tokio::test]
async fn an_administrator_ends_every_session_of_a_user() {
    let h = Harness::new();
    let (app, layer) = sessions_app(&h, 20);
    let tokens = alice_on(&app, &h, 3).await;
    let bob = login_from(&app, CLIENT, "bob", &[], &[]).await;
    assert_eq!(layer.user_sessions("alice").await.unwrap().len(), 3);
    assert_eq!(layer.revoke_user("alice").await.unwrap(), 3);
    for t in &tokens {
        assert_eq!(
            call(&app, Method::GET, "/me", Some(t)).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        call(&app, Method::GET, "/me", Some(&bob)).await.status(),
        StatusCode::OK
    );
    assert!(layer.user_sessions("alice").await.unwrap().is_empty());
}

/// A session that was revoked is no session on its next request: refused where a user is
/// needed, empty where a session is read.
async fn assert_ended(app: &Router, token: &str, what: &str) {
    let me = call(app, Method::GET, "/me", Some(token)).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert_eq!(
        call_text(app, Method::GET, "/counter", Some(token)).await,
        (StatusCode::OK, "0".to_owned()),
        "{what}: no session data"
    );
}

async fn assert_live(app: &Router, token: &str, what: &str) {
    let me = call(app, Method::GET, "/me", Some(token)).await;
    assert_eq!(me.status(), StatusCode::OK, "{what}");
}

#[tokio::test]
async fn revoking_the_current_session_is_logout() {
    let h = Harness::new();
    let (app, _) = sessions_app(&h, 20);
    let tokens = alice_on(&app, &h, 2).await;
    call(&app, Method::POST, "/counter", Some(&tokens[1])).await;
    h.events.clear();
    let uri = format!("/revoke/{}", fp(&tokens[1]));
    let res = call(&app, Method::POST, &uri, Some(&tokens[1])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(has_removal_cookie(&res), "the logout's removal cookie");
    assert_eq!(body_text(res).await, "true");
    assert_eq!(h.events.kinds(), ["logged_out"]);
    assert_ended(&app, &tokens[1], "the revoked current session").await;
    assert_live(&app, &tokens[0], "the other device").await;
    assert_eq!(listed(&app, &tokens[0]).await.len(), 1);
}

#[tokio::test]
async fn a_guest_gets_not_authenticated_from_every_per_user_operation() {
    let h = Harness::new();
    let (app, _) = sessions_app(&h, 20);
    let alice = login_from(&app, CLIENT, "alice", &[], &[]).await;
    let guest = token_of(&call(&app, Method::POST, "/counter", None).await).expect("a guest");
    let alice_uri = format!("/try/revoke/{}", fp(&alice));
    for (who, token) in [("a guest", Some(guest.as_str())), ("no session", None)] {
        for (method, uri) in [
            (Method::GET, "/try/sessions"),
            (Method::POST, alice_uri.as_str()),
            (Method::POST, "/try/revoke-others"),
        ] {
            assert_eq!(
                call_text(&app, method, uri, token).await.1,
                "NotAuthenticated",
                "{who}: {uri}"
            );
        }
    }
    // Through the axum extractor's answer as well: 401.
    let uri = format!("/revoke/{}", fp(&alice));
    let res = call(&app, Method::POST, &uri, Some(&guest)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = call(&app, Method::POST, "/revoke-others", Some(&guest)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_live(&app, &alice, "alice, whom the guest named").await;
    assert!(!h.events.kinds().contains(&"revoked"));
}

#[tokio::test]
async fn a_user_cannot_end_another_users_session() {
    let h = Harness::new();
    let (app, layer) = sessions_app(&h, 20);
    let alice = alice_on(&app, &h, 2).await;
    let bob = login_from(&app, CLIENT, "bob", &[], &[]).await;
    // Bob's session is not in alice's list, and naming it does nothing.
    let ids: Vec<_> = listed(&app, &alice[0])
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!ids.contains(&fp(&bob).to_string()));
    let uri = format!("/try/revoke/{}", fp(&bob));
    assert_eq!(
        call_text(&app, Method::POST, &uri, Some(&alice[0])).await.1,
        "false"
    );
    // "Log out my other devices" ends alice's other device, not bob's.
    assert_eq!(
        call_text(&app, Method::POST, "/try/revoke-others", Some(&alice[0]))
            .await
            .1,
        "1"
    );
    assert_ended(&app, &alice[1], "alice's other device").await;
    assert_live(&app, &bob, "bob, after alice's revocations").await;
    assert_eq!(listed(&app, &bob).await.len(), 1);
    // Nor can an administrator's call end it under the wrong user.
    assert!(!layer.revoke_session("alice", fp(&bob)).await.unwrap());
    assert_live(&app, &bob, "bob, after revoke_session under alice").await;
    let revoked: Vec<_> = h
        .events
        .all()
        .into_iter()
        .filter(|e| e.kind() == "revoked")
        .map(|e| e.to_string())
        .collect();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert!(
        revoked[0].contains(&fp(&alice[1]).to_string()),
        "{revoked:?}"
    );
}

#[tokio::test]
async fn an_administrator_lists_a_user_and_ends_one_session() {
    let h = Harness::new();
    let (app, layer) = sessions_app(&h, 20);
    let tokens = alice_on(&app, &h, 3).await;
    let bob = login_from(&app, CLIENT, "bob", &[], &[]).await;
    let list = layer.user_sessions("alice").await.unwrap();
    let ids: Vec<_> = list.iter().map(|s| s.id).collect();
    let expected: Vec<_> = tokens.iter().map(|t| fp(t)).collect();
    assert_eq!(ids, expected, "oldest first, alice's only");
    assert!(
        list.iter().all(|s| !s.current),
        "no session is the admin's own"
    );
    assert!(list.windows(2).all(|w| w[0].created_at < w[1].created_at));

    h.events.clear();
    assert!(layer.revoke_session("alice", fp(&tokens[1])).await.unwrap());
    assert!(h.events.all().iter().any(|e| matches!(
        e,
        SessionEvent::Revoked { reason: "admin", user_id, .. } if user_id == "alice"
    )));
    assert_ended(&app, &tokens[1], "the revoked session").await;
    for t in [&tokens[0], &tokens[2], &bob] {
        assert_live(&app, t, "a session not named").await;
    }
    assert!(!layer.revoke_session("alice", fp(&tokens[1])).await.unwrap());
    let ids: Vec<_> = layer
        .user_sessions("alice")
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, [fp(&tokens[0]), fp(&tokens[2])]);
    assert!(layer.user_sessions("nobody").await.unwrap().is_empty());
    assert_eq!(layer.revoke_user("nobody").await.unwrap(), 0);
}

// ----- clear -----

async fn clear(session: Session) -> Result<&'static str, SessionError> {
    session.clear().await?;
    Ok("cleared")
}

fn clear_app(h: &Harness) -> Router {
    Router::new()
        .route("/clear", post(clear))
        .merge(routes())
        .layer(h.builder(MemoryStore::new()).build().expect("valid config"))
}

#[tokio::test]
async fn clear_drops_the_values_and_keeps_the_session_and_its_user() {
    let h = Harness::new();
    let app = clear_app(&h);
    let token = login_from(&app, CLIENT, "alice", &[], &[]).await;
    for uri in ["/set/cart/3-books", "/set/step/2"] {
        assert_eq!(
            call(&app, Method::POST, uri, Some(&token)).await.status(),
            StatusCode::OK
        );
    }

    let res = call(&app, Method::POST, "/clear", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(token_of(&res), None, "the ID stays: no new cookie");

    for key in ["cart", "step"] {
        let res = call(&app, Method::GET, &format!("/get/{key}"), Some(&token)).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{key} is gone");
    }
    let me = call(&app, Method::GET, "/me", Some(&token)).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert!(body_text(me).await.contains("alice"), "still logged in");
}

#[tokio::test]
async fn clear_without_a_session_creates_none() {
    let h = Harness::new();
    let app = clear_app(&h);
    let res = call(&app, Method::POST, "/clear", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(token_of(&res), None, "no guest session was created");
    assert!(
        !h.events.kinds().contains(&"created"),
        "{:?}",
        h.events.all()
    );
}
