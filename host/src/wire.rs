//! The JSON wire format: how a signal looks outside the WIT (HTTP, WebSocket, NATS, logs).
//!
//! One flat camelCase record in the seed's own shape, with `signalType` saying which fields
//! apply. Unknown fields are refused, never dropped: [`WireSignal`] denies them and
//! [`WireSignal::into_signal`] says which field a kind is missing.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::signal::{Body, ChangeType, Envelope, Failure, Headers, Json, Message, Signal};

/// A signal's kind on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SignalType {
    Message,
    Event,
    Reply,
    ErrorReply,
    DataChangeEvent,
}

/// A signal as JSON. Every field is optional here; [`WireSignal::into_signal`] checks that
/// the ones its kind needs are present.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireSignal {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_type: Option<SignalType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_type: Option<ChangeType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<Json>,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Json>,
}

/// Why a wire signal is not a valid signal.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// A field the signal's kind requires is absent.
    #[error("a {kind:?} signal needs the field `{field}`")]
    Missing {
        kind: SignalType,
        field: &'static str,
    },
    /// The envelope fields must all be present in a full signal.
    #[error("a complete signal needs `{0}` in its envelope")]
    MissingEnvelope(&'static str),
}

impl WireSignal {
    /// Turns a complete wire signal (envelope included, as carried between hosts) into a
    /// signal.
    pub fn into_signal(self) -> Result<Signal, WireError> {
        let envelope = Envelope {
            id: self.id.clone().ok_or(WireError::MissingEnvelope("id"))?,
            timestamp: self
                .timestamp
                .ok_or(WireError::MissingEnvelope("timestamp"))?,
            from: self
                .from
                .clone()
                .ok_or(WireError::MissingEnvelope("from"))?,
            headers: self.headers.clone(),
        };
        let body = self.into_body()?;
        Ok(Signal { envelope, body })
    }

    /// The kind-specific part; the envelope fields are ignored, so an edge that stamps its
    /// own envelope (an HTTP client's message) can use this directly.
    pub fn into_body(self) -> Result<Body, WireError> {
        let kind = self.signal_type.unwrap_or(SignalType::Message);
        let need = |value: Option<String>, field| value.ok_or(WireError::Missing { kind, field });
        let payload = self.payload.unwrap_or_else(Json::null);
        Ok(match kind {
            SignalType::Message => Body::Message(Message {
                message_type: need(self.message_type, "messageType")?,
                to: need(self.to, "to")?,
                return_address: self.return_address,
                payload,
            }),
            SignalType::Event => Body::Event {
                event_type: need(self.event_type, "eventType")?,
                payload,
            },
            SignalType::Reply => Body::Reply {
                reply_to: need(self.reply_to, "replyTo")?,
                to: need(self.to, "to")?,
                payload,
            },
            SignalType::ErrorReply => Body::ErrorReply {
                reply_to: need(self.reply_to, "replyTo")?,
                to: need(self.to, "to")?,
                error: Failure {
                    code: self.code.ok_or(WireError::Missing {
                        kind,
                        field: "code",
                    })?,
                    description: need(self.description, "description")?,
                    help: self.help,
                },
            },
            SignalType::DataChangeEvent => Body::DataChange {
                change_type: self.change_type.ok_or(WireError::Missing {
                    kind,
                    field: "changeType",
                })?,
                object_type: need(self.object_type, "objectType")?,
                object: self.object.ok_or(WireError::Missing {
                    kind,
                    field: "object",
                })?,
            },
        })
    }
}

impl From<&Signal> for WireSignal {
    fn from(signal: &Signal) -> Self {
        let e = &signal.envelope;
        let mut wire = WireSignal {
            id: Some(e.id.clone()),
            timestamp: Some(e.timestamp),
            from: Some(e.from.clone()),
            headers: e.headers.clone(),
            ..Default::default()
        };
        match &signal.body {
            Body::Message(m) => {
                wire.signal_type = Some(SignalType::Message);
                wire.message_type = Some(m.message_type.clone());
                wire.to = Some(m.to.clone());
                wire.return_address = m.return_address.clone();
                wire.payload = Some(m.payload.clone());
            }
            Body::Event {
                event_type,
                payload,
            } => {
                wire.signal_type = Some(SignalType::Event);
                wire.event_type = Some(event_type.clone());
                wire.payload = Some(payload.clone());
            }
            Body::Reply {
                reply_to,
                to,
                payload,
            } => {
                wire.signal_type = Some(SignalType::Reply);
                wire.reply_to = Some(reply_to.clone());
                wire.to = Some(to.clone());
                wire.payload = Some(payload.clone());
            }
            Body::ErrorReply {
                reply_to,
                to,
                error,
            } => {
                wire.signal_type = Some(SignalType::ErrorReply);
                wire.reply_to = Some(reply_to.clone());
                wire.to = Some(to.clone());
                wire.code = Some(error.code);
                wire.description = Some(error.description.clone());
                wire.help = error.help.clone();
            }
            Body::DataChange {
                change_type,
                object_type,
                object,
            } => {
                wire.signal_type = Some(SignalType::DataChangeEvent);
                wire.change_type = Some(*change_type);
                wire.object_type = Some(object_type.clone());
                wire.object = Some(object.clone());
            }
        }
        wire
    }
}

impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireSignal::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        WireSignal::deserialize(deserializer)?
            .into_signal()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Envelope;

    fn roundtrip(body: Body) {
        let signal = Signal {
            envelope: Envelope::new("orders", [("trace".to_owned(), "t1".to_owned())].into()),
            body,
        };
        let text = serde_json::to_string(&signal).unwrap();
        let back: Signal = serde_json::from_str(&text).unwrap();
        assert_eq!(back, signal, "{text}");
    }

    #[test]
    fn every_kind_survives_the_wire() {
        let payload = Json::parse(r#"{"n":1}"#).unwrap();
        roundtrip(Body::Message(Message {
            message_type: "Ping".into(),
            to: "echo".into(),
            return_address: Some("audit".into()),
            payload: payload.clone(),
        }));
        roundtrip(Body::Event {
            event_type: "UserRegistered".into(),
            payload: payload.clone(),
        });
        roundtrip(Body::Reply {
            reply_to: "m1".into(),
            to: "orders".into(),
            payload: payload.clone(),
        });
        roundtrip(Body::ErrorReply {
            reply_to: "m1".into(),
            to: "orders".into(),
            error: Failure::new(409, "taken").with_help("pick another"),
        });
        roundtrip(Body::DataChange {
            change_type: ChangeType::Deleted,
            object_type: "User".into(),
            object: payload,
        });
    }

    #[test]
    fn wire_shape_is_the_seeds() {
        let json = r#"{"signalType":"DATA_CHANGE_EVENT","changeType":"CREATED","objectType":"User","object":{"id":"u1"}}"#;
        let wire: WireSignal = serde_json::from_str(json).unwrap();
        let Body::DataChange {
            change_type,
            object,
            ..
        } = wire.into_body().unwrap()
        else {
            panic!("wrong kind")
        };
        assert_eq!(change_type, ChangeType::Created);
        assert_eq!(object.as_str(), r#"{"id":"u1"}"#);
    }

    #[test]
    fn unknown_fields_and_missing_fields_are_refused() {
        let err =
            serde_json::from_str::<WireSignal>(r#"{"to":"echo","colour":"red"}"#).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");

        let wire: WireSignal = serde_json::from_str(r#"{"to":"echo"}"#).unwrap();
        assert_eq!(
            wire.into_body(),
            Err(WireError::Missing {
                kind: SignalType::Message,
                field: "messageType"
            })
        );
        let wire: WireSignal = serde_json::from_str(
            r#"{"signalType":"ERROR_REPLY","replyTo":"m","to":"a","description":"d"}"#,
        )
        .unwrap();
        assert!(matches!(
            wire.into_body(),
            Err(WireError::Missing { field: "code", .. })
        ));
        let wire: WireSignal = serde_json::from_str(r#"{"messageType":"A","to":"b"}"#).unwrap();
        assert_eq!(wire.into_signal(), Err(WireError::MissingEnvelope("id")));
    }
}
