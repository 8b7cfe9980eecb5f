//! What a tonic service needs beyond the layer (feature `tonic`): the [`Session`] from a
//! `tonic::Request`, [`SessionError`] as a `tonic::Status`, and `NamedService` through the
//! layer, so `Server::builder().add_service(layer.layer(svc))` works.

use tonic::server::NamedService;
use tonic::Status;

use crate::service::SessionGuard;
use crate::session::{Session, SessionError};

#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl Session {
    /// The request's session, as [`SessionGuardLayer`](crate::SessionGuardLayer) put it into
    /// the extensions (tonic keeps the HTTP request's extensions on its `Request`).
    ///
    /// ```
    /// use tonic::{Request, Response, Status};
    /// use tower_session_guard::Session;
    ///
    /// async fn who_am_i(req: Request<()>) -> Result<Response<String>, Status> {
    ///     let session = Session::from_grpc(&req)?;
    ///     let identity = session.identity().ok_or_else(|| Status::unauthenticated("not logged in"))?;
    ///     Ok(Response::new(identity.user_id.clone()))
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `INTERNAL` when the request carries no session: the layer is not in front of this
    /// service, a wiring bug that the message names.
    pub fn from_grpc<T>(req: &tonic::Request<T>) -> Result<Session, Status> {
        req.extensions().get::<Session>().cloned().ok_or_else(|| {
            Status::internal("no Session: SessionGuardLayer is not in front of this service")
        })
    }
}

/// Session errors as gRPC statuses, with the meaning of the HTTP answers of feature `axum`.
/// The message never carries internal detail: a store error is `UNAVAILABLE` with a generic
/// message (the layer's `StoreFailed` events and the error's `source` have the detail).
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl From<SessionError> for Status {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Ended => Status::unauthenticated("the session has ended"),
            SessionError::NotAuthenticated => Status::unauthenticated("not logged in"),
            SessionError::ClientIpUnknown => Status::internal(
                "the server cannot determine the client address; see the server's log",
            ),
            SessionError::ClientIpUnverifiable => {
                Status::invalid_argument("the client address cannot be verified")
            }
            SessionError::LoginDenied { .. } => Status::permission_denied("login refused"),
            SessionError::RateLimited { retry_after } => Status::resource_exhausted(format!(
                "too many new sessions; retry in {} s",
                retry_after.as_secs().max(1)
            )),
            SessionError::TooManySessions { limit } => Status::failed_precondition(format!(
                "too many sessions for this user (limit {limit}); log out elsewhere first"
            )),
            SessionError::Store(_) => Status::unavailable("the session store is unavailable"),
            SessionError::StoreFull => {
                Status::unavailable("no room for a new session; try again later")
            }
            SessionError::Contention => Status::aborted(crate::Rejection::Contention.message()),
            SessionError::Value { .. } => Status::internal("a session value could not be read"),
        }
    }
}

/// The layer keeps the inner service's gRPC name, so a guarded service goes straight to
/// `Server::builder().add_service(..)`.
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl<S: NamedService, P> NamedService for SessionGuard<S, P> {
    const NAME: &'static str = S::NAME;
}
