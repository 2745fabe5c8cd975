//! The accept loop of both listeners (the admin API and the client gateway), which keeps
//! the host reachable under a flood of connections.
//!
//! Every connection is tracked as idle (no request on it, before the first or between
//! two), reading a request's headers (from its first byte until hyper has parsed them), or
//! busy (a request is being handled or its answer written):
//!
//! - one reading headers longer than the header-read timeout is closed (a slow or stalled
//!   sender), and so is one idle longer than the idle timeout;
//! - at most `max_connections` are open. A new connection at the cap sheds the connection
//!   that has been idle or reading headers the longest; busy ones are never shed, and if
//!   every connection is busy the new one waits until one finishes. So `/healthz` or an
//!   authenticated client still gets through while the cap is reached. A connection is
//!   shed only once it has had 100 ms (`SHED_GRACE`) to send its request (until then the new one
//!   waits), so a flood that reopens every connection shed cannot churn an honest client
//!   out between its accept and its headers;
//! - when accepting fails for want of file descriptors, an idle or half-sent connection is
//!   shed to make room;
//! - on shutdown the listener closes, idle and half-sent connections close at once, and
//!   busy ones finish their request first;
//! - a connection may upgrade (the gateway's WebSocket clients): it then leaves the loop,
//!   and its own limits take over. Until it does, it may live at most `lifetime`, so
//!   nobody keeps a place by repeating requests.
//!
//! hyper's own header-read timeout is not used: it also runs while a keep-alive connection
//! waits for its next request, so it cannot be told apart from the idle timeout.

mod progress;
mod tracker;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{Id, JoinError, JoinSet};

use crate::metrics::{GatewayMetrics, Metrics, ReasonLabels};
pub use progress::WriteProgress;
use tracker::{Answer, State, Tracker, Watched};

/// Default most connections open at once (lowered to what the open-file limit allows).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default longest time from a request's first byte to the end of its headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest time a connection may stay open without a request on it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The shortest time between two checks of a connection's timeouts.
const RECHECK_FLOOR: Duration = Duration::from_millis(10);
/// Least time a connection is given, from its accept or its last answer, before it may be
/// shed for a newcomer: a client that sends its request at once is read by then.
const SHED_GRACE: Duration = Duration::from_millis(100);
/// Pause after an accept error other than a connection's own, so a persistent one
/// (out of file descriptors) does not spin the loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);
/// Least time between two warnings about accept errors.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The connection limits of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; past it, idle and half-sent ones are shed.
    pub max_connections: usize,
    /// Longest time from a request's first byte to the end of its headers.
    pub header_read_timeout: Duration,
    /// Longest time a connection stays open with no request on it.
    pub idle_timeout: Duration,
    /// Longest a connection may stay plain HTTP, whatever it does, before it is closed or
    /// upgraded; none for the admin API.
    pub lifetime: Option<Duration>,
    /// Most bytes of a request's head a connection may send before its headers are
    /// parsed; hyper's default (about 400 KiB) if none.
    pub max_header_bytes: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            lifetime: None,
            max_header_bytes: None,
        }
    }
}

/// What a listener counts of its connections: those open, those shed and those timed
/// out, by the state they were in.
#[derive(Clone)]
pub struct Counters {
    open: Gauge,
    shed: Family<ReasonLabels, Counter>,
    timed_out: Family<ReasonLabels, Counter>,
}

impl Counters {
    /// The admin API's connection metrics.
    pub fn admin(metrics: &Metrics) -> Self {
        Self {
            open: metrics.connections.clone(),
            shed: metrics.connections_shed.clone(),
            timed_out: metrics.connections_timed_out.clone(),
        }
    }

    /// The gateway's: its connections that have not upgraded yet.
    pub fn gateway(metrics: &GatewayMetrics) -> Self {
        Self {
            open: metrics.handshakes.clone(),
            shed: metrics.handshakes_shed.clone(),
            timed_out: metrics.handshakes_timed_out.clone(),
        }
    }

    fn count(family: &Family<ReasonLabels, Counter>, state: State) {
        family
            .get_or_create(&ReasonLabels {
                reason: state.as_str().to_owned(),
            })
            .inc();
    }
}

/// Serves `app` on `listener` within `limits` until `stop` resolves, then closes the
/// listener and returns once every connection has closed (busy ones after their request;
/// upgraded ones have left the loop and are closed by their own side).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    counters: Counters,
    stop: impl Future<Output = ()>,
) {
    let (closing, closed) = watch::channel(false);
    let mut http = http1::Builder::new();
    if let Some(bytes) = limits.max_header_bytes {
        http.max_buf_size(bytes);
    }
    let mut server = Server {
        app,
        limits: ConnectionLimits {
            max_connections: limits.max_connections.max(1),
            ..limits
        },
        counters,
        http,
        tasks: JoinSet::new(),
        open: HashMap::new(),
        shedding: 0,
        closed,
        warned: None,
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(done) = server.tasks.join_next_with_id() => server.reap(done),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if !server.make_room(&mut stop).await {
                        break;
                    }
                    server.spawn(stream);
                }
                Err(error) => server.accept_failed(error).await,
            },
        }
    }
    drop(listener);
    closing.send_replace(true);
    while let Some(done) = server.tasks.join_next_with_id().await {
        server.reap(done);
    }
}

/// The accept loop's state.
struct Server {
    app: axum::Router,
    limits: ConnectionLimits,
    counters: Counters,
    http: http1::Builder,
    tasks: JoinSet<()>,
    /// Every open connection by the id of the task serving it.
    open: HashMap<Id, Arc<Tracker>>,
    /// Connections shed but not closed yet.
    shedding: usize,
    /// Becomes true when the server stops.
    closed: watch::Receiver<bool>,
    /// When an accept error was last logged.
    warned: Option<Instant>,
}

impl Server {
    /// Connections open and not being shed.
    fn open(&self) -> usize {
        self.open.len() - self.shedding
    }

    /// Forgets a connection whose task has ended.
    fn reap(&mut self, done: Result<(Id, ()), JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(error) => {
                if error.is_panic() {
                    tracing::error!(%error, "a connection's task panicked");
                }
                error.id()
            }
        };
        if let Some(tracker) = self.open.remove(&id) {
            self.counters.open.dec();
            if tracker.is_shed() {
                self.shedding -= 1;
            }
        }
    }

    /// Before a new connection is served at the cap: sheds the connection idle or reading
    /// headers the longest once it has had [`SHED_GRACE`], or, when every one is busy, waits
    /// until one finishes. False if the server was told to stop meanwhile.
    async fn make_room(&mut self, stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
        while self.open() >= self.limits.max_connections {
            let sheddable_at = match self.longest_quiet() {
                Some((since, ..)) if since.elapsed() >= SHED_GRACE => {
                    self.shed_one();
                    return true;
                }
                Some((since, ..)) => Some(since + SHED_GRACE),
                None => None,
            };
            let graced = async {
                match sheddable_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.as_mut() => return false,
                Some(done) = self.tasks.join_next_with_id() => self.reap(done),
                () = graced => {}
            }
        }
        true
    }

    /// The connection that has gone longest without being busy (idle or reading headers
    /// since it was accepted or last answered), with since when and its state; none if
    /// every connection is busy.
    fn longest_quiet(&self) -> Option<(Instant, State, Arc<Tracker>)> {
        self.open
            .values()
            .filter_map(|tracker| {
                tracker
                    .sheddable()
                    .map(|(state, since)| (since, state, tracker.clone()))
            })
            .min_by_key(|(since, _, _)| *since)
    }

    /// Sheds the connection that has gone longest without being busy; false if every
    /// connection is busy.
    fn shed_one(&mut self) -> bool {
        let Some((_, state, tracker)) = self.longest_quiet() else {
            return false;
        };
        tracker.shed();
        self.shedding += 1;
        Counters::count(&self.counters.shed, state);
        tracing::debug!(
            state = state.as_str(),
            cap = self.limits.max_connections,
            "shed a connection to make room"
        );
        true
    }

    /// Handles a failed accept: a connection's own failure is ignored; running out of file
    /// descriptors sheds a connection; anything else waits a moment before the next try.
    async fn accept_failed(&mut self, error: std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(
            error.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset
        ) {
            return;
        }
        let out_of_files = matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        let shed = out_of_files && self.shed_one();
        if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            self.warned = Some(Instant::now());
            tracing::warn!(
                %error,
                open = self.open.len(),
                shed,
                "could not accept a connection (further errors for {WARN_EVERY:?} are not logged)"
            );
        }
        tokio::time::sleep(ACCEPT_PAUSE).await;
    }

    /// When a connection's timeouts are next checked: its current state's deadline, or sooner.
    /// The state may change before then without telling the connection's task, but no state it
    /// can enter has a deadline earlier than now plus the shorter timeout, so checking by then
    /// never misses one: a check that finds nothing due re-arms for the state of that moment.
    /// Checks are at least [`RECHECK_FLOOR`] apart, so timeouts shorter than that (even zero)
    /// cannot make a busy connection's task spin; they are enforced up to that much late.
    fn next_check(tracker: &Tracker, limits: &ConnectionLimits) -> Instant {
        let shorter = limits.idle_timeout.min(limits.header_read_timeout);
        let soonest = Instant::now() + shorter.max(RECHECK_FLOOR);
        tracker
            .deadline(limits)
            .map_or(soonest, |deadline| deadline.min(soonest))
    }

    /// Serves a new connection on its own task.
    fn spawn(&mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let tracker = Tracker::new();
        let watched = Watched::new(stream, tracker.clone());
        // Every request carries how far writes to its connection have got, for a client it
        // may upgrade to (the gateway's write-stall check).
        let progress = watched.progress();
        let io = TokioIo::new(watched);
        let service = {
            let (app, tracker) = (self.app.clone(), tracker.clone());
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(progress.clone());
                let busy = tracker.begin();
                let mut app = app.clone();
                async move {
                    let response: Result<_, Infallible> =
                        tower_service::Service::call(&mut app, request).await;
                    response.map(|r| r.map(|body| Answer::new(body, busy)))
                }
            })
        };
        let connection = self.http.serve_connection(io, service).with_upgrades();
        let (limits, counters) = (self.limits, self.counters.clone());
        let mut closed = self.closed.clone();
        let watched = tracker.clone();
        let task = self.tasks.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut closing = false;
            let lifetime = async {
                match limits.lifetime {
                    Some(lifetime) => tokio::time::sleep(lifetime).await,
                    None => std::future::pending().await,
                }
            };
            let mut lifetime = std::pin::pin!(lifetime);
            // One timer, re-armed only when it fires (see `next_check`): a request's state
            // changes do not wake this task or touch the timer wheel.
            let expiry = tokio::time::sleep_until(Self::next_check(&watched, &limits).into());
            let mut expiry = std::pin::pin!(expiry);
            loop {
                tokio::select! {
                    _ = connection.as_mut() => break,
                    () = watched.changed() => if watched.is_shed() {
                        break;
                    },
                    () = expiry.as_mut() => {
                        if let Some(state) = watched.expired(&limits) {
                            Counters::count(&counters.timed_out, state);
                            break;
                        }
                        expiry.as_mut().reset(Self::next_check(&watched, &limits).into());
                    },
                    () = &mut lifetime => {
                        Counters::count(&counters.timed_out, watched.state());
                        break;
                    }
                    _ = closed.wait_for(|c| *c), if !closing => {
                        closing = true;
                        if watched.state() != State::Busy {
                            break;
                        }
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        });
        self.open.insert(task.id(), tracker);
        self.counters.open.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a busy connection's timeouts are checked no sooner than `RECHECK_FLOOR`, even
    /// with zero timeouts (which would otherwise re-arm the timer for now, spinning its task),
    /// and an idle one's at its deadline when that is sooner than the shorter timeout.
    #[test]
    fn timeouts_are_checked_at_the_deadline_or_the_floor() {
        let zero = ConnectionLimits {
            header_read_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            ..ConnectionLimits::default()
        };
        let tracker = Tracker::new();
        let _busy = tracker.begin();
        let before = Instant::now();
        assert!(Server::next_check(&tracker, &zero) >= before + RECHECK_FLOOR);

        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(1),
            ..ConnectionLimits::default()
        };
        let idle = Tracker::new();
        let check = Server::next_check(&idle, &limits);
        assert!(check <= Instant::now() + Duration::from_secs(1));
        assert!(check >= before + Duration::from_millis(900));
    }
}
