//! The demo app: `cargo run --example demo`, then open http://127.0.0.1:3000.
//!
//! Flags: `--addr IP:PORT` (default 127.0.0.1:3000), `--idle-timeout SECS` (default 1800),
//! `--absolute-timeout SECS` (default 28800), `--pin exact|subnet|off` (default exact),
//! `--trusted-proxy CIDR` (repeatable; default none), `--redis URL` or `--postgres URL`
//! (sessions in Redis or PostgreSQL instead of in memory).
//!
//! Authenticated sessions are pinned to their login address and checked by a validation
//! policy in allow mode: "admins from the console host" (role admin from 127.0.0.1 or ::1)
//! and "users on loopback" (role user from 127.0.0.0/8 or ::1). So alice may use her session
//! only from 127.0.0.1, and bob from any 127.x address.
//!
//! Session events are logged to stdout, with fingerprints, never tokens.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_session_guard::store::SessionStore;
use tower_session_guard::{
    require_role, Authenticated, Fingerprint, Identity, Session, SessionError,
};

mod common;

use common::{find_user, parse_args, print_banner, FLAGS};

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    let default_addr = SocketAddr::from(([127, 0, 0, 1], 3000));
    let args = match parse_args(std::env::args().skip(1), default_addr) {
        Ok(a) if a.rest.is_empty() => a,
        Ok(a) => {
            eprintln!("unknown argument {:?}\nusage: demo {FLAGS}", a.rest[0]);
            return ExitCode::from(2);
        }
        Err(msg) => {
            eprintln!("{msg}\nusage: demo {FLAGS}");
            return ExitCode::from(2);
        }
    };
    let result = match (&args.redis, &args.postgres) {
        (Some(_), Some(_)) => Err("--redis and --postgres: choose one store".to_owned()),
        (Some(url), None) => match common::connect_redis(url).await {
            Ok(store) => serve(store, &args).await,
            Err(e) => Err(format!("cannot use Redis at {url}: {e}")),
        },
        (None, Some(url)) => match common::connect_postgres(url).await {
            Ok(store) => serve(store, &args).await,
            Err(e) => Err(format!("cannot use PostgreSQL at {url}: {e}")),
        },
        (None, None) => serve(common::memory_store(&args), &args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve<St: SessionStore>(store: St, args: &common::Args) -> Result<(), String> {
    let layer = common::layer(store, args)?;
    let app = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/counter", get(read_counter).post(bump_counter))
        .route("/sessions", get(list_sessions))
        .route("/sessions/revoke-others", post(revoke_others))
        .route("/sessions/{id}/revoke", post(revoke_one))
        // Authorization: a route guard answers 401 / 403 and keeps the session (the
        // validation policy, by contrast, ends a session used from the wrong place).
        .merge(
            Router::new()
                .route("/admin", get(admin))
                .route_layer(require_role("admin")),
        )
        .layer(layer);

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    print_banner(&format!("http://{}", args.addr), args);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| format!("server error: {e}"))
}

/// One entry of `GET /sessions`.
#[derive(Serialize)]
struct SessionJson {
    id: String,
    created_at: u64,
    last_seen: u64,
    ip: Option<String>,
    user_agent: Option<String>,
    current: bool,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET /sessions`: the logged-in user's sessions on every device, or 401.
async fn list_sessions(session: Session) -> Result<Json<Vec<SessionJson>>, SessionError> {
    let list = session.sessions().await?;
    Ok(Json(
        list.into_iter()
            .map(|s| SessionJson {
                id: s.id.to_string(),
                created_at: unix(s.created_at),
                last_seen: unix(s.last_seen),
                ip: s.ip.map(|ip| ip.to_string()),
                user_agent: s.user_agent,
                current: s.current,
            })
            .collect(),
    ))
}

/// `POST /sessions/revoke-others`: "log out my other devices".
async fn revoke_others(session: Session) -> Result<Json<serde_json::Value>, SessionError> {
    let revoked = session.revoke_others().await?;
    Ok(Json(json!({ "revoked": revoked })))
}

/// `POST /sessions/{id}/revoke`: ends one of the user's sessions.
async fn revoke_one(session: Session, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<Fingerprint>() else {
        return error(StatusCode::BAD_REQUEST, "not a session id");
    };
    match session.revoke(id).await {
        Ok(found) => Json(json!({ "revoked": usize::from(found) })).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// The JSON of `/login` and `/me`, in the documented field order.
#[derive(Serialize)]
struct Me<'a> {
    user: &'a str,
    roles: &'a [String],
    groups: &'a [String],
}

fn identity_json(id: &Identity) -> Me<'_> {
    Me {
        user: &id.user_id,
        roles: &id.roles,
        groups: &id.groups,
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// `POST /login` with JSON `{"username","password"}` or an HTML form.
async fn login(session: Session, headers: HeaderMap, body: Bytes) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let creds: Result<Credentials, String> = if is_json {
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    } else {
        serde_urlencoded::from_bytes(&body).map_err(|e| e.to_string())
    };
    let creds = match creds {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected username and password: {e}"),
            )
        }
    };
    let Some(user) = find_user(&creds.username, &creds.password) else {
        return error(StatusCode::UNAUTHORIZED, "invalid username or password");
    };
    let identity = user.identity();
    match session.login(identity.clone()).await {
        Ok(()) => Json(identity_json(&identity)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /me`: who is logged in, or 401.
async fn me(session: Session) -> Response {
    match session.identity() {
        Some(id) => Json(identity_json(&id)).into_response(),
        None => error(StatusCode::UNAUTHORIZED, "not logged in"),
    }
}

/// `GET /admin`, behind `require_role("admin")`: 401 without a login, 403 for a user without
/// the role (who stays logged in), this small JSON for an admin.
async fn admin(Authenticated(id): Authenticated) -> Json<serde_json::Value> {
    Json(json!({ "area": "admin", "user": id.user_id }))
}

/// `POST /logout`: ends the session on the server; 204 with the removal cookie.
async fn logout(session: Session) -> Result<StatusCode, SessionError> {
    session.logout().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /counter`: atomic increment, creating a guest session if needed.
async fn bump_counter(session: Session) -> Result<Json<serde_json::Value>, SessionError> {
    let count = session
        .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(Json(json!({ "count": count })))
}

/// `GET /counter`: the current count, 0 without a session.
async fn read_counter(session: Session) -> Result<Json<serde_json::Value>, SessionError> {
    let count = session.get::<u64>("count")?.unwrap_or(0);
    Ok(Json(json!({ "count": count })))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn when(t: Option<SystemTime>) -> String {
    t.map(httpdate::fmt_http_date).unwrap_or_else(|| "-".into())
}

fn secs_until(t: Option<SystemTime>) -> String {
    t.and_then(|t| t.duration_since(SystemTime::now()).ok())
        .map(|d| format!(" (in {}s)", d.as_secs()))
        .unwrap_or_default()
}

/// The user's sessions on every device, each with a revoke button.
async fn sessions_table(session: &Session) -> String {
    let list = match session.sessions().await {
        Ok(list) => list,
        Err(e) => return format!("<p>cannot list sessions: {}</p>", escape(&e.to_string())),
    };
    let mut rows = String::new();
    for s in &list {
        let action = if s.current {
            "this session".to_owned()
        } else {
            format!(
                r#"<button onclick="post('/sessions/{}/revoke')">Revoke</button>"#,
                s.id
            )
        };
        rows.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            s.id,
            s.ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into()),
            escape(s.user_agent.as_deref().unwrap_or("-")),
            when(Some(s.created_at)),
            when(Some(s.last_seen)),
            action,
        ));
    }
    format!(
        r#"<table>
<tr><th>id</th><th>address</th><th>user agent</th><th>created</th><th>last seen</th><th></th></tr>
{rows}</table>
<button onclick="post('/sessions/revoke-others')">Log out my other devices</button>"#
    )
}

/// `GET /`: a login form, or who you are and your session's times.
async fn index(session: Session) -> Html<String> {
    let count = session.get::<u64>("count").ok().flatten().unwrap_or(0);
    let body = match session.identity() {
        Some(id) => format!(
            r#"<p>Signed in as <b>{user}</b> &mdash; roles {roles}, groups {groups}</p>
<table>
<tr><th>session</th><td><code>{fp}</code> (fingerprint; the token itself is in an HttpOnly cookie)</td></tr>
<tr><th>pinned to</th><td>{pinned} (this request from {client})</td></tr>
<tr><th>created</th><td>{created}</td></tr>
<tr><th>authenticated</th><td>{auth}</td></tr>
<tr><th>last seen</th><td>{seen}</td></tr>
<tr><th>expires if idle</th><td>{exp}{exp_in}</td></tr>
<tr><th>absolute end</th><td>{abs}{abs_in}</td></tr>
</table>
<button onclick="post('/logout')">Log out</button>
<h2>Your sessions</h2>
{sessions}"#,
            sessions = sessions_table(&session).await,
            user = escape(&id.user_id),
            roles = escape(&id.roles.join(", ")),
            groups = escape(&id.groups.join(", ")),
            fp = session.fingerprint().map(|f| f.to_string()).unwrap_or_default(),
            pinned = session.pinned_ip().map(|ip| ip.to_string()).unwrap_or_else(|| "-".into()),
            client = session.client_ip().map(|ip| ip.to_string()).unwrap_or_else(|| "-".into()),
            created = when(session.created_at()),
            auth = when(session.authenticated_at()),
            seen = when(session.last_seen()),
            exp = when(session.expires_at()),
            exp_in = secs_until(session.expires_at()),
            abs = when(session.absolute_expiry()),
            abs_in = secs_until(session.absolute_expiry()),
        ),
        None => r#"<form id="login">
<label>user <input name="username" autocomplete="username"></label>
<label>password <input name="password" type="password" autocomplete="current-password"></label>
<button>Log in</button> <span id="err"></span>
</form>
<p>Try <code>alice</code> / <code>alice-pass</code> or <code>bob</code> / <code>bob-pass</code>.</p>"#
            .to_owned(),
    };
    Html(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>tower-session-guard demo</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto}}th{{text-align:left;padding-right:1em}}</style>
</head><body>
<h1>tower-session-guard demo</h1>
{body}
<p>Counter: <b id="count">{count}</b> <button onclick="post('/counter')">+1</button></p>
<script>
async function post(path) {{ await fetch(path, {{method: 'POST'}}); location.reload(); }}
const form = document.getElementById('login');
if (form) form.addEventListener('submit', async (e) => {{
  e.preventDefault();
  const r = await fetch('/login', {{method: 'POST', headers: {{'content-type': 'application/json'}},
    body: JSON.stringify(Object.fromEntries(new FormData(form)))}});
  if (r.ok) location.reload(); else document.getElementById('err').textContent = (await r.json()).error;
}});
</script>
</body></html>"#
    ))
}
