//! The tower [`Layer`], and the administration of users' sessions through it.

use std::sync::Arc;

use tower_layer::Layer;

use crate::admin::{self, SessionInfo};
use crate::config::{Hooks, Settings};
use crate::core::Core;
use crate::id::Fingerprint;
use crate::policy::ValidationPolicy;
use crate::service::SessionGuard;
use crate::store::memory::MemoryStore;
use crate::store::{SessionStore, StoreError};

/// Adds server-side sessions to a service. Cheap to clone.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_session_guard::{MemoryStore, Session, SessionGuardLayer};
///
/// let layer = SessionGuardLayer::builder(MemoryStore::new())
///     .idle_timeout(std::time::Duration::from_secs(15 * 60))
///     .build()
///     .expect("valid session configuration");
/// let app: Router = Router::new()
///     .route("/", get(|session: Session| async move { format!("{:?}", session.identity()) }))
///     .layer(layer);
/// ```
///
/// `P` is the post-authentication policy, asked on every request of an authenticated session
/// after the pin check. It is a type parameter, so a synchronous policy costs no boxing and no
/// allocation; by default it is the built-in [`ValidationPolicy`] (without rules until you
/// give it some).
pub struct SessionGuardLayer<St = MemoryStore, P = ValidationPolicy> {
    core: Arc<Core<St, P>>,
}

impl<St, P> SessionGuardLayer<St, P> {
    pub(crate) fn from_core(core: Core<St, P>) -> Self {
        SessionGuardLayer {
            core: Arc::new(core),
        }
    }
}

impl<St, P> Clone for SessionGuardLayer<St, P> {
    fn clone(&self) -> Self {
        SessionGuardLayer {
            core: self.core.clone(),
        }
    }
}

impl<St, P> std::fmt::Debug for SessionGuardLayer<St, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGuardLayer")
            .field("env", &self.core.env)
            .finish_non_exhaustive()
    }
}

impl<St: SessionStore> SessionGuardLayer<St> {
    /// The layer with every default (see [`config`](crate::config)).
    pub fn new(store: St) -> Self {
        let env = match Settings::default().validate(Hooks::default(), Vec::new()) {
            Ok(env) => env,
            // The config module's unit tests hold the defaults valid.
            Err(e) => unreachable!("the default configuration is invalid: {e}"),
        };
        SessionGuardLayer::from_core(Core {
            store,
            policy: ValidationPolicy::permit_all(),
            env,
        })
    }
}

impl<St, P> SessionGuardLayer<St, P> {
    /// The store, for administration.
    pub fn store(&self) -> &St {
        &self.core.store
    }
}

/// Administration: what an operator or an admin page does with a user's sessions. These go
/// through the store's per-user index and emit `Revoked` events like the rest of the layer.
impl<St: SessionStore, P> SessionGuardLayer<St, P> {
    /// The user's live sessions, oldest first.
    pub async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let list = admin::list(&self.core.store, &self.core.env, user_id, None).await?;
        Ok(list.into_iter().map(|(_, info)| info).collect())
    }

    /// Ends every session of the user (an administrator's "log this user out everywhere").
    /// Returns how many were live. Requests in flight on those sessions can no longer write,
    /// and every later request is refused, on every instance that shares the store.
    pub async fn revoke_user(&self, user_id: &str) -> Result<usize, StoreError> {
        admin::revoke(&self.core.store, &self.core.env, user_id, |_| true, "admin").await
    }

    /// Ends one session of the user, by fingerprint. Returns whether it was live.
    pub async fn revoke_session(&self, user_id: &str, id: Fingerprint) -> Result<bool, StoreError> {
        let n = admin::revoke(
            &self.core.store,
            &self.core.env,
            user_id,
            |s| s.id == id,
            "admin",
        )
        .await?;
        Ok(n > 0)
    }
}

impl<S, St, P> Layer<S> for SessionGuardLayer<St, P> {
    type Service = SessionGuard<S, St, P>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionGuard::new(inner, self.core.clone())
    }
}
