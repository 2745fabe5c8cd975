//! Prometheus metrics per handler: signals by kind and outcome, handling time, queue depth,
//! warm instances, traps, limit hits, swaps, broadcasts dropped for want of a subscription,
//! the most signals handled at once; and host-wide pending requests and late replies.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-handler metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabels {
    pub handler: String,
}

/// Labels of the signal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    pub handler: String,
    /// `MESSAGE`, `EVENT`, ...
    pub kind: String,
    /// `ok`, `error` (the handler's own), `trap`, or `limit`.
    pub outcome: String,
}

/// Labels of a counter by signal kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `MESSAGE`, `EVENT`, ...
    pub kind: String,
}

/// Labels of a counter by signal kind and reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub kind: String,
    pub reason: String,
}

/// Labels of the dead-letter counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// The handler (or `user:<id>` client) the signal was meant for.
    pub handler: String,
    /// `mailbox_full`, `handler_stopped`, `client_slow`, `client_gone`.
    pub reason: String,
}

/// Labels of a counter by reason alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

fn handling_histogram() -> Histogram {
    // 10 µs to ~5 s.
    Histogram::new(exponential_buckets(1e-5, 3.0, 13))
}

/// Every metric the host keeps.
pub struct Metrics {
    registry: Registry,
    pub signals: Family<SignalLabels, Counter>,
    pub handling_seconds: Family<HandlerLabels, Histogram, fn() -> Histogram>,
    pub queue_depth: Family<HandlerLabels, Gauge>,
    pub instances: Family<HandlerLabels, Gauge>,
    pub traps: Family<HandlerLabels, Counter>,
    pub limit_hits: Family<HandlerLabels, Counter>,
    pub swaps: Family<HandlerLabels, Counter>,
    /// Broadcasts dropped because the version handling them no longer subscribes.
    pub unsubscribed: Family<HandlerLabels, Counter>,
    /// The most signals a handler has handled at once.
    pub peak_active: Family<HandlerLabels, Gauge>,
    pub pending_requests: Gauge,
    pub late_replies: Counter,
    pub accepted: Family<KindLabels, Counter>,
    /// The `accepted` counters of the five kinds, in [`KINDS`] order.
    accepted_by_kind: [Counter; 5],
    pub refused: Family<RefusedLabels, Counter>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    pub dead_letters_stored: Gauge,
    pub replies_dropped: Family<ReasonLabels, Counter>,
    pub callbacks_refused: Family<HandlerLabels, Counter>,
    pub compilations: Gauge,
}

/// The signal kinds as labelled.
const KINDS: [&str; 5] = [
    "MESSAGE",
    "EVENT",
    "REPLY",
    "ERROR_REPLY",
    "DATA_CHANGE_EVENT",
];

impl Default for Metrics {
    fn default() -> Self {
        let accepted: Family<KindLabels, Counter> = Family::default();
        let mut registry = Registry::with_prefix("switchboard");
        let metrics = Self {
            signals: Family::default(),
            handling_seconds: Family::new_with_constructor(handling_histogram),
            queue_depth: Family::default(),
            instances: Family::default(),
            traps: Family::default(),
            limit_hits: Family::default(),
            swaps: Family::default(),
            unsubscribed: Family::default(),
            peak_active: Family::default(),
            pending_requests: Gauge::default(),
            late_replies: Counter::default(),
            accepted: accepted.clone(),
            accepted_by_kind: KINDS.map(|kind| {
                accepted
                    .get_or_create(&KindLabels {
                        kind: kind.to_owned(),
                    })
                    .clone()
            }),
            refused: Family::default(),
            dead_letters: Family::default(),
            dead_letters_stored: Gauge::default(),
            replies_dropped: Family::default(),
            callbacks_refused: Family::default(),
            compilations: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "signals",
            "Signals handled, by handler, kind and outcome",
            metrics.signals.clone(),
        );
        registry.register(
            "handling_seconds",
            "Time a handler spent on one signal",
            metrics.handling_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Signals waiting in a handler's mailbox",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "instances",
            "Warm instances of a handler",
            metrics.instances.clone(),
        );
        registry.register(
            "traps",
            "Instances discarded after a trap",
            metrics.traps.clone(),
        );
        registry.register(
            "limit_hits",
            "Signals stopped by a memory, CPU time or wall-clock deadline limit",
            metrics.limit_hits.clone(),
        );
        registry.register(
            "swaps",
            "Hot swaps of a handler's version",
            metrics.swaps.clone(),
        );
        registry.register(
            "unsubscribed",
            "Broadcasts dropped because the handling version no longer subscribes",
            metrics.unsubscribed.clone(),
        );
        registry.register(
            "peak_active",
            "The most signals a handler has handled at once",
            metrics.peak_active.clone(),
        );
        registry.register(
            "pending_requests",
            "Messages awaiting a reply",
            metrics.pending_requests.clone(),
        );
        registry.register(
            "late_replies",
            "Replies dropped after their deadline",
            metrics.late_replies.clone(),
        );
        registry.register(
            "accepted",
            "Signals the host accepted, by kind: each ends handled, answered with an ErrorReply, dead-lettered, or (replies) dropped and counted",
            metrics.accepted.clone(),
        );
        registry.register(
            "refused",
            "Signals refused at their source and never accepted, by kind and reason",
            metrics.refused.clone(),
        );
        registry.register(
            "dead_letters",
            "Signals kept in the dead-letter store, by the handler they were meant for and the reason",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "dead_letters_stored",
            "Dead letters in the store now",
            metrics.dead_letters_stored.clone(),
        );
        registry.register(
            "replies_dropped",
            "Replies dropped: late (after the deadline), unexpected (nothing serves their address), forged (not from the addressee)",
            metrics.replies_dropped.clone(),
        );
        registry.register(
            "callbacks_refused",
            "Sends refused with 429 because the handler had too many messages awaiting replies",
            metrics.callbacks_refused.clone(),
        );
        registry.register(
            "compilations",
            "Components compiled from source since start (cached artifacts excluded)",
            metrics.compilations.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The accepted-signals counter of `kind`, without building its labels each time.
    pub fn accepted_of(&self, kind: &str) -> Counter {
        match KINDS.iter().position(|k| *k == kind) {
            Some(at) => self.accepted_by_kind[at].clone(),
            None => self
                .accepted
                .get_or_create(&KindLabels {
                    kind: kind.to_owned(),
                })
                .clone(),
        }
    }

    /// The labels of handler `name`.
    pub fn handler(name: &str) -> HandlerLabels {
        HandlerLabels {
            handler: name.to_owned(),
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_text_format() {
        let metrics = Metrics::default();
        metrics
            .signals
            .get_or_create(&SignalLabels {
                handler: "echo".into(),
                kind: "MESSAGE".into(),
                outcome: "ok".into(),
            })
            .inc();
        metrics
            .handling_seconds
            .get_or_create(&Metrics::handler("echo"))
            .observe(0.001);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"switchboard_signals_total{handler="echo",kind="MESSAGE",outcome="ok"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("switchboard_handling_seconds_bucket"),
            "{text}"
        );
    }
}
