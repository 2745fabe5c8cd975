//! What a client's frame is, and its one answer: `{"ack": "<id>"}` for a message taken,
//! `{"acknowledged": "<id>"}` for a kept push it acknowledges with `{"ack": "<id>"}`, or an
//! ERROR_REPLY refusing it (400 not a signal, 403 an address a client may not message,
//! 404 no such kept push, 413 too large, 429 over the frame rate).

use axum::extract::ws::Message;
use serde_json::json;

use std::sync::Arc;

use super::{Connection, refusal};
use crate::router::Router;
use crate::signal::{AGENT_PREFIX, Body, Envelope, Failure, Signal, USER_PREFIX, code};
use crate::wire::{SignalType, WireSignal};

impl Connection {
    /// Takes one text frame and gives its answer.
    pub(super) async fn take(&mut self, frame: &str) -> Message {
        self.metrics().frames_in.inc();
        if !self.bucket.take() {
            self.metrics().frames_limited.inc();
            return self.refusal(
                code::TOO_MANY,
                format!(
                    "over this connection's rate of {} frames per second; the frame was not taken",
                    self.gateway.limits.frames_per_second
                ),
            );
        }
        let value: serde_json::Value = match serde_json::from_str(frame) {
            Ok(value) => value,
            Err(e) => {
                return self.refusal(code::BAD_REQUEST, format!("the frame is not JSON: {e}"));
            }
        };
        if let Some(id) = acknowledged(&value) {
            let router = self.gateway.router.clone();
            return acknowledge(
                router,
                self.user.clone(),
                self.address.clone(),
                id.to_owned(),
            )
            .await;
        }
        match self.message(value) {
            Ok(signal) => {
                let id = signal.id().to_owned();
                self.gateway.router.route(signal);
                Message::Text(json!({ "ack": id }).to_string().into())
            }
            Err(failure) => refusal(&self.address, failure),
        }
    }

    /// The message a frame carries, stamped as from the client.
    fn message(&self, value: serde_json::Value) -> Result<Signal, Failure> {
        let bad = |e: String| Failure::new(code::BAD_REQUEST, e);
        let mut wire: WireSignal = serde_json::from_value(value)
            .map_err(|e| bad(format!("the frame is not a signal: {e}")))?;
        let headers = std::mem::take(&mut wire.headers);
        let body = wire
            .into_client_body(Some(SignalType::Message))
            .map_err(|e| bad(e.to_string()))?;
        if let Body::Message(m) = &body
            && (m.to.starts_with(AGENT_PREFIX) || m.to.starts_with(USER_PREFIX))
        {
            return Err(Failure::new(
                code::FORBIDDEN,
                format!("a client may not message `{}` directly", short(&m.to)),
            )
            .with_help("send it to a handler that relays it"));
        }
        let signal = Signal {
            envelope: Envelope::new(self.address.as_str(), headers),
            body,
        };
        let max = self.gateway.router.max_message_bytes();
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

/// Removes the kept push `id` that `user` (at `address`) acknowledged.
async fn acknowledge(router: Arc<Router>, user: String, address: String, id: String) -> Message {
    let refuse = |code, text: String| refusal(&address, Failure::new(code, text));
    let Some(store) = router.state_store() else {
        return refuse(code::NOT_FOUND, "this host keeps no pushes".into());
    };
    let shown = id.clone();
    let now = crate::signal::now_millis();
    let removed = tokio::task::spawn_blocking(move || store.acknowledge(&user, &id, now)).await;
    match removed {
        Ok(Ok(true)) => {
            router.metrics().gateway.pushes_acknowledged.inc();
            Message::Text(json!({ "acknowledged": shown }).to_string().into())
        }
        Ok(Ok(false)) => refuse(
            code::NOT_FOUND,
            format!(
                "no push `{}` is kept for you (acknowledged already, or expired)",
                short(&shown)
            ),
        ),
        Ok(Err(error)) => {
            tracing::error!(%error, "could not remove an acknowledged push");
            refuse(
                code::OVERLOADED,
                "the push could not be removed; acknowledge it again".into(),
            )
        }
        Err(_) => refuse(
            code::OVERLOADED,
            "the push could not be removed; acknowledge it again".into(),
        ),
    }
}

/// The push id of an acknowledgement frame, `{"ack": "<id>"}`.
fn acknowledged(value: &serde_json::Value) -> Option<&str> {
    let object = value.as_object()?;
    match (object.len(), object.get("ack")) {
        (1, Some(serde_json::Value::String(id))) => Some(id),
        _ => None,
    }
}

/// Text from a client, cut so it cannot flood an answer.
fn short(text: &str) -> String {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
