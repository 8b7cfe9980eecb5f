//! A user's view of their sessions through the layer, on the memory store: `Session::sessions`
//! (bounded by the per-user cap), `revoke`, `revoke_others`, and the layer's `revoke_user`
//! (OWASP ASVS 5.0 7.4.2, 7.4.3, 7.4.5, 7.5.2).

mod common;

use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::*;
use tower_session_guard::{
    Fingerprint, LimitPolicy, MemoryStore, Session, SessionError, SessionGuardLayer, SessionInfo,
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
