//! `Session` as an axum extractor (feature `axum`).

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::client_ip::{ClientAddr, ClientIp};
use crate::record::IdentityRef;
use crate::rejection::Rejection;
use crate::session::{Session, SessionError};

/// The extractor found no `Session`: the route is not behind a `SessionGuardLayer`. This is a
/// wiring bug, so it answers 500 and says so.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no Session in request extensions: add SessionGuardLayer to this route")]
pub struct MissingSessionLayer;

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        session_in(parts).cloned()
    }
}

/// The request's `Session`, or the wiring error that names the missing layer.
fn session_in(parts: &Parts) -> Result<&Session, MissingSessionLayer> {
    parts.extensions.get::<Session>().ok_or(MissingSessionLayer)
}

/// An extractor's refusal, with the status and message the layer gives `rejection`.
fn refusal(rejection: Rejection) -> Response {
    (rejection.http_status(), rejection.message()).into_response()
}

/// The client address the layer resolved, read from the request's [`Session`] (the layer
/// puts one value into the extensions, not two). `Option<ClientIp>` is `None` when the
/// address is unknown; a plain `ClientIp` then answers as the layer would: 500 when the
/// server passes no connection info, 401 when a trusted proxy names no client.
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    /// 500 without the layer or without connection info; 401 for an unverifiable address.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = session_in(parts).map_err(IntoResponse::into_response)?;
        match session.client_addr() {
            ClientAddr::Known(ip) => Ok(ClientIp(ip)),
            unknown => Err(refusal(unknown.rejection())),
        }
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for ClientIp {
    /// 500 without the layer (a wiring bug).
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(session_in(parts)?.client_ip().map(ClientIp))
    }
}

/// The logged-in identity, as an extractor: a handler that takes it runs only for a logged-in
/// user, and everyone else gets 401 (the session is kept, as with
/// [`require_login`](crate::require_login)).
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_session_guard::{Authenticated, MemoryStore, SessionGuardLayer};
///
/// async fn me(Authenticated(user): Authenticated) -> String {
///     format!("hello {}", user.user_id)
/// }
///
/// let app: Router = Router::new()
///     .route("/me", get(me))
///     .layer(SessionGuardLayer::new(MemoryStore::new()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated(pub IdentityRef);

#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    /// 401 without a login; 500 (a wiring bug, with the message) without the layer.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = session_in(parts).map_err(IntoResponse::into_response)?;
        match session.identity() {
            Some(identity) => Ok(Authenticated(identity)),
            None => Err(refusal(Rejection::LoginRequired)),
        }
    }
}

/// Lets handlers use `?` on session operations: an ended session is 401, store trouble is
/// 503 (fail closed, retryable; a write answered 503 may have been applied), contention is
/// 429 with `Retry-After` ([`Rejection::Contention`]), a value that does not fit its type is
/// 500.
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = match self {
            SessionError::Ended | SessionError::NotAuthenticated => StatusCode::UNAUTHORIZED,
            SessionError::ClientIpUnknown => StatusCode::INTERNAL_SERVER_ERROR,
            SessionError::ClientIpUnverifiable => StatusCode::BAD_REQUEST,
            SessionError::LoginDenied { .. } => StatusCode::FORBIDDEN,
            SessionError::RateLimited { retry_after } => {
                let status = StatusCode::TOO_MANY_REQUESTS;
                let secs = retry_after.as_secs().max(1).to_string();
                return (
                    status,
                    [(http::header::RETRY_AFTER, secs)],
                    "too many new sessions",
                )
                    .into_response();
            }
            SessionError::TooManySessions { .. } => StatusCode::CONFLICT,
            SessionError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            SessionError::Contention => {
                let rejection = Rejection::Contention;
                let retry = [(
                    http::header::RETRY_AFTER,
                    crate::rejection::CONTENTION_RETRY_AFTER,
                )];
                return (rejection.http_status(), retry, rejection.message()).into_response();
            }
            SessionError::Value { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            SessionError::StoreFull => {
                let status = StatusCode::SERVICE_UNAVAILABLE;
                let retry = [(http::header::RETRY_AFTER, "30")];
                return (status, retry, "no room for a new session; try again later")
                    .into_response();
            }
        };
        (status, status.canonical_reason().unwrap_or("session error")).into_response()
    }
}
