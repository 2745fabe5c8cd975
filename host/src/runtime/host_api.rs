//! The `host` interface handlers import: every signal a guest sends enters the host here.
//!
//! Everything a guest hands over is hostile until checked: JSON is validated, sizes are
//! capped (413), and the envelope is stamped by the host with the handler's own address.

use std::sync::Arc;
use std::time::Duration;

use super::bindings::{guest_json, headers, switchboard::signal::host, wit};
use super::outbound::Outbound;
use super::state::HostState;
use crate::config::{DEFAULT_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT};
use crate::signal::{Body, Envelope, Failure, Message, ReplyTarget, Signal, code};

/// Longest log line a guest may write; the rest is cut off.
const MAX_LOG_LINE: usize = 4096;

type HostResult<T> = Result<T, wit::Failure>;

impl HostState {
    fn outbound(&self) -> Result<Arc<dyn Outbound>, Failure> {
        self.outbound
            .upgrade()
            .ok_or_else(|| Failure::new(code::OVERLOADED, "the host is shutting down"))
    }

    /// Stamps a guest's outgoing body with a fresh envelope and checks its size.
    fn stamp(&self, body: Body, headers: crate::signal::Headers) -> Result<Signal, Failure> {
        let signal = Signal {
            envelope: Envelope::new(self.identity.address.clone(), headers),
            body,
        };
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

    fn message(&self, msg: host::OutgoingMessage) -> Result<Signal, Failure> {
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
        self.stamp(body, headers(msg.headers))
    }

    /// Hands a stamped signal to `go` and gives back its id.
    fn hand_over(
        &self,
        signal: Result<Signal, Failure>,
        go: impl FnOnce(&dyn Outbound, Signal) -> Result<(), Failure>,
    ) -> HostResult<String> {
        let signal = signal?;
        let id = signal.id().to_owned();
        go(&*self.outbound()?, signal)?;
        Ok(id)
    }
}

impl wit::Host for HostState {}

impl host::Host for HostState {
    fn send(&mut self, msg: host::OutgoingMessage) -> wasmtime::Result<HostResult<String>> {
        let owner = self.identity.handler.clone();
        Ok(self.hand_over(self.message(msg), |out, signal| out.send(signal, &owner)))
    }

    async fn request(&mut self, msg: host::OutgoingMessage, timeout_ms: u32) -> HostResult<String> {
        let signal = self.message(msg)?;
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
    ) -> wasmtime::Result<HostResult<String>> {
        let signal = (|| {
            if event_type.is_empty() {
                return Err(Failure::new(
                    code::BAD_REQUEST,
                    "an event needs a non-empty type",
                ));
            }
            let payload = guest_json(payload, "event payload")?;
            self.stamp(
                Body::Event {
                    event_type,
                    payload,
                },
                headers(headers_list),
            )
        })();
        Ok(self.hand_over(signal, |out, signal| out.broadcast(signal)))
    }

    fn emit_data_change(
        &mut self,
        change_type: wit::ChangeType,
        object_type: String,
        object: String,
        headers_list: Vec<(String, String)>,
    ) -> wasmtime::Result<HostResult<String>> {
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
            self.stamp(body, headers(headers_list))
        })();
        Ok(self.hand_over(signal, |out, signal| out.broadcast(signal)))
    }

    fn reply(
        &mut self,
        target: host::ReplyTarget,
        outcome: Result<String, wit::Failure>,
        address: Option<String>,
    ) -> wasmtime::Result<HostResult<String>> {
        let signal = (|| {
            let outcome = match outcome {
                Ok(payload) => Ok(guest_json(payload, "reply payload")?),
                Err(failure) => Err(failure.into()),
            };
            let target = ReplyTarget {
                message_id: target.message_id,
                return_address: target.return_address,
                sender: target.sender,
            };
            let reply = target.answer(self.identity.address.clone(), outcome, address);
            self.stamp(reply.body, reply.envelope.headers)
        })();
        Ok(self.hand_over(signal, |out, signal| {
            out.reply(signal);
            Ok(())
        }))
    }

    fn log(&mut self, level: wit::LogLevel, message: String) -> wasmtime::Result<()> {
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
