//! The verifier on the public vectors (src/dbsc/vectors/: from dbsc-toolkit, Apache-2.0,
//! see the README and licence there) and on the forgeries it must refuse.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::*;

const REGISTRATION: &str = include_str!("../vectors/registration.json");
const REFRESH: &str = include_str!("../vectors/refresh.json");
const ALL: &[Algorithm] = &[Algorithm::Es256, Algorithm::Rs256];

fn vector(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

fn expect(challenge: &str) -> Expect<'_> {
    Expect {
        algorithms: ALL,
        challenge,
        path: "/dbsc/registration",
        host: Some("example.com"),
    }
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A software device key, as the test client's browser has.
struct Device {
    pair: EcdsaKeyPair,
}

impl Device {
    fn new() -> Device {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Device {
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        let point = self.pair.public_key().as_ref();
        serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    fn sign(&self, header: serde_json::Value, payload: serde_json::Value) -> String {
        let input = format!("{}.{}", b64(&header), b64(&payload));
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn registration(&self, jti: &str) -> String {
        self.sign(
            serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": self.jwk()}),
            serde_json::json!({ "jti": jti }),
        )
    }
}

#[test]
fn the_registration_vector_verifies_and_yields_its_key() {
    let v = vector(REGISTRATION);
    let challenge = v["challenge"].as_str().unwrap();
    let jws = v["secureSessionResponse"].as_str().unwrap();
    let ok = verify_registration(jws, &expect(challenge)).unwrap();
    assert_eq!(ok.alg, Algorithm::Es256);
    let stored: Jwk = serde_json::from_value(v["expectedStoredBoundKey"]["jwk"].clone()).unwrap();
    assert_eq!(ok.key, stored);
    // The canonical stored form drops nothing a verifier needs and nothing private leaks in.
    assert!(!ok.key.to_json().contains("\"d\""));
}

#[test]
fn the_refresh_vector_verifies_against_the_stored_key() {
    let v = vector(REFRESH);
    let stored: Jwk = serde_json::from_value(v["storedPublicKeyJwk"].clone()).unwrap();
    let challenge = v["challenge"].as_str().unwrap();
    let jws = v["secureSessionResponse"].as_str().unwrap();
    let ok = verify_refresh(jws, &expect(challenge), &stored, Algorithm::Es256).unwrap();
    assert_eq!(ok.key, stored);
    // And not against another key.
    let other: Jwk = serde_json::from_value(Device::new().jwk()).unwrap();
    assert_eq!(
        verify_refresh(jws, &expect(challenge), &other, Algorithm::Es256),
        Err(ProofError::Signature)
    );
}

#[test]
fn a_vector_with_another_challenge_is_refused() {
    let v = vector(REGISTRATION);
    let jws = v["secureSessionResponse"].as_str().unwrap();
    assert_eq!(
        verify_registration(jws, &expect("another")),
        Err(ProofError::Challenge)
    );
}

#[test]
fn a_tampered_vector_is_refused() {
    let v = vector(REGISTRATION);
    let jws = v["secureSessionResponse"].as_str().unwrap();
    let (head, sig) = jws.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[5] ^= 1;
    let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig));
    let challenge = v["challenge"].as_str().unwrap();
    assert_eq!(
        verify_registration(&tampered, &expect(challenge)),
        Err(ProofError::Signature)
    );
}

#[test]
fn alg_none_is_refused_before_any_key_is_read() {
    let d = Device::new();
    let jws = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "dbsc+jwt", "jwk": d.jwk()})),
        b64(&serde_json::json!({"jti": "c"}))
    );
    assert_eq!(
        verify_registration(&jws, &expect("c")),
        Err(ProofError::Algorithm)
    );
}

#[test]
fn hs256_with_the_public_key_as_secret_is_refused() {
    let d = Device::new();
    let stored: Jwk = serde_json::from_value(d.jwk()).unwrap();
    let input = format!(
        "{}.{}",
        b64(&serde_json::json!({"alg": "HS256", "typ": "dbsc+jwt"})),
        b64(&serde_json::json!({"jti": "c"}))
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, stored.to_json().as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    let jws = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert_eq!(
        verify_refresh(&jws, &expect("c"), &stored, Algorithm::Es256),
        Err(ProofError::Algorithm)
    );
}

#[test]
fn an_algorithm_left_off_the_allowlist_is_refused() {
    let d = Device::new();
    let jws = d.registration("c");
    let only_rsa = Expect {
        algorithms: &[Algorithm::Rs256],
        ..expect("c")
    };
    assert_eq!(
        verify_registration(&jws, &only_rsa),
        Err(ProofError::Algorithm)
    );
    assert!(verify_registration(&jws, &expect("c")).is_ok());
}

#[test]
fn typ_must_be_dbsc_jwt() {
    let d = Device::new();
    for header in [
        serde_json::json!({"alg": "ES256", "typ": "JWT", "jwk": d.jwk()}),
        serde_json::json!({"alg": "ES256", "jwk": d.jwk()}),
        serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": d.jwk(), "crit": ["x"]}),
    ] {
        let jws = d.sign(header, serde_json::json!({"jti": "c"}));
        assert_eq!(
            verify_registration(&jws, &expect("c")),
            Err(ProofError::Type)
        );
    }
}

#[test]
fn registration_needs_a_jwk_and_refresh_refuses_one() {
    let d = Device::new();
    let stored: Jwk = serde_json::from_value(d.jwk()).unwrap();
    let bare = d.sign(
        serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt"}),
        serde_json::json!({"jti": "c"}),
    );
    assert_eq!(
        verify_registration(&bare, &expect("c")),
        Err(ProofError::KeyMissing)
    );
    assert!(verify_refresh(&bare, &expect("c"), &stored, Algorithm::Es256).is_ok());
    // A refresh bringing its own key (even the registered one) is refused.
    let with_key = d.registration("c");
    assert_eq!(
        verify_refresh(&with_key, &expect("c"), &stored, Algorithm::Es256),
        Err(ProofError::KeyNotAllowed)
    );
}

#[test]
fn a_proof_signed_by_another_key_than_its_jwk_is_refused() {
    let (d, thief) = (Device::new(), Device::new());
    let jws = thief.sign(
        serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": d.jwk()}),
        serde_json::json!({"jti": "c"}),
    );
    assert_eq!(
        verify_registration(&jws, &expect("c")),
        Err(ProofError::Signature)
    );
}

#[test]
fn aud_is_checked_when_present() {
    let d = Device::new();
    let header = serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": d.jwk()});
    let good = d.sign(
        header.clone(),
        serde_json::json!({"jti": "c", "aud": "https://example.com/dbsc/registration"}),
    );
    assert!(verify_registration(&good, &expect("c")).is_ok());
    for aud in [
        serde_json::json!("https://evil.example/dbsc/registration"),
        serde_json::json!("https://example.com/other"),
        serde_json::json!("http://example.com/dbsc/registration"),
        serde_json::json!(["https://example.com/dbsc/registration"]),
    ] {
        let jws = d.sign(header.clone(), serde_json::json!({"jti": "c", "aud": aud}));
        assert_eq!(
            verify_registration(&jws, &expect("c")),
            Err(ProofError::Audience)
        );
    }
}

#[test]
fn rsa_keys_under_2048_bits_are_refused() {
    // A 1024-bit modulus (any odd number of that size: refused before any signature check).
    let n = URL_SAFE_NO_PAD.encode([0xc3u8; 128]);
    let jwk = serde_json::json!({"kty": "RSA", "n": n, "e": "AQAB"});
    let jws = format!(
        "{}.{}.{}",
        b64(&serde_json::json!({"alg": "RS256", "typ": "dbsc+jwt", "jwk": jwk})),
        b64(&serde_json::json!({"jti": "c"})),
        URL_SAFE_NO_PAD.encode([1u8; 128])
    );
    assert_eq!(
        verify_registration(&jws, &expect("c")),
        Err(ProofError::Key)
    );
    // An EC key under RS256 (or the reverse) is refused too.
    let ec = Device::new().jwk();
    let jws = format!(
        "{}.{}.AAAA",
        b64(&serde_json::json!({"alg": "RS256", "typ": "dbsc+jwt", "jwk": ec})),
        b64(&serde_json::json!({"jti": "c"})),
    );
    assert_eq!(
        verify_registration(&jws, &expect("c")),
        Err(ProofError::Key)
    );
}

#[test]
fn garbage_and_oversized_proofs_are_refused_without_panicking() {
    let d = Device::new();
    let good = d.registration("c");
    let huge = "A".repeat(MAX_PROOF_LEN + 1);
    let padded = format!("{good}=");
    let big_header = format!("{}.e30.AA", "A".repeat(6000));
    for jws in [
        "",
        ".",
        "..",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        huge.as_str(),
        padded.as_str(),
        big_header.as_str(),
        "eyJ9.e30.AA",
    ] {
        assert!(verify_registration(jws, &expect("c")).is_err(), "{jws:.40}");
    }
    let huge_err = verify_registration(&huge, &expect("c"));
    assert_eq!(huge_err, Err(ProofError::TooLarge));
}
