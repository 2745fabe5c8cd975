//! The client gateway's metrics: connected clients, connections opened, refused and closed
//! by reason, frames in and out, and pushes kept for users who were not connected.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::ReasonLabels;

/// The gateway's metrics.
#[derive(Clone, Debug, Default)]
pub struct GatewayMetrics {
    /// Client connections open now.
    pub connected: Gauge,
    /// Client connections opened (upgraded).
    pub opened: Counter,
    /// Connection attempts refused before the upgrade, by reason.
    pub refused: Family<ReasonLabels, Counter>,
    /// Connections that have not upgraded yet (a page request, a handshake).
    pub handshakes: Gauge,
    /// Connections not upgraded yet that were shed to make room for a newer one, by the
    /// state they were in (`idle`, `reading_headers`).
    pub handshakes_shed: Family<ReasonLabels, Counter>,
    /// Connections not upgraded yet that were closed for taking too long, by state.
    pub handshakes_timed_out: Family<ReasonLabels, Counter>,
    /// Connections closed by the host, by reason (`heartbeat`, `slow`, `expired`,
    /// `too_large`, `going_away`).
    pub closed: Family<ReasonLabels, Counter>,
    /// Frames taken from clients.
    pub frames_in: Counter,
    /// Frames sent to clients.
    pub frames_out: Counter,
    /// Frames refused for the per-connection rate limit.
    pub frames_limited: Counter,
    /// Clients disconnected because writes to them stalled: they stopped reading.
    pub slow_disconnects: Counter,
    /// Signals for a client connection that it never got: its queue was full, or it
    /// closed before they were sent.
    pub undelivered: Counter,
    /// Pushes kept for users until acknowledged (every `keep`, whether the user was
    /// connected or not).
    pub pushes_kept: Counter,
    /// Kept pushes a client acknowledged.
    pub pushes_acknowledged: Counter,
    /// Kept pushes removed unacknowledged at their expiry.
    pub pushes_expired: Counter,
}

impl GatewayMetrics {
    /// Counts one of `family` with `reason`.
    pub fn count(family: &Family<ReasonLabels, Counter>, reason: &str) {
        family
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Registers every gateway metric in `registry`.
    pub(super) fn register(&self, registry: &mut Registry) {
        let gateway = registry.sub_registry_with_prefix("gateway");
        gateway.register(
            "connected",
            "Client connections open now",
            self.connected.clone(),
        );
        gateway.register("opened", "Client connections opened", self.opened.clone());
        gateway.register(
            "refused",
            "Client connections refused before the upgrade, by reason",
            self.refused.clone(),
        );
        gateway.register(
            "handshakes",
            "Client connections not upgraded yet",
            self.handshakes.clone(),
        );
        gateway.register(
            "handshakes_shed",
            "Client connections not upgraded yet shed to make room for a newer one, by state",
            self.handshakes_shed.clone(),
        );
        gateway.register(
            "handshakes_timed_out",
            "Client connections not upgraded yet closed for taking too long, by state",
            self.handshakes_timed_out.clone(),
        );
        gateway.register(
            "closed",
            "Client connections the host closed, by reason",
            self.closed.clone(),
        );
        gateway.register(
            "frames_in",
            "Frames taken from clients",
            self.frames_in.clone(),
        );
        gateway.register(
            "frames_out",
            "Frames sent to clients",
            self.frames_out.clone(),
        );
        gateway.register(
            "frames_limited",
            "Client frames refused for the per-connection rate limit",
            self.frames_limited.clone(),
        );
        gateway.register(
            "slow_disconnects",
            "Clients disconnected because writes to them stalled: they stopped reading",
            self.slow_disconnects.clone(),
        );
        gateway.register(
            "undelivered",
            "Signals for a client connection that it never got: its queue was full, or it closed before they were sent",
            self.undelivered.clone(),
        );
        gateway.register(
            "pushes_kept",
            "Pushes kept for users until a client acknowledges them",
            self.pushes_kept.clone(),
        );
        gateway.register(
            "pushes_acknowledged",
            "Kept pushes a client acknowledged",
            self.pushes_acknowledged.clone(),
        );
        gateway.register(
            "pushes_expired",
            "Kept pushes removed unacknowledged at their expiry",
            self.pushes_expired.clone(),
        );
    }
}
