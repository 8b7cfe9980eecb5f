//! The protocol's headers as RFC 9651 structured fields, written and read with `sfv`.

use http::HeaderValue;
use sfv::{ItemSerializer, KeyRef, ListSerializer, Parser, StringRef, TokenRef};

use super::jws::{Algorithm, MAX_PROOF_LEN};

/// Offered with a login: `Secure-Session-Registration`.
pub const REGISTRATION: &str = "secure-session-registration";
/// Answered with a 403 from the refresh endpoint: `Secure-Session-Challenge`.
pub const CHALLENGE: &str = "secure-session-challenge";
/// The browser's proof: `Secure-Session-Response`.
pub const RESPONSE: &str = "secure-session-response";
/// The DBSC session a refresh is for: `Sec-Secure-Session-Id`.
pub const SESSION_ID: &str = "sec-secure-session-id";
/// A DBSC session identifier longer than this is not one of ours (ours are 22 characters).
const MAX_SESSION_ID: usize = 128;

/// `(ES256 RS256);path="<path>";challenge="<nonce>"`: an inner list of algorithm tokens
/// with the registration path and the challenge as parameters. `None` if a value is not
/// representable (the builder checks paths; challenges are base64url).
pub fn registration(algorithms: &[Algorithm], path: &str, challenge: &str) -> Option<String> {
    let mut list = ListSerializer::new();
    {
        let mut inner = list.inner_list();
        for alg in algorithms {
            inner.bare_item(TokenRef::from_str(alg.name()).ok()?);
        }
        inner
            .finish()
            .parameter(
                KeyRef::from_str("path").ok()?,
                StringRef::from_str(path).ok()?,
            )
            .parameter(
                KeyRef::from_str("challenge").ok()?,
                StringRef::from_str(challenge).ok()?,
            );
    }
    list.finish().ok()
}

/// `"<nonce>";id="<session id>"`, or the bare `"<nonce>"` without an id.
pub fn challenge(challenge: &str, session_id: Option<&str>) -> Option<String> {
    let item = ItemSerializer::new().bare_item(StringRef::from_str(challenge).ok()?);
    Some(match session_id {
        Some(id) => item
            .parameter(KeyRef::from_str("id").ok()?, StringRef::from_str(id).ok()?)
            .finish(),
        None => item.finish(),
    })
}

/// The session id of `Sec-Secure-Session-Id`: a structured-field string or token, or (as
/// Chromium sends it) the bare identifier. Anything else, or anything long, is `None`.
pub fn session_id(value: &HeaderValue) -> Option<String> {
    let raw = value.to_str().ok()?.trim();
    if raw.is_empty() || raw.len() > MAX_SESSION_ID {
        return None;
    }
    if let Ok(item) = Parser::new(raw).parse_item() {
        if let Some(s) = item.bare_item.as_string() {
            return Some(s.as_str().to_owned());
        }
        if let Some(t) = item.bare_item.as_token() {
            return Some(t.as_str().to_owned());
        }
    }
    raw.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        .then(|| raw.to_owned())
}

/// The compact JWS of `Secure-Session-Response`: bare, or as a structured-field string.
/// Bounded before anything else is done with it.
pub fn proof(value: &HeaderValue) -> Option<&str> {
    let raw = value.to_str().ok()?.trim();
    if raw.is_empty() || raw.len() > MAX_PROOF_LEN + 2 {
        return None;
    }
    Some(
        raw.strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// src/dbsc/vectors/registration-header.json (dbsc-toolkit, Apache-2.0): byte for byte.
    #[test]
    fn headers_match_the_vectors_byte_for_byte() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("vectors/registration-header.json")).unwrap();
        let (inputs, expected) = (&v["inputs"], &v["expected"]);
        let s = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
        let (path, nonce, id) = (
            s(&inputs["registrationPath"]),
            s(&inputs["challenge"]),
            s(&inputs["sessionId"]),
        );
        assert_eq!(s(&inputs["algorithm"]), "ES256");
        assert_eq!(
            registration(&[Algorithm::Es256], &path, &nonce).unwrap(),
            s(&expected["Secure-Session-Registration"])
        );
        assert_eq!(
            challenge(&nonce, None).unwrap(),
            s(&expected["Secure-Session-Challenge (bare)"])
        );
        assert_eq!(
            challenge(&nonce, Some(&id)).unwrap(),
            s(&expected["Secure-Session-Challenge (with id)"])
        );
        // Both algorithms, as Chromium 156 is offered them.
        assert_eq!(
            registration(&[Algorithm::Es256, Algorithm::Rs256], "/r", "n").unwrap(),
            r#"(ES256 RS256);path="/r";challenge="n""#
        );
    }

    #[test]
    fn session_ids_are_read_bare_or_structured_and_bounded() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(session_id(&v("abc_-9")).as_deref(), Some("abc_-9"));
        assert_eq!(session_id(&v("9abc")).as_deref(), Some("9abc"));
        assert_eq!(session_id(&v("\"q-id\"")).as_deref(), Some("q-id"));
        assert_eq!(session_id(&v("a b")), None);
        assert_eq!(session_id(&v("")), None);
        assert_eq!(session_id(&v(&"a".repeat(200))), None);
    }

    #[test]
    fn proofs_are_bounded_and_unquoted() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(proof(&v("a.b.c")), Some("a.b.c"));
        assert_eq!(proof(&v("\"a.b.c\"")), Some("a.b.c"));
        assert_eq!(proof(&v(&"a".repeat(MAX_PROOF_LEN + 3))), None);
    }
}
