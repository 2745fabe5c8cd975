//! `/v1/dead-letters`: list, inspect, replay (to the one handler a signal was meant for)
//! and purge the signals a mailbox or client refused.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::routes::{query, refused};
use super::{ApiError, AppState};
use crate::dead_letters::{DeadLetters, MAX_PAGE};

/// Query of the listing: only those for `handler`, ids above `after`, at most `limit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    handler: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// Query of a purge: only those for `handler`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeParams {
    handler: Option<String>,
}

fn store(state: &AppState) -> &DeadLetters {
    state.registry.host().router().dead_letters()
}

fn not_found(id: u64) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no dead letter has id {id}"))
        .help("list them with GET /v1/dead-letters")
}

/// `GET /v1/dead-letters`.
pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_PAGE}, not {limit}"
        )));
    }
    let store = store(&state);
    let letters = store.list(params.handler.as_deref(), params.after.unwrap_or(0), limit)?;
    Ok(Json(json!({
        "deadLetters": letters,
        "stored": store.len(),
        "capacity": store.capacity(),
    }))
    .into_response())
}

/// `GET /v1/dead-letters/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let letter = store(&state).get(id)?.ok_or_else(|| not_found(id))?;
    Ok(Json(letter).into_response())
}

/// `POST /v1/dead-letters/{id}/replay`: offers it again to the handler it was meant for;
/// it leaves the store only once that handler's mailbox took it.
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let store = store(&state);
    let letter = store.get(id)?.ok_or_else(|| not_found(id))?;
    state
        .registry
        .host()
        .router()
        .redeliver(&letter)
        .map_err(|undelivered| refused(undelivered, &letter.handler))?;
    store.remove(id)?;
    Ok(Json(json!({ "replayed": id, "handler": letter.handler })).into_response())
}

/// `DELETE /v1/dead-letters/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    if store(&state).remove(id)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(id))
    }
}

/// `DELETE /v1/dead-letters[?handler=]`: purges them all, or those for one handler.
pub async fn purge(
    State(state): State<AppState>,
    params: Result<Query<PurgeParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let purged = store(&state).purge(params.handler.as_deref())?;
    Ok(Json(json!({ "purged": purged })).into_response())
}
