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
    ownership: Borrowing { duplicate_if_necessary: false },
});

pub use self::switchboard::signal::types as wit;

/// What a guest call needs owned that the signal does not hold in that form: the WIT
/// types lend `&String` and `&Vec` for types the world also uses owned (the JSON payload,
/// the header list, a failure), so the caller keeps these beside the [`Delivery`].
pub struct Lent {
    headers: Vec<(String, String)>,
    payload: String,
    /// An ErrorReply's failure; empty (no allocation) for other kinds.
    failure: wit::Failure,
}

impl Lent {
    /// The parts of `signal` a [`Delivery`] borrows from here.
    pub fn of(signal: &Signal) -> Self {
        let (payload, failure) = match &signal.body {
            Body::Message(sig::Message { payload, .. })
            | Body::Event { payload, .. }
            | Body::Reply { payload, .. } => (payload.as_str().to_owned(), None),
            Body::DataChange { object, .. } => (object.as_str().to_owned(), None),
            Body::ErrorReply { error, .. } => (String::new(), Some(error.clone())),
        };
        let failure = failure.unwrap_or_else(|| sig::Failure::new(0, String::new()));
        Self {
            headers: signal
                .envelope
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            payload,
            failure: failure.into(),
        }
    }
}

/// An envelope lent to a guest call.
fn envelope<'a>(e: &'a Envelope, lent: &'a Lent) -> wit::Envelope<'a> {
    wit::Envelope {
        id: &e.id,
        timestamp: e.timestamp,
        from: &e.from,
        headers: &lent.headers,
        depth: e.depth,
        deadline: e.deadline,
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

/// A signal in the shape the handler export for its kind takes, lending its strings: a
/// guest call copies them straight from the signal into the guest's memory.
pub enum Delivery<'a> {
    Message(wit::Message<'a>),
    Event(wit::Event<'a>),
    DataChange(wit::DataChangeEvent<'a>),
    Reply(wit::IncomingReply<'a>),
}

impl<'a> Delivery<'a> {
    /// `signal` as its export takes it, with what it lends from `lent` (`Lent::of` the
    /// same signal).
    pub fn of(signal: &'a Signal, lent: &'a Lent) -> Self {
        let envelope = envelope(&signal.envelope, lent);
        let payload = &lent.payload;
        match &signal.body {
            Body::Message(m) => Self::Message(wit::Message {
                envelope,
                message_type: &m.message_type,
                to: &m.to,
                return_address: m.return_address.as_deref(),
                payload,
            }),
            Body::Event { event_type, .. } => Self::Event(wit::Event {
                envelope,
                event_type,
                payload,
            }),
            Body::DataChange {
                change_type,
                object_type,
                ..
            } => Self::DataChange(wit::DataChangeEvent {
                envelope,
                change_type: (*change_type).into(),
                object_type,
                object: payload,
            }),
            Body::Reply { reply_to, to, .. } => Self::Reply(wit::IncomingReply::Ok(wit::Reply {
                envelope,
                reply_to,
                to,
                payload,
            })),
            Body::ErrorReply { reply_to, to, .. } => {
                Self::Reply(wit::IncomingReply::Err(wit::ErrorReply {
                    envelope,
                    reply_to,
                    to,
                    error: &lent.failure,
                }))
            }
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
