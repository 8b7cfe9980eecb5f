//! The demo app: `cargo run --example demo`, then open http://127.0.0.1:3000.
//!
//! Flags: `--addr IP:PORT` (default 127.0.0.1:3000), `--idle-timeout SECS` (default 1800),
//! `--absolute-timeout SECS` (default 28800), `--pin exact|subnet|off` (default exact),
//! `--trusted-proxy CIDR` (repeatable; default none), `--redis URL` or `--postgres URL`
//! (sessions in Redis or PostgreSQL instead of in memory).
//!
//! Device Bound Session Credentials (issue 15): `--dbsc` turns binding on (logins offer it;
//! Chrome with DBSC enabled registers a device key and renews a short-lived bound cookie),
//! `--bound-cookie-lifetime SECS` sets that cookie's lifetime (default 300). Browsers run
//! DBSC only over HTTPS: `--tls` serves HTTPS with a self-signed certificate made at start
//! (its SPKI SHA-256 is printed for Chrome's `--ignore-certificate-errors-spki-list`), or
//! `--tls-cert FILE --tls-key FILE` with your own PEM files. The TLS part is built only in
//! `e2e/` (its own workspace, like `fuzz/`), so that rustls and rcgen stay out of the crate's
//! own `cargo test`: `cargo run --manifest-path e2e/Cargo.toml --bin demo -- --tls --dbsc`.
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
    let parsed = parse_args(std::env::args().skip(1), default_addr)
        .and_then(|mut a| Extra::parse(std::mem::take(&mut a.rest)).map(|(e, rest)| (a, e, rest)));
    let (args, extra) = match parsed {
        Ok((a, e, rest)) if rest.is_empty() => (a, e),
        Ok((_, _, rest)) => {
            eprintln!(
                "unknown argument {:?}\nusage: demo {FLAGS} {EXTRA_FLAGS}",
                rest[0]
            );
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
            Ok(store) => serve(store, &args, &extra).await,
            Err(e) => Err(format!("cannot use Redis at {url}: {e}")),
        },
        (None, Some(url)) => match common::connect_postgres(url).await {
            Ok(store) => serve(store, &args, &extra).await,
            Err(e) => Err(format!("cannot use PostgreSQL at {url}: {e}")),
        },
        (None, None) => serve(common::memory_store(&args), &args, &extra).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The demo's own flags, besides the shared ones.
const EXTRA_FLAGS: &str =
    "[--dbsc] [--bound-cookie-lifetime SECS] [--tls | --tls-cert FILE --tls-key FILE]";

#[derive(Default)]
struct Extra {
    dbsc: bool,
    bound_cookie_lifetime: Option<std::time::Duration>,
    tls: bool,
    tls_files: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Extra {
    /// Takes the demo's own flags out of `rest`; returns what is left.
    fn parse(rest: Vec<String>) -> Result<(Extra, Vec<String>), String> {
        let mut extra = Extra::default();
        let (mut cert, mut key, mut left) = (None, None, Vec::new());
        let mut it = rest.into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--dbsc" => extra.dbsc = true,
                "--tls" => extra.tls = true,
                "--bound-cookie-lifetime" => {
                    let v = value()?;
                    let secs = v.parse::<u64>().ok().filter(|s| (1..=3600).contains(s));
                    let secs = secs.ok_or_else(|| {
                        format!("--bound-cookie-lifetime takes 1 to 3600 seconds, got {v:?}")
                    })?;
                    extra.bound_cookie_lifetime = Some(std::time::Duration::from_secs(secs));
                }
                "--tls-cert" => cert = Some(std::path::PathBuf::from(value()?)),
                "--tls-key" => key = Some(std::path::PathBuf::from(value()?)),
                _ => left.push(flag),
            }
        }
        extra.tls_files = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        if extra.tls && extra.tls_files.is_some() {
            return Err("--tls makes its own certificate; drop --tls-cert/--tls-key".into());
        }
        Ok((extra, left))
    }

    fn https(&self) -> bool {
        self.tls || self.tls_files.is_some()
    }
}

async fn serve<St: SessionStore>(
    store: St,
    args: &common::Args,
    extra: &Extra,
) -> Result<(), String> {
    #[allow(unused_mut)]
    let mut builder = common::builder(store, args)?;
    if extra.dbsc {
        #[cfg(feature = "dbsc")]
        {
            let mut binding = tower_session_guard::dbsc::DeviceBinding::new();
            if let Some(lifetime) = extra.bound_cookie_lifetime {
                binding = binding.bound_cookie_lifetime(lifetime);
            }
            builder = builder.device_binding(binding);
        }
        #[cfg(not(feature = "dbsc"))]
        return Err("--dbsc needs the crate's feature `dbsc` (--features dbsc)".into());
    }
    let layer = builder
        .build()
        .map_err(|e| format!("invalid session settings: {e}"))?;
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
    if extra.https() {
        return serve_https(listener, app, args, extra).await;
    }
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

/// HTTPS on `listener` (e2e/'s build of this demo).
#[cfg(tsg_demo_tls)]
async fn serve_https(
    listener: tokio::net::TcpListener,
    app: Router,
    args: &common::Args,
    extra: &Extra,
) -> Result<(), String> {
    let tls = match &extra.tls_files {
        Some((cert, key)) => tsg_e2e::tls::from_pem_files(cert, key)?,
        None => tsg_e2e::tls::self_signed()?,
    };
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    print_banner(&format!("https://{addr}"), args);
    if let Some(spki) = &tls.spki_sha256 {
        // What Chrome's --ignore-certificate-errors-spki-list takes.
        println!("certificate SPKI SHA-256 (base64): {spki}");
    }
    if extra.dbsc {
        println!("device binding (DBSC) on: {}", tsg_e2e::CHROME_FLAGS_HINT);
    }
    axum::serve(
        // `tap_io` makes the listener's `SocketAddr` the connection info axum hands the
        // layer (`ConnectInfo<SocketAddr>`), as for plain TCP.
        axum::serve::ListenerExt::tap_io(
            tsg_e2e::tls::TlsListener::new(listener, tls.config),
            |_| {},
        ),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| format!("server error: {e}"))
}

/// Without the e2e member's TLS build: say how to get it.
#[cfg(not(tsg_demo_tls))]
async fn serve_https(
    _: tokio::net::TcpListener,
    _: Router,
    _: &common::Args,
    _: &Extra,
) -> Result<(), String> {
    Err(
        "HTTPS is built into the demo of e2e/ (rustls and rcgen stay out of the crate's own \
build): cargo run --manifest-path e2e/Cargo.toml --bin demo -- --tls --dbsc"
            .into(),
    )
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
    device_bound: bool,
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
                device_bound: s.device_bound,
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
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            s.id,
            if s.device_bound { "yes" } else { "no" },
            s.ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into()),
            escape(s.user_agent.as_deref().unwrap_or("-")),
            when(Some(s.created_at)),
            when(Some(s.last_seen)),
            action,
        ));
    }
    format!(
        r#"<table>
<tr><th>id</th><th>device-bound</th><th>address</th><th>user agent</th><th>created</th><th>last seen</th><th></th></tr>
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
