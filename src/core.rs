//! What the layer, its services and every `Session` handle share: the store, the policy and
//! the environment (configuration, hooks, budgets) behind one reference count, so a service
//! clone (one per request under `axum::serve`) and a `Session` handle each cost one atomic
//! increment, not three.

use std::future::Future;
use std::pin::Pin;

use crate::config::Env;
use crate::policy::{Decision, PolicyContext, PostAuthPolicy};
use crate::store::DynStore;

/// The store is held as a trait object: its one call on the hot path, `load_now`, costs a
/// virtual call (3 instructions per request, measured alone with callgrind; the whole
/// authenticated request counts the same as with a generic store), and in exchange the
/// layer's type does not name the store (`SessionGuardLayer<P>`).
pub(crate) struct Core<P> {
    pub(crate) store: Box<dyn DynStore>,
    pub(crate) policy: P,
    pub(crate) env: Env,
}

/// A [`Core`] with its store's and policy's types erased, for `Session` handles: their
/// writes are off the hot path, so a virtual call there costs nothing measurable, and the
/// handle's type stays free of the layer's type parameters.
pub(crate) trait DynCore: Send + Sync + 'static {
    fn store(&self) -> &dyn DynStore;
    fn env(&self) -> &Env;
    /// The policy's decision on a login about to happen (off the hot path, so boxed).
    fn login_decision<'a>(
        &'a self,
        ctx: &'a PolicyContext<'a>,
    ) -> Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;
}

impl<P: PostAuthPolicy> DynCore for Core<P> {
    fn store(&self) -> &dyn DynStore {
        &*self.store
    }

    fn env(&self) -> &Env {
        &self.env
    }

    fn login_decision<'a>(
        &'a self,
        ctx: &'a PolicyContext<'a>,
    ) -> Pin<Box<dyn Future<Output = Decision> + Send + 'a>> {
        match self.policy.evaluate_now(ctx) {
            Some(decision) => Box::pin(std::future::ready(decision)),
            None => Box::pin(self.policy.evaluate(ctx)),
        }
    }
}
