//! The layer's side of Device Bound Session Credentials (feature `dbsc`): the registration
//! and refresh endpoints it answers itself ([`endpoint`]), the registration offer on a
//! login's response and the bound-cookie check on every request of a bound session
//! ([`check`]), and its answers ([`reply`], with the JSON body of [`body`]).
//!
//! Apart from [`dbsc`](crate::dbsc) (pure protocol: verifier, headers, the option) because
//! this part reads the configuration, the store and the transport, which themselves name
//! the option: one module could not be both below and above them.

pub(crate) mod body;
pub(crate) mod check;
pub(crate) mod endpoint;
pub(crate) mod reply;

pub(crate) use check::{bound_cookie, offer, Proof};
pub(crate) use endpoint::{answer, endpoint_for};
