//! Device Bound Session Credentials (W3C webappsec-dbsc), feature `dbsc`: the protocol side.
//!
//! With [`DeviceBinding`] on the builder, a login answers with `Secure-Session-Registration`;
//! a supporting browser (Chrome) makes a key pair (in the TPM where there is one), proves
//! possession of it at the registration endpoint, and from then on the session needs a
//! short-lived bound cookie that only the key's holder can renew at the refresh endpoint.
//! Both endpoints are answered by the layer itself. A copied pair of cookies stops working
//! within one bound-cookie lifetime; malware running on the device itself can still use the
//! key through the browser, which binding does not prevent.
//!
//! This module holds what is pure protocol: the proof verifier ([`jws`]), the structured
//! headers ([`header`]), the builder option and the bound cookie. The layer's use of them
//! (the endpoints, the per-request check) is in the crate's `device` module.

pub(crate) mod binding;
pub(crate) mod bound;
pub mod header;
pub mod jws;

pub use binding::{
    DeviceBinding, CHALLENGE_LIFETIME, DEFAULT_BOUND_COOKIE_LIFETIME, DEFAULT_BOUND_COOKIE_NAME,
    DEFAULT_REFRESH_PATH, DEFAULT_REGISTRATION_PATH, MAX_BOUND_COOKIE_LIFETIME, REGISTRATION_GRACE,
};
pub use jws::Algorithm;
