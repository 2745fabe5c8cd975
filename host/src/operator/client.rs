//! Sends an [`ApiRequest`] to the admin API and sorts the answer: a success body, a
//! refusal the API explained (`{"code", "error", "help"}`), or a call that never got an
//! answer.

use std::path::PathBuf;

use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use thiserror::Error;

use super::Connection;
use super::api::{ApiBody, ApiRequest, NotHttp};

/// The content type of a component upload.
pub const WASM_CONTENT_TYPE: &str = "application/wasm";

/// A client of one admin API.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// Why a call did not succeed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The API answered with an error status.
    #[error(transparent)]
    Refused(#[from] ApiError),
    /// Nothing answered at the URL.
    #[error("could not reach the admin API at {url} (is `switchboard serve` running there?)")]
    Unreachable {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    /// The connection was made but the call failed before a full answer (timeout, reset).
    #[error("the call to {url} failed")]
    Call {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    /// The component to deploy could not be read.
    #[error("reading the component {}", path.display())]
    ReadComponent {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The base URL is not one the API can be under.
    #[error(transparent)]
    NotHttp(#[from] NotHttp),
    /// The HTTP client could not be set up.
    #[error("setting up the HTTP client")]
    Setup(#[source] reqwest::Error),
}

/// An error answer from the admin API.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{status}: {error}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, as the API put it.
    pub error: String,
    /// How to fix it, if the API said.
    pub help: Option<String>,
}

/// The API's error body; `code` repeats the status.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    help: Option<String>,
}

/// An error answer that carries the ErrorReply a message was answered with.
#[derive(serde::Deserialize)]
struct AnsweredWithError {
    signal: Box<serde_json::value::RawValue>,
}

impl ApiError {
    /// Reads an error answer, falling back to the body text (or the status's reason) when
    /// something other than the API answered, such as a proxy.
    pub fn from_answer(status: StatusCode, body: &str) -> Self {
        match serde_json::from_str::<ErrorBody>(body) {
            Ok(ErrorBody { error, help }) => Self {
                status,
                error,
                help,
            },
            Err(_) => Self {
                status,
                error: match body.trim() {
                    "" => status
                        .canonical_reason()
                        .unwrap_or("no reason given")
                        .to_owned(),
                    text => text.to_owned(),
                },
                help: None,
            },
        }
    }
}

impl Client {
    /// A client for the API the connection flags point at.
    pub fn new(connection: &Connection) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(ClientError::Setup)?;
        Ok(Self {
            http,
            base: connection.url.clone(),
            token: connection.token.clone(),
        })
    }

    /// Makes the call and returns the body of a successful answer (empty for a 204).
    pub async fn send(&self, request: &ApiRequest) -> Result<String, ClientError> {
        let url = request.url(&self.base)?;
        let mut call = self
            .http
            .request(request.method.clone(), url.clone())
            .timeout(request.timeout);
        if let Some(token) = &self.token {
            call = call.bearer_auth(token);
        }
        call = match &request.body {
            ApiBody::Empty => call,
            ApiBody::Signal(signal) => call.json(signal),
            ApiBody::Component(path) => {
                let bytes =
                    tokio::fs::read(path)
                        .await
                        .map_err(|source| ClientError::ReadComponent {
                            path: path.clone(),
                            source,
                        })?;
                call.header(CONTENT_TYPE, WASM_CONTENT_TYPE).body(bytes)
            }
        };
        let failed = |source: reqwest::Error| {
            if source.is_connect() {
                ClientError::Unreachable {
                    url: self.base.clone(),
                    source,
                }
            } else {
                ClientError::Call {
                    url: url.clone(),
                    source,
                }
            }
        };
        let answer = call.send().await.map_err(failed)?;
        let status = answer.status();
        let body = answer.text().await.map_err(failed)?;
        if status.is_success() {
            return Ok(body);
        }
        // A message answered with an ErrorReply is an answer too: its signal is in the body.
        match serde_json::from_str::<AnsweredWithError>(&body) {
            Ok(AnsweredWithError { signal }) => Ok(signal.get().to_owned()),
            Err(_) => Err(ApiError::from_answer(status, &body).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API's error body is read as such; anything else still gives a message.
    #[test]
    fn error_answers_are_read() {
        let error = ApiError::from_answer(
            StatusCode::CONFLICT,
            r#"{"code":409,"error":"no previous version","help":"deploy one first"}"#,
        );
        assert_eq!(error.error, "no previous version");
        assert_eq!(error.help.as_deref(), Some("deploy one first"));
        assert_eq!(error.to_string(), "409 Conflict: no previous version");

        let error = ApiError::from_answer(StatusCode::BAD_GATEWAY, "upstream down\n");
        assert_eq!((error.error.as_str(), error.help), ("upstream down", None));
        let error = ApiError::from_answer(StatusCode::NOT_FOUND, "");
        assert_eq!(error.error, "Not Found");
    }

    /// A URL where nothing listens is named in the error.
    #[tokio::test]
    async fn unreachable_names_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let connection = Connection {
            url: Url::parse(&format!("http://{addr}")).unwrap(),
            token: None,
            json: false,
        };
        let command = super::super::OperatorCommand::List { connection };
        let error = Client::new(command.connection())
            .unwrap()
            .send(&command.api_request())
            .await
            .unwrap_err();
        assert!(
            matches!(error, ClientError::Unreachable { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}
