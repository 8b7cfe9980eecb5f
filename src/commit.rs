//! The commit step: what goes back with the handler's response. A new or rotated ID goes out,
//! a logout sends the removal cookie, and a session that was only read records its activity
//! at most once per touch interval.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Request};

use crate::client_ip::ClientAddr;
use crate::config::Config;
use crate::core::DynCore;
use crate::events::SessionEvent;
use crate::record::SessionRecord;
use crate::session::{Loaded, Outcome, Session};
use crate::store::WriteOutcome;
use crate::transport::{self, Via};

/// A throttled activity write, awaited before the response is handed on.
pub(crate) type Touch = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The commit step, made when the session handle is attached and run when the handler's
/// response is ready.
pub(crate) struct Commit {
    session: Session,
    /// Which way a new token goes back.
    reply: Via,
    /// The request's time, from the layer's clock.
    now: SystemTime,
    /// The loaded session's activity touch is due (if the handler does not write).
    touch_due: bool,
}

impl Commit {
    /// Puts the session handle into the request's extensions (the one value the layer adds:
    /// the client address is read through it), and returns the commit step for its response.
    pub(crate) fn attach<B, C: DynCore>(
        req: &mut Request<B>,
        core: Arc<C>,
        current: Option<Loaded>,
        client: ClientAddr,
        reply: Via,
        now: SystemTime,
    ) -> Commit {
        let touch_due = current
            .as_ref()
            .is_some_and(|live| touch_due(&core.env().config, &live.record, now));
        let session = Session::new(
            core as Arc<dyn DynCore>,
            current,
            client,
            (
                req.method(),
                req.uri(),
                req.headers().get(http::header::USER_AGENT).cloned(),
            ),
        );
        req.extensions_mut().insert(session.clone());
        Commit {
            session,
            reply,
            now,
            touch_due,
        }
    }

    /// Hands out a new or rotated ID, removes the cookie after logout, or (at most once per
    /// touch interval) returns the activity write to await. Never sends a removal cookie for
    /// a token it did not end itself: that could clobber the cookie a concurrent login just
    /// rotated.
    pub(crate) fn apply(self, headers: &mut HeaderMap) -> Option<Touch> {
        // The common case, a read between touches, returns at once: no lock, no lookup.
        match self.session.outcome(self.touch_due) {
            Outcome::Unchanged => None,
            Outcome::Issued { token, record } => {
                let config = &self.session.core().env().config;
                let max_age = config.persistent_cookie(&record).then(|| {
                    config
                        .absolute_expiry(&record)
                        .duration_since(self.now)
                        .unwrap_or(Duration::ZERO)
                });
                transport::issue_token(headers, &config.transport, self.reply, &token, max_age);
                #[cfg(feature = "dbsc")]
                crate::device::offer(config, &record, headers);
                None
            }
            Outcome::Ended => {
                let config = &self.session.core().env().config;
                transport::remove_token(headers, &config.transport, self.reply);
                None
            }
            Outcome::TouchDue(live) => Some(touch(self.session.core().clone(), live, self.now)),
        }
    }
}

/// Whether `record`'s last recorded activity is a touch interval old.
fn touch_due(config: &Config, record: &SessionRecord, now: SystemTime) -> bool {
    now.duration_since(record.last_seen)
        .is_ok_and(|since| since >= config.touch_interval_for(record))
}

/// Records activity on a read, at most once per touch interval (idle / 20, see
/// [`touch_due`]), so a busy session costs a store write only now and then.
fn touch(core: Arc<dyn DynCore>, live: Loaded, now: SystemTime) -> Touch {
    let mut rec = SessionRecord::clone(&live.record);
    rec.last_seen = now;
    rec.version += 1;
    let ttl = core.env().config.store_ttl(&rec, now);
    let (key, expected) = (live.key, live.record.version);
    Box::pin(async move {
        // A conflict means another request wrote meanwhile, which recorded activity too.
        match core.store().update(key, expected, Arc::new(rec), ttl).await {
            Ok(WriteOutcome::Applied | WriteOutcome::Conflict) => {}
            Err(e) => core.env().emit(SessionEvent::store_error(
                Some(key.fingerprint()),
                "touch",
                &e,
            )),
        }
    })
}
