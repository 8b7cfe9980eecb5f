//! The gRPC demo's `Auth` service behind `SessionGuardLayer`, driven by a real tonic client
//! over loopback HTTP/2. The server listens on 127.0.0.1; a client bound to 127.0.0.2 plays
//! a second machine.
//!
//! Tokens travel in `x-session-token` metadata unless a test says otherwise. Every wait is
//! bounded by [`WAIT`], and every server is stopped through a oneshot.

#[path = "../examples/common/mod.rs"]
mod common;
#[path = "../examples/grpc/mod.rs"]
mod grpc;
/// The behaviour tests' helpers, for `FlakyStore` (kept in step with `SessionStore` there).
#[path = "common/mod.rs"]
mod support;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Bytes};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tonic::metadata::MetadataValue;
use tonic::service::LayerExt as _;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tower::ServiceBuilder;
use tower_session_guard::store::{SessionKey, SessionStore};
use tower_session_guard::{
    ExpiryKind, Fingerprint, ManualClock, MemoryStore, PinMode, PostAuthPolicy, Rejection,
    SessionEvent, SessionGuardLayer, SessionToken,
};

use common::demo_policy;
use grpc::auth::auth_client::AuthClient;
use grpc::auth::auth_server::AuthServer;
use grpc::auth::{Empty, LoginRequest, User};
use grpc::{AuthService, TOKEN_KEY};

/// Upper bound for every wait: bind, connect, RPC, shutdown.
const WAIT: Duration = Duration::from_secs(10);

/// The layer's default cookie name.
const COOKIE: &str = "__Host-session";

/// The second loopback address, for "another machine".
const OTHER: &str = "127.0.0.2";

// ----- server -----

/// Where the session layer goes.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// `Server::builder().layer(..)`: around every service of the server.
    Server,
    /// `ServiceBuilder::new().layer(..).named_layer(AuthServer::new(..))`: around the one
    /// service, keeping its gRPC name for `add_service`.
    Service,
}

struct Running {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    async fn stop(self) {
        // The server may already be gone if it failed; its result is checked below.
        let _ = self.shutdown.send(());
        timeout(WAIT, self.task)
            .await
            .expect("server shut down in time")
            .expect("server task did not panic")
            .expect("server ended without error");
    }
}

/// Serves `AuthService` behind `layer` on 127.0.0.1 (an ephemeral port).
async fn serve<P>(layer: SessionGuardLayer<P>, placement: Placement) -> Running
where
    P: PostAuthPolicy,
{
    let listener = timeout(WAIT, TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind in time")
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let incoming = TcpIncoming::from(listener);
    let (shutdown, signal) = oneshot::channel::<()>();
    let signal = async {
        let _ = signal.await;
    };
    let task = match placement {
        Placement::Server => tokio::spawn(
            Server::builder()
                .layer(layer)
                .add_service(AuthServer::new(AuthService))
                .serve_with_incoming_shutdown(incoming, signal),
        ),
        Placement::Service => {
            let auth = ServiceBuilder::new()
                .layer(layer)
                .named_layer(AuthServer::new(AuthService));
            tokio::spawn(
                Server::builder()
                    .add_service(auth)
                    .serve_with_incoming_shutdown(incoming, signal),
            )
        }
    };
    Running {
        addr,
        shutdown,
        task,
    }
}

/// Every event the layer emitted.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<SessionEvent>>>);

impl Events {
    fn sink(&self) -> impl Fn(&SessionEvent) + Send + Sync + 'static {
        let events = self.0.clone();
        move |e: &SessionEvent| events.lock().unwrap().push(e.clone())
    }

    fn all(&self) -> Vec<SessionEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// The fingerprint events show for a token.
fn fp(token: &str) -> Fingerprint {
    SessionKey::from_token_str(token)
        .expect("well-formed token")
        .fingerprint()
}

// ----- client -----

/// A client on a fresh connection, from `local` (the OS's choice, 127.0.0.1, if `None`).
async fn connect(addr: SocketAddr, local: Option<IpAddr>) -> AuthClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid URI")
        .local_address(local)
        .connect_timeout(WAIT)
        .timeout(WAIT);
    let channel = timeout(WAIT, endpoint.connect())
        .await
        .expect("connected in time")
        .expect("connected");
    AuthClient::new(channel)
}

/// Awaits an RPC, bounded by [`WAIT`].
async fn rpc<T>(
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<tonic::Response<T>, Status> {
    timeout(WAIT, call).await.expect("RPC answered in time")
}

/// A request carrying `token` in `x-session-token` metadata, if given.
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(t) = token {
        let value: MetadataValue<_> = t.parse().expect("a token is valid metadata");
        req.metadata_mut().insert(TOKEN_KEY, value);
    }
    req
}

/// A request carrying `token` in `cookie` metadata, as a browser-style client would.
fn with_cookie<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("{COOKIE}={token}")
        .parse()
        .expect("valid metadata value");
    req.metadata_mut().insert("cookie", value);
    req
}

fn credentials(user: &str) -> LoginRequest {
    LoginRequest {
        username: user.into(),
        password: format!("{user}-pass"),
    }
}

/// The token in the response's `x-session-token` metadata, if any.
fn header_token<T>(res: &tonic::Response<T>) -> Option<String> {
    res.metadata()
        .get(TOKEN_KEY)
        .map(|v| v.to_str().expect("ASCII token").to_owned())
}

/// Every `set-cookie` value of the response.
fn set_cookies<T>(res: &tonic::Response<T>) -> Vec<String> {
    res.metadata()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ASCII set-cookie").to_owned())
        .collect()
}

/// Logs `user` in, carrying `token` in the header if given, and returns the new token from
/// the `x-session-token` response metadata.
async fn login(client: &mut AuthClient<Channel>, user: &str, token: Option<&str>) -> String {
    let res = rpc(client.login(with_token(credentials(user), token)))
        .await
        .unwrap_or_else(|s| panic!("login of {user}: {s:?}"));
    assert_eq!(res.get_ref().user, user);
    header_token(&res).expect("login returns the new token in x-session-token metadata")
}

/// `WhoAmI` with `token` in the header.
async fn who_am_i(client: &mut AuthClient<Channel>, token: Option<&str>) -> Result<User, Status> {
    rpc(client.who_am_i(with_token(Empty {}, token)))
        .await
        .map(tonic::Response::into_inner)
}

/// The code of a call that must fail.
fn code_of<T: std::fmt::Debug>(result: Result<T, Status>) -> Code {
    result.expect_err("the call must be refused").code()
}

// ----- tests -----

#[tokio::test]
async fn login_returns_new_token_in_metadata_and_who_am_i_succeeds_with_it() {
    let events = Events::default();
    let layer = SessionGuardLayer::builder(MemoryStore::new())
        .clock(ManualClock::new())
        .event_sink(events.sink())
        .build()
        .expect("valid config");
    let server = serve(layer, Placement::Server).await;
    let mut client = connect(server.addr, None).await;

    let res = rpc(client.login(with_token(credentials("alice"), None)))
        .await
        .expect("login succeeds");
    let token = header_token(&res).expect("a new token in x-session-token");
    assert_eq!(token.len(), 43, "256 bits, base64url without padding");
    assert!(
        set_cookies(&res).is_empty(),
        "a gRPC request without a token gets the header, not a cookie"
    );
    assert_eq!(
        res.metadata()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );

    let me = who_am_i(&mut client, Some(&token))
        .await
        .expect("WhoAmI with the new token");
    assert_eq!(
        me,
        User {
            user: "alice".into(),
            roles: vec!["admin".into()],
            groups: vec!["staff".into()],
        }
    );
    assert_eq!(
        code_of(who_am_i(&mut client, None).await),
        Code::Unauthenticated,
        "without the token there is no identity"
    );
    assert_eq!(
        events.all(),
        [SessionEvent::LoggedIn {
            session: fp(&token),
            previous: None,
            user_id: "alice".into(),
            client_ip: Some("127.0.0.1".parse().unwrap()),
        }]
    );
    server.stop().await;
}

#[tokio::test]
async fn token_planted_before_login_is_not_adopted() {
    let events = Events::default();
    let store = MemoryStore::new();
    let layer = SessionGuardLayer::builder(store.clone())
        .clock(ManualClock::new())
        .event_sink(events.sink())
        .build()
        .expect("valid config");
    let server = serve(layer, Placement::Server).await;
    let mut client = connect(server.addr, None).await;

    // An attacker's token: well-formed, but never issued by this server.
    let planted = SessionToken::generate();
    let planted = planted.as_str();
    assert_eq!(planted.len(), 43);

    let token = login(&mut client, "alice", Some(planted)).await;
    assert_ne!(token, planted, "login issues a fresh token");
    assert_eq!(
        code_of(who_am_i(&mut client, Some(planted)).await),
        Code::Unauthenticated,
        "the planted token does not become alice's session"
    );
    let planted_key = SessionKey::from_token_str(planted).unwrap();
    assert!(store.load(planted_key).await.unwrap().is_none());
    assert_eq!(
        who_am_i(&mut client, Some(&token)).await.unwrap().user,
        "alice"
    );

    // A real guest session (created by Counter) is moved to a new ID at login too.
    let res = rpc(client.counter(with_token(Empty {}, None)))
        .await
        .expect("Counter as a guest");
    assert_eq!(res.get_ref().count, 1);
    let guest = header_token(&res).expect("a guest token in x-session-token");
    let bob = login(&mut client, "bob", Some(&guest)).await;
    assert_ne!(bob, guest);
    assert_eq!(
        code_of(who_am_i(&mut client, Some(&guest)).await),
        Code::Unauthenticated,
        "the guest token is dead after login"
    );
    let guest_key = SessionKey::from_token_str(&guest).unwrap();
    assert!(store.load(guest_key).await.unwrap().is_none());
    // The guest's data moved with the session to the new token.
    let res = rpc(client.counter(with_token(Empty {}, Some(&bob))))
        .await
        .unwrap();
    assert_eq!(res.get_ref().count, 2);

    let logins: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| matches!(e, SessionEvent::LoggedIn { .. }))
        .collect();
    assert_eq!(
        logins,
        [
            SessionEvent::LoggedIn {
                session: fp(&token),
                previous: None,
                user_id: "alice".into(),
                client_ip: Some("127.0.0.1".parse().unwrap()),
            },
            SessionEvent::LoggedIn {
                session: fp(&bob),
                previous: Some(fp(&guest)),
                user_id: "bob".into(),
                client_ip: Some("127.0.0.1".parse().unwrap()),
            },
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn token_in_cookie_metadata_comes_back_in_set_cookie_at_login() {
    let layer = SessionGuardLayer::builder(MemoryStore::new())
        .clock(ManualClock::new())
        .build()
        .expect("valid config");
    let server = serve(layer, Placement::Server).await;
    let mut client = connect(server.addr, None).await;

    // A guest session, its token then carried in the cookie.
    let res = rpc(client.counter(with_token(Empty {}, None)))
        .await
        .unwrap();
    let guest = header_token(&res).expect("a guest token");

    let res = rpc(client.login(with_cookie(credentials("alice"), &guest)))
        .await
        .expect("login with the cookie");
    assert_eq!(
        header_token(&res),
        None,
        "a cookie client gets no x-session-token"
    );
    let cookies = set_cookies(&res);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let token = cookies[0]
        .strip_prefix(&format!("{COOKIE}="))
        .and_then(|rest| rest.split(';').next())
        .expect("set-cookie carries the session cookie")
        .to_owned();
    assert_eq!(token.len(), 43, "{cookies:?}");
    assert_ne!(token, guest, "rotated at login");
    assert!(cookies[0].contains("HttpOnly"), "{cookies:?}");

    let res = rpc(client.who_am_i(with_cookie(Empty {}, &token)))
        .await
        .expect("WhoAmI with the new cookie");
    assert_eq!(res.get_ref().user, "alice");
    assert!(set_cookies(&res).is_empty() && header_token(&res).is_none());
    server.stop().await;
}

#[tokio::test]
async fn token_used_from_another_address_is_unauthenticated_and_ends_the_session() {
    let events = Events::default();
    let layer = SessionGuardLayer::builder(MemoryStore::new())
        .clock(ManualClock::new())
        .event_sink(events.sink())
        .build()
        .expect("valid config");
    let server = serve(layer, Placement::Server).await;
    let mut owner = connect(server.addr, None).await;
    let mut thief = connect(server.addr, Some(OTHER.parse().unwrap())).await;

    let token = login(&mut owner, "bob", None).await;
    assert_eq!(
        who_am_i(&mut owner, Some(&token)).await.unwrap().user,
        "bob"
    );

    let refused = who_am_i(&mut thief, Some(&token))
        .await
        .expect_err("the copied token is refused elsewhere");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(refused.message(), Rejection::PinViolation.message());

    assert_eq!(
        code_of(who_am_i(&mut owner, Some(&token)).await),
        Code::Unauthenticated,
        "the session was destroyed: its owner is out too"
    );
    let pin: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| matches!(e, SessionEvent::PinViolation { .. }))
        .collect();
    assert_eq!(
        pin,
        [SessionEvent::PinViolation {
            session: fp(&token),
            user_id: "bob".into(),
            expected: Some("127.0.0.1".parse().unwrap()),
            actual: OTHER.parse().unwrap(),
            reason: "address_changed",
        }]
    );
    assert!(
        events.all().contains(&SessionEvent::UnknownToken {
            session: fp(&token),
            client_ip: Some("127.0.0.1".parse().unwrap()),
        }),
        "the owner's later request found no session"
    );
    server.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session() {
    let events = Events::default();
    let layer = SessionGuardLayer::builder(MemoryStore::new())
        .clock(ManualClock::new())
        .event_sink(events.sink())
        .build()
        .expect("valid config");
    let server = serve(layer, Placement::Server).await;
    let mut client = connect(server.addr, None).await;

    let token = login(&mut client, "alice", None).await;
    assert_eq!(
        who_am_i(&mut client, Some(&token)).await.unwrap().user,
        "alice"
    );

    let res = rpc(client.logout(with_token(Empty {}, Some(&token))))
        .await
        .expect("logout succeeds");
    assert_eq!(header_token(&res), None, "no token after logout");

    assert_eq!(
        code_of(who_am_i(&mut client, Some(&token)).await),
        Code::Unauthenticated
    );
    assert!(events.all().contains(&SessionEvent::LoggedOut {
        session: fp(&token),
        user_id: Some("alice".into()),
    }));
    server.stop().await;
}

#[tokio::test]
async fn idle_session_expires_on_the_injected_clock() {
    let clock = ManualClock::new();
    let events = Events::default();
    let layer = SessionGuardLayer::builder(MemoryStore::new())
        .clock(clock.clone())
        .event_sink(events.sink())
        .idle_timeout(Duration::from_secs(60))
        .build()
        .expect("valid config");
    let server = serve(layer, Placement::Server).await;
    let mut client = connect(server.addr, None).await;

    let token = login(&mut client, "alice", None).await;
    clock.advance(Duration::from_secs(59));
    assert_eq!(
        who_am_i(&mut client, Some(&token)).await.unwrap().user,
        "alice",
        "still alive just inside the idle timeout"
    );

    clock.advance(Duration::from_secs(61));
    assert_eq!(
        code_of(who_am_i(&mut client, Some(&token)).await),
        Code::Unauthenticated
    );
    assert!(events.all().contains(&SessionEvent::Expired {
        session: fp(&token),
        kind: ExpiryKind::Idle,
        user_id: Some("alice".into()),
    }));
    server.stop().await;
}

#[tokio::test]
async fn policy_deny_gets_permission_denied() {
    let events = Events::default();
    let layer = SessionGuardLayer::builder(MemoryStore::new())
        .clock(ManualClock::new())
        .event_sink(events.sink())
        // Without the pin, the policy is what refuses the request from elsewhere.
        .pin_mode(PinMode::Off)
        .policy(demo_policy().expect("valid demo policy"))
        .build()
        .expect("valid config");
    let server = serve(layer, Placement::Server).await;
    // Alice is an admin: the demo policy accepts her only from 127.0.0.1 or ::1.
    let mut client = connect(server.addr, Some(OTHER.parse().unwrap())).await;
    let refused = rpc(client.login(with_token(credentials("alice"), None)))
        .await
        .expect_err("the policy refuses the login itself from 127.0.0.2");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let mut console = connect(server.addr, Some("127.0.0.1".parse().unwrap())).await;
    let token = login(&mut console, "alice", None).await;
    let denied = who_am_i(&mut client, Some(&token))
        .await
        .expect_err("the policy denies alice on 127.0.0.2");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), Rejection::PolicyDenied.message());

    let denials: Vec<_> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::PolicyDenied {
                session,
                user_id,
                client_ip,
                ..
            } => Some((session, user_id, client_ip)),
            _ => None,
        })
        .collect();
    assert_eq!(
        denials,
        [(fp(&token), "alice".to_owned(), OTHER.parse().unwrap())]
    );
    server.stop().await;
}

#[tokio::test]
async fn store_failure_gets_unavailable() {
    let store = support::FlakyStore::new(MemoryStore::new());
    let down = store.switch();
    let events = Events::default();
    let layer = SessionGuardLayer::builder(store)
        .clock(ManualClock::new())
        .event_sink(events.sink())
        .build()
        .expect("valid config");
    let server = serve(layer, Placement::Server).await;
    let mut client = connect(server.addr, None).await;

    let token = login(&mut client, "alice", None).await;
    down.store(true, Ordering::SeqCst);

    let refused = who_am_i(&mut client, Some(&token))
        .await
        .expect_err("the layer fails closed");
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(refused.message(), Rejection::StoreUnavailable.message());
    assert!(events.all().contains(&SessionEvent::StoreFailed {
        session: Some(fp(&token)),
        error: "session store error: down".into(),
    }));

    // The outage did not end the session.
    down.store(false, Ordering::SeqCst);
    assert_eq!(
        who_am_i(&mut client, Some(&token)).await.unwrap().user,
        "alice"
    );
    server.stop().await;
}

/// Login, then WhoAmI with the returned token, with the layer at `placement`.
async fn login_and_who_am_i(placement: Placement) {
    let layer = SessionGuardLayer::builder(MemoryStore::new())
        .clock(ManualClock::new())
        .policy(demo_policy().expect("valid demo policy"))
        .build()
        .expect("valid config");
    let server = serve(layer, placement).await;
    let mut client = connect(server.addr, None).await;

    let token = login(&mut client, "bob", None).await;
    let me = who_am_i(&mut client, Some(&token))
        .await
        .unwrap_or_else(|s| panic!("WhoAmI with the layer at {placement:?}: {s:?}"));
    assert_eq!(me.user, "bob");
    assert_eq!(me.roles, ["user"]);
    assert_eq!(
        code_of(who_am_i(&mut client, None).await),
        Code::Unauthenticated
    );
    server.stop().await;
}

#[tokio::test]
async fn layer_works_through_server_builder_layer() {
    login_and_who_am_i(Placement::Server).await;
}

#[tokio::test]
async fn layer_works_through_named_layer_on_auth_server() {
    login_and_who_am_i(Placement::Service).await;
}

#[tokio::test]
async fn rejection_is_a_trailers_only_grpc_response() {
    let layer = SessionGuardLayer::builder(MemoryStore::new())
        .clock(ManualClock::new())
        .build()
        .expect("valid config");
    let server = serve(layer, Placement::Server).await;
    let mut owner = connect(server.addr, None).await;
    // Two sessions: each pin violation destroys the session it hits.
    let for_tonic = login(&mut owner, "bob", None).await;
    let for_hyper = login(&mut owner, "bob", None).await;

    // What a tonic client sees.
    let mut thief = connect(server.addr, Some(OTHER.parse().unwrap())).await;
    let status = who_am_i(&mut thief, Some(&for_tonic))
        .await
        .expect_err("pin violation");
    assert_eq!(status.code(), Code::Unauthenticated);

    // The same rejection on the wire, with a bare HTTP/2 client from 127.0.0.2.
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(OTHER.parse().unwrap(), 0))
        .expect("bind 127.0.0.2:0");
    let stream = timeout(WAIT, socket.connect(server.addr))
        .await
        .expect("connected in time")
        .expect("connected");
    let (mut send, conn) = timeout(
        WAIT,
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .expect("handshake in time")
    .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);

    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{}/demo.auth.v1.Auth/WhoAmI", server.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(TOKEN_KEY, for_hyper.as_str())
        // One uncompressed, empty message: flag 0, length 0.
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let res = timeout(WAIT, send.send_request(req))
        .await
        .expect("answered in time")
        .expect("a response");

    assert_eq!(res.status(), http::StatusCode::OK);
    let h = res.headers();
    assert_eq!(h["content-type"], "application/grpc");
    assert_eq!(h["grpc-status"], "16");
    assert!(h.contains_key("grpc-message"), "{h:?}");
    assert_eq!(
        h["grpc-message"].to_str().unwrap(),
        Rejection::PinViolation.message()
    );
    // Trailers-only: END_STREAM is on the HEADERS frame, no DATA and no trailing HEADERS.
    let body = res.into_body();
    assert!(
        body.is_end_stream(),
        "the stream ended with the response headers"
    );
    let collected = timeout(WAIT, body.collect())
        .await
        .expect("body in time")
        .expect("body");
    assert!(collected.trailers().is_none(), "no separate trailers");
    assert!(collected.to_bytes().is_empty(), "no DATA");

    drop(send);
    let _ = timeout(WAIT, conn)
        .await
        .expect("connection closed in time");
    server.stop().await;
}

// ----- route guards on a tonic service -----

/// A health service behind `require_role("admin")`, next to the auth service, both behind the
/// session layer: UNAUTHENTICATED without a login, PERMISSION_DENIED for bob (a `user`), and
/// bob's session answers `WhoAmI` afterwards; alice (an `admin`) gets SERVING.
#[tokio::test]
async fn a_role_guard_on_a_tonic_service_answers_401_and_403_and_keeps_the_session() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tower::Layer as _;

    let layer = SessionGuardLayer::builder(MemoryStore::new())
        .pin_mode(PinMode::Off)
        .build()
        .expect("valid config");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = timeout(WAIT, TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind in time")
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(AuthServer::new(AuthService))
            .add_service(tower_session_guard::require_role("admin").layer(health))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = signal.await;
            }),
    );
    let mut auth = connect(addr, None).await;
    let channel = timeout(
        WAIT,
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .expect("connected in time")
    .expect("connected");
    let mut health = HealthClient::new(channel);
    let check = |token: Option<&str>| {
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        if let Some(token) = token {
            let value: MetadataValue<_> = token.parse().expect("valid metadata");
            req.metadata_mut().insert(TOKEN_KEY, value);
        }
        req
    };

    let anonymous = timeout(WAIT, health.check(check(None)))
        .await
        .expect("answered in time")
        .expect_err("no login");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    let bob = login(&mut auth, "bob", None).await;
    let refused = timeout(WAIT, health.check(check(Some(&bob))))
        .await
        .expect("answered in time")
        .expect_err("bob is not an admin");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(refused.message(), Rejection::Forbidden.message());
    assert_eq!(
        who_am_i(&mut auth, Some(&bob))
            .await
            .expect("bob is still logged in")
            .user,
        "bob"
    );

    let alice = login(&mut auth, "alice", None).await;
    let served = timeout(WAIT, health.check(check(Some(&alice))))
        .await
        .expect("answered in time")
        .expect("alice is an admin");
    assert_eq!(served.into_inner().status, ServingStatus::Serving as i32);

    let _ = shutdown.send(());
    timeout(WAIT, task)
        .await
        .expect("server shut down in time")
        .expect("server task did not panic")
        .expect("server ended without error");
}
