// The crate docs are the README: one guide, whose code blocks run as doc tests.
#![doc = include_str!("../README.md")]
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
#[cfg(feature = "dbsc")]
#[cfg_attr(docsrs, doc(cfg(feature = "dbsc")))]
pub mod dbsc;
#[cfg(feature = "dbsc")]
mod device;
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
#[cfg(feature = "test-util")]
mod testing;
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
pub use crate::record::{BoundDevice, ExpiryKind, Identity, IdentityRef, SessionRecord};
pub use crate::rejection::{is_grpc, DefaultRejectionResponse, Rejection, ResponseForRejection};
pub use crate::service::SessionGuard;
pub use crate::session::{LoginOptions, Session, SessionError, MAX_VALUE_DEPTH};
pub use crate::store::memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(any(feature = "redis", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "redis", feature = "postgres"))))]
pub use crate::store::near_cache::NearCacheStats;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use crate::store::postgres::{PostgresStore, PostgresStoreBuilder, PostgresStoreError};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::store::redis::{RedisStore, RedisStoreBuilder, RedisStoreError};
pub use crate::transport::{TokenTransport, MAX_COOKIE_HEADER};
pub use ::cookie::SameSite;
