//! The client gateway: WebSocket clients on a listener of their own, separate from the admin
//! API. A client authenticates with a token before the upgrade (401 otherwise), in the
//! `Authorization: Bearer` header or, from a browser, in `Sec-WebSocket-Protocol` beside
//! the application protocol `switchboard.v1` (echoed back; the token never is). It is then
//! the address `user:<id>`: what is addressed to it arrives as JSON signals in the wire
//! format, and the messages it sends are acknowledged with the id the host gave them, which
//! their replies refer to. A user's first connection opening and last one closing are
//! broadcast as the events `UserOnline` and `UserOffline` (`{"user": "<id>"}`), which
//! handlers subscribe to like any event.
//!
//! This is the gateway's first part: tokens come from a static file (development) or are
//! JWTs signed with a shared secret (HS256), a user
//! may have several connections (each gets everything addressed to the user), and a client
//! may message services, not agents or other users. JWTs, presence events, offline delivery and the limits of issue 9
//! are still to come.

mod connection;
mod jwt;
mod tokens;

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use connection::{USER_OFFLINE, USER_ONLINE};
pub use jwt::{Jwt, JwtSettings};
pub use tokens::{Tokens, TokensError};

use crate::router::Router;

/// The application protocol a browser names beside its token.
pub const PROTOCOL: &str = "switchboard.v1";

/// What the gateway's routes share.
#[derive(Clone)]
pub struct Gateway {
    router: Arc<Router>,
    tokens: Arc<Tokens>,
    jwt: Option<Arc<Jwt>>,
}

impl Gateway {
    /// A gateway letting in the holders of `tokens` or of JWTs `jwt` accepts, to `router`.
    pub fn new(router: Arc<Router>, tokens: Tokens, jwt: Option<Jwt>) -> Self {
        Self {
            router,
            tokens: Arc::new(tokens),
            jwt: jwt.map(Arc::new),
        }
    }

    /// The user a token stands for: from the tokens file, else a valid JWT's `sub`.
    fn user(&self, token: &str) -> Option<String> {
        self.tokens
            .user(token)
            .or_else(|| self.jwt.as_ref().and_then(|jwt| jwt.user(token)))
    }

    /// The gateway's routes: `GET /v1/ws`.
    pub fn app(self) -> axum::Router {
        axum::Router::new()
            .route("/v1/ws", get(upgrade))
            .with_state(self)
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

/// `GET /v1/ws`: authenticates, then upgrades.
async fn upgrade(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let user = presented(&headers).and_then(|token| gateway.user(&token));
    let Some(user) = user else {
        return (
            StatusCode::UNAUTHORIZED,
            "a client token is needed: `Authorization: Bearer <token>`, or `Sec-WebSocket-Protocol: switchboard.v1, <token>`",
        )
            .into_response();
    };
    let router = gateway.router.clone();
    ws.protocols([PROTOCOL])
        .on_upgrade(move |socket| connection::serve(socket, user, router))
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
