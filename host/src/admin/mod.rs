//! The HTTP admin API: deploy and manage handlers, send signals, health and metrics.
//!
//! Everything under `/v1` needs `Authorization: Bearer <token>`; a missing or wrong token
//! gets 401 and changes nothing. `/healthz`, `/readyz`, `/metrics` and `/openapi.json` are
//! open, for probes and scrapers. `/readyz` answers 200 once every registered handler is
//! restored, and 503 again from the moment shutdown begins (`lifecycle`).

mod cluster;
mod dead_letters;
mod error;
mod guard;
mod lifecycle;
mod openapi;
mod routes;
mod state;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

pub use error::ApiError;
pub use openapi::ApiDoc;

use crate::registry::Registry;

/// The API's shared state: one pointer, cloned for every request and extractor.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] points to.
pub struct Shared {
    pub registry: Arc<Registry>,
    token: Box<str>,
    phase: lifecycle::Phase,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// State for an API guarded by `token`; not ready until [`AppState::mark_ready`].
    pub fn new(registry: Arc<Registry>, token: &str) -> Self {
        Self(Arc::new(Shared {
            registry,
            token: Box::from(token),
            phase: lifecycle::Phase::default(),
        }))
    }
}

/// One route: the method and path it answers, as the OpenAPI document spells them, and
/// its handler, registered for that method only.
struct Route {
    #[cfg_attr(not(test), expect(dead_code, reason = "the OpenAPI tests read it"))]
    method: Method,
    path: &'static str,
    handler: MethodRouter<AppState>,
    /// It takes new signals, which are refused once shutdown has begun.
    takes_signals: bool,
}

impl Route {
    fn new<H: Handler<T, AppState>, T: 'static>(
        method: Method,
        path: &'static str,
        handler: H,
    ) -> Self {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("{method} is not a method axum routes"));
        Self {
            method,
            path,
            handler: on(filter, handler),
            takes_signals: false,
        }
    }

    /// Marks a route that takes new signals.
    fn taking_signals(mut self) -> Self {
        self.takes_signals = true;
        self
    }
}

/// Every `/v1` route, all behind the bearer token. [`app`] registers routes only from this
/// table and [`open_routes`], and the OpenAPI tests check the document against both, so a
/// route cannot be served undocumented.
fn v1_routes() -> Vec<Route> {
    use dead_letters as dl;
    let deploy = routes::deploy.layer(DefaultBodyLimit::disable());
    vec![
        Route::new(Method::GET, "/v1/handlers", routes::list),
        Route::new(Method::PUT, "/v1/handlers/{name}", deploy),
        Route::new(Method::GET, "/v1/handlers/{name}", routes::show),
        Route::new(Method::DELETE, "/v1/handlers/{name}", routes::delete),
        Route::new(
            Method::POST,
            "/v1/handlers/{name}/rollback",
            routes::rollback,
        ),
        Route::new(Method::POST, "/v1/messages", routes::send_message).taking_signals(),
        Route::new(Method::POST, "/v1/events", routes::emit).taking_signals(),
        Route::new(Method::GET, "/v1/dead-letters", dl::list),
        Route::new(Method::DELETE, "/v1/dead-letters", dl::purge),
        Route::new(Method::GET, "/v1/dead-letters/{id}", dl::show),
        Route::new(Method::DELETE, "/v1/dead-letters/{id}", dl::delete),
        Route::new(Method::POST, "/v1/dead-letters/{id}/replay", dl::replay),
        Route::new(Method::GET, "/v1/state/{handler}", state::show),
        Route::new(Method::GET, "/v1/cluster", cluster::show),
    ]
}

/// The open routes, for probes and scrapers (see [`v1_routes`]).
fn open_routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/healthz", healthz),
        Route::new(Method::GET, "/readyz", lifecycle::readyz),
        Route::new(Method::GET, "/metrics", metrics),
        Route::new(Method::GET, "/openapi.json", openapi::serve),
    ]
}

/// Adds `routes` to `router`; several routes on one path merge. With `state`, each is
/// behind the bearer token (for any method: a wrong one gets 401 before 405), and a route
/// that takes signals refuses them once shutdown has begun: one [`guard::Guard`] per
/// route, checked in line.
fn register(
    router: axum::Router<AppState>,
    routes: Vec<Route>,
    state: Option<&AppState>,
) -> axum::Router<AppState> {
    routes.into_iter().fold(router, |router, route| {
        let handler = match state {
            Some(state) => {
                let check: guard::Check = if route.takes_signals {
                    authorize_signals
                } else {
                    authorize
                };
                route.handler.layer(guard::Guard::new(state.clone(), check))
            }
            None => route.handler,
        };
        router.route(route.path, handler)
    })
}

/// The admin API's routes. Register new ones in `v1_routes` or `open_routes`, never
/// here directly: the OpenAPI tests read those tables.
pub fn app(state: AppState) -> axum::Router {
    let config = state.registry.host().runtime().config();
    let message_limit = config.max_message_bytes + (64 << 10);
    // The body limit wraps only the routes registered so far: the /v1 ones, not the probes.
    let v1 = register(axum::Router::new(), v1_routes(), Some(&state))
        .layer(DefaultBodyLimit::max(message_limit));
    register(v1, open_routes(), None).with_state(state.clone())
}

/// [`authorize`], then refuses new signals once shutdown has begun (503).
#[expect(clippy::result_large_err, reason = "see guard::Check")]
fn authorize_signals(state: &AppState, request: &Request) -> Result<(), Response> {
    authorize(state, request)?;
    lifecycle::refuse_while_shutting_down(state)
}

/// Lets a request with the host's bearer token through; 401 for any other.
#[expect(clippy::result_large_err, reason = "see guard::Check")]
fn authorize(state: &AppState, request: &Request) -> Result<(), Response> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized: the bearer token is wrong",
        )
        .into_response()),
        None => Err(
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized: no bearer token")
                .help("send `Authorization: Bearer <token>`, the token the host was started with")
                .into_response(),
        ),
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Liveness: answers as long as the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "probes",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain", example = "ok"))
)]
async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "probes",
    responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    let router = state.registry.host().router();
    let metrics = router.metrics();
    metrics
        .compilations
        .set(state.registry.compilations() as i64);
    let (compiling, queued) = state.registry.host().runtime().compiling();
    metrics.compilations_in_progress.set(compiling as i64);
    metrics.compilations_queued.set(queued as i64);
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
