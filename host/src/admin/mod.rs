//! The HTTP admin API: deploy and manage handlers, send signals, health and metrics.
//!
//! Everything under `/v1` needs `Authorization: Bearer <token>`; a missing or wrong token
//! gets 401 and changes nothing. `/healthz`, `/readyz`, `/metrics` and `/openapi.json` are
//! open, for probes and scrapers. `/readyz` answers 200 once every registered handler is
//! restored, and 503 again from the moment shutdown begins ([`lifecycle`]).

mod dead_letters;
mod error;
mod lifecycle;
mod routes;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

pub use error::ApiError;

use crate::registry::Registry;

/// The API's shared state.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    token: Arc<str>,
    phase: Arc<lifecycle::Phase>,
}

impl AppState {
    /// State for an API guarded by `token`; not ready until [`AppState::mark_ready`].
    pub fn new(registry: Arc<Registry>, token: &str) -> Self {
        Self {
            registry,
            token: Arc::from(token),
            phase: Arc::default(),
        }
    }
}

/// The admin API's routes.
pub fn app(state: AppState) -> axum::Router {
    let config = state.registry.host().runtime().config();
    let message_limit = config.max_message_bytes + (64 << 10);
    let accepting =
        || middleware::from_fn_with_state(state.clone(), lifecycle::refuse_while_shutting_down);
    let v1 = axum::Router::new()
        .route(
            "/handlers/{name}",
            put(routes::deploy)
                .layer(DefaultBodyLimit::disable())
                .get(routes::show)
                .delete(routes::delete),
        )
        .route("/handlers", get(routes::list))
        .route("/handlers/{name}/rollback", post(routes::rollback))
        .route(
            "/messages",
            post(routes::send_message).route_layer(accepting()),
        )
        .route("/events", post(routes::emit).route_layer(accepting()))
        .route(
            "/dead-letters",
            get(dead_letters::list).delete(dead_letters::purge),
        )
        .route(
            "/dead-letters/{id}",
            get(dead_letters::show).delete(dead_letters::delete),
        )
        .route("/dead-letters/{id}/replay", post(dead_letters::replay))
        .layer(DefaultBodyLimit::max(message_limit))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    axum::Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(lifecycle::readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized: the bearer token is wrong",
        )
        .into_response(),
        None => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized: no bearer token")
            .help("send `Authorization: Bearer <token>`, the token the host was started with")
            .into_response(),
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(state): State<AppState>) -> Response {
    let router = state.registry.host().router();
    router
        .metrics()
        .compilations
        .set(state.registry.compilations() as i64);
    let text = router.render_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
