//! Session identifiers: the token the client holds and the key the store holds.
//!
//! * [`SessionToken`]: 256 bits from an OS-seeded CSPRNG, base64url without padding (43
//!   characters). It exists only in the `Set-Cookie` (or header) of the response that issues
//!   it and in the client's later requests. It is never stored and never logged; its `Debug`
//!   output is redacted.
//! * [`SessionKey`]: SHA-256 of the token's 32 bytes. This is all a store ever sees, so a dump
//!   of the store yields no usable token (OWASP Session Management Cheat Sheet, "Session ID
//!   Entropy" and "Session ID Content"; ASVS 3.2.2 / 3.2.3).
//! * [`Fingerprint`]: the first 8 bytes of the key in hex, which is what logs and events show.
//! * [`RouteTag`]: three base64url characters a store may ask to be put in front of the
//!   token (46 characters then), so that it can place the session without a lookup: the
//!   [`RedisStore`](crate::RedisStore) names a Redis Cluster hash slot with it (the user's, for
//!   a logged-in session). The tag is not secret and adds nothing to the token's 256 random
//!   bits; the key is still the SHA-256 of those bits alone, and carries the tag beside it
//!   for the store. A token without a tag (43 characters, as every token was before tags
//!   existed) stays valid.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Number of random bytes in a token: 256 bits (OWASP asks for at least 64 bits of entropy;
/// 256 bits also makes a SHA-256 key collision-free in practice).
pub const TOKEN_BYTES: usize = 32;
/// Length of a token in its base64url (no padding) form, without a routing tag.
pub const TOKEN_LEN: usize = 43;
/// Length of a [`RouteTag`].
pub const ROUTE_TAG_LEN: usize = 3;
/// Length of a token with a routing tag in front.
pub const ROUTED_TOKEN_LEN: usize = ROUTE_TAG_LEN + TOKEN_LEN;

/// Three base64url characters (18 bits) a store chose to route a session with (see the
/// module docs). Parsed strictly: any other byte or length is no tag.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteTag([u8; ROUTE_TAG_LEN]);

impl RouteTag {
    /// The number of distinct tags: 2^18.
    pub const COUNT: u32 = 1 << 18;

    /// The tag numbered `n` (taken modulo [`COUNT`](Self::COUNT)).
    pub fn from_index(n: u32) -> Self {
        let n = n % Self::COUNT;
        let digit = |shift: u32| B64[usize::try_from((n >> shift) & 63).unwrap_or(0)];
        RouteTag([digit(12), digit(6), digit(0)])
    }

    /// Parses three base64url characters.
    pub fn from_bytes(text: &[u8]) -> Option<Self> {
        match text {
            [a, b, c] if [a, b, c].iter().all(|x| B64.contains(x)) => Some(RouteTag([*a, *b, *c])),
            _ => None,
        }
    }

    /// The tag's text.
    pub fn as_str(&self) -> &str {
        // Only base64url characters ever get in (`from_index`, `from_bytes`).
        std::str::from_utf8(&self.0).unwrap_or("AAA")
    }
}

impl fmt::Debug for RouteTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RouteTag({})", self.as_str())
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The secret a client presents: 256 random bits, base64url-encoded.
///
/// Its `Debug` output is redacted so that it cannot leak into logs through `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    /// Draws a fresh token from the thread-local CSPRNG (ChaCha12, seeded and periodically
    /// reseeded from the operating system).
    pub fn generate() -> Self {
        Self::generate_routed(None)
    }

    /// [`generate`](Self::generate), with `route` in front when given.
    pub fn generate_routed(route: Option<RouteTag>) -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let mut text = String::with_capacity(ROUTED_TOKEN_LEN);
        if let Some(route) = route {
            text.push_str(route.as_str());
        }
        URL_SAFE_NO_PAD.encode_string(bytes, &mut text);
        SessionToken(text)
    }

    /// The token as it goes into a cookie or header.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The store key for this token.
    pub fn key(&self) -> SessionKey {
        // A generated token always decodes; fall back to hashing the text so that this
        // never panics even if someone constructs a token by other means in the future.
        SessionKey::from_token_str(&self.0).unwrap_or_else(|| SessionKey {
            hash: sha256(self.0.as_bytes()),
            route: None,
        })
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionToken({})", self.key().fingerprint())
    }
}

/// What the store holds: SHA-256 of the token's 32 random bytes, and the token's
/// [`RouteTag`] if it has one.
///
/// The tag is part of the key's identity (equality, hashing, order): the same secret under
/// another tag is another key, which a routing store looks up under another name and does
/// not find, and which no near-cache confuses with the real one. A store that ignores tags
/// ([`MemoryStore`](crate::MemoryStore)) is never given tagged keys: the layer tags tokens
/// only for a store that asks for it ([`SessionStore::user_route`](crate::store::SessionStore::user_route)).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionKey {
    hash: [u8; 32],
    route: Option<RouteTag>,
}

/// The SHA-256 bytes, then the tag only if there is one: a key without a tag hashes exactly as
/// before tags existed (the memory store's one-multiply hasher pays nothing for them).
impl std::hash::Hash for SessionKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.hash.hash(state);
        if let Some(route) = &self.route {
            route.hash(state);
        }
    }
}

impl SessionKey {
    /// Parses a client-supplied token and hashes it. Returns `None` for anything that is not
    /// exactly 43 base64url characters encoding 32 bytes, optionally preceded by a 3-character
    /// [`RouteTag`] (46 in all), so malformed input never reaches the store.
    pub fn from_token_str(token: &str) -> Option<Self> {
        Self::from_token_bytes(token.as_bytes())
    }

    /// [`from_token_str`](Self::from_token_str) on raw header bytes: base64url decoding
    /// accepts only its 64 ASCII characters, so no separate UTF-8 check is needed.
    pub(crate) fn from_token_bytes(token: &[u8]) -> Option<Self> {
        let (route, secret) = match token.len() {
            TOKEN_LEN => (None, token),
            ROUTED_TOKEN_LEN => {
                let (tag, secret) = token.split_at(ROUTE_TAG_LEN);
                (Some(RouteTag::from_bytes(tag)?), secret)
            }
            _ => return None,
        };
        let mut bytes = [0u8; TOKEN_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(secret, &mut bytes) {
            Ok(TOKEN_BYTES) => Some(SessionKey {
                hash: sha256_of_secret(&bytes),
                route,
            }),
            _ => None,
        }
    }

    /// The routing tag the token carried, if any.
    pub fn route(&self) -> Option<RouteTag> {
        self.route
    }

    /// This key with `route` (for stores that read keys back with their tags).
    pub fn with_route(self, route: Option<RouteTag>) -> Self {
        SessionKey { route, ..self }
    }

    /// Builds a key from its raw bytes (for stores that read keys back).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionKey {
            hash: bytes,
            route: None,
        }
    }

    /// The key's 32 bytes (the SHA-256; the route is apart).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The short form that logs and events show.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut short = [0u8; 8];
        short.copy_from_slice(&self.hash[..8]);
        Fingerprint(short)
    }

    /// The key as 64 lowercase hex characters (for stores that need text keys).
    pub fn to_hex(&self) -> String {
        hex(&self.hash)
    }

    /// Parses the 64 hex characters of [`to_hex`](Self::to_hex) (either case).
    pub fn from_hex(text: &[u8]) -> Option<Self> {
        unhex::<32>(text).map(SessionKey::from_bytes)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({})", self.fingerprint())
    }
}

/// The first 64 bits of a [`SessionKey`], shown as 16 hex characters. Safe to log: it is a
/// prefix of a hash, so it can neither be replayed nor turned back into a token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 8]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = InvalidFingerprint;

    /// Parses the 16 hex characters that `Display` prints.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        unhex::<8>(s.as_bytes())
            .map(Fingerprint)
            .ok_or(InvalidFingerprint)
    }
}

/// Text that is not a fingerprint (16 hex characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a session fingerprint (expected 16 hex characters)")]
pub struct InvalidFingerprint;

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 of a 32-byte secret: the message and its padding fit one 64-byte block, so the
/// hash is one call of the compression function (FIPS 180-4 §5.1.1 padding: the message,
/// a 1 bit, zeros, and the message length in bits as a 64-bit big-endian number). Equal to
/// [`sha256`] (tested), without the streaming hasher's buffering on the request path.
fn sha256_of_secret(secret: &[u8; TOKEN_BYTES]) -> [u8; 32] {
    const IV: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    let mut block =
        sha2::digest::generic_array::GenericArray::<u8, sha2::digest::consts::U64>::default();
    block[..TOKEN_BYTES].copy_from_slice(secret);
    block[TOKEN_BYTES] = 0x80;
    block[56..].copy_from_slice(&((TOKEN_BYTES as u64) * 8).to_be_bytes());
    let mut state = IV;
    sha2::compress256(&mut state, std::slice::from_ref(&block));
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Exactly `2 * N` hex digits (either case) as `N` bytes; the one hex decoder of the crate.
fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tokens_are_43_base64url_chars_and_unique() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let t = SessionToken::generate();
            assert_eq!(t.as_str().len(), TOKEN_LEN);
            assert!(t
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert!(seen.insert(t.as_str().to_owned()));
        }
    }

    #[test]
    fn the_one_block_hash_is_sha256() {
        // SHA-256 of 32 zero bytes (as `sha256sum` prints it), then random secrets against
        // the streaming hasher.
        assert_eq!(
            hex(&sha256_of_secret(&[0u8; TOKEN_BYTES])),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        for _ in 0..1000 {
            let secret: [u8; TOKEN_BYTES] = rand::random();
            assert_eq!(sha256_of_secret(&secret), sha256(&secret));
        }
    }

    #[test]
    fn key_is_sha256_of_decoded_bytes() {
        let t = SessionToken::generate();
        let bytes = URL_SAFE_NO_PAD.decode(t.as_str()).unwrap();
        assert_eq!(t.key().as_bytes(), &sha256(&bytes));
        assert_eq!(SessionKey::from_token_str(t.as_str()), Some(t.key()));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = SessionToken::generate();
        for bad in [
            "",
            "short",
            &format!("{}A", good.as_str()),
            &good.as_str()[..42],
            "+++++++++++++++++++++++++++++++++++++++++++",
            "ééééééééééééééééééééé-",
            "===========================================",
        ] {
            assert_eq!(SessionKey::from_token_str(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn routed_tokens_carry_their_tag_and_hash_only_the_secret() {
        for n in [0, 1, 63, 64, 4095, RouteTag::COUNT - 1, RouteTag::COUNT] {
            let tag = RouteTag::from_index(n);
            assert_eq!(RouteTag::from_bytes(tag.as_str().as_bytes()), Some(tag));
            let t = SessionToken::generate_routed(Some(tag));
            assert_eq!(t.as_str().len(), ROUTED_TOKEN_LEN);
            let key = SessionKey::from_token_str(t.as_str()).unwrap();
            assert_eq!(key.route(), Some(tag));
            // the key is the hash of the 32 random bytes, not of the tag
            let bytes = URL_SAFE_NO_PAD
                .decode(&t.as_str()[ROUTE_TAG_LEN..])
                .unwrap();
            assert_eq!(key.as_bytes(), &sha256(&bytes));
            // the same secret without (or with another) tag hashes the same, but is another
            // key: a store looks it up under another name
            let untagged = SessionKey::from_token_str(&t.as_str()[ROUTE_TAG_LEN..]).unwrap();
            assert_eq!(untagged.route(), None);
            assert_eq!(untagged.as_bytes(), key.as_bytes());
            assert_ne!(untagged, key);
        }
        assert_eq!(RouteTag::from_index(0).as_str(), "AAA");
        assert_eq!(RouteTag::from_index(RouteTag::COUNT - 1).as_str(), "___");
        assert_eq!(SessionToken::generate().as_str().len(), TOKEN_LEN);
    }

    #[test]
    fn malformed_routed_tokens_are_rejected() {
        let good = SessionToken::generate_routed(Some(RouteTag::from_index(7)));
        let secret = &good.as_str()[ROUTE_TAG_LEN..];
        for bad in [
            format!("A.A{secret}"),
            format!("AA{secret}"),
            format!("AAAA{secret}"),
            format!("{{}}A{secret}"),
            format!("AAA{}", &secret[..42]),
            format!("AAA{secret}="),
            format!("éA{secret}"),
        ] {
            assert_eq!(SessionKey::from_token_str(&bad), None, "{bad:?}");
        }
        assert_eq!(RouteTag::from_bytes(b"AA"), None);
        assert_eq!(RouteTag::from_bytes(b"A+A"), None);
    }

    #[test]
    fn fingerprints_round_trip_through_text() {
        let fp = SessionToken::generate().key().fingerprint();
        assert_eq!(fp.to_string().parse::<Fingerprint>(), Ok(fp));
        assert_eq!("zz".parse::<Fingerprint>(), Err(InvalidFingerprint));
        assert_eq!(
            "0123456789abcdeg".parse::<Fingerprint>(),
            Err(InvalidFingerprint)
        );
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let t = SessionToken::generate();
        let shown = format!("{t:?} {:?} {}", t.key(), t.key().fingerprint());
        assert!(!shown.contains(t.as_str()));
        assert_eq!(t.key().fingerprint().to_string().len(), 16);
    }
}
