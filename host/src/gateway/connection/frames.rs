//! What a client's frame is, and its one answer: `{"ack": "<id>"}` for a message taken (or
//! an event of a type the operator lets clients emit), `{"acknowledged": "<id>"}` for a kept
//! push it acknowledges with `{"ack": "<id>"}`, or an ERROR_REPLY refusing it (400 not a
//! signal, 403 an address a client may not message or an event it may not emit, 404 no such
//! kept push, 413 too large, 429 over the frame rate).

use axum::extract::ws::Message;
use serde::Deserialize;
use serde_json::json;

use std::sync::Arc;

use super::{Connection, refusal};
use crate::address::{Address, Kind};
use crate::clock::Clock;
use crate::gateway::Routing;
use crate::signal::{Body, Envelope, Failure, Signal, USER_OFFLINE, USER_ONLINE, code};
use crate::wire::{SignalType, WireSignal};

impl Connection {
    /// Takes one text frame and gives its answer.
    pub(super) async fn take(&mut self, frame: &str) -> Message {
        self.metrics().frames_in.inc();
        if let Some(refusal) = self.over_rate() {
            return refusal;
        }
        let rules = FrameRules {
            address: &self.address,
            events_from_clients: &self.gateway.limits.events_from_clients,
            max_message_bytes: self.gateway.router.max_message_bytes(),
            clock: self.gateway.router.clock(),
        };
        let signal = match rules.read(frame) {
            Ok(Frame::Acks(acks)) => {
                let router = self.gateway.router.clone();
                return acknowledge(router, self.user.clone(), self.address.clone(), acks).await;
            }
            Ok(Frame::Signal(signal)) => signal,
            Err(failure) => return self.refused(failure),
        };
        let id = signal.id().to_owned();
        if matches!(signal.body, Body::Event { .. }) {
            if let Err(undelivered) = self.gateway.router.offer(signal).await {
                let failure = Failure::new(
                    code::OVERLOADED,
                    format!("the event was not taken: {}", undelivered.label()),
                );
                return self.refused(failure);
            }
        } else {
            self.gateway.router.route(signal);
        }
        Message::Text(json!({ "ack": id }).to_string().into())
    }

    /// A 429 refusal if this frame is past the connection's rate (and counts it).
    pub(super) fn over_rate(&mut self) -> Option<Message> {
        if self.bucket.take() {
            return None;
        }
        self.metrics().frames_limited.inc();
        Some(self.refusal(
            code::TOO_MANY,
            format!(
                "over this connection's rate of {} frames per second; the frame was not taken",
                self.gateway.limits.frames_per_second
            ),
        ))
    }
}

/// What a client's text frame asks for.
pub(crate) enum Frame {
    /// Acknowledges kept pushes.
    Acks(Acks),
    /// A message (or an event), stamped as from the client, for the router.
    Signal(Signal),
}

/// All that reading a frame needs: who sent it and what clients may do. Kept apart from
/// the connection so that the fuzz target `frame` reads frames exactly as a connection does.
pub(crate) struct FrameRules<'a> {
    /// The client's address, `user:<id>`.
    pub address: &'a str,
    /// Event types clients may emit.
    pub events_from_clients: &'a [String],
    /// The largest signal the host takes.
    pub max_message_bytes: usize,
    /// Stamps the signal's envelope.
    pub clock: &'a Clock,
}

impl FrameRules<'_> {
    /// What a text frame asks for, or the failure refusing it. The frame is parsed straight
    /// into its type, by the rule of every edge (the admin API's too): a field given twice is
    /// refused (400), never settled by which came last. A signal fails the acknowledgement's
    /// parse at its first field, cheaply.
    pub(crate) fn read(&self, frame: &str) -> Result<Frame, Failure> {
        let object = crate::wire::is_object(frame.as_bytes());
        if object && let Ok(AckFrame { ack }) = serde_json::from_str(frame) {
            return Ok(Frame::Acks(ack));
        }
        let wire = WireSignal::from_json(frame.as_bytes()).map_err(|e| {
            let what = if e.is_syntax() || e.is_eof() {
                "JSON"
            } else {
                "a signal"
            };
            Failure::new(code::BAD_REQUEST, format!("the frame is not {what}: {e}"))
        })?;
        self.message(wire).map(Frame::Signal)
    }

    /// Whether clients may emit events of `event_type` (never the host's presence events).
    fn may_emit(&self, event_type: &str) -> bool {
        ![USER_ONLINE, USER_OFFLINE].contains(&event_type)
            && self.events_from_clients.iter().any(|t| t == event_type)
    }

    /// The message (or event) a frame carries, stamped as from the client.
    fn message(&self, mut wire: WireSignal) -> Result<Signal, Failure> {
        let bad = |e: String| Failure::new(code::BAD_REQUEST, e);
        let headers = std::mem::take(&mut wire.headers);
        if let Some(reserved) = headers.keys().find(|k| {
            k.get(..RESERVED_HEADERS.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_HEADERS))
        }) {
            return Err(bad(format!(
                "the header `{}` is the host's to set (every `{RESERVED_HEADERS}*` header is)",
                short(reserved)
            )));
        }
        let emits = matches!(
            wire.signal_type,
            Some(SignalType::Event | SignalType::DataChangeEvent)
        ) || (wire.signal_type.is_none() && wire.event_type.is_some());
        let implied = if emits {
            SignalType::Event
        } else {
            SignalType::Message
        };
        let body = wire
            .into_client_body(Some(implied))
            .map_err(|e| bad(e.to_string()))?;
        match &body {
            Body::Event { event_type, .. } if self.may_emit(event_type) => {}
            Body::Event { event_type, .. } => {
                return Err(Failure::new(
                    code::FORBIDDEN,
                    format!("clients may not emit `{}` events", short(event_type)),
                )
                .with_help(
                    "an operator lets clients emit an event type with `--clients-may-emit`",
                ));
            }
            Body::DataChange { .. } => {
                return Err(Failure::new(
                    code::FORBIDDEN,
                    "clients may not emit data changes",
                ));
            }
            _ => {}
        }
        if let Body::Message(m) = &body {
            // Agents, users and hosts' inboxes are reached through a handler, never directly.
            let direct =
                |a: &str| matches!(Address::kind_of(a), Kind::Agent | Kind::User | Kind::Inbox);
            if direct(&m.to) {
                return Err(Failure::new(
                    code::FORBIDDEN,
                    format!("a client may not message `{}` directly", short(&m.to)),
                )
                .with_help("send it to a handler that relays it"));
            }
            if let Some(elsewhere) = m.return_address.as_deref().filter(|a| *a != self.address) {
                return Err(Failure::new(
                    code::FORBIDDEN,
                    format!(
                        "a client's replies come back to it; `returnAddress` may only be `{}`, not `{}`",
                        self.address,
                        short(elsewhere)
                    ),
                ));
            }
        }
        let signal = Signal {
            envelope: Envelope::new(self.address, headers, self.clock),
            body,
        };
        let max = self.max_message_bytes;
        if signal.size() > max {
            return Err(Failure::new(
                code::TOO_LARGE,
                format!(
                    "the signal is {} bytes, over the maximum of {max}",
                    signal.size()
                ),
            ));
        }
        Ok(signal)
    }
}

/// Most pushes one acknowledgement frame may name.
const MAX_ACKS: usize = 256;

/// An acknowledgement frame (a bad one is refused as not a signal).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckFrame {
    ack: Acks,
}

/// What an acknowledgement names: `{"ack": "<id>"}`, or `{"ack": ["<id>", ...]}` for
/// several.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Acks {
    One(String),
    Many(Vec<String>),
}

/// Removes the kept pushes that `user` (at `address`) acknowledged: answers
/// `{"acknowledged": "<id>"}` (404 if it was not kept) for one, or
/// `{"acknowledged": [the ids that were kept]}` for several.
async fn acknowledge(
    router: Arc<dyn Routing>,
    user: String,
    address: String,
    acks: Acks,
) -> Message {
    let refuse = |code, text: String| refusal(&address, Failure::new(code, text), router.clock());
    let Some(store) = router.state_store() else {
        return refuse(code::NOT_FOUND, "this host keeps no pushes".into());
    };
    let ids = match &acks {
        Acks::One(id) => vec![id.clone()],
        Acks::Many(ids) if ids.is_empty() || ids.len() > MAX_ACKS => {
            return refuse(
                code::BAD_REQUEST,
                format!(
                    "an acknowledgement names 1 to {MAX_ACKS} pushes, not {}",
                    ids.len()
                ),
            );
        }
        Acks::Many(ids) => ids.clone(),
    };
    let now = router.clock().now_millis();
    let removed = tokio::task::spawn_blocking(move || {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        store.acknowledge_all(&user, &ids, now)
    })
    .await;
    let removed = match removed {
        Ok(Ok(removed)) => removed,
        Ok(Err(error)) => {
            tracing::error!(%error, "could not remove acknowledged pushes");
            return refuse(
                code::OVERLOADED,
                "the pushes could not be removed; acknowledge them again".into(),
            );
        }
        Err(_) => {
            return refuse(
                code::OVERLOADED,
                "the pushes could not be removed; acknowledge them again".into(),
            );
        }
    };
    router
        .gateway_metrics()
        .pushes_acknowledged
        .inc_by(removed.len() as u64);
    match acks {
        Acks::One(id) if removed.is_empty() => refuse(
            code::NOT_FOUND,
            format!(
                "no push `{}` is kept for you (acknowledged already, or expired)",
                short(&id)
            ),
        ),
        Acks::One(id) => Message::Text(json!({ "acknowledged": id }).to_string().into()),
        Acks::Many(_) => Message::Text(json!({ "acknowledged": removed }).to_string().into()),
    }
}

/// Headers only the host sets (a timer's id, a kept push's expiry, ...).
const RESERVED_HEADERS: &str = "switchboard-";

/// Text from a client, cut so it cannot flood an answer.
fn short(text: &str) -> String {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a client reaches agents, users and hosts' inboxes only through a handler (403,
    /// malformed forms included), while a handler's name goes through.
    #[test]
    fn clients_message_handlers_only() {
        let clock = Clock::system();
        let rules = FrameRules {
            address: "user:ann",
            events_from_clients: &[],
            max_message_bytes: 1 << 20,
            clock: &clock,
        };
        let frame = |to: &str| {
            format!(r#"{{"signalType":"MESSAGE","to":"{to}","messageType":"Ping","payload":{{}}}}"#)
        };
        for to in [
            "agent:counter/c1",
            "agent:c1",
            "agent:",
            "user:bob",
            "user:",
            "inbox:h1",
        ] {
            let refused = rules.read(&frame(to)).err();
            assert_eq!(refused.map(|f| f.code), Some(code::FORBIDDEN), "{to}");
        }
        assert!(matches!(rules.read(&frame("echo")), Ok(Frame::Signal(_))));
    }
}
