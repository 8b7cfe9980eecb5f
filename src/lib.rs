//! Server-side sessions for any `http` + `tower` service (axum, tonic, hyper), safe by
//! default against hijacking, fixation and insecure termination.
//!
//! * 256-bit random IDs, held by the client in a `__Host-` cookie (`Secure`, `HttpOnly`,
//!   `SameSite=Lax`) and by the server only as a SHA-256 hash.
//! * [`Session::login`] and [`Session::rotate`] move the session to a fresh ID;
//!   [`Session::logout`] ends it on the server.
//! * Idle and absolute lifetimes are enforced from the server's record.
//! * Every write is compare-and-set, so concurrent requests lose no update and nothing can
//!   bring an ended session back.
//!
//! ```
//! use axum::{routing::post, Router};
//! use tower_session_guard::{Identity, MemoryStore, Session, SessionError, SessionGuardLayer};
//!
//! async fn login(session: Session) -> Result<&'static str, SessionError> {
//!     // ... check credentials first ...
//!     session.login(Identity::new("alice").with_roles(["admin"])).await?;
//!     Ok("welcome")
//! }
//!
//! # async fn serve() -> std::io::Result<()> {
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .layer(SessionGuardLayer::new(MemoryStore::new()));
//!
//! // Serve with connection info: the default pin binds each login to the client's address.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(
//!     listener,
//!     app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
//! )
//! .await
//! # }
//! ```
//!
//! Without connection info (plain `axum::serve(listener, app)`), guests work, and logins work
//! only when nothing configured reads the client address (`PinMode::Off`, no allowed ranges,
//! a policy whose [`needs_client_ip`](PostAuthPolicy::needs_client_ip) is false). Otherwise
//! `login` fails with [`SessionError::ClientIpUnknown`] (500) and a `ClientIpUnknown` event
//! at ERROR level names the fix.
#![deny(missing_docs, unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: feature-gated items carry their feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(rust_2018_idioms)]

mod abuse;
mod admin;
mod builder;
mod client_ip;
mod clock;
mod commit;
pub mod config;
mod core;
mod events;
#[cfg(feature = "axum")]
mod extract;
// The fuzz targets' entry points (fuzz/): only in `cargo fuzz` builds, which set `--cfg fuzzing`.
#[cfg(fuzzing)]
#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;
pub mod future;
#[cfg(feature = "tonic")]
mod grpc;
mod guard;
mod id;
mod layer;
mod limit;
mod net;
mod pin;
mod policy;
mod record;
mod rejection;
mod service;
mod session;
mod steps;
pub mod store;
mod transport;

pub use crate::abuse::{GuessingLimit, RateLimit};
pub use crate::admin::SessionInfo;
pub use crate::builder::SessionGuardBuilder;
pub use crate::client_ip::{ClientIp, ForwardedHeader, PeerAddr};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::config::error::ConfigError;
pub use crate::events::{EventSink, SessionEvent};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use crate::extract::{Authenticated, MissingSessionLayer};
pub use crate::guard::{
    require_any_role, require_group, require_login, require_role, Guarded, RouteGuard,
};
pub use crate::id::{Fingerprint, InvalidFingerprint, SessionToken};
pub use crate::layer::SessionGuardLayer;
pub use crate::limit::LimitPolicy;
pub use crate::net::InvalidCidr;
pub use crate::pin::PinMode;
pub use crate::policy::{
    AllowAll, Decision, PolicyContext, PolicyError, PolicyMode, PostAuthPolicy, Rule,
    ValidationPolicy, ValidationPolicyBuilder,
};
pub use crate::record::{ExpiryKind, Identity, SessionRecord};
pub use crate::rejection::{is_grpc, DefaultRejectionResponse, Rejection, ResponseForRejection};
pub use crate::service::SessionGuard;
pub use crate::session::{Session, SessionError, MAX_VALUE_DEPTH};
pub use crate::store::memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::store::redis::{NearCacheStats, RedisStore, RedisStoreBuilder, RedisStoreError};
pub use crate::transport::{TokenTransport, MAX_COOKIE_HEADER};
pub use ::cookie::SameSite;

/// The README's code blocks, compiled as doc tests so the quick start stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
