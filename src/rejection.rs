//! What the layer answers by itself, well-formed for the request's protocol: a plain HTTP
//! status for HTTP clients, a gRPC trailers-only response for `application/grpc*` requests.

use std::fmt;

use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

/// Why the layer answered a request itself. It is also put into the response's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The store failed while the request carried a session: fail closed rather than treat
    /// the request as having no session (which could skip a logout or a pin check).
    StoreUnavailable,
    /// An authenticated session was used from an address its pin or the allowed ranges do
    /// not accept; the session was destroyed.
    PinViolation,
    /// The post-authentication policy denied the request; the session was destroyed.
    PolicyDenied,
    /// An authenticated request came without connection info, so it could not be checked.
    /// A server wiring problem (see `PeerAddr`), not the client's fault.
    ClientIpUnknown,
    /// An authenticated request came through a trusted proxy whose forwarding header names
    /// no client, so its address (and with it the pin, the ranges and the policy) cannot be
    /// checked. The session is kept: this is the proxy's fault or a forged header, not proof
    /// of a hijack.
    ClientIpUnverifiable,
    /// The client address is cooling down after guessing session IDs, and presented another
    /// unknown token. Answered with `Retry-After`.
    TooManyUnknownTokens,
    /// A route guard ([`require_login`](crate::require_login) and the others): nobody is
    /// logged in on this request's session. The session is kept.
    LoginRequired,
    /// A route guard: the logged-in user lacks the role or group the route requires. The
    /// session is kept: this is authorization, not session validation.
    Forbidden,
    /// A route guard found no session: `SessionGuardLayer` is not in front of the route. A
    /// wiring bug, logged as an error when it happens.
    MissingSessionLayer,
    /// Concurrent requests on this session kept winning the compare-and-set race, and a write
    /// gave up after its bounded attempts ([`SessionError::Contention`](crate::SessionError::Contention)).
    /// HTTP 429 with `Retry-After: 1`, gRPC `ABORTED`: the store is fine, the same request
    /// succeeds once the burst passes. Not 503, so monitoring can tell it from an outage.
    ///
    /// Why 429 and not 409: 409 Conflict says the request conflicts with the resource's state
    /// and must change before it can succeed (the layer already answers it for
    /// `TooManySessions`, which a retry does not fix); contention is one client sending too
    /// many concurrent writes to one session, which a plain retry fixes, and 429 with
    /// `Retry-After` is what HTTP clients and proxies already back off and retry on (RFC 6585
    /// section 4; `Retry-After`, RFC 9110 section 10.2.3). gRPC's `ABORTED` is documented for
    /// exactly this ("a concurrency issue such as a sequencer check failure; retry at a
    /// higher level").
    Contention,
}

/// The `Retry-After` of [`Rejection::Contention`], in seconds: a lost race is over within a
/// round trip, and one second is the header's smallest unit.
pub(crate) const CONTENTION_RETRY_AFTER: &str = "1";

impl Rejection {
    /// The HTTP status for HTTP clients.
    pub fn http_status(self) -> StatusCode {
        match self {
            Rejection::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::PinViolation | Rejection::PolicyDenied => StatusCode::UNAUTHORIZED,
            Rejection::ClientIpUnknown => StatusCode::INTERNAL_SERVER_ERROR,
            Rejection::ClientIpUnverifiable => StatusCode::UNAUTHORIZED,
            Rejection::TooManyUnknownTokens => StatusCode::TOO_MANY_REQUESTS,
            Rejection::LoginRequired => StatusCode::UNAUTHORIZED,
            Rejection::Forbidden => StatusCode::FORBIDDEN,
            Rejection::MissingSessionLayer => StatusCode::INTERNAL_SERVER_ERROR,
            Rejection::Contention => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The gRPC status code for gRPC clients.
    pub fn grpc_status(self) -> u16 {
        match self {
            Rejection::StoreUnavailable => 14,     // UNAVAILABLE
            Rejection::PinViolation => 16,         // UNAUTHENTICATED
            Rejection::PolicyDenied => 7,          // PERMISSION_DENIED
            Rejection::ClientIpUnknown => 13,      // INTERNAL
            Rejection::ClientIpUnverifiable => 16, // UNAUTHENTICATED
            Rejection::TooManyUnknownTokens => 8,  // RESOURCE_EXHAUSTED
            Rejection::LoginRequired => 16,        // UNAUTHENTICATED
            Rejection::Forbidden => 7,             // PERMISSION_DENIED
            Rejection::MissingSessionLayer => 13,  // INTERNAL
            Rejection::Contention => 10,           // ABORTED
        }
    }

    /// A short message, safe to show to the client.
    pub fn message(self) -> &'static str {
        match self {
            Rejection::StoreUnavailable => "session store unavailable",
            Rejection::PinViolation => "session terminated: used from an unexpected address",
            Rejection::PolicyDenied => "session terminated by policy",
            Rejection::ClientIpUnknown => "client address unknown",
            Rejection::ClientIpUnverifiable => "client address cannot be verified",
            Rejection::TooManyUnknownTokens => "too many unknown session tokens; slow down",
            Rejection::LoginRequired => "login required",
            Rejection::Forbidden => "permission denied",
            Rejection::MissingSessionLayer => "no session layer in front of this route",
            Rejection::Contention => "too many concurrent writes to this session; retry",
        }
    }

    /// Builds the answer for a request with these headers.
    pub fn into_response<B: Default>(self, request_headers: &HeaderMap) -> Response<B> {
        let mut res = Response::new(B::default());
        let h = res.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Rejection::TooManyUnknownTokens => {
                h.insert(RETRY_AFTER, HeaderValue::from_static("60"));
            }
            Rejection::Contention => {
                h.insert(
                    RETRY_AFTER,
                    HeaderValue::from_static(CONTENTION_RETRY_AFTER),
                );
            }
            _ => {}
        }
        if is_grpc(request_headers) {
            // Trailers-only: status and message travel in the single HEADERS frame.
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from(self.grpc_status()));
            if let Ok(msg) = HeaderValue::from_str(&percent_encode(self.message())) {
                h.insert("grpc-message", msg);
            }
        } else {
            *res.status_mut() = self.http_status();
        }
        res.extensions_mut().insert(self);
        res
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Decides what the layer answers when it refuses a request, in the style of tower-http's
/// `ResponseForProtectionError`. The body is always empty (the service's `Default` body);
/// the layer adds the [`Rejection`] to the response extensions and, where the session was
/// destroyed, the removal cookie.
///
/// Implemented for closures:
///
/// ```
/// use http::{HeaderMap, Response, StatusCode};
/// use tower_session_guard::{is_grpc, Rejection};
///
/// // Answer 403 instead of 401 for policy denials, keep every other default.
/// let custom = |rejection: Rejection, headers: &HeaderMap| -> Response<()> {
///     if rejection == Rejection::PolicyDenied && !is_grpc(headers) {
///         let mut res = Response::new(());
///         *res.status_mut() = StatusCode::FORBIDDEN;
///         res
///     } else {
///         rejection.into_response(headers)
///     }
/// };
/// # let _ = tower_session_guard::SessionGuardLayer::builder(tower_session_guard::MemoryStore::new())
/// #     .rejection_response(custom);
/// ```
pub trait ResponseForRejection: Send + Sync + 'static {
    /// The answer to a request with these headers.
    fn response(&self, rejection: Rejection, request_headers: &HeaderMap) -> Response<()>;
}

impl<F> ResponseForRejection for F
where
    F: Fn(Rejection, &HeaderMap) -> Response<()> + Send + Sync + 'static,
{
    fn response(&self, rejection: Rejection, request_headers: &HeaderMap) -> Response<()> {
        self(rejection, request_headers)
    }
}

/// The default answers: [`Rejection::into_response`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRejectionResponse;

impl ResponseForRejection for DefaultRejectionResponse {
    fn response(&self, rejection: Rejection, request_headers: &HeaderMap) -> Response<()> {
        rejection.into_response(request_headers)
    }
}

/// Builds the layer's own answer with the configured responder.
pub(crate) fn respond<B: Default>(
    responder: &dyn ResponseForRejection,
    rejection: Rejection,
    request_headers: &HeaderMap,
) -> Response<B> {
    let mut res = responder
        .response(rejection, request_headers)
        .map(|()| B::default());
    res.extensions_mut().insert(rejection);
    res
}

/// Whether the request speaks gRPC (`application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .map(|v| v.as_bytes().starts_with(b"application/grpc"))
        .unwrap_or(false)
}

/// gRPC's percent-encoding for `grpc-message`: bytes outside 0x20..=0x7E, and `%`.
fn percent_encode(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_requests_get_trailers_only() {
        let mut req = HeaderMap::new();
        req.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        let res: Response<()> = Rejection::StoreUnavailable.into_response(&req);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(res.headers()["content-type"], "application/grpc");
    }

    #[test]
    fn http_requests_get_503() {
        let res: Response<()> = Rejection::StoreUnavailable.into_response(&HeaderMap::new());
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            res.extensions().get::<Rejection>(),
            Some(&Rejection::StoreUnavailable)
        );
    }

    #[test]
    fn percent_encoding_follows_grpc() {
        assert_eq!(percent_encode("a b%ü"), "a b%25%C3%BC");
    }
}
