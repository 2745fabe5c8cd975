//! [`IncomingMessage`]: a message addressed to this handler.

use serde::de::DeserializeOwned;

use crate::deferred::Deferred;
use crate::envelope::{Envelope, Signal};
use crate::failure::Failure;
use crate::typed::{self, Message};
use crate::wit;

/// A message delivered to `handle_message`.
#[derive(Debug, Clone)]
pub struct IncomingMessage {
    envelope: Envelope,
    message_type: String,
    to: String,
    return_address: Option<String>,
    payload: String,
}

impl IncomingMessage {
    /// What the message means, e.g. `SetUsername`.
    pub fn message_type(&self) -> &str {
        &self.message_type
    }

    /// The address it was sent to: this service's name, or `agent:<id>` for an agent.
    pub fn to(&self) -> &str {
        &self.to
    }

    /// Where the sender asked the reply to go, if not to itself.
    pub fn return_address(&self) -> Option<&str> {
        self.return_address.as_deref()
    }

    /// The payload as JSON text.
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// The payload as a JSON value; 400 if it is not JSON.
    pub fn payload_value(&self) -> Result<serde_json::Value, Failure> {
        typed::decode(&self.payload, &self.what())
    }

    /// Whether the message's type is `M`'s message type.
    pub fn is<M: Message>(&self) -> bool {
        self.message_type == M::message_type()
    }

    /// The payload decoded as `M`; 400 with a description of what did not fit otherwise.
    /// The message type is not checked: use [`is`](Self::is) or [`decode_if`](Self::decode_if).
    pub fn decode<M: DeserializeOwned>(&self) -> Result<M, Failure> {
        typed::decode(&self.payload, &self.what())
    }

    /// `Ok(None)` if the message is not an `M`, else its payload decoded as `M`.
    pub fn decode_if<M: Message>(&self) -> Result<Option<M>, Failure> {
        if self.is::<M>() {
            self.decode().map(Some)
        } else {
            Ok(None)
        }
    }

    /// A 404 saying this handler does not accept this message's type: the answer for a
    /// message type no branch of `handle_message` matched.
    pub fn unsupported(&self) -> Failure {
        Failure::not_found(format!(
            "`{}` does not accept message type `{}`",
            self.to, self.message_type
        ))
    }

    /// A handle to answer this message later: return [`Reply::later`](crate::Reply::later)
    /// from `handle_message`, keep the handle (in state, say: it serializes), and answer
    /// with [`Deferred::reply`] before the message's deadline. The host knows where the
    /// answer goes and takes exactly one.
    pub fn defer(&self) -> Deferred {
        Deferred::new(self.envelope.id())
    }

    fn what(&self) -> String {
        format!("payload of message `{}`", self.message_type)
    }
}

impl Signal for IncomingMessage {
    fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

impl From<wit::Message> for IncomingMessage {
    fn from(m: wit::Message) -> Self {
        Self {
            envelope: m.envelope.into(),
            message_type: m.message_type,
            to: m.to,
            return_address: m.return_address,
            payload: m.payload,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::envelope::tests::wit_envelope;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct SetUsername {
        username: String,
    }
    impl Message for SetUsername {}

    #[derive(Serialize, Deserialize)]
    struct Other {}
    impl Message for Other {}

    /// A message as the host would deliver it, for tests across the crate.
    pub(crate) fn wit_message(message_type: &str, payload: &str) -> wit::Message {
        wit::Message {
            envelope: wit_envelope("msg-1", "user:ann"),
            message_type: message_type.into(),
            to: "username".into(),
            return_address: None,
            payload: payload.into(),
        }
    }

    fn incoming(message_type: &str, payload: &str) -> IncomingMessage {
        wit_message(message_type, payload).into()
    }

    #[test]
    fn exposes_the_envelope_and_fields() {
        let msg = incoming("SetUsername", r#"{"username":"ann"}"#);
        assert_eq!(msg.id(), "msg-1");
        assert_eq!(msg.from(), "user:ann");
        assert_eq!(msg.header("x"), Some("1"));
        assert_eq!(msg.message_type(), "SetUsername");
        assert_eq!(msg.to(), "username");
        assert_eq!(msg.return_address(), None);
        assert_eq!(msg.payload(), r#"{"username":"ann"}"#);
        assert_eq!(msg.payload_value().unwrap()["username"], "ann");
    }

    #[test]
    fn is_and_decode_follow_the_message_type() {
        let msg = incoming("SetUsername", r#"{"username":"ann"}"#);
        assert!(msg.is::<SetUsername>());
        assert!(!msg.is::<Other>());
        assert_eq!(msg.decode::<SetUsername>().unwrap().username, "ann");
        assert_eq!(
            msg.decode_if::<SetUsername>().unwrap(),
            Some(SetUsername {
                username: "ann".into()
            })
        );
        assert!(msg.decode_if::<Other>().unwrap().is_none());
    }

    #[test]
    fn bad_json_is_a_400() {
        let msg = incoming("SetUsername", r#"{"username":42}"#);
        let err = msg.decode::<SetUsername>().unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(
            err.description()
                .contains("payload of message `SetUsername` did not decode as SetUsername"),
            "{err}"
        );
        assert_eq!(msg.decode_if::<SetUsername>().unwrap_err().code(), 400);
        assert_eq!(
            incoming("X", "not json")
                .payload_value()
                .unwrap_err()
                .code(),
            400
        );
    }

    #[test]
    fn unsupported_is_a_404_naming_the_type() {
        let err = incoming("Dance", "{}").unsupported();
        assert_eq!(err.code(), 404);
        assert_eq!(
            err.description(),
            "`username` does not accept message type `Dance`"
        );
    }

    #[test]
    fn defer_names_the_message() {
        let msg = incoming("SetUsername", "{}");
        assert_eq!(msg.defer().message_id(), "msg-1");
    }
}
