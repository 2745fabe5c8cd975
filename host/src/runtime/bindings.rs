//! Host bindings of the `handler` world, and conversions between WIT records and signals.
//!
//! Only `request` is async on the host side: it is the one import that waits, and the guest
//! is suspended on its fiber meanwhile. Exports are called with `call_async` so that a
//! waiting guest never blocks a thread.

use crate::signal::{self as sig, Body, ChangeType, Envelope, Headers, Signal};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    imports: {
        "switchboard:signal/host.request": async,
        default: trappable,
    },
    exports: { default: async },
});

pub use self::switchboard::signal::types as wit;

impl From<&Envelope> for wit::Envelope {
    fn from(e: &Envelope) -> Self {
        Self {
            id: e.id.clone(),
            timestamp: e.timestamp,
            from: e.from.clone(),
            headers: e
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            depth: e.depth,
            deadline: e.deadline,
        }
    }
}

impl From<wit::Failure> for sig::Failure {
    fn from(f: wit::Failure) -> Self {
        Self {
            code: f.code,
            description: f.description,
            help: f.help,
        }
    }
}

impl From<sig::Failure> for wit::Failure {
    fn from(f: sig::Failure) -> Self {
        Self {
            code: f.code,
            description: f.description,
            help: f.help,
        }
    }
}

impl From<wit::ChangeType> for ChangeType {
    fn from(c: wit::ChangeType) -> Self {
        match c {
            wit::ChangeType::Created => Self::Created,
            wit::ChangeType::Updated => Self::Updated,
            wit::ChangeType::Deleted => Self::Deleted,
        }
    }
}

impl From<ChangeType> for wit::ChangeType {
    fn from(c: ChangeType) -> Self {
        match c {
            ChangeType::Created => Self::Created,
            ChangeType::Updated => Self::Updated,
            ChangeType::Deleted => Self::Deleted,
        }
    }
}

/// Collects WIT headers, the last value winning for a repeated key.
pub fn headers(list: Vec<(String, String)>) -> Headers {
    list.into_iter().collect()
}

/// A signal in the shape the handler export for its kind takes.
pub enum Delivery {
    Message(wit::Message),
    Event(wit::Event),
    DataChange(wit::DataChangeEvent),
    Reply(wit::IncomingReply),
}

impl From<&Signal> for Delivery {
    fn from(signal: &Signal) -> Self {
        let envelope = wit::Envelope::from(&signal.envelope);
        match &signal.body {
            Body::Message(m) => Self::Message(wit::Message {
                envelope,
                message_type: m.message_type.clone(),
                to: m.to.clone(),
                return_address: m.return_address.clone(),
                payload: m.payload.as_str().to_owned(),
            }),
            Body::Event {
                event_type,
                payload,
            } => Self::Event(wit::Event {
                envelope,
                event_type: event_type.clone(),
                payload: payload.as_str().to_owned(),
            }),
            Body::DataChange {
                change_type,
                object_type,
                object,
            } => Self::DataChange(wit::DataChangeEvent {
                envelope,
                change_type: (*change_type).into(),
                object_type: object_type.clone(),
                object: object.as_str().to_owned(),
            }),
            Body::Reply {
                reply_to,
                to,
                payload,
            } => Self::Reply(wit::IncomingReply::Ok(wit::Reply {
                envelope,
                reply_to: reply_to.clone(),
                to: to.clone(),
                payload: payload.as_str().to_owned(),
            })),
            Body::ErrorReply {
                reply_to,
                to,
                error,
            } => Self::Reply(wit::IncomingReply::Err(wit::ErrorReply {
                envelope,
                reply_to: reply_to.clone(),
                to: to.clone(),
                error: error.clone().into(),
            })),
        }
    }
}

/// Checks JSON text a guest handed over; a guest that sends non-JSON gets a 400.
pub fn guest_json(text: String, what: &str) -> Result<sig::Json, sig::Failure> {
    sig::Json::parse(text).map_err(|e| {
        sig::Failure::new(
            crate::signal::code::BAD_REQUEST,
            format!("the {what} is not valid JSON: {e}"),
        )
    })
}
