//! Outgoing messages: [`SendOptions`] and the pure construction of the host's
//! `outgoing-message` record from typed or untyped payloads.

use std::time::Duration;

use crate::failure::Failure;
use crate::typed::{self, Message};
use crate::wit_host;

/// Optional parts of an outgoing message: where its reply goes, and headers.
///
/// ```
/// let options = switchboard_sdk::SendOptions::new().return_address("audit").header("trace", "t1");
/// assert_eq!(options.return_address_ref(), Some("audit"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    return_address: Option<String>,
    headers: Vec<(String, String)>,
}

impl SendOptions {
    /// No return address (a reply comes back to this handler's `handle_reply`), no headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the reply to `address` instead of back to this handler.
    pub fn return_address(mut self, address: impl Into<String>) -> Self {
        self.return_address = Some(address.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The return address set, if any.
    pub fn return_address_ref(&self) -> Option<&str> {
        self.return_address.as_deref()
    }

    /// The headers set.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }
}

/// The record the host's `send` and `request` take, for a payload already encoded.
pub(crate) fn outgoing(
    to: &str,
    message_type: String,
    payload: String,
    options: SendOptions,
) -> wit_host::OutgoingMessage {
    wit_host::OutgoingMessage {
        to: to.to_owned(),
        message_type,
        payload,
        return_address: options.return_address,
        headers: options.headers,
    }
}

/// The record for a typed message: its message type and JSON encoding.
pub(crate) fn typed_outgoing<M: Message>(
    to: &str,
    msg: &M,
    options: SendOptions,
) -> Result<wit_host::OutgoingMessage, Failure> {
    Ok(outgoing(
        to,
        M::message_type(),
        typed::encode(msg)?,
        options,
    ))
}

/// The record for an untyped message: any message type, any JSON payload.
pub(crate) fn untyped_outgoing(
    to: &str,
    message_type: &str,
    payload: &serde_json::Value,
    options: SendOptions,
) -> wit_host::OutgoingMessage {
    outgoing(to, message_type.to_owned(), payload.to_string(), options)
}

/// A timeout in whole milliseconds as the host takes it, saturating at `u32::MAX` (~49 days).
pub(crate) fn timeout_ms(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Reserve {
        item: String,
        quantity: u32,
    }
    impl Message for Reserve {}

    #[test]
    fn typed_messages_carry_their_type_and_json() {
        let msg = Reserve {
            item: "apple".into(),
            quantity: 2,
        };
        let out = typed_outgoing("inventory", &msg, SendOptions::new()).unwrap();
        assert_eq!(out.to, "inventory");
        assert_eq!(out.message_type, "Reserve");
        assert_eq!(out.payload, r#"{"item":"apple","quantity":2}"#);
        assert_eq!(out.return_address, None);
        assert!(out.headers.is_empty());
    }

    #[test]
    fn options_set_return_address_and_headers() {
        let options = SendOptions::new().return_address("audit").header("k", "v");
        assert_eq!(options.return_address_ref(), Some("audit"));
        assert_eq!(options.headers(), [("k".to_owned(), "v".to_owned())]);
        let out = untyped_outgoing("echo", "Ping", &serde_json::json!({"text": "hi"}), options);
        assert_eq!(
            (out.message_type.as_str(), out.payload.as_str()),
            ("Ping", r#"{"text":"hi"}"#)
        );
        assert_eq!(out.return_address.as_deref(), Some("audit"));
        assert_eq!(out.headers, [("k".to_owned(), "v".to_owned())]);
    }

    #[test]
    fn timeouts_round_down_to_milliseconds_and_saturate() {
        assert_eq!(timeout_ms(Duration::from_millis(2000)), 2000);
        assert_eq!(timeout_ms(Duration::from_micros(1500)), 1);
        assert_eq!(timeout_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
