//! What becomes of a signal the transport could not deliver: a message is answered with an
//! ErrorReply from the host; a reply is kept as a dead letter, or dropped and counted when
//! nothing serves its address; a broadcast refused at its source is counted as refused.

use super::Router;
use crate::address::{Address, Kind};
use crate::dead_letters::{DeadReason, Reservation};
use crate::metrics::{DeadLetterKindLabels, ReasonLabels, RefusedLabels};
use crate::signal::{Body, HOST_ADDRESS, Signal};
use crate::transport::{Reason, Undelivered};

impl Router {
    /// Settles a signal the transport could not deliver: a message is answered with an
    /// ErrorReply from the host; a reply is dead-lettered, or dropped and counted when
    /// nothing serves its address.
    pub(super) fn undeliverable(&self, undelivered: Undelivered) {
        let kind = undelivered.signal.kind();
        if matches!(undelivered.signal.body, Body::Message(_)) {
            self.count_accepted(kind, 1);
            let failure = undelivered.failure();
            let answer = Signal::answer(
                &undelivered.signal,
                HOST_ADDRESS,
                Err(failure),
                None,
                self.clock(),
            );
            return self.route(answer);
        }
        let label = undelivered.label();
        let Undelivered { signal, reason, .. } = undelivered;
        match &signal.body {
            Body::Reply { to, reply_to, .. } | Body::ErrorReply { to, reply_to, .. } => {
                self.callbacks.close(reply_to);
                let dead = match reason {
                    Reason::Overloaded if Address::kind_of(to) == Kind::User => {
                        DeadReason::ClientSlow
                    }
                    Reason::Overloaded => DeadReason::MailboxFull,
                    Reason::ClientGone => DeadReason::ClientGone,
                    Reason::ShuttingDown => DeadReason::HandlerStopped,
                    Reason::Lost => DeadReason::Lost,
                    Reason::Unreachable => DeadReason::Unreachable,
                    // Answers do not go through a stream; were one refused for space, it
                    // was lost on the way.
                    Reason::NoSpace => DeadReason::Lost,
                    Reason::TooLarge => {
                        tracing::warn!(id = %signal.envelope.id, to, "dropped a reply too large to reach the host awaiting it");
                        return self.drop_reply(kind, "too_large");
                    }
                    Reason::NoRoute | Reason::NotAccepted => {
                        tracing::debug!(id = %signal.envelope.id, to, "dropped a reply nothing serves the address of");
                        return self.drop_reply(kind, "unexpected");
                    }
                };
                let handler = self.handler_at(crate::transport::address_of(to));
                self.dead_letter(kind, &handler, dead, signal);
            }
            Body::Event { .. } | Body::DataChange { .. } | Body::Message(_) => {
                // Only refusals at the source land here: the signal was never accepted.
                self.metrics
                    .refused
                    .get_or_create(&RefusedLabels {
                        kind: kind.to_owned(),
                        reason: label.to_owned(),
                    })
                    .inc();
            }
        }
    }

    /// The name of the handler serving `address`, or the address itself (a client, or a
    /// handler that has gone).
    fn handler_at(&self, address: &str) -> String {
        self.read()
            .handlers
            .get(address)
            .map_or_else(|| address.to_owned(), |entry| entry.slot.name.to_string())
    }

    /// Keeps one refused signal, with room reserved on the spot; if even that fails the
    /// loss is logged and counted, never silent.
    fn dead_letter(&self, kind: &str, handler: &str, reason: DeadReason, signal: Signal) {
        match self.dead_letters.reserve(handler) {
            Some(mut room) => {
                self.count_accepted(kind, 1);
                self.keep(&mut room, reason, signal);
            }
            None => {
                if self.may_warn(handler) {
                    tracing::error!(
                        handler,
                        reason = reason.as_str(),
                        "the dead-letter store (or this handler's share of it) is full; a reply was dropped"
                    );
                }
                self.drop_reply(kind, "dead_letters_full");
            }
        }
    }

    pub(super) fn keep(&self, room: &mut Reservation<'_>, reason: DeadReason, signal: Signal) {
        let id = signal.envelope.id.clone();
        let kind = signal.kind();
        let handler = room.handler().to_owned();
        let handler = handler.as_str();
        let count = |reason: &str| {
            self.metrics
                .dead_letters
                .get_or_create(&DeadLetterKindLabels {
                    handler: handler.to_owned(),
                    kind: kind.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
        };
        match room.keep(reason, signal) {
            Ok(_) => {
                count(reason.as_str());
                tracing::debug!(%id, handler, reason = reason.as_str(), "kept a dead letter");
            }
            Err(error) => {
                if self.may_warn(handler) {
                    tracing::error!(%id, handler, %error, "could not keep a dead letter; the signal is lost");
                }
                count("store_failed");
            }
        }
    }

    /// Keeps `signal`, which nothing takes, as a dead letter for `handler` (reason
    /// `handler_stopped`); whether the store had room for it.
    pub fn keep_unserved(&self, handler: &str, signal: Signal) -> bool {
        let Some(mut room) = self.dead_letters().reserve(handler) else {
            return false;
        };
        self.keep(&mut room, DeadReason::HandlerStopped, signal);
        true
    }

    /// Counts a broadcast's copy refused at the source for `handler`: its mailbox refused
    /// it and its share of the dead-letter store has no room.
    pub(super) fn refused_copy(&self, handler: &str, copy: &Signal) {
        self.metrics
            .refused
            .get_or_create(&RefusedLabels {
                kind: copy.kind().to_owned(),
                reason: "dead_letters_full".to_owned(),
            })
            .inc();
        self.metrics
            .dead_letters_refused
            .get_or_create(&crate::metrics::Metrics::handler(handler))
            .inc();
        if self.may_warn(handler) {
            tracing::warn!(
                handler,
                id = %copy.envelope.id,
                "a broadcast's copy was refused: the handler's mailbox is full and so is its share of the dead-letter store"
            );
        }
    }

    pub(super) fn drop_reply(&self, kind: &str, reason: &str) {
        self.count_accepted(kind, 1);
        self.metrics
            .replies_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}
