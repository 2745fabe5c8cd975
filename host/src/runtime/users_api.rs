//! The `users` interface: presence and one-way pushes to connected clients (`user:<id>`).

use super::bindings::{guest_json, switchboard::signal::users, wit};
use super::budget::Spend;
use super::state::HostState;
use crate::address::Address;
use crate::keyed::KeptPush;
use crate::signal::{Body, Failure, Headers, Message, Signal, code};

impl users::Host for HostState {
    fn is_online(&mut self, id: String) -> wasmtime::Result<bool> {
        let Ok(outbound) = self.outbound() else {
            return Ok(false);
        };
        Ok(!id.is_empty() && outbound.is_online(&Address::User(&id).to_string()))
    }

    fn push(
        &mut self,
        id: String,
        event_type: String,
        payload: String,
    ) -> wasmtime::Result<Result<(), wit::Failure>> {
        let pushed = self.pushed(id, event_type, payload, None).map(|signal| {
            self.turn.hold(super::outbound::Output::Push(signal));
        });
        Ok(pushed.map_err(Into::into))
    }

    fn keep(
        &mut self,
        id: String,
        event_type: String,
        payload: String,
        ttl_ms: u64,
    ) -> wasmtime::Result<Result<(), wit::Failure>> {
        let kept = (|| {
            if self.clustered {
                return Err(super::state::not_in_cluster("kept pushes are"));
            }
            let store = self.store.clone().ok_or_else(|| {
                Failure::new(
                    code::OVERLOADED,
                    "this host keeps no state, so keeps no pushes",
                )
            })?;
            let longest = u64::try_from(store.limits().kept_ttl.as_millis()).unwrap_or(u64::MAX);
            let ttl_ms = if ttl_ms == 0 {
                longest
            } else {
                ttl_ms.min(longest)
            };
            let user = id.clone();
            let expires_ms = self.clock.now_millis().saturating_add(ttl_ms);
            let signal = self.pushed(id, event_type, payload, Some(expires_ms))?;
            let bytes = serde_json::to_vec(&signal).map_err(|e| {
                Failure::new(code::TRAPPED, format!("could not keep the push: {e}"))
            })?;
            // Held twice: as the stored push and as the push that goes out.
            self.turn.make_room(bytes.len(), self.max_held_bytes)?;
            let push = KeptPush {
                user,
                id: signal.id().to_owned(),
                expires_ms,
                signal: bytes,
            };
            self.turn.keep(push, signal)
        })();
        Ok(kept.map_err(Into::into))
    }
}

/// The header of a push kept until acknowledged: when it expires (milliseconds since the
/// Unix epoch). A client acknowledges it with `{"ack": "<its id>"}`.
pub const KEPT_HEADER: &str = "switchboard-kept";

impl HostState {
    /// A push to user `id`, stamped (marked kept until `kept_until`, if given), its bytes
    /// held in the turn. One larger than a client connection's queue could never be
    /// delivered: 413.
    fn pushed(
        &mut self,
        id: String,
        event_type: String,
        payload: String,
        kept_until: Option<u64>,
    ) -> Result<Signal, Failure> {
        if id.is_empty() || event_type.is_empty() {
            return Err(Failure::new(
                code::BAD_REQUEST,
                "a push needs a non-empty user id and event type",
            ));
        }
        let body = Body::Message(Message {
            message_type: event_type,
            to: Address::User(&id).to_string(),
            return_address: None,
            payload: guest_json(payload, "pushed payload")?,
        });
        let depth = self.spend(Spend::Send)?;
        let mut signal = self.stamp(body, Headers::new(), depth)?;
        if let Some(expires_ms) = kept_until {
            signal
                .envelope
                .headers
                .insert(KEPT_HEADER.to_owned(), expires_ms.to_string());
        }
        if signal.size() > self.max_push_bytes {
            return Err(Failure::new(
                code::TOO_LARGE,
                format!(
                    "the push is {} bytes, more than a client connection's queue holds ({} bytes, the host setting `--gateway-queue-bytes`)",
                    signal.size(),
                    self.max_push_bytes
                ),
            )
            .with_help("push a reference to the data, which the client fetches, or split it over several pushes"));
        }
        self.turn.make_room(signal.size(), self.max_held_bytes)?;
        Ok(signal)
    }
}
