//! `/v1/state/{handler}`: what a handler keeps in keyed state, for operators: one agent's
//! keys (`?agent=alice`), or the handler's own keys and the agents that have state.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::routes::{handler_name, query};
use super::{ApiError, AppState};
use crate::keyed::{Scope, StateStore};

/// Most agents listed with a handler's own state.
const AGENTS_LISTED: usize = 100;

/// Whose state to read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StateParams {
    /// The agent id (`alice`, or its address `agent:alice`); the handler's own state if not
    /// given. The full address `agent:<handler>/alice` is taken too when `<handler>` is this
    /// handler, and refused with 400 otherwise (a pattern cannot name the path's handler).
    #[param(
        pattern = "^(agent:[^/]{1,64}|([^a]|a[^g]|ag[^e]|age[^n]|agen[^t]|agent[^:])[\\s\\S]*|a|ag|age|agen|agent)$"
    )]
    agent: Option<String>,
}

/// One key and its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct Entry {
    key: String,
    /// The value, if it is JSON (what the SDK's typed state writes); null otherwise.
    #[schema(value_type = Object)]
    json: serde_json::Value,
    /// The value's size in bytes.
    size: usize,
}

/// A scope's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateView {
    handler: String,
    /// The agent, or null for the handler's own state.
    agent: Option<String>,
    /// Keys in order.
    entries: Vec<Entry>,
    /// Bytes of keys and values the handler stores in all scopes.
    usage: u64,
    /// With no agent given: the first agents that have state.
    #[serde(skip_serializing_if = "Option::is_none")]
    agents: Option<Vec<String>>,
}

/// `GET /v1/state/{handler}`.
#[utoipa::path(
    get,
    path = "/v1/state/{handler}",
    operation_id = "showState",
    summary = "Read a handler's or an agent's keyed state",
    tag = "state",
    security(("bearer" = [])),
    params(("handler" = String, Path, description = "The handler's name"), StateParams),
    responses(
        (status = 200, description = "The keys and values", body = StateView),
        (status = 400, description = "Not a name a handler could have, bad query parameters, or an agent address of another handler", body = ErrorBody),
        (status = 401, description = "No bearer token, or the wrong one", body = ErrorBody),
        (status = 503, description = "The host keeps no state, or its store failed", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    handler: Result<Path<String>, PathRejection>,
    params: Result<Query<StateParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let handler = handler_name(handler)?;
    let params = query(params)?;
    let store = store(&state)?;
    let agent = params
        .agent
        .map(|agent| agent_id(&handler, &agent))
        .transpose()?;
    let scope = match &agent {
        Some(agent) => Scope::agent(handler.clone(), agent.clone()),
        None => Scope::handler(handler.clone()),
    };
    let failed = |e: crate::keyed::StateError| ApiError::unavailable(e.to_string());
    let entries = store
        .entries(&scope)
        .map_err(failed)?
        .into_iter()
        .map(|(key, value)| Entry {
            json: serde_json::from_slice(&value).unwrap_or(serde_json::Value::Null),
            size: value.len(),
            key,
        })
        .collect();
    let agents = match agent {
        Some(_) => None,
        None => Some(
            store
                .agents(&handler, None, AGENTS_LISTED)
                .map_err(failed)?,
        ),
    };
    let usage = store.usage(&handler).map_err(failed)?;
    Ok(Json(StateView {
        handler,
        agent,
        entries,
        usage,
        agents,
    })
    .into_response())
}

fn store(state: &AppState) -> Result<std::sync::Arc<StateStore>, ApiError> {
    state
        .registry
        .host()
        .runtime()
        .state_store()
        .ok_or_else(|| ApiError::unavailable("this host keeps no keyed state"))
}

/// The agent id in `agent`: a bare id, `agent:<id>`, or `agent:<handler>/<id>` of this
/// handler.
fn agent_id(handler: &str, agent: &str) -> Result<String, ApiError> {
    use crate::address::{Address, AddressError};
    match Address::parse(agent) {
        Ok(Address::Agent {
            handler: Some(h),
            id,
        }) if h == handler => Ok(id.to_owned()),
        Ok(Address::Agent {
            handler: Some(h), ..
        }) => Err(ApiError::bad_request(format!(
            "`{agent}` is an agent of `{h}`, not of `{handler}`"
        ))),
        Ok(Address::Agent { handler: None, id }) => Ok(id.to_owned()),
        Err(AddressError::Agent) | Ok(Address::Service("")) => Err(ApiError::bad_request(format!(
            "`{agent}` is not an agent id or address"
        ))),
        _ => Ok(agent.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::agent_id;

    /// An agent is named by its id or either form of its address; another handler's agent
    /// is refused.
    #[test]
    fn agents_are_named_by_id_or_address() {
        for given in ["alice", "agent:alice", "agent:counter/alice"] {
            assert_eq!(agent_id("counter", given).unwrap(), "alice");
        }
        assert!(agent_id("counter", "agent:tally/alice").is_err());
        assert!(agent_id("counter", "agent:").is_err());
        assert!(agent_id("counter", "").is_err());
    }
}
