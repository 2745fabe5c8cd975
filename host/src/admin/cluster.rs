//! `GET /v1/cluster`: the cluster this host joins, as it sees it: its connection, the
//! cluster's streams, and every subscribing handler and queued service with its backlog.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ErrorBody;
use crate::transport::ClusterView;

/// `GET /v1/cluster`.
#[utoipa::path(
    get,
    path = "/v1/cluster",
    operation_id = "showCluster",
    summary = "Show the cluster this host joins: its connection, streams and backlogs",
    tag = "cluster",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cluster as this host sees it (`clustered: false` for a host alone)", body = ClusterView),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
    )
)]
pub async fn show(State(state): State<AppState>) -> Response {
    Json(state.registry.host().router().cluster().await).into_response()
}
