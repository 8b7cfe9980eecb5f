//! End to end over real TCP: an axum server on 127.0.0.1 served with
//! `into_make_service_with_connect_info::<SocketAddr>()`, and a hyper client whose socket binds
//! its source address before connecting (on Linux the whole of 127.0.0.0/8 is loopback), so a
//! session can be replayed from another address exactly as a thief would.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tower_session_guard::{MemoryStore, PinMode, PostAuthPolicy, SessionEvent, SessionGuardLayer};

/// Upper bound for every wait: bind, connect, request, body, shutdown.
const WAIT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start<P: PostAuthPolicy>(layer: SessionGuardLayer<P>) -> Server {
        Server::serve(layer, true).await
    }

    /// Served with plain `axum::serve(listener, app)`: no connection info in the requests.
    async fn start_without_connect_info<P: PostAuthPolicy>(layer: SessionGuardLayer<P>) -> Server {
        Server::serve(layer, false).await
    }

    async fn serve<P: PostAuthPolicy>(layer: SessionGuardLayer<P>, connect_info: bool) -> Server {
        let listener = timeout(WAIT, TcpListener::bind("127.0.0.1:0"))
            .await
            .expect("bind in time")
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let app: Router = app(layer);
        let stop = async {
            let _ = stop.await;
        };
        let task = if connect_info {
            tokio::spawn(async move {
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(stop)
                .await
            })
        } else {
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            })
        };
        Server {
            addr,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        timeout(WAIT, self.task)
            .await
            .expect("graceful shutdown in time")
            .expect("server task")
            .expect("server");
    }
}

/// One response, read to the end.
struct Reply {
    status: StatusCode,
    set_cookies: Vec<String>,
    body: String,
}

impl Reply {
    fn token(&self) -> Option<String> {
        self.set_cookies.iter().find_map(|c| {
            let value = c.strip_prefix(&format!("{COOKIE}="))?;
            let token = value.split(';').next().unwrap_or("");
            (!token.is_empty()).then(|| token.to_owned())
        })
    }

    fn removes_cookie(&self) -> bool {
        self.set_cookies
            .iter()
            .any(|c| c.starts_with(&format!("{COOKIE}=;")) && c.contains("Max-Age=0"))
    }
}

/// Sends one request over a fresh connection whose source address is `source` (port chosen
/// by the OS), carrying the session cookie if given and these extra headers.
async fn send_from(
    server: &Server,
    source: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    let stream = timeout(WAIT, socket.connect(server.addr))
        .await
        .expect("connect in time")
        .expect("connect");
    assert_eq!(stream.local_addr().unwrap().ip(), ip(source));
    let (mut sender, conn) = timeout(
        WAIT,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    let conn = tokio::spawn(conn);

    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, server.addr.to_string());
    if let Some(t) = token {
        req = req.header(header::COOKIE, format!("{COOKIE}={t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = timeout(
        WAIT,
        sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("response in time")
    .expect("response");
    let status = res.status();
    let set_cookies = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = timeout(WAIT, res.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    drop(sender);
    timeout(WAIT, conn)
        .await
        .expect("connection closes in time")
        .expect("connection task")
        .expect("connection");
    Reply {
        status,
        set_cookies,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn login_over_network(server: &Server, source: &str, user: &str, roles: &str) -> String {
    let path = format!("/login-with?user={user}&roles={roles}");
    let reply = send_from(server, source, Method::POST, &path, None, &[]).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "login of {user} from {source}"
    );
    reply.token().expect("login issues a token")
}

#[tokio::test]
async fn server_sees_each_client_source_address() {
    let h = Harness::new();
    let server = Server::start(h.builder(MemoryStore::new()).build().unwrap()).await;
    for source in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let reply = send_from(&server, source, Method::GET, "/ip", None, &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, format!("{source} {source}"));
    }
    server.stop().await;
}

#[tokio::test]
async fn cookie_replayed_from_another_loopback_address_is_refused_and_the_session_destroyed() {
    let h = Harness::new();
    let server = Server::start(h.builder(MemoryStore::new()).build().unwrap()).await;

    let reply = send_from(&server, "127.0.0.1", Method::POST, "/login", None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let token = reply.token().expect("login issues a token");
    let me = send_from(&server, "127.0.0.1", Method::GET, "/me", Some(&token), &[]).await;
    assert_eq!(me.status, StatusCode::OK);
    assert!(me.body.contains("\"alice\""), "{}", me.body);
    h.events.clear();

    let stolen = send_from(&server, "127.0.0.2", Method::GET, "/me", Some(&token), &[]).await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED);
    assert!(stolen.removes_cookie(), "{:?}", stolen.set_cookies);
    assert_eq!(
        h.events.all(),
        [SessionEvent::PinViolation {
            session: fp(&token),
            user_id: "alice".into(),
            expected: Some(ip("127.0.0.1")),
            actual: ip("127.0.0.2"),
            reason: "address_changed",
        }]
    );

    let again = send_from(&server, "127.0.0.1", Method::GET, "/me", Some(&token), &[]).await;
    assert_eq!(
        again.status,
        StatusCode::UNAUTHORIZED,
        "the original client is refused too"
    );
    server.stop().await;
}

#[tokio::test]
async fn forged_forwarding_headers_from_another_loopback_address_do_not_pass_the_pin() {
    let h = Harness::new();
    let server = Server::start(h.builder(MemoryStore::new()).build().unwrap()).await;
    let token = login_over_network(&server, "127.0.0.1", "alice", "admin").await;
    h.events.clear();

    let forged = send_from(
        &server,
        "127.0.0.2",
        Method::GET,
        "/me",
        Some(&token),
        &[
            ("x-forwarded-for", "127.0.0.1"),
            ("forwarded", "for=127.0.0.1"),
        ],
    )
    .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(forged.removes_cookie());
    assert_eq!(h.events.kinds(), ["pin_violation"]);
    server.stop().await;
}

fn demo_layer(h: &Harness) -> SessionGuardLayer {
    h.builder(MemoryStore::new())
        .pin_mode(PinMode::Exact)
        .policy(demo_policy())
        .build()
        .unwrap()
}

#[tokio::test]
async fn demo_policy_lets_bob_use_his_session_from_another_loopback_address() {
    let h = Harness::new();
    let server = Server::start(demo_layer(&h)).await;
    let token = login_over_network(&server, "127.0.0.2", "bob", "user").await;
    for _ in 0..2 {
        let me = send_from(&server, "127.0.0.2", Method::GET, "/me", Some(&token), &[]).await;
        assert_eq!(me.status, StatusCode::OK);
        assert!(me.body.contains("\"bob\""), "{}", me.body);
    }
    assert!(!h.events.kinds().contains(&"policy_denied"));
    server.stop().await;
}

#[tokio::test]
async fn demo_policy_refuses_alice_at_login_from_another_loopback_address() {
    // The policy is asked before a login writes anything: a login the policy would throw
    // out on the next request fails now with 403, and no session is issued.
    let h = Harness::new();
    let server = Server::start(demo_layer(&h)).await;
    let path = "/login-with?user=alice&roles=admin";
    let reply = send_from(&server, "127.0.0.2", Method::POST, path, None, &[]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.token(), None, "no session was issued");
    assert_eq!(
        h.events.all(),
        [SessionEvent::LoginDenied {
            user_id: "alice".into(),
            client_ip: ip("127.0.0.2"),
            reason: "no rule allows this session (allow mode)".into(),
        }]
    );
    // From the console host the same login works.
    let token = login_over_network(&server, "127.0.0.1", "alice", "admin").await;
    let me = send_from(&server, "127.0.0.1", Method::GET, "/me", Some(&token), &[]).await;
    assert_eq!(me.status, StatusCode::OK);
    server.stop().await;
}

// ----- a server without connection info (plain `axum::serve`) -----

#[tokio::test]
async fn without_connect_info_login_works_when_nothing_reads_the_address() {
    let h = Harness::new();
    let layer = h
        .builder(MemoryStore::new())
        .pin_mode(PinMode::Off)
        .build()
        .unwrap();
    let server = Server::start_without_connect_info(layer).await;
    let reply = send_from(&server, "127.0.0.1", Method::POST, "/login", None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let token = reply.token().expect("login issues a token");
    let me = send_from(&server, "127.0.0.1", Method::GET, "/me", Some(&token), &[]).await;
    assert_eq!(me.status, StatusCode::OK);
    assert!(me.body.contains("alice"), "{}", me.body);
    assert!(
        !h.events.kinds().contains(&"client_ip_unknown"),
        "{:?}",
        h.events.all()
    );
    server.stop().await;
}

#[tokio::test]
async fn without_connect_info_a_pinned_login_is_refused_with_one_error_event_naming_the_fix() {
    let h = Harness::new();
    let server =
        Server::start_without_connect_info(h.builder(MemoryStore::new()).build().unwrap()).await;
    let reply = send_from(&server, "127.0.0.1", Method::POST, "/login", None, &[]).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.token(), None);
    let unknown: Vec<_> = h
        .events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::ClientIpUnknown { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(unknown.len(), 1, "{:?}", h.events.all());
    assert!(
        unknown[0].contains("into_make_service_with_connect_info"),
        "{}",
        unknown[0]
    );
    server.stop().await;
}

#[tokio::test]
async fn without_connect_info_ranges_or_an_address_rule_still_need_the_address() {
    // Pin off, but the allowed ranges, or a policy rule on addresses, read it: refused.
    let with_ranges = Harness::new();
    let with_rule = Harness::new();
    let layers = [
        with_ranges
            .builder(MemoryStore::new())
            .pin_mode(PinMode::Off)
            .allowed_ranges(["127.0.0.0/8"])
            .build()
            .unwrap(),
        with_rule
            .builder(MemoryStore::new())
            .pin_mode(PinMode::Off)
            .policy(demo_policy())
            .build()
            .unwrap(),
    ];
    for (layer, h) in layers.into_iter().zip([&with_ranges, &with_rule]) {
        let server = Server::start_without_connect_info(layer).await;
        let reply = send_from(&server, "127.0.0.1", Method::POST, "/login", None, &[]).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(h.events.kinds(), ["client_ip_unknown"]);
        server.stop().await;
    }
}

#[tokio::test]
async fn without_connect_info_the_error_event_is_logged_once_per_interval_not_per_request() {
    // A logged-in session on a server that lost its connection info (here: a layer with
    // the default pin in front of requests that carry none): every request is refused, but
    // the ERROR event comes once per aggregation interval, then as one count.
    let h = Harness::new();
    let layer = SessionGuardLayer::builder(MemoryStore::new())
        .clock(h.clock.clone())
        .event_sink(h.events.sink())
        .build()
        .unwrap();
    let with_peer = Server::start(layer.clone()).await;
    let token = login_over_network(&with_peer, "127.0.0.1", "alice", "admin").await;
    with_peer.stop().await;
    h.events.clear();

    let without = Server::start_without_connect_info(layer).await;
    for _ in 0..20 {
        let reply = send_from(&without, "127.0.0.1", Method::GET, "/me", Some(&token), &[]).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(
        h.events.kinds(),
        ["client_ip_unknown"],
        "one ERROR, not twenty"
    );
    h.clock.advance(Duration::from_secs(10));
    send_from(&without, "127.0.0.1", Method::GET, "/me", Some(&token), &[]).await;
    let events = h.events.all();
    assert!(
        matches!(
            events.as_slice(),
            [
                SessionEvent::ClientIpUnknown { .. },
                SessionEvent::Suppressed {
                    kind: "client_ip_unknown",
                    count: 19,
                    ..
                },
                SessionEvent::ClientIpUnknown { .. },
            ]
        ),
        "{events:?}"
    );
    without.stop().await;
}
