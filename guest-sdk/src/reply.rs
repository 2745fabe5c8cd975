//! Replies in both directions: [`Reply`], the payload a handler answers with, and
//! [`IncomingReply`], an answer to a message this handler sent with `send`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{Envelope, Signal};
use crate::failure::Failure;
use crate::typed;
use crate::wit;

/// How a handler answers a message: a payload, as JSON text, or [`Reply::later`] to answer
/// afterwards with [`Deferred::reply`](crate::Deferred::reply). Build a payload with [`ok`]
/// from any serializable value, or from JSON with [`Reply::from_value`] and
/// [`Reply::from_json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(Option<String>);

impl Reply {
    /// A reply carrying `value`.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self(Some(value.to_string()))
    }

    /// A reply carrying JSON text as is, e.g. a payload received elsewhere. The text is not
    /// checked: pass only JSON (the host answers a non-JSON reply with 400 to its sender).
    pub fn from_json(json: impl Into<String>) -> Self {
        Self(Some(json.into()))
    }

    /// No answer now: the handler answers later, once, with
    /// [`Deferred::reply`](crate::Deferred::reply) (keep `msg.defer()` to do so), before
    /// the message's deadline; past it the host answers 504.
    pub fn later() -> Self {
        Self(None)
    }

    /// Whether this is [`Reply::later`].
    pub fn is_later(&self) -> bool {
        self.0.is_none()
    }

    /// The payload as JSON text; `None` for [`Reply::later`].
    pub fn json(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The payload, consuming the reply; `None` for [`Reply::later`].
    pub fn into_json(self) -> Option<String> {
        self.0
    }
}

/// A reply carrying `value` as JSON: `return ok(&UsernameSet { username })`. Named after
/// `Ok` because it is how a handler answers successfully.
pub fn ok<T: Serialize + ?Sized>(value: &T) -> Result<Reply, Failure> {
    typed::encode(value).map(|json| Reply(Some(json)))
}

/// Decodes a reply's payload as `R`; 400 naming `R` if it does not fit.
pub(crate) fn decode_reply<R: DeserializeOwned>(
    json: &str,
    message_type: &str,
) -> Result<R, Failure> {
    typed::decode(json, &format!("reply to `{message_type}`"))
}

/// A Reply or ErrorReply delivered to `handle_reply`: the answer to a message this handler
/// sent with `send` and no return address.
#[derive(Debug, Clone)]
pub struct IncomingReply {
    envelope: Envelope,
    reply_to: String,
    to: String,
    outcome: Result<String, Failure>,
}

impl IncomingReply {
    /// The id of the message answered, as `send` returned it.
    pub fn reply_to(&self) -> &str {
        &self.reply_to
    }

    /// The address the reply was sent to: this service, or `agent:<id>` for an agent.
    pub fn to(&self) -> &str {
        &self.to
    }

    /// Whether it is a Reply rather than an ErrorReply.
    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The Reply's payload as JSON text, or the ErrorReply's failure.
    pub fn outcome(&self) -> Result<&str, &Failure> {
        self.outcome.as_deref()
    }

    /// The Reply's payload decoded as `R`; the ErrorReply's failure, or 400 if it does not fit.
    pub fn decode<R: DeserializeOwned>(&self) -> Result<R, Failure> {
        match &self.outcome {
            Ok(json) => typed::decode(json, &format!("reply to message {}", self.reply_to)),
            Err(failure) => Err(failure.clone()),
        }
    }

    /// The Reply's payload as a JSON value, or the ErrorReply's failure.
    pub fn payload_value(&self) -> Result<serde_json::Value, Failure> {
        self.decode()
    }
}

impl Signal for IncomingReply {
    fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

impl From<wit::IncomingReply> for IncomingReply {
    fn from(r: wit::IncomingReply) -> Self {
        match r {
            wit::IncomingReply::Ok(r) => Self {
                envelope: r.envelope.into(),
                reply_to: r.reply_to,
                to: r.to,
                outcome: Ok(r.payload),
            },
            wit::IncomingReply::Err(e) => Self {
                envelope: e.envelope.into(),
                reply_to: e.reply_to,
                to: e.to,
                outcome: Err(e.error.into()),
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::envelope::tests::wit_envelope;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Pong {
        n: u32,
    }

    pub(crate) fn wit_reply(payload: &str) -> wit::IncomingReply {
        wit::IncomingReply::Ok(wit::Reply {
            envelope: wit_envelope("rep-1", "echo"),
            reply_to: "msg-1".into(),
            to: "agent:alice".into(),
            payload: payload.into(),
        })
    }

    pub(crate) fn wit_error_reply(code: u32) -> wit::IncomingReply {
        wit::IncomingReply::Err(wit::ErrorReply {
            envelope: wit_envelope("rep-2", "host"),
            reply_to: "msg-1".into(),
            to: "counter".into(),
            error: wit::Failure {
                code,
                description: "too late".into(),
                help: None,
            },
        })
    }

    #[test]
    fn reply_builders_hold_json() {
        assert_eq!(ok(&Pong { n: 1 }).unwrap().json(), Some(r#"{"n":1}"#));
        assert_eq!(
            Reply::from_value(&serde_json::json!([1, 2])).into_json(),
            Some("[1,2]".to_owned())
        );
        assert_eq!(Reply::from_json("{}"), ok(&serde_json::json!({})).unwrap());
        assert!(!Reply::from_json("{}").is_later());
        assert!(Reply::later().is_later());
        assert_eq!(Reply::later().json(), None);
    }

    #[test]
    fn decode_reply_names_the_request() {
        assert_eq!(
            decode_reply::<Pong>(r#"{"n":2}"#, "Ping").unwrap(),
            Pong { n: 2 }
        );
        let err = decode_reply::<Pong>(r#"{"n":"x"}"#, "Ping").unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(
            err.description()
                .starts_with("reply to `Ping` did not decode as Pong"),
            "{err}"
        );
    }

    #[test]
    fn ok_replies_expose_their_payload() {
        let r = <IncomingReply as From<_>>::from(wit_reply(r#"{"n":3}"#));
        assert_eq!(
            (r.id(), r.from(), r.reply_to(), r.to()),
            ("rep-1", "echo", "msg-1", "agent:alice")
        );
        assert!(r.is_ok());
        assert_eq!(r.outcome(), Ok(r#"{"n":3}"#));
        assert_eq!(r.decode::<Pong>().unwrap(), Pong { n: 3 });
        assert_eq!(r.payload_value().unwrap()["n"], 3);
        let bad = <IncomingReply as From<_>>::from(wit_reply("nope"))
            .decode::<Pong>()
            .unwrap_err();
        assert!(
            bad.description()
                .starts_with("reply to message msg-1 did not decode"),
            "{bad}"
        );
    }

    #[test]
    fn error_replies_expose_their_failure() {
        let r = <IncomingReply as From<_>>::from(wit_error_reply(504));
        assert!(!r.is_ok());
        assert_eq!(r.to(), "counter");
        assert_eq!(r.outcome().unwrap_err().code(), 504);
        assert!(r.decode::<Pong>().unwrap_err().is_timeout());
        assert_eq!(r.payload_value().unwrap_err().description(), "too late");
    }
}
