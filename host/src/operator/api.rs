//! What each operator command asks of the admin API: method, path, query and body, built
//! without I/O so the mapping is tested without a server.

use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, Url};
use thiserror::Error;

use super::{DataChange, DeadLetterCommand, HandlerKind, MessageArgs, OperatorCommand};
use crate::signal::{ChangeType, Json};
use crate::wire::{SignalType, WireSignal};

/// How long a call may take when it does not wait for a reply; compiling a large
/// component on deploy is the slowest thing the API does.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Time a `request` call gets beyond its wait, so the host's own 504 arrives before the
/// client gives up.
pub const WAIT_GRACE: Duration = Duration::from_secs(5);

/// One call to the admin API.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiRequest {
    /// The HTTP method.
    pub method: Method,
    /// Path segments below the base URL, unencoded: `["v1", "handlers", "echo"]`.
    pub path: Vec<String>,
    /// Query parameters, in order.
    pub query: Vec<(&'static str, String)>,
    /// What is sent as the body.
    pub body: ApiBody,
    /// How long the whole call may take.
    pub timeout: Duration,
}

/// The body of a call.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiBody {
    /// No body.
    Empty,
    /// A signal in the wire format, as JSON.
    Signal(Box<WireSignal>),
    /// A component file, read when the call is made and sent as `application/wasm`.
    Component(PathBuf),
}

/// A base URL the admin API cannot be under.
#[derive(Debug, Error)]
#[error("`{0}` is not an http:// URL")]
pub struct NotHttp(pub Url);

/// A payload argument that is not JSON.
#[derive(Debug, Error)]
#[error("not JSON ({0}); quote it for the shell, e.g. '{{\"n\":1}}'")]
pub struct BadPayload(#[from] serde_json::Error);

impl ApiRequest {
    fn new(method: Method, path: &[&str]) -> Self {
        Self {
            method,
            path: path.iter().map(|segment| (*segment).to_owned()).collect(),
            query: Vec::new(),
            body: ApiBody::Empty,
            timeout: CALL_TIMEOUT,
        }
    }

    fn query(mut self, key: &'static str, value: Option<impl Display>) -> Self {
        if let Some(value) = value {
            self.query.push((key, value.to_string()));
        }
        self
    }

    fn body(self, body: ApiBody) -> Self {
        Self { body, ..self }
    }

    /// The full URL of the call under `base`, which may carry a path prefix of its own.
    pub fn url(&self, base: &Url) -> Result<Url, NotHttp> {
        if !matches!(base.scheme(), "http" | "https") {
            return Err(NotHttp(base.clone()));
        }
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|()| NotHttp(base.clone()))?
            .pop_if_empty()
            .extend(&self.path);
        url.set_query(None);
        if !self.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.query);
        }
        Ok(url)
    }
}

impl OperatorCommand {
    /// The call this command makes.
    pub fn api_request(&self) -> ApiRequest {
        use ApiRequest as R;
        match self {
            Self::Deploy {
                name,
                file,
                settings,
                ..
            } => R::new(Method::PUT, &["v1", "handlers", name])
                .query("kind", settings.kind.map(HandlerKind::as_str))
                .query("memory_mb", settings.memory_mb)
                .query("cpu_ms", settings.cpu_ms)
                .query("deadline_ms", settings.deadline_ms)
                .query("concurrency", settings.concurrency)
                .query("mailbox", settings.mailbox)
                .body(ApiBody::Component(file.clone())),
            Self::List { .. } => R::new(Method::GET, &["v1", "handlers"]),
            Self::Cluster { .. } => R::new(Method::GET, &["v1", "cluster"]),
            Self::Show { name, .. } => R::new(Method::GET, &["v1", "handlers", name]),
            Self::Rollback { name, .. } => {
                R::new(Method::POST, &["v1", "handlers", name, "rollback"])
            }
            Self::Delete { name, purge, .. } => R::new(Method::DELETE, &["v1", "handlers", name])
                .query("purge", purge.then_some(true)),
            Self::State { handler, agent, .. } => {
                R::new(Method::GET, &["v1", "state", handler]).query("agent", agent.as_ref())
            }
            Self::Send { message, .. } => R::new(Method::POST, &["v1", "messages"])
                .body(ApiBody::Signal(Box::new(message.signal()))),
            Self::Request {
                message, timeout, ..
            } => ApiRequest {
                timeout: *timeout + WAIT_GRACE,
                ..R::new(Method::POST, &["v1", "messages"])
                    .query("wait", Some(format_duration(*timeout)))
                    .body(ApiBody::Signal(Box::new(message.signal())))
            },
            Self::Emit {
                event_type,
                payload,
                data_change,
                ..
            } => {
                let signal = match data_change {
                    None => WireSignal {
                        signal_type: Some(SignalType::Event),
                        event_type: Some(event_type.clone()),
                        payload: Some(payload.clone()),
                        ..WireSignal::default()
                    },
                    Some(change) => WireSignal {
                        signal_type: Some(SignalType::DataChangeEvent),
                        change_type: Some((*change).into()),
                        object_type: Some(event_type.clone()),
                        object: Some(payload.clone()),
                        ..WireSignal::default()
                    },
                };
                R::new(Method::POST, &["v1", "events"]).body(ApiBody::Signal(Box::new(signal)))
            }
            Self::DeadLetters(command) => command.api_request(),
        }
    }
}

impl DeadLetterCommand {
    /// The call this command makes.
    pub fn api_request(&self) -> ApiRequest {
        use ApiRequest as R;
        const BASE: [&str; 2] = ["v1", "dead-letters"];
        match self {
            Self::List {
                handler,
                after,
                limit,
                ..
            } => R::new(Method::GET, &BASE)
                .query("handler", handler.as_ref())
                .query("after", *after)
                .query("limit", Some(limit)),
            Self::Show { id, .. } => R::new(Method::GET, &[BASE[0], BASE[1], &id.to_string()]),
            Self::Replay { id, .. } => {
                R::new(Method::POST, &[BASE[0], BASE[1], &id.to_string(), "replay"])
            }
            Self::Delete { id, .. } => R::new(Method::DELETE, &[BASE[0], BASE[1], &id.to_string()]),
            Self::Purge { handler, .. } => {
                R::new(Method::DELETE, &BASE).query("handler", handler.as_ref())
            }
        }
    }
}

impl MessageArgs {
    /// The message in the wire format; the host stamps the envelope.
    fn signal(&self) -> WireSignal {
        WireSignal {
            to: Some(self.to.clone()),
            message_type: Some(self.message_type.clone()),
            payload: Some(self.payload.clone()),
            ..WireSignal::default()
        }
    }
}

impl HandlerKind {
    /// The kind as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Agent => "agent",
        }
    }
}

impl From<DataChange> for ChangeType {
    fn from(change: DataChange) -> Self {
        match change {
            DataChange::Created => Self::Created,
            DataChange::Updated => Self::Updated,
            DataChange::Deleted => Self::Deleted,
        }
    }
}

/// Writes a duration the way [`crate::config::parse_duration`] reads it: whole seconds as `5s`, anything
/// finer in milliseconds.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// Checks that a payload argument is one JSON value.
pub fn parse_payload(text: &str) -> Result<Json, BadPayload> {
    Ok(Json::parse(text)?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::parse_duration;
    use crate::operator::{Connection, DeploySettings};

    fn connection() -> Connection {
        Connection {
            url: Url::parse("http://h:7/").unwrap(),
            token: None,
            json: false,
        }
    }

    fn url_of(command: &OperatorCommand) -> String {
        command
            .api_request()
            .url(&Url::parse("http://h:7/admin/").unwrap())
            .unwrap()
            .to_string()
    }

    fn body_of(command: &OperatorCommand) -> serde_json::Value {
        match command.api_request().body {
            ApiBody::Signal(signal) => serde_json::to_value(signal).unwrap(),
            other => panic!("not a signal body: {other:?}"),
        }
    }

    fn message() -> MessageArgs {
        MessageArgs {
            to: "echo".into(),
            message_type: "Ping".into(),
            payload: Json::parse(r#"{"n":1}"#).unwrap(),
        }
    }

    /// The wait query is written so the host's duration parser reads it back exactly.
    #[test]
    fn durations_round_trip() {
        for millis in [0, 1, 500, 1500, 5000, 60_000, 90_001] {
            let wait = Duration::from_millis(millis);
            assert_eq!(
                parse_duration(&format_duration(wait)),
                Some(wait),
                "{millis}ms"
            );
        }
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    /// A payload is kept as written when it is JSON, refused otherwise.
    #[test]
    fn payload_is_checked() {
        assert_eq!(
            parse_payload(r#"{"a": [1]}"#).unwrap().as_str(),
            r#"{"a": [1]}"#
        );
        assert!(parse_payload("{a:1}").is_err());
        assert!(parse_payload("1 2").is_err());
    }

    /// Deploy sends only the settings given, and the file as the body.
    #[test]
    fn deploy_request() {
        let command = OperatorCommand::Deploy {
            connection: connection(),
            name: "echo".into(),
            file: "echo.wasm".into(),
            settings: DeploySettings {
                kind: Some(HandlerKind::Agent),
                cpu_ms: Some(300),
                deadline_ms: Some(1500),
                ..DeploySettings::default()
            },
        };
        let request = command.api_request();
        assert_eq!(request.method, Method::PUT);
        assert_eq!(request.body, ApiBody::Component("echo.wasm".into()));
        assert_eq!(
            url_of(&command),
            "http://h:7/admin/v1/handlers/echo?kind=agent&cpu_ms=300&deadline_ms=1500"
        );
    }

    /// Handler routes put the name in one path segment, escaped.
    #[test]
    fn handler_routes() {
        let name = || "a b/c".to_owned();
        let cases = [
            (
                OperatorCommand::Show {
                    connection: connection(),
                    name: name(),
                },
                Method::GET,
                "http://h:7/admin/v1/handlers/a%20b%2Fc",
            ),
            (
                OperatorCommand::Rollback {
                    connection: connection(),
                    name: name(),
                },
                Method::POST,
                "http://h:7/admin/v1/handlers/a%20b%2Fc/rollback",
            ),
            (
                OperatorCommand::Delete {
                    connection: connection(),
                    name: name(),
                    purge: false,
                },
                Method::DELETE,
                "http://h:7/admin/v1/handlers/a%20b%2Fc",
            ),
            (
                OperatorCommand::Delete {
                    connection: connection(),
                    name: name(),
                    purge: true,
                },
                Method::DELETE,
                "http://h:7/admin/v1/handlers/a%20b%2Fc?purge=true",
            ),
            (
                OperatorCommand::State {
                    connection: connection(),
                    handler: "counter".into(),
                    agent: Some("agent:counter/alice".into()),
                },
                Method::GET,
                "http://h:7/admin/v1/state/counter?agent=agent%3Acounter%2Falice",
            ),
            (
                OperatorCommand::List {
                    connection: connection(),
                },
                Method::GET,
                "http://h:7/admin/v1/handlers",
            ),
        ];
        for (command, method, url) in cases {
            assert_eq!(command.api_request().method, method);
            assert_eq!(command.api_request().body, ApiBody::Empty);
            assert_eq!(url_of(&command), url);
        }
    }

    /// Send and request post the same message; request adds the wait and waits longer.
    #[test]
    fn message_requests() {
        let sent = OperatorCommand::Send {
            connection: connection(),
            message: message(),
        };
        let asked = OperatorCommand::Request {
            connection: connection(),
            message: message(),
            timeout: Duration::from_millis(2500),
        };
        let expected = json!({"to": "echo", "messageType": "Ping", "payload": {"n": 1}});
        assert_eq!(body_of(&sent), expected);
        assert_eq!(body_of(&asked), expected);
        assert_eq!(url_of(&sent), "http://h:7/admin/v1/messages");
        assert_eq!(url_of(&asked), "http://h:7/admin/v1/messages?wait=2500ms");
        assert_eq!(
            asked.api_request().timeout,
            Duration::from_millis(2500) + WAIT_GRACE
        );
    }

    /// Emit posts an EVENT, or a DATA_CHANGE_EVENT whose object is the payload.
    #[test]
    fn emit_requests() {
        let emit = |data_change| OperatorCommand::Emit {
            connection: connection(),
            event_type: "User".into(),
            payload: Json::parse(r#"{"id":"u1"}"#).unwrap(),
            data_change,
        };
        assert_eq!(url_of(&emit(None)), "http://h:7/admin/v1/events");
        assert_eq!(
            body_of(&emit(None)),
            json!({"signalType": "EVENT", "eventType": "User", "payload": {"id": "u1"}})
        );
        assert_eq!(
            body_of(&emit(Some(DataChange::Created))),
            json!({
                "signalType": "DATA_CHANGE_EVENT",
                "changeType": "CREATED",
                "objectType": "User",
                "object": {"id": "u1"}
            })
        );
    }

    /// A base that is not http(s) is refused rather than mangled.
    #[test]
    fn base_must_be_http() {
        let request = OperatorCommand::List {
            connection: connection(),
        }
        .api_request();
        assert!(
            request
                .url(&Url::parse("mailto:ops@example.com").unwrap())
                .is_err()
        );
        let plain = request.url(&Url::parse("http://h:7").unwrap()).unwrap();
        assert_eq!(plain.as_str(), "http://h:7/v1/handlers");
    }
}
