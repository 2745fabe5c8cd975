//! The admin API's OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the types they exchange rather than written by hand, and served at
//! `GET /openapi.json`.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

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
        super::cluster::show,
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

/// The document as clients read it: utoipa's, with the hand-written request schemas written
/// in, and every path parameter naming a handler given the schema of a handler name
/// ([`crate::host::check_name`]; the routes refuse any other with 400).
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    let schemas = &mut doc["components"]["schemas"];
    for (name, schema) in request_schemas() {
        schemas[name] = schema;
    }
    let name = serde_json::json!({
        "type": "string",
        "pattern": "^[a-z][a-z0-9_-]{0,63}$",
        "not": { "enum": [crate::signal::HOST_ADDRESS, crate::signal::AGENTS_ADDRESS] }
    });
    let operations = doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let Some(parameters) = operation
            .get_mut("parameters")
            .and_then(|p| p.as_array_mut())
        else {
            continue;
        };
        for parameter in parameters {
            let in_path = parameter["in"] == "path";
            if in_path && (parameter["name"] == "name" || parameter["name"] == "handler") {
                parameter["schema"] = name.clone();
            }
        }
    }
    doc
}

/// The document as JSON, built on first use.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

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
    pub(super) id: String,
}

/// An emission's answer: its id and how many subscribers took it.
#[derive(Serialize, ToSchema)]
pub(super) struct Emitted {
    pub(super) id: String,
    #[serde(flatten)]
    pub(super) accepted: Accepted,
}

// The request bodies, each spelled out by hand so the document says exactly what the route
// accepts: the routes parse bodies as [`crate::wire::WireSignal`], whose fields are all
// optional, and check them by kind (`WireSignal::into_client_body`); these schemas state
// the outcome of those checks. A `null` where a field is optional counts as leaving it out,
// as serde reads it, so optional fields admit `null`.

/// A routing name (`to`, `messageType`, `eventType`, `objectType`): anything but blank.
const ROUTED_BY: &str = "\\S";

/// Any JSON value (a payload).
fn any_json(description: &str) -> serde_json::Value {
    serde_json::json!({ "description": description })
}

/// Headers: string values by string keys.
fn headers() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "additionalProperties": { "type": "string" },
        "description": "Extra key/value pairs carried with the signal"
    })
}

/// `signalType`, which the route implies: it may be given as `kind`, or left out.
fn signal_type(kind: &str) -> serde_json::Value {
    serde_json::json!({
        "type": ["string", "null"],
        "enum": [kind, null],
        "description": "The route implies it; it may be given, as this value only"
    })
}

/// `POST /v1/messages`'s body: a MESSAGE without the fields the host sets.
pub(super) struct MessageRequest;

impl MessageRequest {
    fn json_schema() -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "description": "A MESSAGE. The host sets id, timestamp, from and depth: they are refused here",
            "required": ["to", "messageType"],
            "additionalProperties": false,
            "properties": {
                "signalType": signal_type("MESSAGE"),
                "to": {
                    "type": "string",
                    "pattern": ROUTED_BY,
                    "description": "The handler's address: its name, or `agent:<handler>/<id>`",
                    "example": "echo"
                },
                "messageType": {
                    "type": "string",
                    "pattern": ROUTED_BY,
                    "description": "What the message asks for",
                    "example": "Ping"
                },
                "returnAddress": {
                    "type": ["string", "null"],
                    "description": "Where the reply goes (the host answers the HTTP request otherwise)"
                },
                "payload": any_json("Any JSON value; null if left out"),
                "headers": headers(),
            }
        })
    }
}

impl PartialSchema for MessageRequest {
    fn schema() -> RefOr<Schema> {
        placeholder()
    }
}

impl ToSchema for MessageRequest {}

/// An emitted EVENT.
pub(super) struct EventRequest;

impl EventRequest {
    fn json_schema() -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "description": "An EVENT",
            "required": ["eventType"],
            "additionalProperties": false,
            "properties": {
                "signalType": signal_type("EVENT"),
                "eventType": {
                    "type": "string",
                    "pattern": ROUTED_BY,
                    "description": "What happened; subscribers subscribe to it",
                    "example": "OrderPlaced"
                },
                "payload": any_json("Any JSON value; null if left out"),
                "headers": headers(),
            }
        })
    }
}

impl PartialSchema for EventRequest {
    fn schema() -> RefOr<Schema> {
        placeholder()
    }
}

impl ToSchema for EventRequest {}

/// An emitted DATA_CHANGE_EVENT.
pub(super) struct DataChangeRequest;

impl DataChangeRequest {
    fn json_schema() -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "description": "A DATA_CHANGE_EVENT",
            "required": ["objectType", "changeType", "object"],
            "additionalProperties": false,
            "properties": {
                "signalType": signal_type("DATA_CHANGE_EVENT"),
                "objectType": {
                    "type": "string",
                    "pattern": ROUTED_BY,
                    "description": "The kind of object that changed",
                    "example": "Order"
                },
                "changeType": { "type": "string", "enum": ["CREATED", "UPDATED", "DELETED"] },
                "object": {
                    "type": ["object", "array", "string", "number", "boolean"],
                    "description": "The object as it is now (any JSON value but null)"
                },
                "headers": headers(),
            }
        })
    }
}

impl PartialSchema for DataChangeRequest {
    fn schema() -> RefOr<Schema> {
        placeholder()
    }
}

impl ToSchema for DataChangeRequest {}

/// `POST /v1/events`'s body: an EVENT or a DATA_CHANGE_EVENT, told apart by their fields.
pub(super) struct EmitRequest;

impl EmitRequest {
    fn json_schema() -> serde_json::Value {
        serde_json::json!({
            "description": "An EVENT or a DATA_CHANGE_EVENT, told apart by `signalType` or by their fields. The host sets id, timestamp, from and depth: they are refused here",
            "oneOf": [
                { "$ref": "#/components/schemas/EventRequest" },
                { "$ref": "#/components/schemas/DataChangeRequest" }
            ]
        })
    }
}

impl PartialSchema for EmitRequest {
    fn schema() -> RefOr<Schema> {
        placeholder()
    }
}

impl ToSchema for EmitRequest {}

/// What utoipa holds for a hand-written schema until [`document`] writes it in (utoipa's
/// own schema types cannot say `"type": ["string", "null"]` with an `enum`, or a `not`).
fn placeholder() -> RefOr<Schema> {
    RefOr::T(Schema::Object(utoipa::openapi::schema::Object::new()))
}

/// The hand-written request schemas, by name.
fn request_schemas() -> [(&'static str, serde_json::Value); 4] {
    [
        ("MessageRequest", MessageRequest::json_schema()),
        ("EmitRequest", EmitRequest::json_schema()),
        ("EventRequest", EventRequest::json_schema()),
        ("DataChangeRequest", DataChangeRequest::json_schema()),
    ]
}

#[cfg(test)]
mod tests;
