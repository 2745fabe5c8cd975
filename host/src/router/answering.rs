//! Answering: every message takes exactly one answer, from its addressee (or the host), and
//! one left open past its deadline is answered 504 by the host.

use std::sync::Weak;
use std::time::Duration;

use super::{MAX_LATER_PER_HANDLER, Open, Router};
use crate::address::{Address, Kind};
use crate::signal::{Body, Failure, HOST_ADDRESS, Json, Signal, code};

/// How often open messages are checked against their deadlines.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// Answers 504 the open messages past their deadline, every [`EXPIRY_TICK`], while the
/// router lives.
pub(super) async fn expire_open_messages(router: Weak<Router>) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(router) = router.upgrade() else {
            break;
        };
        router.expire();
    }
}

impl Router {
    /// Answers message `id`, delivered to and still open at `answerer`, with `outcome`: the
    /// one answer it takes. The host (`host`) may answer any open message. A refused answer
    /// reaches nobody and is counted.
    pub fn answer(
        &self,
        id: &str,
        answerer: &str,
        outcome: Result<Json, Failure>,
    ) -> Result<String, Failure> {
        let open = self.claim_answer(id, answerer)?;
        Ok(self.release_answer(open, outcome))
    }

    /// Closes message `id` for `answerer`'s answer. The host (`host`) may answer any open
    /// message. A refusal is counted and logged (rate-limited).
    pub(super) fn claim_answer(&self, id: &str, answerer: &str) -> Result<Open, Failure> {
        let claimed = if answerer == HOST_ADDRESS {
            self.answers.claim_any(id)
        } else {
            self.answers.claim(id, answerer)
        };
        claimed.map_err(|refused| {
            // Labelled by handler, never by agent: clients choose agent ids.
            let handler = Address::handler_of(answerer).to_owned();
            self.metrics
                .answers_refused
                .get_or_create(&crate::metrics::DeadLetterLabels {
                    handler: handler.clone(),
                    reason: refused.as_str().to_owned(),
                })
                .inc();
            if self.runtime.log_limit().admit(&handler) {
                tracing::debug!(id, answerer, reason = refused.as_str(), "refused an answer");
            }
            refused.failure(id)
        })
    }

    /// Sends the answer to a claimed message; returns the answer's id.
    pub(super) fn release_answer(&self, open: Open, outcome: Result<Json, Failure>) -> String {
        let answer = open.into_answer(None, outcome, self.clock());
        let id = answer.envelope.id.clone();
        self.route_answer(answer);
        id
    }

    /// Routes an answer, unless it answers a timer's message: that goes nowhere.
    pub(crate) fn route_answer(&self, answer: Signal) {
        let nowhere = matches!(&answer.body, Body::Reply { to, .. } | Body::ErrorReply { to, .. } if to.is_empty());
        if !nowhere {
            self.route(answer);
        }
    }

    /// Whether the caller awaiting `open`'s answer is on another host: it goes to an inbox
    /// not this host's. Its deadline was set by that host's clock.
    pub(super) fn awaited_elsewhere(&self, open: &Open) -> bool {
        // In process there are no inboxes: nothing to read.
        let (Some(answer_to), Some(mine)) = (open.answer_to.as_deref(), self.transport.inbox())
        else {
            return false;
        };
        answer_to != mine && Address::kind_of(answer_to) == Kind::Inbox
    }

    /// Whether message `id` still waits for its answer: not answered, not past its deadline.
    pub(crate) fn is_open(&self, id: &str) -> bool {
        self.answers.is_open(id)
    }

    /// Called by a worker when its handler is done with a signal: a message's outcome is its
    /// answer (from `from`), unless the handler answers `later`; a message answered already
    /// (with `reply`) refuses it and counts it. The worker logs other kinds' failures.
    pub(crate) fn finish(
        &self,
        signal: &Signal,
        result: Result<Option<Json>, Failure>,
        from: &str,
        later: bool,
    ) {
        if !matches!(signal.body, Body::Message(_)) {
            return;
        }
        let outcome = if later {
            let handler = Address::handler_of(from);
            if self
                .answers
                .defer(signal.id(), handler, MAX_LATER_PER_HANDLER)
            {
                return;
            }
            Err(Failure::new(
                code::OVERLOADED,
                format!("handler `{handler}` already has {MAX_LATER_PER_HANDLER} messages waiting for a later answer, the most it may have"),
            )
            .with_help("retry later, once it has answered some"))
        } else {
            result.map(|payload| payload.unwrap_or_else(Json::null))
        };
        // Refused and counted if it was answered already: one answer per message.
        let _ = self.answer(signal.id(), from, outcome);
    }

    /// The deadline of a message that reached a handler without one (only a message from
    /// another host could): the default from now.
    pub(super) fn default_deadline(&self) -> u64 {
        self.clock().after(self.runtime.config().message_deadline)
    }

    /// Answers 504 every open message past its deadline.
    pub(super) fn expire(&self) {
        for open in self.answers.expire(self.clock().now_millis()) {
            self.metrics.answers_expired.inc();
            let failure = Failure::new(
                code::TIMEOUT,
                format!(
                    "`{}` did not answer message {} before its deadline",
                    open.addressee, open.id
                ),
            )
            .with_help(
                "the handler said it would answer later and did not; it may be slow or stuck",
            );
            let from = Some(HOST_ADDRESS.to_owned());
            let answer = open.into_answer(from, Err(failure), self.clock());
            self.route_answer(answer);
        }
    }
}
