//! The same `SessionGuardLayer` on a tonic 0.14 server, over loopback HTTP/2.
//!
//! Either around the whole server (`Server::builder().layer(layer)`) or around one service.
//! For one service, `SessionGuard` implements `tonic::server::NamedService` when the inner
//! service does, so `add_service(layer.layer(svc))` works; tonic's `LayerExt::named_layer`
//! also does, and is what a stack with other layers under ours (the probe here) needs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tonic::metadata::MetadataValue;
use tonic::service::LayerExt as _;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::util::MapRequestLayer;
use tower::ServiceBuilder;
use tower_session_guard::store::SessionKey;
use tower_session_guard::{MemoryStore, Session, SessionEvent, SessionGuardLayer, SessionToken};

/// Upper bound for every wait: connect, RPC, shutdown.
const WAIT: Duration = Duration::from_secs(10);

/// For each request that reached the services: `Some(session.exists())` if the layer put a
/// `Session` into the extensions, `None` if it did not.
type Seen = Arc<Mutex<Vec<Option<bool>>>>;
/// Every event the layer emitted.
type Events = Arc<Mutex<Vec<SessionEvent>>>;

struct Running {
    addr: SocketAddr,
    seen: Seen,
    events: Events,
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

    fn seen(&self) -> Vec<Option<bool>> {
        self.seen.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<SessionEvent> {
        self.events.lock().unwrap().clone()
    }
}

/// Where the session layer goes.
#[derive(Clone, Copy)]
enum Placement {
    /// `Server::builder().layer(..)`: around every service of the server.
    Server,
    /// Around the health service only, added with `add_service`.
    Service,
}

/// A health server behind the session layer (outer) and a probe (inner) that records
/// whether each request arrives carrying a `Session`.
async fn start(placement: Placement) -> Running {
    let listener = timeout(WAIT, TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind in time")
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let incoming = TcpIncoming::from(listener);
    let (_reporter, health) = tonic_health::server::health_reporter();

    let events = Events::default();
    let layer = {
        let events = events.clone();
        SessionGuardLayer::builder(MemoryStore::new())
            .event_sink(move |e: &SessionEvent| events.lock().unwrap().push(e.clone()))
            .build()
            .expect("default configuration is valid")
    };
    let seen = Seen::default();
    let probe = {
        let seen = seen.clone();
        MapRequestLayer::new(move |req: http::Request<tonic::body::Body>| {
            let session = req.extensions().get::<Session>().map(Session::exists);
            seen.lock().unwrap().push(session);
            req
        })
    };

    let (shutdown, signal) = oneshot::channel::<()>();
    let signal = async {
        let _ = signal.await;
    };
    let task = match placement {
        Placement::Server => tokio::spawn(
            Server::builder()
                .layer(layer)
                .layer(probe)
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, signal),
        ),
        Placement::Service => {
            // The probe under our layer has no gRPC name, so the stack goes through tonic's
            // `LayerExt::named_layer`, which carries the inner service's name.
            let health = ServiceBuilder::new()
                .layer(layer)
                .layer(probe)
                .named_layer(health);
            tokio::spawn(
                Server::builder()
                    .add_service(health)
                    .serve_with_incoming_shutdown(incoming, signal),
            )
        }
    };
    Running {
        addr,
        seen,
        events,
        shutdown,
        task,
    }
}

async fn client(addr: SocketAddr) -> HealthClient<Channel> {
    let endpoint = Channel::from_shared(format!("http://{addr}"))
        .expect("valid URI")
        .connect_timeout(WAIT)
        .timeout(WAIT);
    let channel = timeout(WAIT, endpoint.connect())
        .await
        .expect("connected in time")
        .expect("connected");
    HealthClient::new(channel)
}

/// Calls `Check` for the whole server, with `cookie` metadata if given; returns the status
/// and whether the response carried a `set-cookie`.
async fn check(client: &mut HealthClient<Channel>, cookie: Option<&str>) -> (i32, bool) {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(cookie) = cookie {
        let value: MetadataValue<_> = cookie.parse().expect("valid metadata value");
        req.metadata_mut().insert("cookie", value);
    }
    let res = timeout(WAIT, client.check(req))
        .await
        .expect("RPC answered in time")
        .expect("RPC succeeded");
    let set_cookie = res.metadata().contains_key("set-cookie");
    (res.into_inner().status, set_cookie)
}

#[tokio::test]
async fn layer_stacks_onto_tonic_server_and_serves_check() {
    let server = start(Placement::Server).await;
    let mut client = client(server.addr).await;

    let (status, set_cookie) = check(&mut client, None).await;

    assert_eq!(status, ServingStatus::Serving as i32);
    assert!(!set_cookie, "a request that writes nothing gets no cookie");
    assert_eq!(
        server.seen(),
        [Some(false)],
        "the service saw the request once, with an empty Session attached"
    );
    assert_eq!(server.events(), [], "no cookie: the store is not consulted");
    server.stop().await;
}

#[tokio::test]
async fn unknown_well_formed_token_in_cookie_metadata_is_no_session() {
    let server = start(Placement::Server).await;
    let mut client = client(server.addr).await;

    // Well-formed (43 base64url characters encoding 256 bits) but never issued by this store.
    let token = SessionToken::generate();
    assert_eq!(token.as_str().len(), 43);
    assert!(SessionKey::from_token_str(token.as_str()).is_some());
    let cookie = format!("lang=en; __Host-session={}", token.as_str());

    let (status, set_cookie) = check(&mut client, Some(&cookie)).await;

    assert_eq!(status, ServingStatus::Serving as i32);
    assert!(
        !set_cookie,
        "an unknown token is neither adopted nor cleared"
    );
    assert_eq!(
        server.seen(),
        [Some(false)],
        "the service ran, with a Session that holds no session"
    );
    // The layer did read the token from the gRPC metadata and looked it up.
    assert_eq!(
        server.events(),
        [SessionEvent::UnknownToken {
            session: token.key().fingerprint(),
            client_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        }]
    );
    server.stop().await;
}

#[tokio::test]
async fn layer_wrapping_one_service_added_with_add_service() {
    let server = start(Placement::Service).await;
    let mut client = client(server.addr).await;

    let (status, set_cookie) = check(&mut client, None).await;
    assert_eq!(status, ServingStatus::Serving as i32);
    assert!(!set_cookie);

    let token = SessionToken::generate();
    let cookie = format!("__Host-session={}", token.as_str());
    let (status, set_cookie) = check(&mut client, Some(&cookie)).await;
    assert_eq!(status, ServingStatus::Serving as i32);
    assert!(!set_cookie);

    assert_eq!(server.seen(), [Some(false), Some(false)]);
    assert_eq!(
        server.events(),
        [SessionEvent::UnknownToken {
            session: token.key().fingerprint(),
            client_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        }],
        "the layer around the service read the cookie metadata"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_guarded_service_keeps_its_grpc_name_and_goes_to_add_service() {
    use tonic::server::NamedService;
    use tower::Layer as _;

    let (_reporter, health) = tonic_health::server::health_reporter();
    let guarded = SessionGuardLayer::new(MemoryStore::new()).layer(health);
    fn name_of<S: NamedService>(_: &S) -> &'static str {
        S::NAME
    }
    assert_eq!(name_of(&guarded), "grpc.health.v1.Health");

    let listener = timeout(WAIT, TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind in time")
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(
        Server::builder()
            .add_service(guarded)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = signal.await;
            }),
    );
    let mut client = client(addr).await;
    let (status, set_cookie) = check(&mut client, None).await;
    assert_eq!(status, ServingStatus::Serving as i32);
    assert!(!set_cookie, "a read without a session creates none");
    let _ = shutdown.send(());
    timeout(WAIT, task)
        .await
        .expect("server shut down in time")
        .expect("server task did not panic")
        .expect("server ended without error");
}

#[test]
fn session_errors_become_grpc_statuses_without_internal_detail() {
    use tonic::Code;
    use tower_session_guard::store::StoreError;
    use tower_session_guard::SessionError;

    let store = tonic::Status::from(SessionError::Store(StoreError::new(
        "connection to 10.1.2.3:6379 refused (password=hunter2)",
    )));
    assert_eq!(store.code(), Code::Unavailable);
    assert!(
        !store.message().contains("10.1.2.3") && !store.message().contains("hunter2"),
        "{store:?}"
    );
    let denied = tonic::Status::from(SessionError::LoginDenied {
        reason: "no rule allows this session (allow mode)".into(),
    });
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(!denied.message().contains("rule"), "{denied:?}");
    for (error, code) in [
        (SessionError::Ended, Code::Unauthenticated),
        (SessionError::NotAuthenticated, Code::Unauthenticated),
        (SessionError::ClientIpUnverifiable, Code::InvalidArgument),
        (
            SessionError::RateLimited {
                retry_after: Duration::from_secs(30),
            },
            Code::ResourceExhausted,
        ),
        (
            SessionError::TooManySessions { limit: 5 },
            Code::FailedPrecondition,
        ),
        (SessionError::Contention, Code::Aborted),
        (SessionError::StoreFull, Code::Unavailable),
    ] {
        let shown = format!("{error:?}");
        assert_eq!(tonic::Status::from(error).code(), code, "{shown}");
    }
}

#[test]
fn session_from_a_grpc_request_without_the_layer_is_an_internal_error_naming_the_fix() {
    let err = Session::from_grpc(&tonic::Request::new(())).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert!(err.message().contains("SessionGuardLayer"), "{err:?}");
}
