//! The gRPC demo's auth service, shared by `examples/grpc_demo.rs` and `tests/grpc.rs`.
//!
//! The handlers find the [`Session`] in the request extensions, where `SessionGuardLayer`
//! put it; tonic keeps the HTTP request's extensions on its `Request`.

#![allow(dead_code)] // the example and the tests use different parts

#[rustfmt::skip]
pub mod auth;

use tonic::{Request, Response, Status};
use tower_session_guard::{Session, SessionError};

use crate::common::find_user;
use auth::auth_server::Auth;
use auth::{Count, Empty, LoginRequest, User};

/// The metadata key that carries the session token (the layer's default token header).
pub const TOKEN_KEY: &str = "x-session-token";

/// The demo's `Auth` service.
#[derive(Debug, Default, Clone, Copy)]
pub struct AuthService;

fn session<T>(req: &Request<T>) -> Result<Session, Status> {
    req.extensions().get::<Session>().cloned().ok_or_else(|| {
        Status::internal("no session: SessionGuardLayer is not in front of this service")
    })
}

/// Session errors as gRPC statuses: an ended session is UNAUTHENTICATED, store trouble
/// UNAVAILABLE (retryable), anything else INTERNAL.
pub fn status(e: SessionError) -> Status {
    match e {
        SessionError::Ended | SessionError::NotAuthenticated => {
            Status::unauthenticated(e.to_string())
        }
        SessionError::Store(_) | SessionError::Contention | SessionError::StoreFull => {
            Status::unavailable(e.to_string())
        }
        SessionError::LoginDenied { .. } => Status::permission_denied(e.to_string()),
        SessionError::ClientIpUnverifiable => Status::unauthenticated(e.to_string()),
        SessionError::RateLimited { .. } => Status::resource_exhausted(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn user(id: &tower_session_guard::Identity) -> User {
    User {
        user: id.user_id.clone(),
        roles: id.roles.clone(),
        groups: id.groups.clone(),
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<User>, Status> {
        let session = session(&req)?;
        let creds = req.get_ref();
        let account = find_user(&creds.username, &creds.password)
            .ok_or_else(|| Status::unauthenticated("invalid username or password"))?;
        let identity = account.identity();
        session.login(identity.clone()).await.map_err(status)?;
        Ok(Response::new(user(&identity)))
    }

    async fn who_am_i(&self, req: Request<Empty>) -> Result<Response<User>, Status> {
        let identity = session(&req)?
            .identity()
            .ok_or_else(|| Status::unauthenticated("not logged in"))?;
        Ok(Response::new(user(&identity)))
    }

    async fn logout(&self, req: Request<Empty>) -> Result<Response<Empty>, Status> {
        session(&req)?.logout().await.map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn counter(&self, req: Request<Empty>) -> Result<Response<Count>, Status> {
        let count = session(&req)?
            .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await
            .map_err(status)?;
        Ok(Response::new(Count { count }))
    }
}
