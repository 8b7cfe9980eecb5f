//! Helpers for applications' own unit tests (feature `test-util`).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::client_ip::ClientAddr;
use crate::core::DynCore;
use crate::layer::SessionGuardLayer;
use crate::record::Identity;
use crate::session::{Session, SessionError};
use crate::store::memory::MemoryStore;

#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
impl Session {
    /// A session for a handler's unit test, without a server: on its own in-memory store with
    /// the default configuration, for a request from 127.0.0.1. With an identity it is
    /// logged in (as if `login` had run); without, there is no session yet, and a write
    /// creates a guest session as in a request. Reads and writes work as they do in a
    /// request; nothing is sent anywhere.
    ///
    /// ```
    /// use tower_session_guard::{Identity, Session, SessionError};
    ///
    /// // The handler under test.
    /// async fn add_to_cart(session: Session, item: &str) -> Result<usize, SessionError> {
    ///     let n: Vec<String> = session
    ///         .update("cart", |cart: Option<Vec<String>>| {
    ///             let mut cart = cart.unwrap_or_default();
    ///             cart.push(item.to_owned());
    ///             cart
    ///         })
    ///         .await?;
    ///     Ok(n.len())
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), SessionError> {
    /// let session = Session::for_test(Some(Identity::new("alice"))).await?;
    /// assert_eq!(add_to_cart(session.clone(), "book").await?, 1);
    /// assert_eq!(add_to_cart(session.clone(), "pen").await?, 2);
    /// assert_eq!(session.identity().map(|i| i.user_id.clone()), Some("alice".to_owned()));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Only what `login` could answer on a fresh in-memory store, which does not happen with
    /// the default configuration.
    pub async fn for_test(identity: Option<Identity>) -> Result<Session, SessionError> {
        let layer = SessionGuardLayer::new(MemoryStore::new());
        let core: Arc<dyn DynCore> = layer.core().clone();
        let session = Session::new(
            core,
            None,
            ClientAddr::Known(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            (&http::Method::GET, &http::Uri::from_static("/"), None),
        );
        if let Some(identity) = identity {
            session.login(identity).await?;
        }
        Ok(session)
    }
}
