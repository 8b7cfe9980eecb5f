//! The browser's proof of possession: a compact JWS (RFC 7515) with `typ` `dbsc+jwt`,
//! verified with strict bounds before anything is decoded, and the algorithm checked against
//! the allowlist before any key is read (so `none` and `HS256` never reach a verifier).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// A whole `Secure-Session-Response` longer than this is refused unread. An RS256 proof with
/// a 4096-bit key in its header is about 2 KiB; ES256 about 500 bytes.
pub const MAX_PROOF_LEN: usize = 8 * 1024;
/// The decoded protected header may hold at most this much JSON.
const MAX_HEADER_JSON: usize = 4 * 1024;
/// The decoded payload (a challenge and perhaps a URL) may hold at most this much JSON.
const MAX_PAYLOAD_JSON: usize = 2 * 1024;
/// RSA keys must have at least this many bits (NIST SP 800-57 Part 1, table 2: 2048 bits
/// for security through 2030); ring's verifier refuses smaller ones as well.
pub const MIN_RSA_BITS: usize = 2048;
/// And at most this many (ring's verifier's upper bound; bounds the verification cost).
const MAX_RSA_BITS: usize = 8192;
/// The JWS `typ` of a DBSC proof.
const TYP: &str = "dbsc+jwt";

/// A signature algorithm the browser may sign its proofs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (what Chromium uses with a TPM or software key).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2048 to 8192 bits.
    Rs256,
}

impl Algorithm {
    /// The JOSE name (`ES256`, `RS256`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Algorithm::Es256),
            "RS256" => Some(Algorithm::Rs256),
            _ => None,
        }
    }
}

/// Why a proof was refused. The names are what events report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofError {
    /// Longer than [`MAX_PROOF_LEN`], or a part longer than its cap.
    TooLarge,
    /// Not three base64url parts (no padding), or JSON that does not parse.
    Malformed,
    /// `alg` is not on the allowlist (`none`, `HS256`, …).
    Algorithm,
    /// `typ` is not `dbsc+jwt`, or the header has a `crit` we cannot honour.
    Type,
    /// A registration without a `jwk`.
    KeyMissing,
    /// A refresh that carries a `jwk` (it must be signed by the registered key).
    KeyNotAllowed,
    /// A key that is not a P-256 point or an RSA key of 2048 to 8192 bits, or whose type
    /// does not match `alg`.
    Key,
    /// The signature does not verify with the key.
    Signature,
    /// `jti` is not the pending challenge.
    Challenge,
    /// `aud` is present and is not this endpoint.
    Audience,
}

impl ProofError {
    /// A short name for events and logs.
    pub fn reason(self) -> &'static str {
        match self {
            ProofError::TooLarge => "too_large",
            ProofError::Malformed => "malformed",
            ProofError::Algorithm => "algorithm_not_allowed",
            ProofError::Type => "wrong_typ",
            ProofError::KeyMissing => "jwk_missing",
            ProofError::KeyNotAllowed => "jwk_in_refresh",
            ProofError::Key => "bad_key",
            ProofError::Signature => "bad_signature",
            ProofError::Challenge => "wrong_challenge",
            ProofError::Audience => "wrong_audience",
        }
    }
}

/// A public key as a JWK: only the members a verifier needs, so the stored form is canonical
/// (no `d`, no `key_ops`, whatever the browser sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
}

impl Jwk {
    /// The key as JSON text, for the session record.
    pub fn to_json(&self) -> String {
        // A struct of strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A key stored by [`to_json`](Self::to_json).
    pub fn from_json(json: &str) -> Option<Jwk> {
        serde_json::from_str(json).ok()
    }

    /// The key's raw public parts, checked against `alg`.
    fn public_key(&self, alg: Algorithm) -> Result<PublicKey, ProofError> {
        match (alg, self.kty.as_str()) {
            (Algorithm::Es256, "EC") => {
                if self.crv.as_deref() != Some("P-256") {
                    return Err(ProofError::Key);
                }
                let x = coordinate(self.x.as_deref())?;
                let y = coordinate(self.y.as_deref())?;
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(PublicKey::P256(point))
            }
            (Algorithm::Rs256, "RSA") => {
                let n = bounded_b64(self.n.as_deref(), MAX_RSA_BITS / 8 + 1)?;
                let e = bounded_b64(self.e.as_deref(), 8)?;
                // Minimal big-endian form: a leading zero byte would make ring refuse a
                // valid key and would skew the size check.
                let n = strip_zeros(n);
                let e = strip_zeros(e);
                let bits = n
                    .first()
                    .map_or(0, |b| (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize));
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) || e.is_empty() {
                    return Err(ProofError::Key);
                }
                Ok(PublicKey::Rsa { n, e })
            }
            _ => Err(ProofError::Key),
        }
    }
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}

fn bounded_b64(s: Option<&str>, max_bytes: usize) -> Result<Vec<u8>, ProofError> {
    let s = s.ok_or(ProofError::Key)?;
    // base64 of `max_bytes` is at most 4/3 as long; refuse before decoding.
    if s.len() > max_bytes.div_ceil(3) * 4 {
        return Err(ProofError::Key);
    }
    URL_SAFE_NO_PAD.decode(s).map_err(|_| ProofError::Key)
}

fn coordinate(s: Option<&str>) -> Result<[u8; 32], ProofError> {
    <[u8; 32]>::try_from(bounded_b64(s, 32)?).map_err(|_| ProofError::Key)
}

enum PublicKey {
    /// Uncompressed SEC1 point (0x04 || x || y); ring checks it lies on the curve.
    P256(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl PublicKey {
    fn verify(&self, message: &[u8], sig: &[u8]) -> Result<(), ProofError> {
        let ok = match self {
            PublicKey::P256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
            }
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }.verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                message,
                sig,
            ),
        };
        ok.map_err(|_| ProofError::Signature)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    jwk: Option<Jwk>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Payload {
    jti: String,
    #[serde(default)]
    aud: Option<serde_json::Value>,
}

/// What a proof must match.
pub struct Expect<'a> {
    /// The algorithms accepted (the builder's allowlist).
    pub algorithms: &'a [Algorithm],
    /// The pending challenge the proof's `jti` must equal.
    pub challenge: &'a str,
    /// The endpoint's path: an `aud`, when present, must be an URL with this path (and, if
    /// `host` is known, this host).
    pub path: &'a str,
    /// The request's `Host`, if it sent one.
    pub host: Option<&'a str>,
}

/// A proof that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The algorithm it was signed with.
    pub alg: Algorithm,
    /// The key it was verified with (for a registration, the key to store).
    pub key: Jwk,
}

/// Verifies a registration proof: the key comes from the header's `jwk`, and the proof must
/// be signed by it (possession of the private key).
///
/// # Errors
///
/// The first rule the proof breaks.
pub fn verify_registration(jws: &str, expect: &Expect<'_>) -> Result<Verified, ProofError> {
    verify(jws, expect, None)
}

/// Verifies a refresh proof against the stored key: a `jwk` in the header is refused (a
/// refresh must be signed by the registered key, not one the request brings along).
///
/// # Errors
///
/// The first rule the proof breaks.
pub fn verify_refresh(
    jws: &str,
    expect: &Expect<'_>,
    stored: &Jwk,
    stored_alg: Algorithm,
) -> Result<Verified, ProofError> {
    verify(jws, expect, Some((stored, stored_alg)))
}

/// The stored algorithm name back as an [`Algorithm`].
pub fn algorithm_named(name: &str) -> Option<Algorithm> {
    Algorithm::from_name(name)
}

fn verify(
    jws: &str,
    expect: &Expect<'_>,
    stored: Option<(&Jwk, Algorithm)>,
) -> Result<Verified, ProofError> {
    if jws.len() > MAX_PROOF_LEN {
        return Err(ProofError::TooLarge);
    }
    let mut parts = jws.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Malformed);
    };
    if h64.len() > MAX_HEADER_JSON.div_ceil(3) * 4 || p64.len() > MAX_PAYLOAD_JSON.div_ceil(3) * 4 {
        return Err(ProofError::TooLarge);
    }
    let header: Header = decode_json(h64)?;
    // The allowlist first: nothing about keys is read for an algorithm we do not accept.
    let alg = Algorithm::from_name(&header.alg)
        .filter(|a| expect.algorithms.contains(a))
        .ok_or(ProofError::Algorithm)?;
    if header.typ.as_deref() != Some(TYP) || header.crit.is_some() {
        return Err(ProofError::Type);
    }
    let (jwk, key_alg) = match (stored, header.jwk) {
        (None, Some(jwk)) => (jwk, alg),
        (None, None) => return Err(ProofError::KeyMissing),
        (Some(_), Some(_)) => return Err(ProofError::KeyNotAllowed),
        (Some((stored, stored_alg)), None) => (stored.clone(), stored_alg),
    };
    // A refresh signed with another algorithm than the registered key's is refused: an
    // attacker may not pick how the stored key is interpreted.
    if key_alg != alg {
        return Err(ProofError::Algorithm);
    }
    let key = jwk.public_key(alg)?;
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| ProofError::Malformed)?;
    let signed = &jws.as_bytes()[..h64.len() + 1 + p64.len()];
    key.verify(signed, &sig)?;
    let payload: Payload = decode_json(p64)?;
    if payload.jti != expect.challenge {
        return Err(ProofError::Challenge);
    }
    if let Some(aud) = payload.aud {
        if !audience_matches(&aud, expect) {
            return Err(ProofError::Audience);
        }
    }
    Ok(Verified { alg, key: jwk })
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, ProofError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ProofError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed)
}

/// `aud` is the full URL of the endpoint (Chromium sends it with an extra flag): it must be
/// an `https://` URL (DBSC runs only on secure origins) for our host and our path.
fn audience_matches(aud: &serde_json::Value, expect: &Expect<'_>) -> bool {
    let Some(aud) = aud.as_str() else {
        return false;
    };
    let Ok(uri) = aud.parse::<http::Uri>() else {
        return false;
    };
    let host_ok = match (expect.host, uri.authority()) {
        (Some(host), Some(authority)) => authority.as_str().eq_ignore_ascii_case(host),
        (None, Some(_)) => true,
        (_, None) => false,
    };
    uri.scheme_str() == Some("https") && host_ok && uri.path() == expect.path
}

#[cfg(test)]
mod tests;
