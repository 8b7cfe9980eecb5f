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

/// A 2048-bit RSA test key made for these tests with `openssl genpkey` (PKCS#8, base64), and
/// its modulus as a JWK `n`: RS256 proofs verify, at registration and at refresh.
const RSA_PKCS8: &str = concat!(
    "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCenuNzQ/O6FD+a7F10TZ88Gzu1p3DkrYrDD7uA",
    "kxB9VgUoGTXRAov/l3Di0KUMwOh2BZ+XRp6rLVNxOlwrR9v85q02PbCBPfxTN86tkkCae6tb3K1MZ/YOvqGtxowl",
    "TIEEtfEQM5cyd35ZtxE2l3hA2JpTpkngypBagWVX8z0CSZ89zGvWpxSfNqsxwxPpZLrxjwyghw0LeckfIFCDjCLH",
    "qaYIDGeomNWmkDmnH9b65s2f5CUMEqoCsAClywRjla5DnYlVJ6NxHeMwQ+y6yFOp1y6XY5kaS44txDD77x7ZKZ5T",
    "isQ4a5HAcFuHgbjwVzLZIChVoY68ZGtmX5g1cmilAgMBAAECggEAF7VrYnorVDUx60fIZtmHTdD1lB71On5PTv1A",
    "qw967SZOBQKnpEL7hqDYfakZUmuvE0efOq7n3nFwQcIAWXPB3O45wPFoOsPMvZTfg9q9ZJnMMMyDlqJfXoV93bSJ",
    "6V/4VNTrtYk7NeQzHYPFwzbRVu1JO+w5/1XSTRopegOLAJag7a3gC8E2ZY5UCwZL6nqXkrA7ZqSiEPwJSkI6NKgq",
    "LIPLzyFE0J6xB9ZZnpDeit+RSw3OiU7I9shkgSCmkLiKuvvC/JBSDXypLB9rHO0HeuLboWUd/sGg1MK3GJOnjF5y",
    "L1mENCbVMSVlnBcUwyEnjDe/Tvc9CUJuzMev79kSDQKBgQDMsEc9fab9ngTgYwtW52QhCVd2Xf67qcDNTbenC7FK",
    "RQdwW5xq/roL/l+WQCJgpeLWPAzXgCskCEySkaWwjhUmkB2RpHD0962MKMrbhecLN8UB4t6+AHphRzd8TBAN8mJt",
    "K0KtUVoUugBTYBGilyMGhMnTmVzcJFl9r72RAYEwowKBgQDGYj0ejhJe+Z02pQQzAjulMI1tFa1L4KBrUve7yE2W",
    "UAEPFZTLNlPKQv06vxwhy5ma9sOHufzXcvYc1zJ/kpZmspb5lu3Bg3/LR2YPxxHmKGYsWZ9uwuNHlPrWl7Qz9sft",
    "PYuJG7FJ8UMsw4bjgyarmd0HghscEz5Zmz/KAltuFwKBgDr6wExTnH6Pvc/6OhY8bnmme3E7/F6Ot2Nw9W5IzDke",
    "UtppS1T5ORqjnV9p833tzsL0Yq7l24hya74AAcIx7p5CAIMq4vFzPKqaRnmix8RPuZClkpElCh5lqvNB545dPUc/",
    "o+LVAiPexKFBmVNEQW9ra8xw8HTudGrm7LSPvm4JAoGAKvgOSvb0zbN9NN/LKA08xAvfJhiC36N4u6ZN2FOLUppj",
    "kFPZVaafwXh/BuFsA3no/GKkeVp0hGn3GsoVuwISJ45ZGxhwyPBllq8RUSuKGfL4JnUHDmOR/Ogs6JwVQQgbx6wD",
    "9B+WZ/Ck3yY+qjq2/oYmFME+g/c7EweIaoXWLeMCgYASCkGdsh1mUuRRwCA6Mk5zVkgQ27fWTV+jDv0T5NfDMq4B",
    "HUpymu9LUN4JYeCiz1iVgjCB4FHEk+SDzPsAblDwc9PnFvdW/kHWDX1UvzMUcTIjeu4FQw6N66Vl4FaPdqecjHKr",
    "BLaj9N3VkE4X0I5zs9IthkJTIONinFGH/d1zTA==",
);
const RSA_N: &str = "np7jc0PzuhQ_muxddE2fPBs7tadw5K2Kww-7gJMQfVYFKBk10QKL_5dw4tClDMDodgWfl0aeqy1TcTpcK0fb_OatNj2wgT38UzfOrZJAmnurW9ytTGf2Dr6hrcaMJUyBBLXxEDOXMnd-WbcRNpd4QNiaU6ZJ4MqQWoFlV_M9AkmfPcxr1qcUnzarMcMT6WS68Y8MoIcNC3nJHyBQg4wix6mmCAxnqJjVppA5px_W-ubNn-QlDBKqArAApcsEY5WuQ52JVSejcR3jMEPsushTqdcul2OZGkuOLcQw--8e2SmeU4rEOGuRwHBbh4G48Fcy2SAoVaGOvGRrZl-YNXJopQ";

fn rsa_sign(header: &serde_json::Value, payload: &serde_json::Value) -> String {
    use base64::engine::general_purpose::STANDARD;
    use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
    let pair = RsaKeyPair::from_pkcs8(&STANDARD.decode(RSA_PKCS8).unwrap()).unwrap();
    let input = format!("{}.{}", b64(header), b64(payload));
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[test]
fn rs256_proofs_verify_at_registration_and_refresh() {
    let jwk = serde_json::json!({"kty": "RSA", "n": RSA_N, "e": "AQAB"});
    let registration = rsa_sign(
        &serde_json::json!({"alg": "RS256", "typ": "dbsc+jwt", "jwk": jwk}),
        &serde_json::json!({"jti": "c"}),
    );
    let ok = verify_registration(&registration, &expect("c")).unwrap();
    assert_eq!(ok.alg, Algorithm::Rs256);
    let stored = Jwk::from_json(&ok.key.to_json()).unwrap();
    let refresh = rsa_sign(
        &serde_json::json!({"alg": "RS256", "typ": "dbsc+jwt"}),
        &serde_json::json!({"jti": "d"}),
    );
    assert!(verify_refresh(&refresh, &expect("d"), &stored, Algorithm::Rs256).is_ok());
    // The stored RSA key does not verify an ES256 proof, nor an RS256 one under ES256.
    let es = Device::new().sign(
        serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt"}),
        serde_json::json!({"jti": "d"}),
    );
    assert_eq!(
        verify_refresh(&es, &expect("d"), &stored, Algorithm::Rs256),
        Err(ProofError::Algorithm)
    );
    assert_eq!(
        verify_refresh(&refresh, &expect("d"), &stored, Algorithm::Es256),
        Err(ProofError::Algorithm)
    );
    // A modulus with a leading zero byte is the same key (minimal form before ring).
    let mut n = URL_SAFE_NO_PAD.decode(RSA_N).unwrap();
    n.insert(0, 0);
    let padded: Jwk = serde_json::from_value(
        serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"}),
    )
    .unwrap();
    assert!(verify_refresh(&refresh, &expect("d"), &padded, Algorithm::Rs256).is_ok());
}

/// Every single-character change anywhere in a valid proof (header, payload, signature, the
/// dots) is refused, without panicking: the signature covers all of it, and base64url is
/// decoded strictly (no padding, no stray trailing bits), so no edit keeps a proof valid.
#[test]
fn every_one_character_edit_of_a_valid_proof_is_refused() {
    let d = Device::new();
    let good = d.registration("c");
    assert!(verify_registration(&good, &expect("c")).is_ok());
    let mut edits = 0;
    for (i, original) in good.char_indices() {
        for replacement in ['A', 'B', 'z', '0', '-', '_', '.', '=', ' '] {
            if replacement == original {
                continue;
            }
            let mut edited = good.clone();
            edited.replace_range(i..i + 1, &replacement.to_string());
            assert!(
                verify_registration(&edited, &expect("c")).is_err(),
                "an edit at {i} ({original} → {replacement}) still verified"
            );
            edits += 1;
        }
    }
    assert!(edits >= good.len() * 8, "{edits}");
}
