//! Where the host is in its life, as the API shows it: starting (handlers being restored),
//! ready, or shutting down. `/readyz` answers 200 only when ready; while shutting down, new
//! signals are refused with 503 while the ones in flight finish.

use std::sync::atomic::{AtomicU8, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::signal::{Body, Signal};

/// The phases, in the only order they happen.
const STARTING: u8 = 0;
const READY: u8 = 1;
const SHUTTING_DOWN: u8 = 2;

/// The host's phase, shared by every request.
#[derive(Debug, Default)]
pub(super) struct Phase(AtomicU8);

impl AppState {
    /// Marks the host ready: every registered handler has been restored. Does nothing once
    /// shutdown has begun.
    pub fn mark_ready(&self) {
        let _ = self
            .phase
            .0
            .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Marks the host as shutting down: not ready, and refusing new signals.
    pub fn begin_shutdown(&self) {
        self.phase.0.store(SHUTTING_DOWN, Ordering::Release);
    }

    /// Whether the host is ready to serve.
    pub fn is_ready(&self) -> bool {
        self.phase.0.load(Ordering::Acquire) == READY
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.phase.0.load(Ordering::Acquire) == SHUTTING_DOWN
    }

    /// 503 for a message to a handler that is registered but not restored yet, which will
    /// serve it shortly (rather than 404, which would say it is not there).
    pub fn check_restoring(&self, signal: &Signal) -> Result<(), ApiError> {
        let Body::Message(message) = &signal.body else {
            return Ok(());
        };
        match self.registry.restoring(&message.to) {
            Some(name) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("handler `{name}` is restoring; retry shortly"),
            )
            .help("the host has just started and is bringing its handlers back; /readyz says when it is done")),
            None => Ok(()),
        }
    }
}

/// `GET /readyz`: 200 once every registered handler is restored, 503 while starting, while
/// a host in a cluster cannot reach the other hosts, and from the moment shutdown begins.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "probes",
    responses(
        (status = 200, description = "Ready: every registered handler is serving", body = String, content_type = "text/plain", example = "ready"),
        (status = 503, description = "Not ready: handlers still restoring, the cluster out of reach, or shutting down", body = String, content_type = "text/plain", example = "starting: 2 handlers still restoring"),
    )
)]
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let unreachable = || state.registry.host().router().unreachable();
    if state.is_ready()
        && let Some(why) = unreachable()
    {
        (StatusCode::SERVICE_UNAVAILABLE, format!("cluster: {why}")).into_response()
    } else if state.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else if state.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        let message = match state.registry.restoring_count() {
            0 => "starting".to_owned(),
            n => format!("starting: {n} handlers still restoring"),
        };
        (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
    }
}

/// Refuses new signals once shutdown has begun; the ones in flight still finish.
#[expect(clippy::result_large_err, reason = "see guard::Check")]
pub(super) fn refuse_while_shutting_down(state: &AppState) -> Result<(), Response> {
    if state.is_shutting_down() {
        return Err(
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the host is shutting down")
                .help("send it to another host, or retry once this one is back")
                .into_response(),
        );
    }
    Ok(())
}
