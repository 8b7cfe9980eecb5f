//! What the endpoints answer: a status, headers and perhaps JSON, turned into a response of
//! the service's own body type; always `Cache-Control: no-store`.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::body;
use crate::config::Env;
use crate::events::SessionEvent;

/// The answer being built.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    json: Option<String>,
}

impl Reply {
    pub(crate) fn status(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            json: None,
        }
    }

    pub(crate) fn with_json(mut self, json: serde_json::Value) -> Reply {
        self.json = Some(json.to_string());
        self
    }

    /// The store failed: 503, try again in a second.
    pub(crate) fn unavailable() -> Reply {
        let mut r = Reply::status(StatusCode::SERVICE_UNAVAILABLE);
        r.headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        r
    }

    /// The response, its JSON written into the service's body type (or, for a body type the
    /// layer cannot fill, an empty body and a `ConfigWarning` naming `endpoint`).
    pub(crate) fn into_response<B: Default + 'static>(
        mut self,
        env: &Env,
        endpoint: &str,
    ) -> Response<B> {
        self.headers
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let body = match self.json.take() {
            None => B::default(),
            Some(json) => {
                self.headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                body::json::<B>(json).unwrap_or_else(|| {
                    env.emit(SessionEvent::ConfigWarning {
                        message: format!(
                            "the DBSC {endpoint} answer needs a JSON body, but the service's \
                             body type is not one the layer can fill (axum Body, tonic Body, \
                             String, Vec<u8>): the browser will drop the binding"
                        ),
                    });
                    B::default()
                })
            }
        };
        let mut res = Response::new(body);
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers;
        res
    }
}

/// `{"continue": false}`: ends the browser's DBSC session.
pub(crate) fn end() -> Reply {
    Reply::status(StatusCode::OK).with_json(serde_json::json!({ "continue": false }))
}
