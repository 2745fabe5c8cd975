//! [`Deferred`]: a message this handler answers later than by returning from
//! `handle_message`.

use serde::{Deserialize, Serialize};

use crate::failure::Failure;
use crate::reply::Reply;
use crate::wit_host as host;

/// A message to answer later, from [`IncomingMessage::defer`](crate::IncomingMessage::defer).
/// It is plain data (serializable), so it can be kept in state across signals and turns.
/// The host delivers the answer where the message's sender asked, and takes exactly one:
/// a second answer, or one from another handler or agent, fails with 409.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferred {
    message_id: String,
}

impl Deferred {
    /// A handle on the message with id `message_id`.
    pub fn new(message_id: impl Into<String>) -> Self {
        Self {
            message_id: message_id.into(),
        }
    }

    /// The id of the message to answer.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// Answers the message: `Ok` becomes a Reply, `Err` an ErrorReply. Returns the reply's
    /// id. Fails with 409 if it was already answered, and with 400 for [`Reply::later`]
    /// (there is no later than now).
    pub fn reply(&self, outcome: Result<Reply, Failure>) -> Result<String, Failure> {
        let outcome = wit_outcome(outcome)?;
        Ok(host::reply(&self.message_id, outcome.as_deref())?)
    }
}

/// The WIT shape of an answer; 400 for [`Reply::later`].
fn wit_outcome(
    outcome: Result<Reply, Failure>,
) -> Result<Result<String, crate::wit::Failure>, Failure> {
    match outcome {
        Ok(reply) => match reply.into_json() {
            Some(json) => Ok(Ok(json)),
            None => Err(
                Failure::bad_request("a deferred answer cannot be `Reply::later()` again")
                    .with_help("answer with a payload (`ok(&value)`) or an error"),
            ),
        },
        Err(failure) => Ok(Err(failure.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::ok;

    /// A handle is plain data: it survives a round trip through JSON (kept in state).
    #[test]
    fn a_handle_serializes_and_names_its_message() {
        let d = Deferred::new("m-7");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#"{"message_id":"m-7"}"#);
        assert_eq!(serde_json::from_str::<Deferred>(&json).unwrap(), d);
        assert_eq!(d.message_id(), "m-7");
    }

    /// `Ok` becomes the reply's JSON, `Err` the failure with its code, `later` a 400.
    #[test]
    fn answers_take_the_wit_shape_and_later_is_refused() {
        assert_eq!(wit_outcome(ok(&1)).unwrap(), Ok("1".to_owned()));
        let failed = wit_outcome(Err(Failure::new(418, "teapot"))).unwrap();
        assert_eq!(failed.unwrap_err().code, 418);
        assert_eq!(wit_outcome(Ok(Reply::later())).unwrap_err().code(), 400);
    }

    /// A failure keeps its description and help on the way to the host.
    #[test]
    fn an_error_answer_keeps_description_and_help() {
        let failure = Failure::new(409, "taken").with_help("pick another name");
        let wit = wit_outcome(Err(failure)).unwrap().unwrap_err();
        assert_eq!(
            (wit.code, wit.description.as_str(), wit.help.as_deref()),
            (409, "taken", Some("pick another name"))
        );
    }

    /// Answering with `Reply::later()` is refused before the host is called (its import
    /// would panic natively), so the message stays open for a real answer.
    #[test]
    fn replying_later_again_is_a_400_and_answers_nothing() {
        let err = Deferred::new("m-7").reply(Ok(Reply::later())).unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(err.description().contains("Reply::later()"), "{err}");
        assert!(err.help().is_some());
    }
}
