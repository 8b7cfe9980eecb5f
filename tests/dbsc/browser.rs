//! The Rust client that plays Chromium: a P-256 device key, a cookie jar, the DBSC
//! session id, and the protocol's requests.

use super::*;

/// A device key, as Chromium keeps one (software key here, TPM there).
pub(crate) struct DeviceKey(EcdsaKeyPair);

impl DeviceKey {
    pub(crate) fn new() -> DeviceKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        DeviceKey(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    pub(crate) fn jwk(&self) -> Value {
        let p = self.0.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256",
               "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])})
    }

    pub(crate) fn sign(&self, header: &Value, payload: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    pub(crate) fn registration_proof(&self, challenge: &str) -> String {
        self.sign(
            &json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": self.jwk()}),
            &json!({ "jti": challenge }),
        )
    }

    pub(crate) fn refresh_proof(&self, challenge: &str) -> String {
        self.sign(
            &json!({"alg": "ES256", "typ": "dbsc+jwt"}),
            &json!({ "jti": challenge }),
        )
    }
}

pub(crate) fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub(crate) fn sets_cookie(&self, name: &str) -> bool {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|v| v.to_str().unwrap().starts_with(&format!("{name}=")))
    }
}

/// A cookie jar, a device key and the DBSC session id: what Chromium keeps per site.
pub(crate) struct Browser {
    pub(crate) app: Router,
    pub(crate) jar: BTreeMap<String, String>,
    pub(crate) key: DeviceKey,
    pub(crate) dbsc_id: Option<String>,
    pub(crate) registration: Option<(String, String)>,
    pub(crate) peer: std::net::SocketAddr,
}

impl Browser {
    pub(crate) fn new(app: &Router) -> Browser {
        Browser {
            app: app.clone(),
            jar: BTreeMap::new(),
            key: DeviceKey::new(),
            dbsc_id: None,
            registration: None,
            peer: CLIENT,
        }
    }

    /// A thief with a copy of this browser's cookies, but not its key.
    pub(crate) fn copy_cookies(&self) -> Browser {
        Browser {
            jar: self.jar.clone(),
            dbsc_id: self.dbsc_id.clone(),
            registration: self.registration.clone(),
            ..Browser::new(&self.app)
        }
    }

    pub(crate) async fn send(
        &mut self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(uri);
        if !self.jar.is_empty() {
            let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            b = b.header(header::COOKIE, cookies.join("; "));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .extension(PeerAddr(self.peer))
            .body(Body::empty())
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        for v in res.headers().get_all(header::SET_COOKIE) {
            let text = v.to_str().unwrap();
            let (pair, attrs) = text.split_once("; ").unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attrs.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        let (status, headers) = (res.status(), res.headers().clone());
        Reply {
            status,
            headers,
            body: body_text(res).await,
        }
    }

    pub(crate) async fn get_me(&mut self) -> StatusCode {
        self.send(Method::GET, "/me", &[]).await.status
    }

    /// Logs in and reads the registration offer: `(path, challenge)`.
    pub(crate) async fn login(&mut self) -> Reply {
        let r = self.send(Method::POST, "/login", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let offer = r
            .header("secure-session-registration")
            .expect("a login offers registration")
            .to_owned();
        self.registration = Some(parse_offer(&offer));
        r
    }

    pub(crate) async fn register_with(&mut self, proof: &str) -> Reply {
        let path = self.registration.clone().unwrap().0;
        let r = self
            .send(Method::POST, &path, &[("secure-session-response", proof)])
            .await;
        if r.status == StatusCode::OK {
            self.dbsc_id = r.json()["session_identifier"].as_str().map(str::to_owned);
        }
        r
    }

    pub(crate) async fn register(&mut self) -> Reply {
        let challenge = self.registration.clone().unwrap().1;
        let proof = self.key.registration_proof(&challenge);
        let r = self.register_with(&proof).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r
    }

    /// A refresh without a proof: the 403 and its challenge.
    pub(crate) async fn challenge(&mut self) -> String {
        let id = self.dbsc_id.clone().unwrap();
        let r = self
            .send(Method::POST, REFRESH, &[("sec-secure-session-id", &id)])
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(!r.sets_cookie(BOUND));
        let header = r.header("secure-session-challenge").expect("a challenge");
        let (challenge, rest) = header[1..].split_once('"').unwrap();
        assert_eq!(rest, format!(";id=\"{id}\""));
        challenge.to_owned()
    }

    pub(crate) async fn refresh_with(&mut self, proof: &str) -> Reply {
        let id = self.dbsc_id.clone().unwrap();
        self.send(
            Method::POST,
            REFRESH,
            &[
                ("sec-secure-session-id", &id),
                ("secure-session-response", proof),
            ],
        )
        .await
    }

    /// The whole refresh as Chromium does it: 403 challenge, then the signed proof.
    pub(crate) async fn refresh(&mut self) -> String {
        let challenge = self.challenge().await;
        let proof = self.key.refresh_proof(&challenge);
        let r = self.refresh_with(&proof).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.sets_cookie(BOUND));
        proof
    }
}

/// `(ES256 RS256);path="…";challenge="…"` → (path, challenge).
pub(crate) fn parse_offer(offer: &str) -> (String, String) {
    assert!(offer.starts_with("(ES256 RS256);"), "{offer}");
    let param = |name: &str| {
        let start = offer.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        offer[start..].split('"').next().unwrap().to_owned()
    };
    (param("path"), param("challenge"))
}

impl Browser {
    pub(crate) async fn register_with_path(&mut self, proof: &str) -> Reply {
        self.send(
            Method::POST,
            REGISTRATION,
            &[("secure-session-response", proof)],
        )
        .await
    }
}
