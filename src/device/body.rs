//! The JSON the endpoints answer with, written into the service's own body type.
//!
//! The layer is generic over the response body and can only make an empty one
//! (`ResBody: Default`), but the browser drops a registration answered without its JSON.
//! So the body types services actually use are filled in place: axum's `Body` (feature
//! `axum`), tonic's `Body` (feature `tonic`), `String` and `Vec<u8>`. Any other body type
//! gets an empty body and a `ConfigWarning` event that says so.

use std::any::Any;

/// `json` as a `B`, if `B` is a body type we can fill; otherwise `None`.
pub(crate) fn json<B: Default + 'static>(json: String) -> Option<B> {
    let mut body = B::default();
    let slot = &mut body as &mut dyn Any;
    if let Some(b) = slot.downcast_mut::<String>() {
        *b = json;
        return Some(body);
    }
    if let Some(b) = slot.downcast_mut::<Vec<u8>>() {
        *b = json.into_bytes();
        return Some(body);
    }
    #[cfg(feature = "axum")]
    if let Some(b) = slot.downcast_mut::<axum::body::Body>() {
        *b = axum::body::Body::from(json);
        return Some(body);
    }
    #[cfg(feature = "tonic")]
    if let Some(b) = slot.downcast_mut::<tonic::body::Body>() {
        *b = tonic::body::Body::new(json);
        return Some(body);
    }
    None
}
