//! The tower [`Layer`], and the administration of users' sessions through it.

use std::sync::Arc;

use tower_layer::Layer;

use crate::admin::{self, SessionInfo};
use crate::config::{Hooks, Settings};
use crate::core::Core;
use crate::id::Fingerprint;
use crate::policy::ValidationPolicy;
use crate::service::SessionGuard;
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
/// The store is any [`SessionStore`]; the layer's type does not name it, so
/// `SessionGuardLayer` is the type of a layer on any store with the default policy. Keep a
/// clone of your store for what is particular to it (the stores are cheap to clone).
///
/// `P` is the post-authentication policy, asked on every request of an authenticated session
/// after the pin check. It is a type parameter, so a synchronous policy costs no boxing and no
/// allocation; by default it is the built-in [`ValidationPolicy`] (without rules until you
/// give it some).
pub struct SessionGuardLayer<P = ValidationPolicy> {
    core: Arc<Core<P>>,
}

impl<P> SessionGuardLayer<P> {
    pub(crate) fn from_core(core: Core<P>) -> Self {
        SessionGuardLayer {
            core: Arc::new(core),
        }
    }

    #[cfg(feature = "test-util")]
    pub(crate) fn core(&self) -> &Arc<Core<P>> {
        &self.core
    }
}

impl<P> Clone for SessionGuardLayer<P> {
    fn clone(&self) -> Self {
        SessionGuardLayer {
            core: self.core.clone(),
        }
    }
}

impl<P> std::fmt::Debug for SessionGuardLayer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGuardLayer")
            .field("env", &self.core.env)
            .finish_non_exhaustive()
    }
}

impl SessionGuardLayer {
    /// The layer on `store` with every default (see [`config`](crate::config)).
    pub fn new(store: impl SessionStore) -> Self {
        let env = match Settings::default().validate(Hooks::default(), Vec::new(), false) {
            Ok(env) => env,
            // The config module's unit tests hold the defaults valid.
            Err(e) => unreachable!("the default configuration is invalid: {e}"),
        };
        SessionGuardLayer::from_core(Core {
            store: Box::new(store),
            policy: ValidationPolicy::permit_all(),
            env,
        })
    }
}

/// Administration: what an operator or an admin page does with a user's sessions. These go
/// through the store's per-user index and emit `Revoked` events like the rest of the layer.
impl<P> SessionGuardLayer<P> {
    /// The user's live sessions, oldest first.
    ///
    /// # Errors
    ///
    /// A store error (the store could not be read).
    pub async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let list = admin::list(&*self.core.store, &self.core.env, user_id, None).await?;
        Ok(list.into_iter().map(|(_, info)| info).collect())
    }

    /// Ends every session of the user (an administrator's "log this user out everywhere").
    /// Returns how many were live. Requests in flight on those sessions can no longer write,
    /// and every later request is refused, on every instance that shares the store.
    ///
    /// # Errors
    ///
    /// A store error; sessions ended before it stay ended.
    pub async fn revoke_user(&self, user_id: &str) -> Result<usize, StoreError> {
        admin::revoke(
            &*self.core.store,
            &self.core.env,
            user_id,
            |_| true,
            "admin",
        )
        .await
    }

    /// Ends one session of the user, by fingerprint. Returns whether it was live.
    ///
    /// # Errors
    ///
    /// A store error.
    pub async fn revoke_session(&self, user_id: &str, id: Fingerprint) -> Result<bool, StoreError> {
        let n = admin::revoke(
            &*self.core.store,
            &self.core.env,
            user_id,
            |s| s.id == id,
            "admin",
        )
        .await?;
        Ok(n > 0)
    }
}

impl<S, P> Layer<S> for SessionGuardLayer<P> {
    type Service = SessionGuard<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionGuard::new(inner, self.core.clone())
    }
}
