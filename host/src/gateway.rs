//! The client gateway: WebSocket clients on a listener of their own, separate from the admin
//! API. A client authenticates with a token before the upgrade (401 otherwise), in the
//! `Authorization: Bearer` header or, from a browser, in `Sec-WebSocket-Protocol` beside
//! the application protocol `switchboard.v1` (echoed back; the token never is). Tokens are
//! JWTs (HS256 with a secret; RS256 or ES256 with a public key found by `kid`) or, for
//! development, entries of a static tokens file. The client is then the address
//! `user:<id>`: what is addressed to it arrives on every connection it has open as JSON
//! signals in the wire format; each frame it sends gets one answer, in order:
//! `{"ack": "<id>"}` for a message taken (its replies refer to that id),
//! `{"acknowledged": "<id>"}` for a kept push it acknowledged, or an ERROR_REPLY signal.
//! A user's first connection opening and last one closing are broadcast as the events
//! `UserOnline` and `UserOffline` (`{"user": "<id>"}`), which handlers subscribe to like any
//! event.
//!
//! Every connection is bounded ([`GatewayLimits`]): heartbeats, its queue, how long a write
//! to it may stall, its frame rate and size, connections per user and in total; it ends with
//! a close code of [`close`].

pub(crate) mod connection;
mod jwt;
pub(crate) mod keys;
mod limits;
pub mod listener;
mod page;
mod routing;
mod tokens;
mod user_id;

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{mpsc, watch};

pub use connection::{USER_OFFLINE, USER_ONLINE};
pub use jwt::{Bearer, Jwt, JwtSettings, Refused};
pub use keys::KeysError;
pub use limits::{GatewayLimits, close};
pub use listener::{MAX_HANDSHAKES, handshake_limits};
pub use tokens::{Tokens, TokensError};
pub use user_id::BadUserId;

use crate::listener::WriteProgress;
use crate::metrics::GatewayMetrics;
use crate::signal::{Body, Envelope, HOST_ADDRESS, Headers, Json, Signal};
use limits::{Full, Slots};
pub use routing::{CLIENT_QUEUE, ClientLink, Routing};

/// Bytes a connection reads at a time.
const READ_BUFFER: usize = 4096;

/// The application protocol a browser names beside its token.
pub const PROTOCOL: &str = "switchboard.v1";

/// What the gateway's routes share.
#[derive(Clone)]
pub struct Gateway {
    router: Arc<dyn Routing>,
    tokens: Arc<Tokens>,
    jwt: Option<Arc<Jwt>>,
    limits: Arc<GatewayLimits>,
    slots: Slots,
    /// Turns true when the host shuts down: every connection closes "going away".
    stopping: watch::Receiver<bool>,
    /// Presence events, broadcast in the order users' connections opened and closed.
    presence: mpsc::UnboundedSender<Signal>,
}

/// Closes every connection of a gateway with "going away".
pub struct GatewayStop {
    stopping: watch::Sender<bool>,
    metrics: GatewayMetrics,
}

impl GatewayStop {
    /// Closes every connection with [`close::GOING_AWAY`] and waits (up to `grace`) until
    /// they are closed.
    pub async fn going_away(&self, grace: std::time::Duration) {
        let _ = self.stopping.send(true);
        let closed = async {
            while self.metrics.connected.get() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(grace, closed).await;
    }
}

impl Gateway {
    /// A gateway letting in the holders of `tokens` or of JWTs `jwt` accepts, to `router`,
    /// within `limits`; and what stops it.
    pub fn new(
        router: Arc<dyn Routing>,
        tokens: Tokens,
        jwt: Option<Jwt>,
        limits: GatewayLimits,
    ) -> (Self, GatewayStop) {
        let (stop, stopping) = watch::channel(false);
        let metrics = router.gateway_metrics().clone();
        let (presence, mut events) = mpsc::unbounded_channel();
        let publisher = router.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                // Refused at its source only if the dead-letter store is full; counted there.
                let _ = publisher.offer_now(event);
            }
        });
        let gateway = Self {
            router,
            tokens: Arc::new(tokens),
            jwt: jwt.map(Arc::new),
            limits: Arc::new(limits),
            slots: Slots::default(),
            stopping,
            presence,
        };
        let stop = GatewayStop {
            stopping: stop,
            metrics,
        };
        (gateway, stop)
    }

    /// Who a token stands for: the tokens file's user, else a valid JWT's bearer.
    fn bearer(&self, token: &str) -> Result<Bearer, Refused> {
        if let Some(user) = self.tokens.user(token) {
            return Ok(Bearer {
                user,
                expires_ms: None,
            });
        }
        self.jwt
            .as_ref()
            .map_or(Err(Refused::Invalid), |jwt| jwt.bearer(token))
    }

    /// The gateway's routes: `GET /v1/ws`, and the chat page at `/`.
    pub fn app(self) -> axum::Router {
        axum::Router::new()
            .route("/v1/ws", get(upgrade))
            .route("/", get(page::html))
            .route("/chat.js", get(page::script))
            .route("/chat.css", get(page::style))
            .with_state(self)
    }

    /// Queues the presence event `event_type` (`UserOnline`, `UserOffline`) for `user`.
    fn presence(&self, event_type: &str, user: &str) {
        let signal = Signal {
            envelope: Envelope::new(HOST_ADDRESS, Headers::new(), self.router.clock()),
            body: Body::Event {
                event_type: event_type.to_owned(),
                payload: Json::from_value(&serde_json::json!({ "user": user })),
            },
        };
        let _ = self.presence.send(signal);
    }

    fn metrics(&self) -> &GatewayMetrics {
        self.router.gateway_metrics()
    }

    fn refuse(&self, status: StatusCode, reason: &str, text: String) -> Response {
        GatewayMetrics::count(&self.metrics().refused, reason);
        (status, text).into_response()
    }
}

/// The token a client presents: its bearer token, or the protocol offered beside
/// [`PROTOCOL`].
fn presented(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(token) = bearer {
        return Some(token.trim().to_owned());
    }
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.contains(&PROTOCOL) {
        return None;
    }
    offered
        .into_iter()
        .find(|p| *p != PROTOCOL && !p.is_empty())
        .map(str::to_owned)
}

/// `GET /v1/ws`: authenticates, takes a place under the caps, then upgrades. `progress`
/// is set by [`crate::listener::serve`], the accept loop serving the gateway's routes.
async fn upgrade(
    State(gateway): State<Gateway>,
    Extension(progress): Extension<WriteProgress>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if *gateway.stopping.borrow() {
        return gateway.refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the host is shutting down".into(),
        );
    }
    let bearer = presented(&headers).ok_or(Refused::Invalid);
    let bearer = match bearer.and_then(|token| gateway.bearer(&token)) {
        Ok(bearer) => bearer,
        Err(Refused::Invalid) => {
            return gateway.refuse(
                StatusCode::UNAUTHORIZED,
                "token",
                "a valid client token is needed: `Authorization: Bearer <token>`, or `Sec-WebSocket-Protocol: switchboard.v1, <token>`".into(),
            );
        }
        Err(refused) => {
            return gateway.refuse(StatusCode::UNAUTHORIZED, "token", refused.to_string());
        }
    };
    let slot = match gateway.slots.take(&bearer.user, &gateway.limits) {
        Ok(slot) => slot,
        Err(Full::User(cap)) => {
            return gateway.refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "user_cap",
                format!("user `{}` has {cap} connections open, the most one user may have; close one first", bearer.user),
            );
        }
        Err(Full::Gateway(cap)) => {
            return gateway.refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "total_cap",
                format!("the gateway holds {cap} connections, the most it takes; try again later"),
            );
        }
    };
    let max = gateway.limits.max_frame_bytes;
    ws.protocols([PROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        // An idle client holds little: a small read buffer that grows with what arrives
        // (tungstenite's default is 128 KiB up front), and frames written as they are sent.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| connection::serve(socket, progress, bearer, slot, gateway))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, value.parse().unwrap());
        }
        map
    }

    /// A token comes from the bearer header, or from the protocols offered beside
    /// `switchboard.v1`; protocols without it carry no token.
    #[test]
    fn tokens_are_found_in_either_header() {
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer abc")]);
        assert_eq!(presented(&bearer).as_deref(), Some("abc"));
        let offered = headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "switchboard.v1, abc")]);
        assert_eq!(presented(&offered).as_deref(), Some("abc"));
        let reversed = headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "abc, switchboard.v1")]);
        assert_eq!(presented(&reversed).as_deref(), Some("abc"));
        let foreign = headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "chat, abc")]);
        assert_eq!(presented(&foreign), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }
}
