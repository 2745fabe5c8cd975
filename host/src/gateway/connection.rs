//! One client connection: what is addressed to the client goes out as JSON signals; what it
//! sends comes in as JSON messages, each acknowledged with the id the host gave it.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use serde_json::json;

use crate::router::Router;
use crate::signal::{AGENT_PREFIX, Body, Envelope, Failure, Signal, USER_PREFIX, code};
use crate::wire::{SignalType, WireSignal};

/// Serves a connected client `user` until it or the host goes.
pub async fn serve(mut socket: WebSocket, user: String, router: Arc<Router>) {
    let address = format!("{USER_PREFIX}{user}");
    let (connection, open, mut inbox) = router.connect_client(&address);
    tracing::debug!(%address, connection, "client connected");
    if open == 1 {
        presence(&router, USER_ONLINE, &user);
    }
    loop {
        let out = tokio::select! {
            delivered = inbox.recv() => match delivered {
                Some(signal) => serde_json::to_string(&signal).unwrap_or_default(),
                None => break,
            },
            frame = socket.recv() => match frame {
                Some(Ok(Message::Text(text))) => take(&router, &address, text.as_str()).to_string(),
                Some(Ok(Message::Binary(_))) => {
                    refusal(&Failure::new(code::BAD_REQUEST, "frames are JSON text, not binary"))
                        .to_string()
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            },
        };
        if socket.send(Message::Text(out.into())).await.is_err() {
            break;
        }
    }
    let left = router.disconnect_client(&address, connection);
    tracing::debug!(%address, connection, "client disconnected");
    if left == 0 {
        presence(&router, USER_OFFLINE, &user);
    }
}

/// The event a user's first connection opening is broadcast as, from the host:
/// `{"user": "<id>"}`. Handlers subscribe to it like to any event.
pub const USER_ONLINE: &str = "UserOnline";
/// The event a user's last connection closing is broadcast as.
pub const USER_OFFLINE: &str = "UserOffline";

/// Broadcasts a presence event for `user` to the handlers subscribed to it.
fn presence(router: &Router, event_type: &str, user: &str) {
    let signal = Signal {
        envelope: Envelope::new(crate::signal::HOST_ADDRESS, Default::default()),
        body: Body::Event {
            event_type: event_type.to_owned(),
            payload: crate::signal::Json::from_value(&json!({ "user": user })),
        },
    };
    // Refused at its source only if the dead-letter store is full; counted there.
    let _ = router.offer_now(signal);
}

/// Takes one frame from the client at `address`: a message, which is sent on (the answer is
/// `{"ack": id}`), or a refusal (`{"refused": {code, description}}`); the connection stays up.
fn take(router: &Router, address: &str, text: &str) -> serde_json::Value {
    match message(router, address, text) {
        Ok(signal) => {
            let id = signal.id().to_owned();
            router.route(signal);
            json!({ "ack": id })
        }
        Err(failure) => refusal(&failure),
    }
}

fn refusal(failure: &Failure) -> serde_json::Value {
    json!({ "refused": { "code": failure.code, "description": failure.description } })
}

/// The message a frame carries, stamped as from `address`.
fn message(router: &Router, address: &str, text: &str) -> Result<Signal, Failure> {
    let bad = |e: String| Failure::new(code::BAD_REQUEST, e);
    let mut wire: WireSignal =
        serde_json::from_str(text).map_err(|e| bad(format!("the frame is not a signal: {e}")))?;
    let headers = std::mem::take(&mut wire.headers);
    let body = wire
        .into_client_body(Some(SignalType::Message))
        .map_err(|e| bad(e.to_string()))?;
    if let Body::Message(m) = &body
        && (m.to.starts_with(AGENT_PREFIX) || m.to.starts_with(USER_PREFIX))
    {
        return Err(Failure::new(
            code::FORBIDDEN,
            format!("a client may not message `{}` directly", m.to),
        ));
    }
    let signal = Signal {
        envelope: Envelope::new(address, headers),
        body,
    };
    let max = router.max_message_bytes();
    if signal.size() > max {
        return Err(Failure::new(
            code::TOO_LARGE,
            format!(
                "the signal is {} bytes, over the maximum of {max}",
                signal.size()
            ),
        ));
    }
    Ok(signal)
}
