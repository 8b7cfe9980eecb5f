//! The response future as a state machine: it says which state it is in, and a poll after it
//! completed is a caller's bug that panics with a message saying so (as tower's futures do),
//! rather than polling a finished inner future again.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, Response};
use tower::{service_fn, Layer, Service};
use tower_session_guard::{MemoryStore, PeerAddr, SessionGuardLayer};

fn request() -> Request<String> {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut req = Request::new(String::new());
    req.extensions_mut().insert(PeerAddr(peer));
    req
}

fn service() -> impl Service<
    Request<String>,
    Response = Response<String>,
    Error = Infallible,
    Future = tower_session_guard::future::ResponseFuture<
        impl std::future::Future<Output = Result<Response<String>, Infallible>>,
        String,
        Infallible,
    >,
> {
    SessionGuardLayer::new(MemoryStore::new()).layer(service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new("ok".to_owned()))
    }))
}

#[tokio::test]
async fn debug_names_the_state() {
    let mut svc = service();
    let mut fut = Box::pin(svc.call(request()));
    assert_eq!(format!("{fut:?}"), r#"ResponseFuture { state: "Handler" }"#);
    let res = fut.as_mut().await.unwrap();
    assert_eq!(res.body(), "ok");
    assert_eq!(format!("{fut:?}"), r#"ResponseFuture { state: "Done" }"#);
}

#[tokio::test]
#[should_panic(expected = "ResponseFuture polled after completion")]
async fn polling_after_completion_panics_with_a_clear_message() {
    let mut svc = service();
    let mut fut = Box::pin(svc.call(request()));
    let _ = fut.as_mut().await;
    let _ = fut.as_mut().await;
}
