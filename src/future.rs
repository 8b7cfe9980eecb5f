//! Future types.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::commit::{Commit, Touch};

/// The asynchronous path: the layer's own steps, the handler and the commit, in one box.
pub(crate) type BoxResponse<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

pin_project! {
    /// The response future of [`SessionGuard`](crate::SessionGuard): on the synchronous path,
    /// the inner service's own future (not boxed) plus the commit step; otherwise the
    /// layer's boxed continuation.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        /// The synchronous path: the handler is running; `commit` runs when it returns.
        Handler { #[pin] fut: F, commit: Option<Commit> },
        /// The asynchronous path.
        Boxed { fut: BoxResponse<B, E> },
        /// A throttled activity write, before the finished response is handed on.
        Touch { fut: Touch, res: Option<Response<B>> },
        /// An answer the layer made itself (a store failure, a missing peer address).
        Ready { res: Option<Response<B>> },
        /// The response has been handed on.
        Done,
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn handler(fut: F, commit: Commit) -> Self {
        ResponseFuture {
            state: State::Handler {
                fut,
                commit: Some(commit),
            },
        }
    }

    pub(crate) fn boxed(fut: BoxResponse<B, E>) -> Self {
        ResponseFuture {
            state: State::Boxed { fut },
        }
    }

    pub(crate) fn ready(res: Response<B>) -> Self {
        ResponseFuture {
            state: State::Ready { res: Some(res) },
        }
    }
}

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        // At most two turns: Handler may become Touch, which then finishes.
        loop {
            match state.as_mut().project() {
                StateProj::Handler { fut, commit } => {
                    let mut res = match ready!(fut.poll(cx)) {
                        Ok(res) => res,
                        Err(e) => {
                            state.set(State::Done);
                            return Poll::Ready(Err(e));
                        }
                    };
                    match commit.take().and_then(|c| c.apply(res.headers_mut())) {
                        None => {
                            state.set(State::Done);
                            return Poll::Ready(Ok(res));
                        }
                        Some(fut) => state.set(State::Touch {
                            fut,
                            res: Some(res),
                        }),
                    }
                }
                StateProj::Boxed { fut } => {
                    let out = ready!(fut.as_mut().poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(out);
                }
                StateProj::Touch { fut, res } => {
                    ready!(fut.as_mut().poll(cx));
                    let res = taken(res);
                    state.set(State::Done);
                    return Poll::Ready(Ok(res));
                }
                StateProj::Ready { res } => {
                    let res = taken(res);
                    state.set(State::Done);
                    return Poll::Ready(Ok(res));
                }
                StateProj::Done => panic!("{POLLED_AFTER_COMPLETION}"),
            }
        }
    }
}

/// The response a state holds until it is handed on; the state becomes `Done` in the same
/// poll, so only a poll after completion finds it empty.
fn taken<B>(slot: &mut Option<Response<B>>) -> Response<B> {
    match slot.take() {
        Some(res) => res,
        None => panic!("{POLLED_AFTER_COMPLETION}"),
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Handler { .. } => "Handler",
            State::Boxed { .. } => "Boxed",
            State::Touch { .. } => "Touch",
            State::Ready { .. } => "Ready",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

pin_project! {
    /// The response future of a route guard ([`Guarded`](crate::Guarded)): the inner
    /// service's future, or the guard's own refusal.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct GuardFuture<F, B> {
        #[pin]
        state: GuardState<F, B>,
    }
}

pin_project! {
    #[project = GuardStateProj]
    enum GuardState<F, B> {
        Inner { #[pin] fut: F },
        Refused { res: Option<Response<B>> },
    }
}

impl<F, B> GuardFuture<F, B> {
    pub(crate) fn inner(fut: F) -> Self {
        GuardFuture {
            state: GuardState::Inner { fut },
        }
    }

    pub(crate) fn refused(res: Response<B>) -> Self {
        GuardFuture {
            state: GuardState::Refused { res: Some(res) },
        }
    }
}

impl<F, B, E> Future for GuardFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            GuardStateProj::Inner { fut } => fut.poll(cx),
            GuardStateProj::Refused { res } => Poll::Ready(Ok(taken(res))),
        }
    }
}

impl<F, B> fmt::Debug for GuardFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            GuardState::Inner { .. } => "Inner",
            GuardState::Refused { res: Some(_) } => "Refused",
            GuardState::Refused { res: None } => "Done",
        };
        f.debug_struct("GuardFuture")
            .field("state", &state)
            .finish()
    }
}
