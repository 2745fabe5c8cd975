//! Signals: the envelope every signal carries, the five kinds, and the host's error codes.
//!
//! The host is the only place that mints ids, timestamps and `from` addresses
//! ([`Envelope::new`]); everything a guest or client hands in arrives as an outgoing record
//! and is stamped here. Payloads stay JSON text ([`Json`]) end to end: checked once when
//! they enter, never parsed into a tree on the routing path.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;

/// The one address every agent handler shares; `agent:<id>` messages are delivered here.
pub use crate::address::AGENTS as AGENTS_ADDRESS;
/// Address of signals the host raises itself (404s, 504s, trap reports).
pub use crate::address::HOST as HOST_ADDRESS;

/// The header of a message sent without waiting whose answer must come back to the host that
/// sent it, where the room for that answer is kept: the host's inbox (`inbox:<host>`). The
/// answer carries it too, and a transport takes the answer to that inbox rather than to any
/// host serving its address (`to` is unchanged). Set by the router on a handler's callback
/// send when the transport has an inbox; removed from every other send.
pub const REPLY_VIA_HEADER: &str = "switchboard-reply-via";

/// The event a user's first connection to the gateway opening is broadcast as, from the
/// host: `{"user": "<id>"}`. Handlers subscribe to it like to any event; only the host emits
/// it.
pub const USER_ONLINE: &str = "UserOnline";
/// The event a user's last connection closing is broadcast as.
pub const USER_OFFLINE: &str = "UserOffline";

/// Extra key/value pairs carried with a signal.
pub type Headers = BTreeMap<String, String>;

/// A JSON document kept as checked text, cheap to clone and to hand to a guest.
#[derive(Clone, PartialEq, Eq)]
pub struct Json(Arc<str>);

impl Json {
    /// Checks that `text` is one JSON value and keeps it as is.
    pub fn parse(text: impl Into<Arc<str>>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(Self(text))
    }

    /// Serializes a value; never fails for `serde_json::Value`.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self(value.to_string().into())
    }

    /// The JSON `null`.
    pub fn null() -> Self {
        Self(Arc::from("null"))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length of the text in bytes: what size limits are measured in.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a checked document; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the text into a tree (for callers that inspect payloads, not for routing).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(Self(Arc::from(raw.get())))
    }
}

/// Fields the host fills in on every signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// UUID v7 in its hyphenated text form.
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The sender's address.
    pub from: String,
    /// Extra key/value pairs set by the sender.
    pub headers: Headers,
    /// Causal depth: how many signals led to this one. Zero for a signal from a client or
    /// the admin API; a signal a handler sends while handling one at depth `d` has `d + 1`.
    /// Kept by the host, like an IP TTL, so no chain of handlers can loop forever.
    pub depth: u32,
    /// For a message: when the host answers it with 504 if it is still open, in
    /// milliseconds since the Unix epoch. Set by the host when the message is routed (the
    /// awaiting sender's timeout, or the default for a message sent without waiting); none
    /// for other signals and for one-way pushes to `user:` addresses.
    pub deadline: Option<u64>,
    /// Whether the signal descends from a fired timer, through any number of signals and
    /// handlers. A fired timer starts a fresh causal chain (depth 0), so what bounds a chain
    /// through timers is pace instead: a timer scheduled while handling a paced signal fires
    /// no sooner than the host's `timer_min_interval`. Kept by the host, like the depth.
    pub paced: bool,
}

/// A fresh time-ordered id: a UUIDv7, hyphenated (written straight into its string, without
/// the formatting machinery: two ids are made per round trip). Each thread keeps its own
/// counter within a millisecond, so ids one thread makes are strictly increasing and
/// threads never wait for each other (uuid's shared context is one mutex for the process).
pub fn new_id() -> String {
    thread_local! {
        static CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
    }
    let mut buffer = uuid::Uuid::encode_buffer();
    CONTEXT
        .with(|context| uuid::Uuid::new_v7(uuid::Timestamp::now(context)))
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

impl Envelope {
    /// A fresh envelope: new time-ordered id, the time on `clock`, the given sender.
    pub fn new(from: impl Into<String>, headers: Headers, clock: &Clock) -> Self {
        Self {
            id: new_id(),
            timestamp: clock.now_millis(),
            from: from.into(),
            headers,
            depth: 0,
            deadline: None,
            paced: false,
        }
    }

    /// The same envelope at causal depth `depth`.
    pub fn at_depth(mut self, depth: u32) -> Self {
        self.depth = depth;
        self
    }
}

/// What happened to a data object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

/// Why a message could not be handled: the body of an ErrorReply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// HTTP-like for host-raised errors (see [`code`]); handlers pick their own otherwise.
    pub code: u32,
    /// What went wrong, in words a person can act on.
    pub description: String,
    /// How to fix it, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Failure {
    /// A failure with a code and a description.
    pub fn new(code: u32, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            help: None,
        }
    }

    /// Adds a hint on how to resolve the error.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.description)
    }
}

impl std::error::Error for Failure {}

/// The error codes the host raises itself, as ErrorReplies.
pub mod code {
    /// The payload or signal did not decode.
    pub const BAD_REQUEST: u32 = 400;
    /// The sender may not reach that address (a client messaging an agent or a user).
    pub const FORBIDDEN: u32 = 403;
    /// No such address, or the handler does not accept that message type.
    pub const NOT_FOUND: u32 = 404;
    /// The signal is over the maximum message size.
    pub const TOO_LARGE: u32 = 413;
    /// A second answer to a message, or one from a handler it was not delivered to; a
    /// turn whose state changed under it too many times.
    pub const CONFLICT: u32 = 409;
    /// Too many: a handler has too many sent messages awaiting replies, or sent, emitted or
    /// requested more than it may while handling one signal.
    pub const TOO_MANY: u32 = 429;
    /// The handler trapped: panic, stack overflow, bad memory access.
    pub const TRAPPED: u32 = 500;
    /// The handler's mailbox is full.
    pub const OVERLOADED: u32 = 503;
    /// No reply before the deadline.
    pub const TIMEOUT: u32 = 504;
    /// The handler hit a resource limit: memory or CPU time.
    pub const LIMIT: u32 = 507;
    /// Loop detected: the signal would be deeper in a causal chain than the host allows.
    pub const LOOP_DETECTED: u32 = 508;
}

/// A signal for exactly one handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub message_type: String,
    pub to: String,
    pub return_address: Option<String>,
    pub payload: Json,
}

/// The signal kinds and their own fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Message(Message),
    Event {
        event_type: String,
        payload: Json,
    },
    Reply {
        reply_to: String,
        to: String,
        payload: Json,
    },
    ErrorReply {
        reply_to: String,
        to: String,
        error: Failure,
    },
    DataChange {
        change_type: ChangeType,
        object_type: String,
        object: Json,
    },
}

/// A signal: an envelope and one of the five kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    pub envelope: Envelope,
    pub body: Body,
}

impl Signal {
    /// The signal's kind as named on the wire (`MESSAGE`, `EVENT`, ...).
    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::Message(_) => "MESSAGE",
            Body::Event { .. } => "EVENT",
            Body::Reply { .. } => "REPLY",
            Body::ErrorReply { .. } => "ERROR_REPLY",
            Body::DataChange { .. } => "DATA_CHANGE_EVENT",
        }
    }

    /// The signal's id.
    pub fn id(&self) -> &str {
        &self.envelope.id
    }

    /// Bytes counted against the maximum message size: payloads, types, addresses, headers.
    pub fn size(&self) -> usize {
        let headers: usize = self
            .envelope
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let body = match &self.body {
            Body::Message(m) => {
                m.message_type.len()
                    + m.to.len()
                    + m.return_address.as_deref().map_or(0, str::len)
                    + m.payload.len()
            }
            Body::Event {
                event_type,
                payload,
            } => event_type.len() + payload.len(),
            Body::Reply { payload, .. } => payload.len(),
            Body::ErrorReply { error, .. } => {
                error.description.len() + error.help.as_deref().map_or(0, str::len)
            }
            Body::DataChange {
                object_type,
                object,
                ..
            } => object_type.len() + object.len(),
        };
        headers + body
    }

    /// A reply reduced to its outcome: a Reply's payload, or an ErrorReply's failure.
    /// Any other kind is a 400: it answers nothing.
    pub fn into_outcome(self) -> Result<Json, Failure> {
        match self.body {
            Body::Reply { payload, .. } => Ok(payload),
            Body::ErrorReply { error, .. } => Err(error),
            _ => Err(Failure::new(code::BAD_REQUEST, "expected a reply")),
        }
    }

    /// The answer to `message` (which must be a Message): ok becomes a Reply, err an
    /// ErrorReply, one causal step deeper than the message. Addressed by the seed's rule:
    /// `address` if given, else the message's return address, else its sender.
    pub fn answer(
        message: &Signal,
        from: impl Into<String>,
        outcome: Result<Json, Failure>,
        address: Option<String>,
        clock: &Clock,
    ) -> Signal {
        let return_address = match &message.body {
            Body::Message(m) => m.return_address.clone(),
            _ => None,
        };
        let target = ReplyTarget {
            message_id: message.envelope.id.clone(),
            return_address,
            sender: message.envelope.from.clone(),
        };
        let mut answer = target.answer(from, outcome, address, clock);
        answer.envelope.depth = message.envelope.depth.saturating_add(1);
        answer.envelope.paced = message.envelope.paced;
        if let Some(via) = message.envelope.headers.get(REPLY_VIA_HEADER) {
            (answer.envelope.headers).insert(REPLY_VIA_HEADER.to_owned(), via.clone());
        }
        answer
    }
}

/// What a reply needs to know about the message it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyTarget {
    pub message_id: String,
    pub return_address: Option<String>,
    pub sender: String,
}

impl ReplyTarget {
    /// Builds the Reply or ErrorReply, addressed by the reply address rule, stamped by
    /// `clock`.
    pub fn answer(
        self,
        from: impl Into<String>,
        outcome: Result<Json, Failure>,
        address: Option<String>,
        clock: &Clock,
    ) -> Signal {
        let to = address.or(self.return_address).unwrap_or(self.sender);
        let reply_to = self.message_id;
        let body = match outcome {
            Ok(payload) => Body::Reply {
                reply_to,
                to,
                payload,
            },
            Err(error) => Body::ErrorReply {
                reply_to,
                to,
                error,
            },
        };
        Signal {
            envelope: Envelope::new(from, Headers::new(), clock),
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(return_address: Option<&str>) -> Signal {
        Signal {
            envelope: Envelope::new("orders", Headers::new(), &Clock::system()),
            body: Body::Message(Message {
                message_type: "Reserve".into(),
                to: "inventory".into(),
                return_address: return_address.map(str::to_owned),
                payload: Json::parse(r#"{"item":"apple"}"#).unwrap(),
            }),
        }
    }

    fn reply_address(signal: &Signal) -> &str {
        match &signal.body {
            Body::Reply { to, .. } | Body::ErrorReply { to, .. } => to,
            _ => panic!("not a reply"),
        }
    }

    #[test]
    fn reply_goes_to_explicit_address_first() {
        let reply = Signal::answer(
            &message(Some("audit")),
            "inventory",
            Ok(Json::null()),
            Some("x".into()),
            &Clock::system(),
        );
        assert_eq!(reply_address(&reply), "x");
    }

    #[test]
    fn reply_goes_to_return_address_then_sender() {
        let msg = message(Some("audit"));
        let reply = Signal::answer(&msg, "inventory", Ok(Json::null()), None, &Clock::system());
        assert_eq!(reply_address(&reply), "audit");
        let Body::Reply { reply_to, .. } = &reply.body else {
            panic!()
        };
        assert_eq!(reply_to, msg.id());
        assert_eq!(reply.envelope.from, "inventory");

        let reply = Signal::answer(
            &message(None),
            "inventory",
            Err(Failure::new(409, "taken")),
            None,
            &Clock::system(),
        );
        assert_eq!(reply_address(&reply), "orders");
        assert_eq!(reply.kind(), "ERROR_REPLY");
    }

    /// An answer is one causal step deeper than the message it answers, never wrapping.
    #[test]
    fn answer_is_one_step_deeper() {
        let mut msg = message(None);
        assert_eq!(msg.envelope.depth, 0, "a fresh envelope starts at depth 0");
        msg.envelope.depth = 7;
        let reply = Signal::answer(&msg, "inventory", Ok(Json::null()), None, &Clock::system());
        assert_eq!(reply.envelope.depth, 8);
        msg.envelope.depth = u32::MAX;
        let reply = Signal::answer(&msg, "inventory", Ok(Json::null()), None, &Clock::system());
        assert_eq!(reply.envelope.depth, u32::MAX);
    }

    #[test]
    fn json_is_checked_and_kept_verbatim() {
        assert!(Json::parse("{not json").is_err());
        assert!(Json::parse("1 2").is_err());
        let json = Json::parse(r#"{"b": 1, "a": [true]}"#).unwrap();
        assert_eq!(json.as_str(), r#"{"b": 1, "a": [true]}"#);
        assert_eq!(serde_json::to_string(&json).unwrap(), json.as_str());
    }

    #[test]
    fn ids_are_time_ordered_uuid_v7() {
        let a = Envelope::new("a", Headers::new(), &Clock::system());
        let b = Envelope::new("a", Headers::new(), &Clock::system());
        let uuid = uuid::Uuid::parse_str(&a.id).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert!(a.id < b.id, "{} then {}", a.id, b.id);
        assert!(a.timestamp > 1_700_000_000_000);
        // Many ids within a millisecond on one thread stay in order, and ids made on
        // several threads at once are all distinct.
        let ids: Vec<String> = (0..10_000).map(|_| new_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..10_000).map(|_| new_id()).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.extend(ids);
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count, "no id made twice");
    }

    #[test]
    fn size_counts_payload_and_headers() {
        let mut msg = message(None);
        let base = msg.size();
        msg.envelope.headers.insert("trace".into(), "abc".into());
        assert_eq!(msg.size(), base + 8);
    }
}
