//! The admin API's error: logs what went wrong inside, shows the client what to do about it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::host::DeployError;
use crate::registry::RegistryError;
use crate::runtime::LoadError;
use crate::signal::{Failure, Signal, code};

/// An error response: `{"code", "error", "help"?, "signal"?}` with the matching HTTP
/// status. Every error of every route has this one shape.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// The error's code: the status, or a handler's own code outside 400-599.
    pub code: u32,
    pub message: String,
    pub help: Option<String>,
    /// The ErrorReply this error is, when a handler (or the host) answered a message so.
    pub signal: Option<Box<Signal>>,
}

/// The HTTP status of an error with code `code`: a code from 400 to 599 is mirrored; any
/// other (a handler's own application code) is 502, its code kept in the body.
pub fn status_of(code: u32) -> StatusCode {
    u16::try_from(code)
        .ok()
        .filter(|c| (400..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code: u32::from(status.as_u16()),
            message: message.into(),
            help: None,
            signal: None,
        }
    }

    /// The error for `failure`, a host's or a handler's, by `status_of` its code.
    pub fn from_failure(failure: Failure) -> Self {
        Self {
            status: status_of(failure.code),
            code: failure.code,
            message: failure.description,
            help: failure.help,
            signal: None,
        }
    }

    /// The error for an ErrorReply answering a message: its failure, with the signal.
    pub fn from_error_reply(reply: Signal) -> Self {
        let failure = match &reply.body {
            crate::signal::Body::ErrorReply { error, .. } => error.clone(),
            _ => Failure::new(code::TRAPPED, "not an error reply"),
        };
        Self {
            signal: Some(Box::new(reply)),
            ..Self::from_failure(failure)
        }
    }

    /// Adds a hint on how to fix the request.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// A 503 with `message`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The body of every error response; the OpenAPI document describes errors with it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error's code: the HTTP status; for a handler's ErrorReply with a code outside
    /// 400-599 (answered with status 502), the handler's own code.
    #[schema(example = 404)]
    pub code: u32,
    /// What went wrong.
    pub error: String,
    /// What to do about it, when the host knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// For a message answered with an ErrorReply: that ErrorReply, with its ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::wire::WireSignal>)]
    pub signal: Option<Box<Signal>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            error: self.message,
            help: self.help,
            signal: self.signal,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        let message = error.to_string();
        match error {
            RegistryError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, message),
            RegistryError::NoEarlierVersion(_) => Self::new(StatusCode::CONFLICT, message),
            RegistryError::Changed(_) => Self::new(StatusCode::CONFLICT, message)
                .help("look at the handler again, then retry"),
            RegistryError::Placement(_) => Self::bad_request(message),
            RegistryError::Cluster(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
                .help("the change was not made; retry once the cluster's NATS is reachable"),
            RegistryError::Store(inner) => {
                tracing::error!(error = %inner, source = ?std::error::Error::source(&inner), "data directory failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the host could not write its data directory",
                )
                .help("see the host's log; the change was not made")
            }
            RegistryError::Deploy(DeployError::InvalidName { .. }) => Self::bad_request(message),
            RegistryError::Deploy(DeployError::Install(_)) => {
                Self::new(StatusCode::CONFLICT, message)
            }
            RegistryError::Deploy(DeployError::Load(load)) => load_error(load, message),
            // 507: the host cannot hold another handler until an operator acts.
            RegistryError::Deploy(DeployError::PoolFull(full)) => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, message).help(full.help())
            }
        }
    }
}

fn load_error(error: LoadError, message: String) -> ApiError {
    match error {
        LoadError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
            .help("strip debug info (`strip = true` in the release profile) or raise the host's component size cap"),
        LoadError::NotWasm => ApiError::bad_request(message)
            .help("upload the .wasm file built with `cargo build --release --target wasm32-wasip2`"),
        LoadError::CoreModule => ApiError::bad_request(message)
            .help("build for `wasm32-wasip2`, which emits a component, rather than `wasm32-unknown-unknown`"),
        LoadError::Invalid(_) => ApiError::bad_request(message),
        LoadError::WrongWorld(_) => ApiError::bad_request(message)
            .help("implement the `handler` world of wit/signal.wit, e.g. with the switchboard-sdk crate"),
        LoadError::Describe(_) => ApiError::bad_request(message)
            .help("the handler's `describe` must return without trapping"),
        LoadError::Interrupted(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        LoadError::UnsupportedImport { .. } => ApiError::bad_request(message)
            .help("a handler imports only switchboard:signal/host and WASI 0.2; see wit/signal.wit"),
        LoadError::WrongContract { .. } => ApiError::bad_request(message)
            .help("the contract changed between versions; see the README's notes on switchboard:signal versions"),
        LoadError::MissingExports { .. } => ApiError::bad_request(message)
            .help("implement the `handler` world of wit/signal.wit, e.g. with the switchboard-sdk crate or your language's component bindings generator"),
        LoadError::CompileTimeout { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
            .help("make the component smaller (strip debug info, drop unused dependencies) or raise the host's --compile-timeout"),
        LoadError::CompilerBusy { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
            .help("retry when the uploads ahead of this one are compiled"),
        LoadError::CompilerFailed(inner) => {
            tracing::error!(error = %inner, "the compiler failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the host's compiler failed on this component")
                .help("see the host's log; nothing was changed")
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(error: crate::db::DbError) -> Self {
        tracing::error!(%error, "store failure");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the host could not read or write its store",
        )
        .help("see the host's log; nothing was changed")
    }
}
