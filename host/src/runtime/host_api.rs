//! The `host` interface handlers import: every signal a guest sends enters the host here.
//!
//! Everything a guest hands over is hostile until checked: JSON is validated, sizes are
//! capped (413), and the envelope is stamped by the host with the handler's own address and
//! the causal depth of the signal being handled plus one. Each send, emit and request spends
//! from the signal's [`Budget`](super::budget::Budget) first (508 past the causal depth limit,
//! 429 past a per-signal cap); log lines are capped per signal and rate-limited per handler.

use std::sync::Arc;
use std::time::Duration;

use super::bindings::{guest_json, headers, switchboard::signal::host, wit};
use super::budget::{Refusal, Spend};
use super::outbound::{Outbound, Output};
use super::state::HostState;
use crate::config::{DEFAULT_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT};
use crate::signal::{Body, Envelope, Failure, Message, Signal, code};

/// Longest log line a guest may write; the rest is cut off.
pub(super) const MAX_LOG_LINE: usize = 4096;

type HostResult<T> = Result<T, wit::Failure>;

impl HostState {
    pub(super) fn outbound(&self) -> Result<Arc<dyn Outbound>, Failure> {
        self.outbound
            .upgrade()
            .ok_or_else(|| Failure::new(code::OVERLOADED, "the host is shutting down"))
    }

    /// Spends one call of kind `spend` from the current signal's budget: the new signal's
    /// causal depth, or the typed failure (508, 429), counted and logged (rate-limited).
    pub(super) fn spend(&mut self, spend: Spend) -> Result<u32, Failure> {
        let spent = self.budget.spend(spend);
        spent.map_err(|refusal| self.refused(spend, refusal))
    }

    /// Spends a `reply` to `message_id` (see [`super::budget::Budget::reply`]).
    fn spend_reply(&mut self, message_id: &str) -> Result<u32, Failure> {
        let spent = self.budget.reply(message_id);
        spent.map_err(|refusal| self.refused(Spend::Send, refusal))
    }

    /// Counts and logs (rate-limited) a refused host call; the failure the guest gets.
    fn refused(&self, spend: Spend, refusal: Refusal) -> Failure {
        let handler = &*self.identity.handler;
        let labels = crate::metrics::Metrics::handler(handler);
        match refusal {
            Refusal::Depth { .. } => self.metrics.depth_refused.get_or_create(&labels).inc(),
            Refusal::Cap { spend, .. } => self
                .metrics
                .send_caps_hit
                .get_or_create(&crate::metrics::CapLabels {
                    handler: handler.to_owned(),
                    kind: spend.as_str().to_owned(),
                })
                .inc(),
        };
        let failure = refusal.failure(handler);
        if self.log_limit.admit(handler) {
            tracing::warn!(
                handler,
                call = spend.as_str(),
                code = failure.code,
                depth = self.budget.next_depth(),
                "refused a handler's host call: {}",
                match refusal {
                    Refusal::Depth { .. } => "past the causal depth limit (a loop)",
                    Refusal::Cap { .. } => "past its per-signal cap",
                }
            );
        }
        failure
    }

    /// Stamps a guest's outgoing body with a fresh envelope at causal depth `depth` and
    /// checks its size.
    pub(super) fn stamp(
        &self,
        body: Body,
        mut headers: crate::signal::Headers,
        depth: u32,
    ) -> Result<Signal, Failure> {
        // Only the host marks a timer's message or a kept push.
        headers.remove(super::TIMER_HEADER);
        headers.remove(super::KEPT_HEADER);
        let mut envelope =
            Envelope::new(self.identity.address.clone(), headers, &self.clock).at_depth(depth);
        envelope.paced = self.budget.paced();
        let signal = Signal { envelope, body };
        let size = signal.size();
        if size > self.max_message_bytes {
            return Err(Failure::new(
                code::TOO_LARGE,
                format!(
                    "the {} is {size} bytes, over the maximum message size of {} bytes",
                    signal.kind().to_lowercase(),
                    self.max_message_bytes
                ),
            )
            .with_help("send a reference to the data instead of the data itself"));
        }
        Ok(signal)
    }

    fn message(&mut self, msg: host::OutgoingMessage, spend: Spend) -> Result<Signal, Failure> {
        if msg.to.is_empty() || msg.message_type.is_empty() {
            return Err(Failure::new(
                code::BAD_REQUEST,
                "a message needs a non-empty `to` and `message-type`",
            ));
        }
        let body = Body::Message(Message {
            message_type: msg.message_type,
            to: msg.to,
            return_address: msg.return_address,
            payload: guest_json(msg.payload, "message payload")?,
        });
        let depth = self.spend(spend)?;
        self.stamp(body, headers(msg.headers), depth)
    }

    /// After a call: counts the log lines the per-signal cap dropped, and says so once.
    pub(super) fn note_dropped_log_lines(&mut self) {
        let dropped = self.budget.take_log_dropped();
        if dropped == 0 {
            return;
        }
        let handler = &*self.identity.handler;
        self.log_limit.count_dropped(handler, dropped.into());
        if self.log_limit.admit(handler) {
            tracing::warn!(
                handler,
                version = self.identity.version,
                dropped,
                "dropped {dropped} log lines from one signal, past the per-signal cap (max_log_lines_per_signal)"
            );
        }
    }

    /// Holds a stamped event or data change for the turn's commit: its id and how many
    /// subscribers it will be offered to.
    fn broadcast(&mut self, signal: Result<Signal, Failure>) -> HostResult<host::Emitted> {
        let signal = signal?;
        self.turn.make_room(signal.size(), self.max_held_bytes)?;
        let id = signal.id().to_owned();
        let subscribers = self.outbound()?.subscribers(&signal);
        self.turn.hold(Output::Broadcast(signal));
        Ok(host::Emitted { id, subscribers })
    }
}

/// Whether `to` names the agent at `me` (full `agent:<handler>/<id>`, or short `agent:<id>`).
fn same_agent(me: &str, to: &str) -> bool {
    use crate::address::Address;
    match (Address::parse(me), Address::parse(to)) {
        (
            Ok(Address::Agent {
                handler: Some(mine),
                id,
            }),
            Ok(Address::Agent { handler, id: to_id }),
        ) => id == to_id && handler.is_none_or(|h| h == mine),
        _ => false,
    }
}

impl wit::Host for HostState {}

impl host::Host for HostState {
    fn send(&mut self, msg: host::OutgoingMessage) -> wasmtime::Result<HostResult<String>> {
        let sent = (|| -> Result<String, Failure> {
            let signal = self.message(msg, Spend::Send)?;
            let outbound = self.outbound()?;
            self.turn.make_room(signal.size(), self.max_held_bytes)?;
            outbound.send(&signal, &self.identity.handler)?;
            let id = signal.id().to_owned();
            self.turn.hold(Output::Send(signal));
            Ok(id)
        })();
        Ok(sent.map_err(Into::into))
    }

    async fn request(&mut self, msg: host::OutgoingMessage, timeout_ms: u32) -> HostResult<String> {
        if same_agent(&self.identity.address, &msg.to) {
            return Err(Failure::new(
                code::LOOP_DETECTED,
                format!("agent `{}` cannot await a request to itself: an agent handles one signal at a time, so the request would wait until it times out", msg.to),
            )
            .with_help("send the message without waiting, or handle it in this same turn")
            .into());
        }
        let signal = self.message(msg, Spend::Request)?;
        let outbound = self.outbound()?;
        let timeout = match timeout_ms {
            0 => DEFAULT_REQUEST_TIMEOUT,
            ms => Duration::from_millis(ms.into()).min(MAX_REQUEST_TIMEOUT),
        };
        // Time waiting here is not charged: the call future is not being polled.
        let outcome = outbound
            .request(signal, timeout)
            .await
            .and_then(Signal::into_outcome);
        Ok(outcome?.as_str().to_owned())
    }

    fn emit(
        &mut self,
        event_type: String,
        payload: String,
        headers_list: Vec<(String, String)>,
    ) -> wasmtime::Result<HostResult<host::Emitted>> {
        let signal = (|| {
            if event_type.is_empty() {
                return Err(Failure::new(
                    code::BAD_REQUEST,
                    "an event needs a non-empty type",
                ));
            }
            if [crate::signal::USER_ONLINE, crate::signal::USER_OFFLINE]
                .contains(&event_type.as_str())
            {
                return Err(Failure::new(
                    code::FORBIDDEN,
                    format!("`{event_type}` is a presence event: only the host emits it"),
                ));
            }
            let payload = guest_json(payload, "event payload")?;
            let depth = self.spend(Spend::Emit)?;
            self.stamp(
                Body::Event {
                    event_type,
                    payload,
                },
                headers(headers_list),
                depth,
            )
        })();
        Ok(self.broadcast(signal))
    }

    fn emit_data_change(
        &mut self,
        change_type: wit::ChangeType,
        object_type: String,
        object: String,
        headers_list: Vec<(String, String)>,
    ) -> wasmtime::Result<HostResult<host::Emitted>> {
        let signal = (|| {
            if object_type.is_empty() {
                return Err(Failure::new(
                    code::BAD_REQUEST,
                    "a data change needs a non-empty object type",
                ));
            }
            let body = Body::DataChange {
                change_type: change_type.into(),
                object_type,
                object: guest_json(object, "changed object")?,
            };
            let depth = self.spend(Spend::Emit)?;
            self.stamp(body, headers(headers_list), depth)
        })();
        Ok(self.broadcast(signal))
    }

    fn reply(
        &mut self,
        message_id: String,
        outcome: Result<String, wit::Failure>,
    ) -> wasmtime::Result<HostResult<String>> {
        let answered = (|| -> Result<String, Failure> {
            let outcome: Result<crate::signal::Json, Failure> = match outcome {
                Ok(payload) => Ok(guest_json(payload, "reply payload")?),
                Err(failure) => Err(failure.into()),
            };
            // Free only for the first answer to the message being handled; any other reply
            // counts as a send (depth and cap), so `reply` cannot loop or flood.
            self.spend_reply(&message_id)?;
            let outbound = self.outbound()?;
            let size = match &outcome {
                Ok(payload) => payload.len(),
                Err(failure) => {
                    failure.description.len() + failure.help.as_ref().map_or(0, String::len)
                }
            };
            self.turn.make_room(size, self.max_held_bytes)?;
            let answer = outbound.claim(&message_id, &self.identity.address, outcome)?;
            let id = answer.id().to_owned();
            self.turn.hold(Output::Answer(answer));
            Ok(id)
        })();
        Ok(answered.map_err(Into::into))
    }

    fn log(&mut self, level: wit::LogLevel, message: String) -> wasmtime::Result<()> {
        use tracing::Level;
        let enabled = match level {
            wit::LogLevel::Trace => tracing::enabled!(Level::TRACE),
            wit::LogLevel::Debug => tracing::enabled!(Level::DEBUG),
            wit::LogLevel::Info => tracing::enabled!(Level::INFO),
            wit::LogLevel::Warn => tracing::enabled!(Level::WARN),
            wit::LogLevel::Error => tracing::enabled!(Level::ERROR),
        };
        // A line past the per-signal cap is counted when the call returns; a line nobody
        // would see costs nothing more; the per-handler rate limit counts its own drops.
        if !self.budget.log_line() || !enabled || !self.log_limit.admit(&self.identity.handler) {
            return Ok(());
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let handler = &*self.identity.handler;
        let version = self.identity.version;
        match level {
            wit::LogLevel::Trace => tracing::trace!(handler, version, "{message}"),
            wit::LogLevel::Debug => tracing::debug!(handler, version, "{message}"),
            wit::LogLevel::Info => tracing::info!(handler, version, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(handler, version, "{message}"),
            wit::LogLevel::Error => tracing::error!(handler, version, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::same_agent;

    /// An agent's own address, in either form, is itself; another agent or handler is not.
    #[test]
    fn an_agent_knows_its_own_address() {
        assert!(same_agent("agent:c/alice", "agent:c/alice"));
        assert!(same_agent("agent:c/alice", "agent:alice"));
        assert!(!same_agent("agent:c/alice", "agent:d/alice"));
        assert!(!same_agent("agent:c/alice", "agent:c/bob"));
        assert!(
            !same_agent("svc", "svc"),
            "a service may await itself (it may have concurrency)"
        );
    }
}
