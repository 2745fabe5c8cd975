//! A check in front of routes that either answers a request itself (a 401, a 503) or passes
//! it on untouched.
//!
//! `axum::middleware::from_fn` does the same with any async function, at a price paid on
//! every request: it clones the inner service (a boxed clone) and boxes the function's
//! future. The admin API's checks are synchronous, so [`Guard`] runs them inline and
//! returns the inner service's own future: under callgrind the two `from_fn` checks of
//! `POST /v1/messages` cost about 6,500 instructions per request, 8% of an HTTP echo.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use tower_layer::Layer;
use tower_service::Service;

use super::AppState;

/// A synchronous check of a request: `Err` is the answer that stops it. The answer is a
/// whole `Response` (128 bytes) by value: refusing is the rare path, and boxing it would
/// only add an allocation there.
pub(super) type Check = fn(&AppState, &Request) -> Result<(), Response>;

/// Puts `check` in front of the routes it layers.
#[derive(Clone)]
pub(super) struct Guard {
    state: AppState,
    check: Check,
}

impl Guard {
    pub(super) fn new(state: AppState, check: Check) -> Self {
        Self { state, check }
    }
}

impl<S> Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

/// A service behind a [`Guard`].
#[derive(Clone)]
pub(super) struct Guarded<S> {
    inner: S,
    guard: Guard,
}

impl<S> Service<Request> for Guarded<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Passed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match (self.guard.check)(&self.guard.state, &request) {
            Ok(()) => Passed::Inner {
                future: self.inner.call(request),
            },
            Err(answer) => Passed::Stopped {
                answer: Some(answer),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, or the guard's own answer.
    #[project = PassedProj]
    pub(super) enum Passed<F> {
        Inner { #[pin] future: F },
        Stopped { answer: Option<Response> },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Passed<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            PassedProj::Inner { future } => future.poll(cx),
            PassedProj::Stopped { answer } => {
                // Polled once: it is ready at once. A poll after that is a caller's bug;
                // answer it with an empty 500 rather than panic.
                Poll::Ready(Ok(answer.take().unwrap_or_else(|| {
                    let mut response = Response::default();
                    *response.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    response
                })))
            }
        }
    }
}
