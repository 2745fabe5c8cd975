//! The thin layer over the host's imports: every function here is one call into the host.
//! Everything they build or decode lives in the pure modules, where it is unit-tested; the
//! imports themselves only exist inside a component (on a native target they panic).

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::broadcast::{ChangeType, Emitted};
use crate::failure::Failure;
use crate::log::LogLevel;
use crate::outgoing::{self, SendOptions};
use crate::reply::decode_reply;
use crate::typed::{self, DataObject, Event, Message};
use crate::wit_host as host;

/// Sends `msg` to `to` and goes on; its reply arrives later at this handler's
/// `handle_reply`. Returns the message id, which the reply's `reply_to` will carry.
pub fn send<M: Message>(to: &str, msg: &M) -> Result<String, Failure> {
    send_with(to, msg, SendOptions::new())
}

/// [`send`] with a return address or headers.
pub fn send_with<M: Message>(to: &str, msg: &M, options: SendOptions) -> Result<String, Failure> {
    Ok(host::send(&outgoing::typed_outgoing(to, msg, options)?)?)
}

/// Sends a message of any type with any JSON payload; see [`send`].
pub fn send_untyped(
    to: &str,
    message_type: &str,
    payload: &serde_json::Value,
    options: SendOptions,
) -> Result<String, Failure> {
    Ok(host::send(&outgoing::untyped_outgoing(
        to,
        message_type,
        payload,
        options,
    ))?)
}

/// Sends `msg` to `to` and waits (suspended, not blocking the host) for the reply, decoded
/// as `R`. An ErrorReply comes back as its failure, no reply within `timeout` as a 504, and
/// a reply that does not decode as `R` as a 400.
pub fn request<M: Message, R: DeserializeOwned>(
    to: &str,
    msg: &M,
    timeout: Duration,
) -> Result<R, Failure> {
    request_with(to, msg, timeout, SendOptions::new())
}

/// [`request`] with headers (a return address is ignored: the reply comes back here).
pub fn request_with<M: Message, R: DeserializeOwned>(
    to: &str,
    msg: &M,
    timeout: Duration,
    options: SendOptions,
) -> Result<R, Failure> {
    let json = host::request(
        &outgoing::typed_outgoing(to, msg, options)?,
        outgoing::timeout_ms(timeout),
    )?;
    decode_reply(&json, &M::message_type())
}

/// Sends a message of any type and waits for its reply as a JSON value; see [`request`].
pub fn request_untyped(
    to: &str,
    message_type: &str,
    payload: &serde_json::Value,
    timeout: Duration,
    options: SendOptions,
) -> Result<serde_json::Value, Failure> {
    let out = outgoing::untyped_outgoing(to, message_type, payload, options);
    let json = host::request(&out, outgoing::timeout_ms(timeout))?;
    decode_reply(&json, message_type)
}

/// Broadcasts `event` to every handler subscribed to its type. Returns its id and how many subscribers it is offered to.
pub fn emit<E: Event>(event: &E) -> Result<Emitted, Failure> {
    Ok(host::emit(&E::event_type(), &typed::encode(event)?, &[])?.into())
}

/// Broadcasts an event of any type with any JSON payload and headers.
pub fn emit_untyped(
    event_type: &str,
    payload: &serde_json::Value,
    headers: &[(String, String)],
) -> Result<Emitted, Failure> {
    Ok(host::emit(event_type, &payload.to_string(), headers)?.into())
}

/// Broadcasts that `object` was created. See [`Emitted`].
pub fn created<O: DataObject>(object: &O) -> Result<Emitted, Failure> {
    data_change(ChangeType::Created, object)
}

/// Broadcasts that `object` was updated (it is the new version). See [`Emitted`].
pub fn updated<O: DataObject>(object: &O) -> Result<Emitted, Failure> {
    data_change(ChangeType::Updated, object)
}

/// Broadcasts that `object` was deleted (it is the last version). See [`Emitted`].
pub fn deleted<O: DataObject>(object: &O) -> Result<Emitted, Failure> {
    data_change(ChangeType::Deleted, object)
}

/// Broadcasts a data change of `object` to subscribers of its object type.
pub fn data_change<O: DataObject>(change: ChangeType, object: &O) -> Result<Emitted, Failure> {
    Ok(host::emit_data_change(
        change.into(),
        &O::object_type(),
        &typed::encode(object)?,
        &[],
    )?
    .into())
}

/// Writes a line to the host's log; the `info!`-style macros call this.
pub fn log(level: LogLevel, message: &str) {
    host::log(level.into(), message);
}

#[cfg(test)]
mod tests {
    //! Only what runs before the host is called can run natively (the imports panic there):
    //! a value that does not encode is a 500 and nothing is sent, emitted or requested.

    use super::*;
    use crate::typed::tests::{Unencodable, assert_unencodable};

    /// `send` and `send_with` encode before sending: an unencodable message sends nothing.
    #[test]
    fn an_unencodable_message_is_not_sent() {
        assert_unencodable(send("echo", &Unencodable));
        let options = SendOptions::new().header("k", "v");
        assert_unencodable(send_with("echo", &Unencodable, options));
    }

    /// `request` encodes before the host waits: an unencodable request is not made.
    #[test]
    fn an_unencodable_request_is_not_made() {
        let timeout = Duration::from_secs(1);
        assert_unencodable(request::<_, serde_json::Value>(
            "echo",
            &Unencodable,
            timeout,
        ));
    }

    /// `emit` and the data-change broadcasts encode before emitting.
    #[test]
    fn an_unencodable_event_or_object_is_not_broadcast() {
        assert_unencodable(emit(&Unencodable));
        assert_unencodable(created(&Unencodable));
        assert_unencodable(updated(&Unencodable));
        assert_unencodable(deleted(&Unencodable));
    }
}
