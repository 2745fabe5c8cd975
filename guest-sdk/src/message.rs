//! [`IncomingMessage`]: a message addressed to this handler, and [`ReplyTarget`]: what a
//! deferred reply needs to know about the message it answers.

use serde::de::DeserializeOwned;

use crate::envelope::{Envelope, Signal};
use crate::failure::Failure;
use crate::typed::{self, Message};
use crate::{wit, wit_host};

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

    /// What a deferred [`reply`](fn@crate::reply) needs to answer this message later.
    pub fn reply_target(&self) -> ReplyTarget {
        ReplyTarget {
            message_id: self.envelope.id().to_owned(),
            return_address: self.return_address.clone(),
            sender: self.envelope.from().to_owned(),
        }
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

/// The message a deferred reply answers. Keep it (it is `Clone` and plain data) when a
/// message cannot be answered from `handle_message`, and pass it to [`reply`](fn@crate::reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTarget {
    message_id: String,
    return_address: Option<String>,
    sender: String,
}

impl ReplyTarget {
    /// The id of the message to answer.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// Where that message asked its reply to go, if anywhere.
    pub fn return_address(&self) -> Option<&str> {
        self.return_address.as_deref()
    }

    /// Who sent that message.
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// The address a reply goes to: the return address if set, else the sender.
    pub fn reply_address(&self) -> &str {
        self.return_address.as_deref().unwrap_or(&self.sender)
    }
}

impl From<ReplyTarget> for wit_host::ReplyTarget {
    fn from(t: ReplyTarget) -> Self {
        Self {
            message_id: t.message_id,
            return_address: t.return_address,
            sender: t.sender,
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
    fn reply_target_copies_the_envelope() {
        let mut wit = wit_message("SetUsername", "{}");
        let target = <IncomingMessage as From<_>>::from(wit.clone()).reply_target();
        assert_eq!(
            (
                target.message_id(),
                target.sender(),
                target.return_address()
            ),
            ("msg-1", "user:ann", None)
        );
        assert_eq!(target.reply_address(), "user:ann");

        wit.return_address = Some("audit".into());
        let target = <IncomingMessage as From<_>>::from(wit).reply_target();
        assert_eq!(target.reply_address(), "audit");
        let w: wit_host::ReplyTarget = target.into();
        assert_eq!(
            (
                w.message_id.as_str(),
                w.return_address.as_deref(),
                w.sender.as_str()
            ),
            ("msg-1", Some("audit"), "user:ann")
        );
    }
}
