//! The admin API's OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the types they exchange rather than written by hand, and served at
//! `GET /openapi.json`.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{dead_letters, routes, state};
use crate::registry::HandlerView;
use crate::router::Accepted;

/// The document: every route's method, path, parameters, body and responses.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard admin API",
        description = "Deploy and manage signal handlers (WebAssembly components), send messages, \
            emit events, replay dead letters. Every /v1 route needs `Authorization: Bearer <token>`. \
            Errors are `{\"code\", \"error\", \"help\"?}`."
    ),
    paths(
        routes::list,
        routes::deploy,
        routes::show,
        routes::delete,
        routes::rollback,
        routes::send_message,
        routes::emit,
        dead_letters::list,
        dead_letters::purge,
        dead_letters::show,
        dead_letters::delete,
        dead_letters::replay,
        state::show,
        super::healthz,
        super::lifecycle::readyz,
        super::metrics,
        serve,
    ),
    modifiers(&BearerToken)
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme the /v1 routes name.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as JSON, built on first use.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .expect("an OpenAPI document always serializes")
});

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "probes",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub(super) async fn serve() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

// Schema-only shapes of the answers `routes.rs` builds with `json!`; the tests of those
// routes pin the field names.

/// `GET /v1/handlers`'s answer.
#[derive(Serialize, ToSchema)]
pub(super) struct HandlerList {
    handlers: Vec<HandlerView>,
}

/// A sent message's answer: its id, to match a Reply later.
#[derive(Serialize, ToSchema)]
pub(super) struct Sent {
    id: String,
}

/// An emission's answer: its id and how many subscribers took it.
#[derive(Serialize, ToSchema)]
pub(super) struct Emitted {
    id: String,
    #[serde(flatten)]
    accepted: Accepted,
}

#[cfg(test)]
mod tests;
