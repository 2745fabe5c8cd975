//! The admin API's error: logs what went wrong inside, shows the client what to do about it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::host::DeployError;
use crate::registry::RegistryError;
use crate::runtime::LoadError;

/// An error response: `{"code", "error", "help"?}` with the matching HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub help: Option<String>,
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            help: None,
        }
    }

    /// Adds a hint on how to fix the request.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The body of every error response; the OpenAPI document describes errors with it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status, repeated for clients that keep only the body.
    #[schema(example = 404)]
    pub code: u16,
    /// What went wrong.
    pub error: String,
    /// What to do about it, when the host knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.status.as_u16(),
            error: self.message,
            help: self.help,
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
