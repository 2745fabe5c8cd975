//! Prometheus metrics per handler: signals by kind and outcome, handling time, queue depth,
//! warm instances, traps, limit hits, swaps, broadcasts dropped for want of a subscription,
//! the most signals handled at once, loops and send caps stopped, log lines suppressed;
//! host-wide pending requests, late replies and queued bytes; and the admin API's connections.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod gateway;
pub use gateway::GatewayMetrics;

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

/// Labels of a per-handler counter by reason: dead letters, refused answers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// The handler (or `user:<id>` client) the signal was meant for.
    pub handler: String,
    /// `mailbox_full`, `handler_stopped`, `client_slow`, `client_gone`.
    pub reason: String,
}

/// Labels of the dead-letter counter: whom a signal was meant for, which kind it is and why
/// it was kept, so that `/metrics` alone accounts for every kind (events apart from error
/// replies, say).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterKindLabels {
    /// The handler (or `user:<id>` client) the signal was meant for.
    pub handler: String,
    /// `MESSAGE`, `EVENT`, `DATA_CHANGE`, `REPLY` or `ERROR_REPLY`.
    pub kind: String,
    /// `mailbox_full`, `handler_stopped`, `client_slow`, `client_gone`, `store_failed`.
    pub reason: String,
}

/// Labels of the per-signal send caps counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapLabels {
    pub handler: String,
    /// `send`, `emit` or `request`.
    pub kind: String,
}

/// Labels of the instance pool's slot gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlotLabels {
    /// `max`, `reserved` (one per deployed handler), `in_use`, `shared` (in use beyond a
    /// handler's reserved slot).
    pub state: String,
}

/// Labels of the cluster a host joins: its name and the host's id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    pub cluster: String,
    pub host: String,
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
    /// The instance pool's slots by state, read when the metrics are rendered.
    pub instance_slots: Family<SlotLabels, Gauge>,
    /// Signals answered 503 because no instance slot came free in time.
    pub pool_refusals: Family<HandlerLabels, Counter>,
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
    pub dead_letters: Family<DeadLetterKindLabels, Counter>,
    /// Broadcast copies refused at the source for a handler whose mailbox refused them and
    /// whose share of the dead-letter store was full.
    pub dead_letters_refused: Family<HandlerLabels, Counter>,
    pub dead_letters_stored: Gauge,
    pub replies_dropped: Family<ReasonLabels, Counter>,
    /// Signals from other hosts refused before delivery, by reason.
    pub foreign_refused: Family<ReasonLabels, Counter>,
    /// What the cluster's transport did that an operator watches for, by what.
    pub cluster: Family<ReasonLabels, Counter>,
    /// 1 for the cluster this host joins and its id in it (none for a host alone): joined
    /// on, it gives every other metric its host.
    pub cluster_host: Family<HostLabels, Gauge>,
    pub callbacks_refused: Family<HandlerLabels, Counter>,
    pub compilations: Gauge,
    /// Bytes of signals waiting in every mailbox.
    pub queued_bytes: Gauge,
    /// Connections to the admin API open now.
    pub connections: Gauge,
    /// Connections closed to make room at the cap, by what they were doing (`idle`,
    /// `reading_headers`).
    pub connections_shed: Family<ReasonLabels, Counter>,
    /// Connections closed by the idle or header-read timeout, by what they were doing.
    pub connections_timed_out: Family<ReasonLabels, Counter>,
    /// Host calls refused because the signal would be past the causal depth limit.
    pub depth_refused: Family<HandlerLabels, Counter>,
    /// Host calls refused because a handler used up a per-signal send cap.
    pub send_caps_hit: Family<CapLabels, Counter>,
    /// Log lines about a handler (its own or the host's warnings) dropped by a limit.
    pub log_suppressed: Family<HandlerLabels, Counter>,
    /// Uploads being compiled now.
    pub compilations_in_progress: Gauge,
    /// Uploads waiting for a compile slot now.
    pub compilations_queued: Gauge,
    /// Answers refused: a second answer to a message (`not_open`), or one from a handler it
    /// was not delivered to (`not_addressee`).
    pub answers_refused: Family<DeadLetterLabels, Counter>,
    /// Messages left unanswered past their deadline, answered 504 by the host.
    pub answers_expired: Counter,
    /// Messages delivered to handlers and not yet answered, read when rendered.
    pub open_messages: Gauge,
    /// Turns whose state and timers committed.
    pub state_commits: Counter,
    /// Turns refused at commit because a key they read changed meanwhile.
    pub state_conflicts: Family<HandlerLabels, Counter>,
    /// Turns refused at commit by a state size limit or the timer quota.
    pub state_quota_refused: Family<HandlerLabels, Counter>,
    /// Turns committed per state transaction (group commit).
    pub state_group_commit_batches: Histogram,
    /// Timers committed.
    pub timers_scheduled: Family<HandlerLabels, Counter>,
    /// Timers delivered and removed.
    pub timers_fired: Family<HandlerLabels, Counter>,
    /// Pending timers cancelled.
    pub timers_cancelled: Family<HandlerLabels, Counter>,
    /// The client gateway's.
    pub gateway: GatewayMetrics,
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
            instance_slots: Family::default(),
            pool_refusals: Family::default(),
            traps: Family::default(),
            limit_hits: Family::default(),
            swaps: Family::default(),
            unsubscribed: Family::default(),
            peak_active: Family::default(),
            pending_requests: Gauge::default(),
            late_replies: Counter::default(),
            foreign_refused: Family::default(),
            cluster: Family::default(),
            cluster_host: Family::default(),
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
            dead_letters_refused: Family::default(),
            dead_letters_stored: Gauge::default(),
            replies_dropped: Family::default(),
            callbacks_refused: Family::default(),
            compilations: Gauge::default(),
            queued_bytes: Gauge::default(),
            connections: Gauge::default(),
            connections_shed: Family::default(),
            connections_timed_out: Family::default(),
            depth_refused: Family::default(),
            send_caps_hit: Family::default(),
            log_suppressed: Family::default(),
            compilations_in_progress: Gauge::default(),
            compilations_queued: Gauge::default(),
            answers_refused: Family::default(),
            answers_expired: Counter::default(),
            open_messages: Gauge::default(),
            state_commits: Counter::default(),
            state_conflicts: Family::default(),
            state_quota_refused: Family::default(),
            state_group_commit_batches: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            timers_scheduled: Family::default(),
            timers_fired: Family::default(),
            timers_cancelled: Family::default(),
            gateway: GatewayMetrics::default(),
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
            "instance_slots",
            "Slots of the instance pool: max (--max-instances), reserved (one per deployed handler), in_use, shared (in use beyond a handler's reserved slot)",
            metrics.instance_slots.clone(),
        );
        registry.register(
            "instance_slot_refusals",
            "Signals answered 503 because no instance slot came free in time",
            metrics.pool_refusals.clone(),
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
            "Signals kept in the dead-letter store (or lost trying), by the handler they were meant for, their kind and the reason",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "dead_letters_refused",
            "Broadcast copies refused at the source, by handler: its mailbox refused them and its share of the dead-letter store was full",
            metrics.dead_letters_refused.clone(),
        );
        registry.register(
            "dead_letters_stored",
            "Dead letters in the store now, with those being written and those set aside for a replay",
            metrics.dead_letters_stored.clone(),
        );
        registry.register(
            "replies_dropped",
            "Replies dropped: late (after the deadline), unexpected (nothing serves their address), forged (not from the addressee), too_large (too large to reach the host awaiting it)",
            metrics.replies_dropped.clone(),
        );
        registry.register(
            "foreign_refused",
            "Signals from other hosts refused before delivery: too_large (over this host's largest signal), undecodable (not a signal)",
            metrics.foreign_refused.clone(),
        );
        registry.register(
            "cluster_events",
            "What the cluster's transport did, by reason: publish_retry (a stream publish retried with the same message id after a timeout), no_space (a publish the cluster's stream refused for space), redelivered (a streamed signal offered to this host again: its ack wait passed, or a host handed it back), max_deliver (a streamed signal offered too many times, kept as a dead letter), duplicate (a streamed signal this host had handled offered again as new, after a server lost its acknowledgement: acknowledged without a second turn)",
            metrics.cluster.clone(),
        );
        registry.register(
            "cluster_host",
            "1 for the cluster this host joins (its name) and the host's id in it; absent for a host alone",
            metrics.cluster_host.clone(),
        );
        registry.register(
            "callbacks_refused",
            "Sends refused with 429 because the handler had too many messages awaiting replies",
            metrics.callbacks_refused.clone(),
        );
        registry.register(
            "compilations",
            "Components handed to the compiler since start (shared code and cached artifacts excluded)",
            metrics.compilations.clone(),
        );
        registry.register(
            "queued_bytes",
            "Bytes of signals waiting in all mailboxes, counted against the host's queue budget",
            metrics.queued_bytes.clone(),
        );
        registry.register(
            "connections",
            "Connections to the admin API open now",
            metrics.connections.clone(),
        );
        registry.register(
            "connections_shed",
            "Connections closed to make room at the connection cap, by what they were doing (idle, reading_headers)",
            metrics.connections_shed.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed by the idle timeout (idle) or the header-read timeout (reading_headers)",
            metrics.connections_timed_out.clone(),
        );
        registry.register(
            "depth_refused",
            "Signals a handler tried to send past the causal depth limit, refused with 508 (a loop)",
            metrics.depth_refused.clone(),
        );
        registry.register(
            "send_caps_hit",
            "Host calls refused with 429 because a handler sent, emitted or requested more than it may while handling one signal",
            metrics.send_caps_hit.clone(),
        );
        registry.register(
            "log_suppressed",
            "Log lines about a handler dropped by the per-signal line cap or the per-handler rate limit",
            metrics.log_suppressed.clone(),
        );
        registry.register(
            "compilations_in_progress",
            "Uploads being compiled now",
            metrics.compilations_in_progress.clone(),
        );
        registry.register(
            "compilations_queued",
            "Uploads waiting for a compile slot now",
            metrics.compilations_queued.clone(),
        );
        registry.register(
            "answers_refused",
            "Answers refused: a second answer to a message, or one from a handler it was not delivered to",
            metrics.answers_refused.clone(),
        );
        registry.register(
            "answers_expired",
            "Messages left unanswered past their deadline, answered 504 by the host",
            metrics.answers_expired.clone(),
        );
        registry.register(
            "open_messages",
            "Messages delivered to handlers and not yet answered",
            metrics.open_messages.clone(),
        );
        register_state(&mut registry, &metrics);
        metrics.gateway.register(&mut registry);
        Self {
            registry,
            ..metrics
        }
    }
}

/// Registers the keyed-state and timer metrics.
fn register_state(registry: &mut Registry, metrics: &Metrics) {
    registry.register(
        "state_commits",
        "Turns whose state writes and timers committed durably",
        metrics.state_commits.clone(),
    );
    registry.register(
        "state_conflicts",
        "Turns refused at commit because a state key they read was changed by another turn meanwhile",
        metrics.state_conflicts.clone(),
    );
    registry.register(
        "state_quota_refused",
        "Turns refused at commit by a state size limit (state_value_bytes, state_handler_bytes) or the timer quota (timers_per_handler)",
        metrics.state_quota_refused.clone(),
    );
    registry.register(
        "state_group_commit_batches",
        "Turns committed together in one state transaction (one fsync)",
        metrics.state_group_commit_batches.clone(),
    );
    registry.register(
        "timers_scheduled",
        "Durable timers committed",
        metrics.timers_scheduled.clone(),
    );
    registry.register(
        "timers_fired",
        "Durable timers delivered and removed",
        metrics.timers_fired.clone(),
    );
    registry.register(
        "timers_cancelled",
        "Pending durable timers cancelled",
        metrics.timers_cancelled.clone(),
    );
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
