//! `/v1/dead-letters`: list, inspect, replay (to the one handler a signal was meant for)
//! and purge the signals a mailbox or client refused.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::routes::{path, query, refused};
use super::{ApiError, AppState};
use crate::dead_letters::{DeadLetter, DeadLetters, MAX_PAGE};
use crate::router::Router;

/// Query of the listing: only those for `handler`, ids above `after`, at most `limit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only those meant for this handler (or `user:<id>` client).
    handler: Option<String>,
    /// Only ids above this one: the last id of the previous page.
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    after: Option<u64>,
    /// At most this many; 100 if not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Query of a purge: only those for `handler`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PurgeParams {
    /// Only those meant for this handler (or `user:<id>` client).
    handler: Option<String>,
}

/// A page of the listing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// Oldest first.
    dead_letters: Vec<DeadLetter>,
    /// How many the store holds in all.
    stored: usize,
    /// How many it can hold.
    capacity: usize,
}

/// The answer to a replay.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// The dead letter's id, now gone from the store.
    replayed: u64,
    /// The handler whose mailbox took it.
    handler: String,
}

/// The answer to a purge.
#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    /// How many were removed.
    purged: usize,
}

/// The largest id a client may name: ids are documented as int64, which clients and
/// generators read as signed.
const MAX_ID: u64 = i64::MAX as u64;

/// A dead letter's id from the path, or 400.
fn letter_id(id: Result<Path<u64>, PathRejection>) -> Result<u64, ApiError> {
    let id = path(id)?;
    if id > MAX_ID {
        return Err(ApiError::bad_request(format!(
            "a dead letter's id is between 0 and {MAX_ID}, not {id}"
        )));
    }
    Ok(id)
}

/// Runs `work` on the dead-letter store off the async workers: every call may wait for the
/// store's writer or a durable commit.
async fn on_store<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&DeadLetters, &Router) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let router = state.registry.host().router().clone();
    tokio::task::spawn_blocking(move || work(router.dead_letters(), &router))
        .await
        .map_err(|error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the store's work stopped: {error}"),
            )
        })?
}

fn not_found(id: u64) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no dead letter has id {id}"))
        .help("list them with GET /v1/dead-letters")
}

/// `GET /v1/dead-letters`.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    operation_id = "listDeadLetters",
    summary = "List dead letters, oldest first",
    tag = "dead-letters",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of dead letters, oldest first", body = Page),
        (status = 400, description = "Bad query parameters", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 500, description = "The host could not read or write its store", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let after = params.after.unwrap_or(0);
    if after > MAX_ID {
        return Err(ApiError::bad_request(format!(
            "`after` must be between 0 and {MAX_ID}, not {after}"
        )));
    }
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_PAGE}, not {limit}"
        )));
    }
    let page = on_store(&state, move |store, _| {
        Ok(Page {
            dead_letters: store.list(params.handler.as_deref(), after, limit)?,
            stored: store.len(),
            capacity: store.capacity(),
        })
    });
    Ok(Json(page.await?).into_response())
}

/// `GET /v1/dead-letters/{id}`.
#[utoipa::path(
    get,
    path = "/v1/dead-letters/{id}",
    operation_id = "showDeadLetter",
    summary = "Inspect a dead letter",
    tag = "dead-letters",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The dead letter's id", minimum = 0, maximum = 9_223_372_036_854_775_807_i64)),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetter),
        (status = 400, description = "The id is not a number from 0 to 2^63-1", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 404, description = "No dead letter has that id", body = ErrorBody),
        (status = 500, description = "The host could not read or write its store", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = letter_id(id)?;
    let letter = on_store(&state, move |store, _| {
        store.get(id)?.ok_or_else(|| not_found(id))
    });
    Ok(Json(letter.await?).into_response())
}

/// `POST /v1/dead-letters/{id}/replay`: offers it again to the handler it was meant for;
/// it leaves the store only once that handler's mailbox took it.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{id}/replay",
    operation_id = "replayDeadLetter",
    summary = "Offer a dead letter again to the handler it was meant for",
    tag = "dead-letters",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The dead letter's id", minimum = 0, maximum = 9_223_372_036_854_775_807_i64)),
    responses(
        (status = 200, description = "The handler's mailbox took it; it left the store", body = Replayed),
        (status = 400, description = "The id is not a number from 0 to 2^63-1", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 404, description = "No dead letter has that id, or nothing serves its handler any more", body = ErrorBody),
        (status = 500, description = "The host could not read or write its store", body = ErrorBody),
        (status = 503, description = "The handler's mailbox is still full, or the host is shutting down; it stays a dead letter", body = ErrorBody),
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = letter_id(id)?;
    let replayed = on_store(&state, move |store, router| {
        // Taken out first, so a concurrent replay or delete cannot get it too.
        let (letter, mut room) = store.take(id)?.ok_or_else(|| not_found(id))?;
        if let Err(undelivered) = router.redeliver(&letter) {
            room.put_back(&letter)?;
            return Err(refused(undelivered, &letter.handler));
        }
        Ok(Replayed {
            replayed: id,
            handler: letter.handler,
        })
    });
    Ok(Json(replayed.await?).into_response())
}

/// `DELETE /v1/dead-letters/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/dead-letters/{id}",
    operation_id = "deleteDeadLetter",
    summary = "Delete a dead letter",
    tag = "dead-letters",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The dead letter's id", minimum = 0, maximum = 9_223_372_036_854_775_807_i64)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a number from 0 to 2^63-1", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 404, description = "No dead letter has that id", body = ErrorBody),
        (status = 500, description = "The host could not read or write its store", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = letter_id(id)?;
    match on_store(&state, move |store, _| Ok(store.remove(id)?)).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(not_found(id)),
    }
}

/// `DELETE /v1/dead-letters[?handler=]`: purges them all, or those for one handler.
#[utoipa::path(
    delete,
    path = "/v1/dead-letters",
    operation_id = "purgeDeadLetters",
    summary = "Purge dead letters, all or one handler's",
    tag = "dead-letters",
    security(("bearer" = [])),
    params(PurgeParams),
    responses(
        (status = 200, description = "How many were purged", body = Purged),
        (status = 400, description = "Bad query parameters", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 500, description = "The host could not read or write its store", body = ErrorBody),
    )
)]
pub async fn purge(
    State(state): State<AppState>,
    params: Result<Query<PurgeParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let purged = on_store(&state, move |store, _| {
        Ok(store.purge(params.handler.as_deref())?)
    });
    Ok(Json(Purged {
        purged: purged.await?,
    })
    .into_response())
}
