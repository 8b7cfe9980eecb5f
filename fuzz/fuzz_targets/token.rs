//! Session tokens and fingerprints from untrusted text and bytes: `SessionKey::from_token_str`
//! (the token header and quoted cookies), the byte form the cookie fast path uses, and
//! `Fingerprint`'s `FromStr` (admin revocation by fingerprint). Checked against an
//! independent base64url decoder and hex parser, not merely for panics. A token is the 43
//! characters, or a 3-character routing tag (base64url) and the 43.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tower_session_guard::__fuzz::key_from_token_bytes;
use tower_session_guard::store::{RouteTag, SessionKey};
use tower_session_guard::Fingerprint;

/// base64url without padding, written out by hand: exactly 43 characters of the URL-safe
/// alphabet whose last character carries no bits beyond the 256th.
fn reference_token(b: &[u8]) -> Option<[u8; 32]> {
    if b.len() != 43 {
        return None;
    }
    let sextet = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = [0u8; 32];
    let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
    for &c in b {
        acc = (acc << 6) | sextet(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out[n] = (acc >> bits) as u8;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    // 43 * 6 = 258 bits: 32 bytes and two leftover bits, which must be zero.
    (n == 32 && bits == 2 && acc == 0).then_some(out)
}

fn reference_fingerprint(s: &str) -> Option<String> {
    (s.len() == 16 && s.bytes().all(|c| c.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

fuzz_target!(|data: &[u8]| {
    let from_bytes = key_from_token_bytes(data);
    let key = |raw: [u8; 32]| {
        let digest: [u8; 32] = Sha256::digest(raw).into();
        SessionKey::from_bytes(digest)
    };
    let base64url = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_';
    let expected = match data.len() {
        46 if data[..3].iter().all(base64url) => reference_token(&data[3..])
            .map(|raw| key(raw).with_route(RouteTag::from_bytes(&data[..3]))),
        _ => reference_token(data).map(key),
    };
    if let Some(k) = expected {
        assert_eq!(k.route().is_some(), data.len() == 46);
    }
    assert_eq!(from_bytes, expected, "token bytes {data:?}");

    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(SessionKey::from_token_str(text), from_bytes);
        // Trimmed as the token header is read: surrounding whitespace never makes a token.
        if text.trim() != text {
            assert_eq!(from_bytes, None);
        }

        let parsed = text.parse::<Fingerprint>().ok();
        match (&parsed, reference_fingerprint(text)) {
            (Some(fp), Some(lower)) => assert_eq!(fp.to_string(), lower),
            (None, None) => {}
            (got, want) => panic!("fingerprint {text:?}: parsed {got:?}, reference {want:?}"),
        }
    }

    if let Some(key) = from_bytes {
        // What logs show and what the admin API takes back.
        let fp = key.fingerprint();
        assert_eq!(fp.to_string().parse::<Fingerprint>(), Ok(fp));
        assert_eq!(&key.to_hex()[..16], fp.to_string());
    }
});
