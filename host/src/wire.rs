//! The JSON wire format: how a signal looks outside the WIT (HTTP, WebSocket, NATS, logs).
//!
//! One flat camelCase record in the seed's own shape, with `signalType` saying which fields
//! apply. Nothing is dropped silently: [`WireSignal`] denies unknown fields, and a field that
//! exists but does not belong to the signal's kind (`eventType` on a MESSAGE) is refused too.
//! Every edge parses text straight into [`WireSignal`], so a field given twice is refused
//! too, never settled by which came last.
//!
//! Two ways in, one set of checks:
//! - [`WireSignal::into_signal`]: a complete signal as hosts carry it between them, envelope
//!   (`id`, `timestamp`, `from`) included.
//! - [`WireSignal::into_client_body`]: what a client hands an edge (HTTP, WebSocket, the
//!   `run` command's input). The host stamps the envelope, so a client-supplied `id`, `from`,
//!   `timestamp` or `depth` is refused; the edge may imply the kind, so `signalType` can be
//!   left out.
//!
//! `depth` is the signal's causal depth (see [`Envelope::depth`]): always written, and
//! optional when reading a complete signal (absent means 0).

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::signal::{Body, ChangeType, Envelope, Failure, Headers, Json, Message, Signal};

/// A signal's kind on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SignalType {
    Message,
    Event,
    Reply,
    ErrorReply,
    DataChangeEvent,
}

impl SignalType {
    /// The kind as the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "MESSAGE",
            Self::Event => "EVENT",
            Self::Reply => "REPLY",
            Self::ErrorReply => "ERROR_REPLY",
            Self::DataChangeEvent => "DATA_CHANGE_EVENT",
        }
    }

    /// The body fields (beyond the envelope, `signalType` and `headers`) this kind takes.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Message => &["messageType", "to", "returnAddress", "payload"],
            Self::Event => &["eventType", "payload"],
            Self::Reply => &["replyTo", "to", "payload"],
            Self::ErrorReply => &["replyTo", "to", "code", "description", "help"],
            Self::DataChangeEvent => &["changeType", "objectType", "object"],
        }
    }

    /// The kinds an edge implying `self` accepts: an emission is an event or a data change.
    fn family(self) -> &'static [SignalType] {
        match self {
            Self::Event | Self::DataChangeEvent => &[Self::Event, Self::DataChangeEvent],
            Self::Message => &[Self::Message],
            Self::Reply => &[Self::Reply],
            Self::ErrorReply => &[Self::ErrorReply],
        }
    }

    /// The accepted kinds, for an error message.
    fn family_names(self) -> String {
        let names: Vec<_> = self.family().iter().map(|k| k.as_str()).collect();
        names.join(" or ")
    }
}

impl fmt::Display for SignalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fields that name something a signal is routed by: present but empty is refused.
const NON_EMPTY: [&str; 4] = ["messageType", "eventType", "objectType", "to"];

/// The envelope fields only the host sets; a client edge refuses them.
const HOST_SET: [&str; 6] = ["id", "from", "timestamp", "depth", "deadline", "paced"];

/// A signal as JSON. Every field is optional here; the conversions check that the ones its
/// kind needs are present and that no other kind's fields are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// Causal depth, set by the host only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    /// A message's deadline (milliseconds since the Unix epoch), set by the host only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// Whether the signal descends from a fired timer (see [`Envelope::paced`]), set by the
    /// host only; written only when true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paced: Option<bool>,
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
    #[schema(value_type = Option<String>, pattern = "^(CREATED|UPDATED|DELETED)$")]
    pub change_type: Option<ChangeType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub object: Option<Json>,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub headers: Headers,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub payload: Option<Json>,
}

/// Whether JSON text is an object (its first character past white space is `{`).
pub fn is_object(text: &[u8]) -> bool {
    text.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// Why a wire signal is not a valid signal. Every message names the field at fault.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// A field the signal's kind requires is absent.
    #[error("a {kind} signal needs the field `{field}`")]
    Missing {
        kind: SignalType,
        field: &'static str,
    },
    /// A field of another kind is present (`eventType` on a MESSAGE).
    #[error("a {kind} signal does not take the field `{field}`")]
    Foreign {
        kind: SignalType,
        field: &'static str,
    },
    /// A field that names what the signal is routed by is empty.
    #[error("the field `{field}` of a {kind} signal must not be empty")]
    Empty {
        kind: SignalType,
        field: &'static str,
    },
    /// A client supplied an envelope field only the host sets.
    #[error("the host sets `{0}`; leave it out")]
    SetByHost(&'static str),
    /// The explicit `signalType` is not one the edge takes.
    #[error("this endpoint takes {} signals, not {given}", .implied.family_names())]
    WrongKind {
        implied: SignalType,
        given: SignalType,
    },
    /// The envelope fields must all be present in a full signal.
    #[error("a complete signal needs `{0}` in its envelope")]
    MissingEnvelope(&'static str),
}

impl WireSignal {
    /// Reads a wire signal from JSON text, by the one rule of every edge: a JSON object (serde
    /// would also take a struct written as an array of its fields), with no unknown field and
    /// no field given twice.
    pub fn from_json(text: &[u8]) -> Result<Self, serde_json::Error> {
        if !is_object(text) {
            return Err(serde::de::Error::custom("a signal is a JSON object"));
        }
        serde_json::from_slice(text)
    }

    /// Turns a complete wire signal (envelope included, as carried between hosts) into a
    /// signal.
    pub fn into_signal(mut self) -> Result<Signal, WireError> {
        let envelope = Envelope {
            id: self.id.take().ok_or(WireError::MissingEnvelope("id"))?,
            timestamp: self
                .timestamp
                .take()
                .ok_or(WireError::MissingEnvelope("timestamp"))?,
            from: self.from.take().ok_or(WireError::MissingEnvelope("from"))?,
            headers: std::mem::take(&mut self.headers),
            depth: self.depth.take().unwrap_or(0),
            deadline: self.deadline.take(),
            paced: self.paced.take().unwrap_or(false),
        };
        let kind = self.signal_type.unwrap_or(SignalType::Message);
        let body = self.into_kind(kind)?;
        Ok(Signal { envelope, body })
    }

    /// The one entry point for signals from clients (HTTP, WebSocket, the `run` command's
    /// input): refuses the envelope fields the host stamps itself, and takes the kind from
    /// the edge. `implied` is what the endpoint carries: `Some(Message)` accepts only
    /// messages; `Some(Event)` or `Some(DataChangeEvent)` accepts either emission, telling
    /// them apart by shape (`changeType`, `objectType` or `object` make a data change) when
    /// `signalType` is left out; `None` takes `signalType` as given, MESSAGE when absent.
    /// The caller keeps `headers`, which clients may set.
    pub fn into_client_body(self, implied: Option<SignalType>) -> Result<Body, WireError> {
        let stamped = [
            self.id.is_some(),
            self.from.is_some(),
            self.timestamp.is_some(),
            self.depth.is_some(),
            self.deadline.is_some(),
            self.paced.is_some(),
        ];
        if let Some((field, _)) = HOST_SET.into_iter().zip(stamped).find(|(_, set)| *set) {
            return Err(WireError::SetByHost(field));
        }
        let kind = self.kind(implied)?;
        self.into_kind(kind)
    }

    /// The kind-specific part with the envelope fields ignored, for reading a signal a host
    /// wrote when only its body matters (the operator reading a reply). Client input goes
    /// through [`Self::into_client_body`] instead, which refuses envelope fields.
    pub fn into_body(self) -> Result<Body, WireError> {
        let kind = self.signal_type.unwrap_or(SignalType::Message);
        self.into_kind(kind)
    }

    /// The signal's kind at an edge implying `implied` (see [`Self::into_client_body`]).
    fn kind(&self, implied: Option<SignalType>) -> Result<SignalType, WireError> {
        let Some(implied) = implied else {
            return Ok(self.signal_type.unwrap_or(SignalType::Message));
        };
        match self.signal_type {
            Some(given) if implied.family().contains(&given) => Ok(given),
            Some(given) => Err(WireError::WrongKind { implied, given }),
            None if implied.family().contains(&SignalType::DataChangeEvent) => {
                let data_change = self.change_type.is_some()
                    || self.object_type.is_some()
                    || self.object.is_some();
                Ok(if data_change {
                    SignalType::DataChangeEvent
                } else {
                    SignalType::Event
                })
            }
            None => Ok(implied),
        }
    }

    /// The body fields that are present, as the wire spells them.
    fn present_fields(&self) -> impl Iterator<Item = &'static str> {
        [
            ("messageType", self.message_type.is_some()),
            ("to", self.to.is_some()),
            ("returnAddress", self.return_address.is_some()),
            ("replyTo", self.reply_to.is_some()),
            ("code", self.code.is_some()),
            ("description", self.description.is_some()),
            ("help", self.help.is_some()),
            ("eventType", self.event_type.is_some()),
            ("changeType", self.change_type.is_some()),
            ("objectType", self.object_type.is_some()),
            ("object", self.object.is_some()),
            ("payload", self.payload.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, present)| present.then_some(field))
    }

    /// The body of a `kind` signal: every field it needs, none it does not take.
    fn into_kind(self, kind: SignalType) -> Result<Body, WireError> {
        if let Some(field) = self.present_fields().find(|f| !kind.fields().contains(f)) {
            return Err(WireError::Foreign { kind, field });
        }
        let need = |value: Option<String>, field: &'static str| {
            let value = value.ok_or(WireError::Missing { kind, field })?;
            if NON_EMPTY.contains(&field) && value.trim().is_empty() {
                return Err(WireError::Empty { kind, field });
            }
            Ok(value)
        };
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
/// Writes a signal in the wire shape straight from its fields, in [`WireSignal`]'s field
/// order, without first copying them into a [`WireSignal`]: replies are serialized on every
/// awaited request.
impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = &self.envelope;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &e.id)?;
        map.serialize_entry("timestamp", &e.timestamp)?;
        let (kind, payload) = match &self.body {
            Body::Message(m) => (SignalType::Message, Some(&m.payload)),
            Body::Event { payload, .. } => (SignalType::Event, Some(payload)),
            Body::Reply { payload, .. } => (SignalType::Reply, Some(payload)),
            Body::ErrorReply { .. } => (SignalType::ErrorReply, None),
            Body::DataChange { .. } => (SignalType::DataChangeEvent, None),
        };
        map.serialize_entry("signalType", &kind)?;
        map.serialize_entry("from", &e.from)?;
        map.serialize_entry("depth", &e.depth)?;
        if let Some(deadline) = e.deadline {
            map.serialize_entry("deadline", &deadline)?;
        }
        if e.paced {
            map.serialize_entry("paced", &true)?;
        }
        match &self.body {
            Body::Message(m) => {
                map.serialize_entry("messageType", &m.message_type)?;
                map.serialize_entry("to", &m.to)?;
                if let Some(address) = &m.return_address {
                    map.serialize_entry("returnAddress", address)?;
                }
            }
            Body::Event { event_type, .. } => map.serialize_entry("eventType", event_type)?,
            Body::Reply { reply_to, to, .. } => {
                map.serialize_entry("to", to)?;
                map.serialize_entry("replyTo", reply_to)?;
            }
            Body::ErrorReply {
                reply_to,
                to,
                error,
            } => {
                map.serialize_entry("to", to)?;
                map.serialize_entry("replyTo", reply_to)?;
                map.serialize_entry("code", &error.code)?;
                map.serialize_entry("description", &error.description)?;
                if let Some(help) = &error.help {
                    map.serialize_entry("help", help)?;
                }
            }
            Body::DataChange {
                change_type,
                object_type,
                object,
            } => {
                map.serialize_entry("changeType", change_type)?;
                map.serialize_entry("objectType", object_type)?;
                map.serialize_entry("object", object)?;
            }
        }
        if !e.headers.is_empty() {
            map.serialize_entry("headers", &e.headers)?;
        }
        if let Some(payload) = payload {
            map.serialize_entry("payload", payload)?;
        }
        map.end()
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
mod tests;
