//! One client connection: the pushes kept for the user first, then what is addressed to the
//! client goes out as JSON signals, and each frame it sends gets one answer, in order. It
//! ends when the client goes, or with a close code of [`close`]: heartbeat missed, token
//! expired, writes stalled (the client stopped reading), frame too large, host going away.

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::limits::{Slot, close};
use super::{Bearer, Gateway, Routing};
use crate::address::Address;
use crate::clock::Clock;
use crate::listener::WriteProgress;
use crate::metrics::GatewayMetrics;
use crate::signal::{Body, Envelope, Failure, HOST_ADDRESS, Headers, Signal, code};
use crate::token_bucket::TokenBucket;

pub(crate) mod frames;

pub use crate::signal::{USER_OFFLINE, USER_ONLINE};

/// Longest wait to hand a close frame to a client.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Longest wait for a client to answer the host's close frame.
const LINGER: Duration = Duration::from_secs(5);
/// How long a client whose writes stalled has to read what is on its way, the close frame
/// behind it, and answer, before its socket is shut.
const STALLED_CLOSE: Duration = Duration::from_secs(2);

/// Why the host ends a connection.
struct Close {
    code: u16,
    /// The metric label.
    reason: &'static str,
    text: String,
}

impl Close {
    fn new(code: u16, reason: &'static str, text: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            text: text.into(),
        }
    }
}

/// What woke a connection.
enum Wake {
    Stop(Close),
    Ping,
    Deliver(Option<Signal>),
    Frame(Option<Result<Message, axum::Error>>),
}

/// A connected client.
struct Connection {
    socket: WebSocket,
    /// How far the writes to `socket` have got.
    progress: WriteProgress,
    gateway: Gateway,
    user: String,
    address: String,
    bucket: TokenBucket,
}

/// Serves the client `bearer` on `socket` (whose writes `progress` follows) until it or the
/// host goes; `slot` is its place under the caps.
pub async fn serve(
    socket: WebSocket,
    progress: WriteProgress,
    bearer: Bearer,
    slot: Slot,
    gateway: Gateway,
) {
    let router = gateway.router.clone();
    let metrics = router.gateway_metrics().clone();
    let user = bearer.user;
    let address = Address::User(&user).to_string();
    let mut online = || gateway.presence(USER_ONLINE, &user);
    let limits = &gateway.limits;
    let mut link = router.connect_client(&address, limits.queue, limits.queue_bytes, &mut online);
    metrics.opened.inc();
    metrics.connected.inc();
    tracing::debug!(%address, connection = link.id, "client connected");
    let limits = &gateway.limits;
    let mut connection = Connection {
        bucket: TokenBucket::new(
            f64::from(limits.frames_per_second),
            f64::from(limits.frame_burst),
            std::time::Instant::now(),
        ),
        socket,
        progress,
        gateway: gateway.clone(),
        user: user.clone(),
        address: address.clone(),
    };
    let ended = connection
        .run(&mut link.inbox, &link.queued, bearer.expires_ms)
        .await;
    let mut socket = connection.socket;
    // A stalled client's close frame waits behind what it has not read yet: it has
    // STALLED_CLOSE to read it all and answer, then its socket is shut.
    let now = Instant::now();
    let (close_by, shut_by) = match &ended {
        Some(close) if close.code == close::TOO_SLOW => (now + STALLED_CLOSE, now + STALLED_CLOSE),
        _ => (now + CLOSE_GRACE, now + CLOSE_GRACE + LINGER),
    };
    if let Some(close) = &ended {
        GatewayMetrics::count(&metrics.closed, close.reason);
        let frame = CloseFrame {
            code: close.code,
            reason: close.text.clone().into(),
        };
        let _ = tokio::time::timeout_at(close_by, socket.send(Message::Close(Some(frame)))).await;
    }
    let mut offline = || gateway.presence(USER_OFFLINE, &user);
    router.disconnect_client(&address, link.id, &mut offline);
    // What was still queued for this connection is not sent (the user's other connections
    // got their own copies; kept pushes come again at the next connection): counted.
    link.inbox.close();
    let mut dropped = 0;
    while link.inbox.try_recv().is_ok() {
        dropped += 1;
    }
    metrics.undelivered.inc_by(dropped);
    metrics.connected.dec();
    drop(slot);
    tracing::debug!(%address, connection = link.id, dropped, "client disconnected");
    if ended.is_some() {
        // The close handshake: the client reads what was sent before the close frame and
        // answers it; dropping the socket at once could reset what it has not read yet.
        let answered = async {
            while let Some(Ok(frame)) = socket.recv().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout_at(shut_by, answered).await;
    }
}

fn going_away() -> Close {
    Close::new(close::GOING_AWAY, "going_away", "the host is shutting down")
}

fn token_expired() -> Close {
    Close::new(
        close::TOKEN_EXPIRED,
        "expired",
        "the token expired; connect again with a fresh one",
    )
}

/// Resolves when the gateway is told to stop (never if its stopper is gone).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    if stopping.wait_for(|stop| *stop).await.is_err() {
        pending::<()>().await;
    }
}

/// Resolves when a token expiring at `expires_ms` has expired (never for `None`).
async fn expired(expires_ms: Option<u64>, clock: Clock) {
    match expires_ms {
        Some(at) => {
            let left = at.saturating_sub(clock.now_millis());
            tokio::time::sleep(Duration::from_millis(left)).await;
        }
        None => pending().await,
    }
}

impl Connection {
    fn metrics(&self) -> &GatewayMetrics {
        self.gateway.router.gateway_metrics()
    }

    /// Serves the connection; the close to end it with, if the host ends it.
    async fn run(
        &mut self,
        inbox: &mut mpsc::Receiver<Signal>,
        queued: &AtomicUsize,
        expires_ms: Option<u64>,
    ) -> Option<Close> {
        // The backlog a page at a time, in order, forwarding what arrives meanwhile so the
        // queue does not fill behind it.
        let mut after = 0;
        loop {
            let page = kept_page(self.gateway.router.clone(), self.user.clone(), after).await;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, frame) in page {
                // A long backlog to a slow reader still ends at shutdown or token expiry.
                if *self.gateway.stopping.borrow() {
                    return Some(going_away());
                }
                if expires_ms.is_some_and(|at| self.gateway.router.clock().now_millis() >= at) {
                    return Some(token_expired());
                }
                if let Err(close) = self.send(Message::Text(frame.into())).await {
                    return close;
                }
                while let Ok(signal) = inbox.try_recv() {
                    queued.fetch_sub(signal.size(), Ordering::Relaxed);
                    if let Err(close) = self.send(text(&signal)).await {
                        return close;
                    }
                }
            }
        }
        let limits = self.gateway.limits.clone();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + limits.heartbeat,
            limits.heartbeat,
        );
        let stop = stopped(self.gateway.stopping.clone());
        let expiry = expired(expires_ms, self.gateway.router.clock().clone());
        // Reset by every frame (a pong too): the client is closed the moment it has been
        // silent for the heartbeat timeout.
        let silence = tokio::time::sleep(limits.heartbeat_timeout);
        tokio::pin!(stop, expiry, silence);
        loop {
            let wake = tokio::select! {
                biased;
                () = &mut stop => Wake::Stop(going_away()),
                () = &mut expiry => Wake::Stop(token_expired()),
                () = &mut silence => Wake::Stop(Close::new(
                    close::HEARTBEAT,
                    "heartbeat",
                    format!("nothing heard for {:?}, not even a pong", limits.heartbeat_timeout),
                )),
                _ = ping.tick() => Wake::Ping,
                delivered = inbox.recv() => Wake::Deliver(delivered),
                frame = self.socket.recv() => Wake::Frame(frame),
            };
            let out = match wake {
                Wake::Stop(close) => return Some(close),
                Wake::Ping => Message::Ping(Default::default()),
                Wake::Deliver(Some(signal)) => {
                    queued.fetch_sub(signal.size(), Ordering::Relaxed);
                    text(&signal)
                }
                Wake::Deliver(None) => return None,
                Wake::Frame(frame) => {
                    let heard = tokio::time::Instant::now();
                    silence.as_mut().reset(heard + limits.heartbeat_timeout);
                    match frame {
                        Some(Ok(Message::Text(frame))) => self.take(frame.as_str()).await,
                        Some(Ok(Message::Binary(_))) => {
                            self.metrics().frames_in.inc();
                            match self.over_rate() {
                                Some(refusal) => refusal,
                                None => self
                                    .refusal(code::BAD_REQUEST, "frames are JSON text, not binary"),
                            }
                        }
                        Some(Ok(Message::Close(_))) | None => return None,
                        Some(Ok(_)) => continue,
                        Some(Err(error)) if error.to_string().contains("Space limit exceeded") => {
                            return Some(Close::new(
                                close::TOO_LARGE,
                                "too_large",
                                format!(
                                    "a frame was past the largest the gateway takes, {} bytes",
                                    limits.max_frame_bytes
                                ),
                            ));
                        }
                        Some(Err(_)) => return None,
                    }
                }
            };
            if let Err(close) = self.send(out).await {
                return close;
            }
        }
    }

    /// Sends a frame while the client takes its bytes: one that takes none for the write
    /// stall stopped reading (`Err(Some)`, to close with [`close::TOO_SLOW`]); one whose
    /// connection broke is gone (`Err(None)`).
    async fn send(&mut self, message: Message) -> Result<(), Option<Close>> {
        let counted = !matches!(message, Message::Ping(_));
        let stall = self.gateway.limits.write_stall;
        match self.progress.within(stall, self.socket.send(message)).await {
            Some(Ok(())) => {
                if counted {
                    self.metrics().frames_out.inc();
                }
                Ok(())
            }
            Some(Err(_)) => Err(None),
            None => {
                self.metrics().slow_disconnects.inc();
                Err(Some(Close::new(
                    close::TOO_SLOW,
                    "slow",
                    format!("the client took no byte for {stall:?}: it stopped reading"),
                )))
            }
        }
    }

    /// An ERROR_REPLY from the host refusing the frame being answered.
    fn refusal(&self, code: u32, description: impl Into<String>) -> Message {
        self.refused(Failure::new(code, description))
    }

    /// An ERROR_REPLY from the host refusing the frame being answered with `failure`.
    fn refused(&self, failure: Failure) -> Message {
        refusal(&self.address, failure, self.gateway.router.clock())
    }
}

/// Kept pushes read for a connection at a time.
const KEPT_PAGE: usize = 32;

/// The next page of unexpired pushes kept for `user` after place `after`, as frames with
/// their places, in the order they were kept.
async fn kept_page(router: Arc<dyn Routing>, user: String, after: u64) -> Vec<(u64, String)> {
    let Some(store) = router.state_store() else {
        return Vec::new();
    };
    let now = router.clock().now_millis();
    let read = tokio::task::spawn_blocking(move || store.kept_after(&user, after, now, KEPT_PAGE));
    match read.await {
        Ok(Ok(page)) => page
            .into_iter()
            .map(|(at, push)| (at, String::from_utf8_lossy(&push.signal).into_owned()))
            .collect(),
        Ok(Err(error)) => {
            tracing::error!(%error, "could not read the pushes kept for a user");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

/// A signal as a text frame.
fn text(signal: &Signal) -> Message {
    Message::Text(serde_json::to_string(signal).unwrap_or_default().into())
}

/// The header that marks an ERROR_REPLY refusing a frame of the connection it arrives on
/// (other ERROR_REPLYs answer messages, and reach every connection of the user).
pub const REFUSED_FRAME: &str = "switchboard-refused-frame";

/// An ERROR_REPLY from the host to `address`, refusing a frame: its `replyTo` is the id the
/// host gave the frame (frames are answered in order, one answer each), and it carries the
/// header [`REFUSED_FRAME`].
fn refusal(address: &str, failure: Failure, clock: &Clock) -> Message {
    let frame = Envelope::new(address, Headers::new(), clock);
    let marked = Headers::from([(REFUSED_FRAME.to_owned(), "true".to_owned())]);
    text(&Signal {
        envelope: Envelope::new(HOST_ADDRESS, marked, clock),
        body: Body::ErrorReply {
            reply_to: frame.id,
            to: address.to_owned(),
            error: failure,
        },
    })
}
