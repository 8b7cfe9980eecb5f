//! Device-bound session proofs (feature `dbsc`) from untrusted bytes: the
//! `Secure-Session-Response` JWS of a registration and of a refresh, and the DBSC request
//! headers. Never a panic; and a proof that verifies must name an algorithm of the allowlist
//! and, for a refresh, the stored key (checked here, not merely the absence of a crash).
//! Seeds: the public test vectors of `src/dbsc/vectors/` (Apache-2.0, see their LICENSE).
#![no_main]

use std::sync::OnceLock;

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tower_session_guard::dbsc::header;
use tower_session_guard::dbsc::jws::{self, Algorithm, Expect, Jwk};

/// The refresh vector's stored key and challenge.
fn stored() -> &'static (Jwk, String) {
    static STORED: OnceLock<(Jwk, String)> = OnceLock::new();
    STORED.get_or_init(|| {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../src/dbsc/vectors/refresh.json"))
                .expect("the vector is JSON");
        let key = serde_json::from_value(v["storedPublicKeyJwk"].clone()).expect("a JWK");
        let challenge = v["challenge"].as_str().expect("a challenge").to_owned();
        (key, challenge)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let _ = header::session_id(&value);
        let _ = header::proof(&value);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (key, challenge) = stored();
    let allow = [Algorithm::Es256, Algorithm::Rs256];
    let expect = Expect {
        algorithms: &allow,
        challenge,
        path: "/dbsc/refresh",
        host: Some("127.0.0.1"),
    };
    if let Ok(ok) = jws::verify_registration(text, &expect) {
        assert!(
            allow.contains(&ok.alg),
            "a registration verified with {:?}",
            ok.alg
        );
    }
    if let Ok(ok) = jws::verify_refresh(text, &expect, key, Algorithm::Es256) {
        assert_eq!(
            ok.alg,
            Algorithm::Es256,
            "a refresh verified with another algorithm"
        );
        assert_eq!(&ok.key, key, "a refresh verified with another key");
    }
    // ES256 only: an RS256 (or any other) header must not verify.
    let es_only = Expect {
        algorithms: &allow[..1],
        ..expect
    };
    if let Ok(ok) = jws::verify_registration(text, &es_only) {
        assert_eq!(ok.alg, Algorithm::Es256);
    }
});
