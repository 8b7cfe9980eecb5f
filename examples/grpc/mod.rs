//! The gRPC demo's auth service, shared by `examples/grpc_demo.rs` and `tests/grpc.rs`.
//!
//! The handlers get the [`Session`] with `Session::from_grpc` (the layer put it into the
//! request extensions, which tonic keeps), and `?` turns a `SessionError` into a `Status`.

#![allow(dead_code)] // the example and the tests use different parts

#[rustfmt::skip]
pub mod auth;

use tonic::{Request, Response, Status};
use tower_session_guard::Session;

use crate::common::find_user;
use auth::auth_server::Auth;
use auth::{Count, Empty, LoginRequest, User};

/// The metadata key that carries the session token (the layer's default token header).
pub const TOKEN_KEY: &str = "x-session-token";

/// The demo's `Auth` service.
#[derive(Debug, Default, Clone, Copy)]
pub struct AuthService;

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
        let session = Session::from_grpc(&req)?;
        let creds = req.get_ref();
        let account = find_user(&creds.username, &creds.password)
            .ok_or_else(|| Status::unauthenticated("invalid username or password"))?;
        let identity = account.identity();
        session.login(identity.clone()).await?;
        Ok(Response::new(user(&identity)))
    }

    async fn who_am_i(&self, req: Request<Empty>) -> Result<Response<User>, Status> {
        let identity = Session::from_grpc(&req)?
            .identity()
            .ok_or_else(|| Status::unauthenticated("not logged in"))?;
        Ok(Response::new(user(&identity)))
    }

    async fn logout(&self, req: Request<Empty>) -> Result<Response<Empty>, Status> {
        Session::from_grpc(&req)?.logout().await?;
        Ok(Response::new(Empty {}))
    }

    async fn counter(&self, req: Request<Empty>) -> Result<Response<Count>, Status> {
        let count = Session::from_grpc(&req)?
            .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await?;
        Ok(Response::new(Count { count }))
    }
}
