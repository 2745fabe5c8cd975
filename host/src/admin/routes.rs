//! The `/v1` route handlers: each parses and checks its input, calls the registry or the
//! host, and shapes the answer.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::error::ErrorBody;
use super::openapi::{EmitRequest, Emitted, HandlerList, MessageRequest, Sent};
use super::{ApiError, AppState};
use crate::config::{Limits, MAX_DEADLINE, MAX_REQUEST_TIMEOUT, parse_duration};
use crate::registry::{DeployOptions, DeployView, HandlerView};
use crate::router::Undelivered;
use crate::runtime::HandlerKind;
use crate::signal::{Body as SignalBody, Envelope, HOST_ADDRESS, Signal};
use crate::wire::{SignalType, WireError, WireSignal};

/// A path parameter, or 400 saying what is wrong with it (axum would answer plain text).
pub(super) fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(format!("bad path parameter: {}", e.body_text())))
}

/// A request's body, or the error axum found reading it (over the body limit: 413) in the
/// one error shape rather than axum's plain text.
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        ApiError::new(
            e.status(),
            format!("the body could not be read: {}", e.body_text()),
        )
    })
}

/// A handler name from the path, or 400 if it is not one a handler could have.
pub(super) fn handler_name(name: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let name = path(name)?;
    crate::host::check_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(name)
}

pub use crate::config::MAX_MAILBOX;
use crate::config::{MAX_CONCURRENCY, MAX_CPU_MS, MAX_MEMORY_MB};

/// Deploy parameters, all optional.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeployParams {
    /// Overrides the kind the handler describes itself as.
    #[param(pattern = "^(service|agent)$")]
    kind: Option<String>,
    /// Memory limit in MiB.
    #[param(minimum = 1, maximum = 4096)]
    memory_mb: Option<u64>,
    /// CPU time limit per signal, in milliseconds.
    #[param(minimum = 1, maximum = 600_000)]
    cpu_ms: Option<u64>,
    /// Wall-clock deadline per signal, in milliseconds: past it the call is abandoned and
    /// its sender gets 504.
    #[param(minimum = 1, maximum = 900_000)]
    deadline_ms: Option<u64>,
    /// Signals handled at once; by default 1 for a service and 32 agents at once for an
    /// agent handler.
    #[param(minimum = 1, maximum = 64)]
    concurrency: Option<u32>,
    /// Signals the mailbox holds before refusing more.
    #[param(minimum = 1, maximum = 100_000)]
    mailbox: Option<u32>,
    /// In a cluster, the ids of the hosts that run it, separated by commas (this host among
    /// them); every host of the cluster if not given.
    #[param(max_length = 4096)]
    hosts: Option<String>,
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: Option<T>,
    min: T,
    max: T,
) -> Result<Option<T>, ApiError> {
    match value {
        Some(v) if v < min || v > max => Err(ApiError::bad_request(format!(
            "`{name}` must be between {min} and {max}, not {v}"
        ))),
        other => Ok(other),
    }
}

impl DeployParams {
    fn options(&self, defaults: Limits) -> Result<DeployOptions, ApiError> {
        let kind = match self.kind.as_deref() {
            None => None,
            Some("service") => Some(HandlerKind::Service),
            Some("agent") => Some(HandlerKind::Agent),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "`kind` is `service` or `agent`, not `{other}`"
                )));
            }
        };
        let memory_mb = in_range("memory_mb", self.memory_mb, 1, MAX_MEMORY_MB)?;
        let cpu_ms = in_range("cpu_ms", self.cpu_ms, 1, MAX_CPU_MS)?;
        let max_deadline = MAX_DEADLINE.as_millis() as u64;
        let deadline_ms = in_range("deadline_ms", self.deadline_ms, 1, max_deadline)?;
        let limits = Limits {
            memory_bytes: memory_mb.map_or(defaults.memory_bytes, |mb| mb << 20),
            cpu_time: cpu_ms.map_or(defaults.cpu_time, Duration::from_millis),
            deadline: deadline_ms.map_or(defaults.deadline, Duration::from_millis),
            concurrency: in_range("concurrency", self.concurrency, 1, MAX_CONCURRENCY)?
                .unwrap_or(defaults.concurrency),
            mailbox: in_range("mailbox", self.mailbox, 1, MAX_MAILBOX)?.unwrap_or(defaults.mailbox),
        };
        let hosts = match self.hosts.as_deref() {
            None => None,
            Some(list) => {
                let hosts: std::collections::BTreeSet<String> =
                    list.split(',').map(|id| id.trim().to_owned()).collect();
                if hosts.iter().any(|id| id.is_empty() || id.len() > 128) {
                    return Err(ApiError::bad_request(
                        "`hosts` is host ids separated by commas, each 1 to 128 characters",
                    ));
                }
                Some(hosts)
            }
        };
        Ok(DeployOptions {
            kind,
            limits: Some(limits),
            hosts,
        })
    }
}

/// The query, or 400 saying what is wrong with it.
pub(super) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query parameters: {}", e.body_text())))
}

/// `PUT /v1/handlers/{name}`: upload a version.
#[utoipa::path(
    put,
    path = "/v1/handlers/{name}",
    operation_id = "deployHandler",
    summary = "Upload a version of a handler (a hot swap if it is live)",
    tag = "handlers",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The handler's name: 1 to 64 of a-z, 0-9, `-`, `_`, starting with a letter; not `host` or `agents`"), DeployParams),
    request_body(description = "The component's bytes (a .wasm built for wasm32-wasip2)", content(("application/wasm"), ("application/octet-stream"))),
    responses(
        (status = 200, description = "Swapped in for the live version", body = DeployView),
        (status = 201, description = "Deployed", body = DeployView),
        (status = 400, description = "Bad name or parameters, empty body, or not a valid handler component (an import the host does not provide, a missing export: refused before compiling)", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 409, description = "The version could not be installed", body = ErrorBody),
        (status = 413, description = "The component is over the host's size cap", body = ErrorBody),
        (status = 422, description = "Compiling the component took longer than the host's compile timeout", body = ErrorBody),
        (status = 500, description = "The host could not read or write its data directory, or its compiler failed; nothing changed", body = ErrorBody),
        (status = 503, description = "Too many uploads are already waiting to be compiled", body = ErrorBody),
        (status = 507, description = "A new handler cannot be guaranteed an instance slot: every slot of the instance pool (--max-instances) is reserved by a deployed handler", body = ErrorBody),
    )
)]
pub async fn deploy(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<DeployParams>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = handler_name(name)?;
    let params = query(params)?;
    let config = state.registry.host().runtime().config();
    let options = params.options(config.default_limits)?;
    let cap = config.max_component_bytes;
    let bytes = axum::body::to_bytes(body, cap).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the component is over the limit of {cap} bytes"))
            .help("strip debug info (`strip = true` in the release profile) or raise the host's component size cap")
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty: send the component's bytes",
        ));
    }
    let deployed = state
        .registry
        .deploy(&name, bytes.to_vec(), options)
        .await?;
    let status = if deployed.swapped {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(deployed)).into_response())
}

/// `GET /v1/handlers`.
#[utoipa::path(
    get,
    path = "/v1/handlers",
    operation_id = "listHandlers",
    summary = "List the deployed handlers",
    tag = "handlers",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every deployed handler", body = HandlerList),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "handlers": state.registry.list().await }))
}

/// `GET /v1/handlers/{name}`.
#[utoipa::path(
    get,
    path = "/v1/handlers/{name}",
    operation_id = "showHandler",
    summary = "Inspect a handler",
    tag = "handlers",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The handler's name: 1 to 64 of a-z, 0-9, `-`, `_`, starting with a letter; not `host` or `agents`")),
    responses(
        (status = 200, description = "The handler", body = HandlerView),
        (status = 400, description = "Not a name a handler could have", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 404, description = "No handler has that name", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = handler_name(name)?;
    Ok(Json(state.registry.view(&name).await?).into_response())
}

/// `DELETE /v1/handlers/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/handlers/{name}",
    operation_id = "deleteHandler",
    summary = "Delete a handler and its versions",
    tag = "handlers",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The handler's name: 1 to 64 of a-z, 0-9, `-`, `_`, starting with a letter; not `host` or `agents`"), DeleteParams),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not a name a handler could have, or bad query parameters", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 404, description = "No handler has that name (with `purge`, whatever state it left is purged and the answer is 204)", body = ErrorBody),
        (status = 500, description = "The host could not read or write its data directory; nothing changed", body = ErrorBody),
        (status = 503, description = "Deleted, but the state was not purged (the store failed, or its last signals are still being handled)", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<DeleteParams>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let name = handler_name(name)?;
    let params = query(params)?;
    // Signals already queued are still handled after a delete, and commit: a purge waits
    // for them, so none brings state back after it.
    let slot = state
        .registry
        .host()
        .router()
        .slots()
        .into_iter()
        .find(|(slot, _)| *slot.name == *name)
        .map(|(slot, _)| slot);
    let purge = params.purge.unwrap_or(false);
    match state.registry.delete(&name).await {
        // Deleted earlier without purging: purge what it left.
        Err(crate::registry::RegistryError::NotFound(_)) if purge => {}
        deleted => deleted?,
    }
    if purge && let Some(store) = state.registry.host().runtime().state_store() {
        if let Some(slot) = slot {
            drained(&slot).await?;
        }
        // A durable write: off the async workers.
        let purged = tokio::task::spawn_blocking(move || store.purge(&name)).await;
        let purged = purged
            .map_err(|e| e.to_string())
            .and_then(|done| done.map_err(|e| e.to_string()));
        purged.map_err(|e| {
            ApiError::unavailable(format!(
                "the handler is deleted, but its state was not purged: {e}"
            ))
        })?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Waits until a deleted handler has no signal left in flight (queued, waiting in an
/// agent's line, or being handled), at most [`MAX_DEADLINE`] (no call runs longer).
async fn drained(slot: &crate::router::Slot) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + MAX_DEADLINE;
    while slot
        .counters
        .in_flight
        .load(std::sync::atomic::Ordering::Acquire)
        > 0
    {
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::unavailable(
                "the handler is deleted, but its last signals are still being handled, so its state was not purged",
            )
            .help("purge again with `switchboard delete NAME --purge` once they are done"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Query of a delete.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Also remove the handler's keyed state and timers (kept by default, so a handler
    /// deployed again under the name finds its agents as they were).
    purge: Option<bool>,
}

/// `POST /v1/handlers/{name}/rollback`.
#[utoipa::path(
    post,
    path = "/v1/handlers/{name}/rollback",
    operation_id = "rollbackHandler",
    summary = "Make the previous version live again",
    tag = "handlers",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The handler's name: 1 to 64 of a-z, 0-9, `-`, `_`, starting with a letter; not `host` or `agents`")),
    responses(
        (status = 200, description = "The handler, on its previous version", body = HandlerView),
        (status = 400, description = "Not a name a handler could have", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 404, description = "No handler has that name", body = ErrorBody),
        (status = 409, description = "No earlier version, or it could not be installed", body = ErrorBody),
        (status = 500, description = "The host could not read or write its data directory; nothing changed", body = ErrorBody),
    )
)]
pub async fn rollback(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = handler_name(name)?;
    Ok(Json(state.registry.rollback(&name).await?).into_response())
}

/// Query of `POST /v1/messages`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SendParams {
    /// Wait this long (like 500ms or 5s, up to 300s) for the reply and answer with it: a
    /// whole number of ms, s (or no unit), m, h or d, up to 300s (the pattern).
    #[param(
        example = "5s",
        pattern = "^(0*([0-9]{1,5}|[12][0-9]{5}|300000)ms|0*([0-9]{1,2}|[12][0-9]{2}|300)s?|0*[0-5]m|0+[hd])$"
    )]
    wait: Option<String>,
}

/// A signal from an admin client to an endpoint implying `implied`: the host stamps the
/// envelope.
fn parse_signal(state: &AppState, body: &Bytes, implied: SignalType) -> Result<Signal, ApiError> {
    let wire = WireSignal::from_json(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a signal: {e}")))?;
    let headers = wire.headers.clone();
    let body = wire.into_client_body(Some(implied)).map_err(|e| {
        let wrong_kind = matches!(e, WireError::WrongKind { .. });
        let error = ApiError::bad_request(e.to_string());
        match implied {
            _ if !wrong_kind => error,
            SignalType::Message => error.help("events and data changes go to /v1/events"),
            _ => error.help("messages go to /v1/messages"),
        }
    })?;
    let signal = Signal {
        envelope: Envelope::new(
            HOST_ADDRESS,
            headers,
            state.registry.host().router().clock(),
        ),
        body,
    };
    let max = state.registry.host().runtime().config().max_message_bytes;
    if signal.size() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the signal is {} bytes, over the maximum message size of {max} bytes",
                signal.size()
            ),
        ));
    }
    Ok(signal)
}

/// `POST /v1/messages[?wait=5s]`: send a message, optionally waiting for its reply.
#[utoipa::path(
    post,
    path = "/v1/messages",
    operation_id = "sendMessage",
    summary = "Send a message; with `wait`, answer with its Reply, or its ErrorReply as an error",
    tag = "signals",
    security(("bearer" = [])),
    params(SendParams),
    request_body(description = "A MESSAGE; the host sets id, timestamp and from, so leave them out", content = MessageRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "With `wait`: the Reply", body = WireSignal),
        (status = 202, description = "Without `wait`: sent", body = Sent),
        (status = 400, description = "Not a message, bad query, or a bad `wait`; with `wait`, also an ErrorReply with code 400", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 404, description = "Nothing serves `to`, or it does not accept this message type", body = ErrorBody),
        (status = 413, description = "The signal is over the maximum message size", body = ErrorBody),
        (status = 503, description = "The mailbox is full (its count or byte bound), the host's queue budget is spent, or the host is not serving (shutting down, restoring)", body = ErrorBody),
        (status = 504, description = "With `wait`: no reply in time", body = ErrorBody),
        (status = "4XX", description = "With `wait`: the message was answered with an ErrorReply whose code (400-499) is the status; the body's `signal` is the ErrorReply", body = ErrorBody),
        (status = "5XX", description = "With `wait`: the message was answered with an ErrorReply whose code (500-599) is the status, or 502 for a handler's code outside 400-599 (kept in the body's `code`); the body's `signal` is the ErrorReply", body = ErrorBody),
    )
)]
pub async fn send_message(
    State(state): State<AppState>,
    params: Result<Query<SendParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let body = read_body(body)?;
    let signal = parse_signal(&state, &body, SignalType::Message)?;
    state.check_restoring(&signal)?;
    let host = state.registry.host();
    let Some(wait) = params.wait else {
        let id = signal.envelope.id.clone();
        return match host.router().offer(signal).await {
            Ok(_) => Ok((StatusCode::ACCEPTED, Json(Sent { id })).into_response()),
            Err(undelivered) => {
                let to = match &undelivered.signal.body {
                    SignalBody::Message(m) => m.to.clone(),
                    _ => String::new(),
                };
                Err(refused(undelivered, &to))
            }
        };
    };
    let wait = parse_duration(&wait)
        .filter(|w| *w <= MAX_REQUEST_TIMEOUT)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`wait={wait}` is not a duration like 500ms or 5s, up to 300s"
            ))
        })?;
    match host.router().request(signal, wait).await {
        Ok(reply) if matches!(reply.body, SignalBody::ErrorReply { .. }) => {
            Err(ApiError::from_error_reply(reply))
        }
        Ok(reply) => Ok(signal_response(&reply)),
        Err(failure) => Err(ApiError::from_failure(failure)),
    }
}

/// A signal as a 200 JSON response, written into one buffer sized for it (axum's `Json`
/// starts at 128 bytes and grows by copying).
fn signal_response(signal: &Signal) -> Response {
    let mut body = Vec::with_capacity(256 + signal.size());
    match serde_json::to_writer(&mut body, signal) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        // Serializing a signal does not fail (its payload is JSON text already); if it did,
        // the caller learns it rather than getting half a body.
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the reply could not be written as JSON: {e}"),
        )
        .into_response(),
    }
}

/// The error for a signal the host could not deliver to `to`: the failure a handler's
/// sender would get, by its code.
pub(super) fn refused(undelivered: Undelivered, to: &str) -> ApiError {
    ApiError::from_failure(undelivered.failure_at(to))
}

/// `POST /v1/events`: emit an event or a data change; answers how many subscribers took it,
/// how many refused it (their copies are dead letters), and how many copies were refused at
/// the source (a refusing subscriber's share of the dead-letter store was full).
#[utoipa::path(
    post,
    path = "/v1/events",
    operation_id = "emit",
    summary = "Emit an event or a data change to its subscribers",
    tag = "signals",
    security(("bearer" = [])),
    request_body(description = "An EVENT or DATA_CHANGE_EVENT; the host sets id, timestamp and from, so leave them out", content = EmitRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Emitted: how many subscribers took it, how many copies are dead letters, and how many were refused for a subscriber whose share of the dead-letter store is full", body = Emitted),
        (status = 400, description = "Not an event or data change", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 413, description = "The signal is over the maximum message size", body = ErrorBody),
        (status = 503, description = "The host is shutting down", body = ErrorBody),
    )
)]
pub async fn emit(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body)?;
    let signal = parse_signal(&state, &body, SignalType::Event)?;
    let id = signal.envelope.id.clone();
    match state.registry.host().router().offer(signal).await {
        Ok(accepted) => Ok((StatusCode::ACCEPTED, Json(Emitted { id, accepted })).into_response()),
        Err(undelivered) => Err(refused(undelivered, "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_params_are_checked() {
        let defaults = Limits::default();
        let params = DeployParams {
            kind: Some("agent".into()),
            memory_mb: Some(64),
            ..Default::default()
        };
        let options = params.options(defaults).unwrap();
        assert_eq!(options.kind, Some(HandlerKind::Agent));
        assert_eq!(options.limits.unwrap().memory_bytes, 64 << 20);
        let bad = DeployParams {
            concurrency: Some(0),
            ..Default::default()
        };
        assert!(
            bad.options(defaults)
                .unwrap_err()
                .message
                .contains("concurrency")
        );
        let huge = DeployParams {
            mailbox: Some(MAX_MAILBOX + 1),
            ..Default::default()
        };
        assert!(
            huge.options(defaults)
                .unwrap_err()
                .message
                .contains("mailbox")
        );
        let bad = DeployParams {
            kind: Some("robot".into()),
            ..Default::default()
        };
        assert!(bad.options(defaults).is_err());
    }
}
