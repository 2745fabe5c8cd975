//! What one connection is doing, as the accept loop sees it: idle, reading a request's
//! headers, or busy. The socket reports the first byte of a request ([`Watched`]); the
//! service reports a request taken ([`Tracker::begin`]); the answer's body reports, when
//! hyper lets go of it, that the answer is written ([`Answer`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::{ConnectionLimits, WriteProgress};

/// What a connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No request on it: just accepted, or between two requests.
    Idle,
    /// A request's first bytes have come, its headers are not complete.
    ReadingHeaders,
    /// A request is being handled or its answer written.
    Busy,
}

impl State {
    /// The state as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::ReadingHeaders => "reading_headers",
            Self::Busy => "busy",
        }
    }
}

struct Phase {
    state: State,
    /// When it entered the state.
    since: Instant,
    /// Since when it has not been busy: since it was accepted or last answered. A byte
    /// that starts a request does not move it, so a client trickling bytes keeps its place
    /// in the order of shedding.
    quiet_since: Instant,
    /// Requests taken and not answered yet (one at a time on HTTP/1).
    requests: u32,
}

/// One connection's state, shared by its socket, its service and the accept loop.
pub struct Tracker {
    phase: Mutex<Phase>,
    /// Woken when the connection is shed.
    changed: Notify,
    shed: AtomicBool,
}

impl Tracker {
    /// A connection just accepted: idle.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            phase: Mutex::new({
                let now = Instant::now();
                Phase {
                    state: State::Idle,
                    since: now,
                    quiet_since: now,
                    requests: 0,
                }
            }),
            changed: Notify::new(),
            shed: AtomicBool::new(false),
        })
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters `state`. The connection's task is not woken: it checks its timeouts on a
    /// schedule that no state's deadline can precede (`Server::next_check` in `listener`).
    fn enter(&self, phase: &mut Phase, state: State) {
        phase.state = state;
        phase.since = Instant::now();
        if state == State::Idle {
            phase.quiet_since = phase.since;
        }
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.phase().state
    }

    /// Bytes came in: an idle connection starts reading a request.
    fn received(&self) {
        let mut phase = self.phase();
        if phase.state == State::Idle {
            self.enter(&mut phase, State::ReadingHeaders);
        }
    }

    /// A request was taken; the connection is busy until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        let mut phase = self.phase();
        phase.requests += 1;
        if phase.state != State::Busy {
            self.enter(&mut phase, State::Busy);
        }
        Busy(self.clone())
    }

    /// When the connection's current state times out, if it can.
    pub fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let phase = self.phase();
        match phase.state {
            State::Idle => Some(phase.since + limits.idle_timeout),
            State::ReadingHeaders => Some(phase.since + limits.header_read_timeout),
            State::Busy => None,
        }
    }

    /// The state that has outlasted its timeout, if it has.
    pub fn expired(&self, limits: &ConnectionLimits) -> Option<State> {
        self.deadline(limits)
            .filter(|at| *at <= Instant::now())
            .map(|_| self.state())
    }

    /// Its state, and since when it has not been busy, if it may be shed: not busy and not
    /// shed already.
    pub fn sheddable(&self) -> Option<(State, Instant)> {
        let phase = self.phase();
        (phase.state != State::Busy && !self.is_shed()).then_some((phase.state, phase.quiet_since))
    }

    /// Tells the connection to close.
    pub fn shed(&self) {
        self.shed.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// Whether it was told to close.
    pub fn is_shed(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    /// Resolves when the connection is shed (and may resolve spuriously: check
    /// [`Tracker::is_shed`]).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Held while a request is being handled and its answer written.
pub struct Busy(Arc<Tracker>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        phase.requests = phase.requests.saturating_sub(1);
        if phase.requests == 0 {
            self.0.enter(&mut phase, State::Idle);
        }
    }
}

/// An answer's body, which keeps its connection busy until hyper has written it and lets
/// go of it.
pub struct Answer {
    body: Body,
    _busy: Busy,
}

impl Answer {
    /// `body`, keeping the connection busy while it lives.
    pub fn new(body: Body, busy: Busy) -> Self {
        Self { body, _busy: busy }
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket, which tells its tracker when bytes come in and counts the bytes
/// it takes from the host ([`WriteProgress`]).
pub struct Watched {
    stream: TcpStream,
    tracker: Arc<Tracker>,
    written: Arc<AtomicU64>,
}

impl Watched {
    /// `stream`, reporting to `tracker`.
    pub fn new(stream: TcpStream, tracker: Arc<Tracker>) -> Self {
        Self {
            stream,
            tracker,
            written: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How far writes to this socket have got, for whoever writes to it.
    pub fn progress(&self) -> WriteProgress {
        WriteProgress::of(&self.stream, self.written.clone())
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.tracker.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..ConnectionLimits::default()
        }
    }

    /// Proves a connection goes idle → reading headers → busy → idle, that only the first
    /// two may be shed, and that each state has its own deadline.
    #[test]
    fn states_follow_a_request() {
        let tracker = Tracker::new();
        let accepted = Instant::now();
        assert_eq!(tracker.state(), State::Idle);
        let idle_until = tracker.deadline(&limits()).unwrap();
        assert!(
            idle_until >= accepted + Duration::from_secs(59),
            "idle timeout"
        );
        tracker.received();
        assert_eq!(tracker.state(), State::ReadingHeaders);
        let header_until = tracker.deadline(&limits()).unwrap();
        assert!(header_until < idle_until, "the header timeout is shorter");
        assert!(tracker.sheddable().is_some());
        let busy = tracker.begin();
        tracker.received();
        assert_eq!(tracker.state(), State::Busy, "a request body keeps it busy");
        assert_eq!(tracker.deadline(&limits()), None);
        assert!(
            tracker.sheddable().is_none(),
            "a busy connection is never shed"
        );
        drop(busy);
        assert_eq!(tracker.state(), State::Idle);
        assert!(tracker.expired(&limits()).is_none());
        tracker.shed();
        assert!(tracker.is_shed());
        assert!(tracker.sheddable().is_none(), "shed once");
    }

    /// Proves a connection's place in the order of shedding is where it stopped being busy:
    /// a byte starting its headers does not move it behind a connection accepted later,
    /// while an answered request does.
    #[test]
    fn starting_headers_keeps_a_connections_place() {
        // Apart by a couple of milliseconds, so their instants surely differ.
        let first = Tracker::new();
        std::thread::sleep(Duration::from_millis(2));
        let second = Tracker::new();
        std::thread::sleep(Duration::from_millis(2));
        first.received();
        let quiet = |t: &Tracker| t.sheddable().unwrap().1;
        assert_eq!(first.state(), State::ReadingHeaders);
        assert!(quiet(&first) < quiet(&second), "the first stays first");
        drop(first.begin());
        assert!(
            quiet(&first) > quiet(&second),
            "answered, it goes to the back"
        );
    }
}
