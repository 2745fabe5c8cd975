//! The client gateway against the real daemon, with a real WebSocket client: who gets in
//! ([`auth`]), what a client may send and receive ([`messages`]), pushes kept for users who
//! are offline ([`offline`]), every limit on a connection ([`limits`]), clients that read
//! slowly or not at all and pushes too large for them ([`slow`]), the `chat` example
//! ([`chat`]), its page in two real browsers ([`browser`]), and a flood of half-sent
//! handshakes that cannot keep an honest client out ([`flood`]).

mod auth;
mod browser;
mod chat;
mod flood;
mod limits;
mod messages;
mod offline;
mod slow;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::{WAIT, guest};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The secret of the client JWTs the test daemons accept, for the audience [`AUDIENCE`].
const JWT_SECRET: &str = "test-jwt-secret";
const AUDIENCE: &str = "chat";

/// A daemon whose gateway lets in `t-ann` (user `ann`), `t-bo` (user `bo`) and `t-cy`
/// (user `cy`), HS256 JWTs signed with [`JWT_SECRET`] for [`AUDIENCE`] and RS256/ES256 JWTs
/// whose keys are in the fixture keys file (no clock leeway), with `echo` (opened to
/// clients by the operator) and `reminders` deployed.
async fn daemon(name: &str) -> Daemon {
    daemon_with(name, &[]).await
}

/// [`daemon`] with more flags.
async fn daemon_with(name: &str, more: &[&str]) -> Daemon {
    daemon_in(&data_dir(name), more).await
}

/// [`daemon`] started again on the data directory an earlier one of `name` left.
async fn daemon_restarted(name: &str) -> Daemon {
    let dir = data_dir(name);
    let kept = dir.with_extension("kept");
    std::fs::rename(&kept, &dir).expect("the earlier daemon's data directory");
    daemon_in(&dir, &[]).await
}

/// Keeps the data directory of a stopped daemon of `name` for [`daemon_restarted`].
fn keep_data_dir(name: &str) {
    let dir = std::env::temp_dir().join(format!("switchboard-e2e-{name}-{}", std::process::id()));
    std::fs::rename(&dir, dir.with_extension("kept")).expect("the daemon's data directory");
}

/// [`daemon`] on data directory `dir`, with more flags.
async fn daemon_in(dir: &std::path::Path, more: &[&str]) -> Daemon {
    let dir = dir.to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens.toml");
    std::fs::write(
        &tokens,
        "\"t-ann\" = \"ann\"\n\"t-bo\" = \"bo\"\n\"t-cy\" = \"cy\"\n",
    )
    .unwrap();
    let tokens = tokens.to_str().unwrap().to_owned();
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/keys.toml");
    let mut flags = vec![
        "--gateway-listen",
        "127.0.0.1:0",
        "--gateway-tokens",
        &tokens,
        "--gateway-jwt-secret",
        JWT_SECRET,
        "--gateway-jwt-audience",
        AUDIENCE,
        "--gateway-jwt-keys",
        keys,
        "--gateway-jwt-leeway",
        "0",
        "--open-to-clients",
        "echo",
    ];
    flags.extend_from_slice(more);
    let daemon = Daemon::start_with(&dir, &flags);
    if daemon.get("/v1/handlers/echo").await.0 == 404 {
        for handler in ["echo", "reminders"] {
            assert_eq!(daemon.deploy(handler, guest(handler)).await.0, 201);
        }
    }
    daemon
}

/// Connects with `header` set to `value`, if given.
async fn connect(
    daemon: &Daemon,
    header: Option<(&str, &str)>,
) -> Result<(Socket, tungstenite::handshake::client::Response), tungstenite::Error> {
    let url = daemon.gateway_url().expect("the gateway listens");
    let mut request = url.into_client_request().unwrap();
    if let Some((name, value)) = header {
        let name: tungstenite::http::HeaderName = name.parse().unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await
}

/// The HTTP status a refused upgrade got.
fn refused_with(
    outcome: Result<(Socket, tungstenite::handshake::client::Response), tungstenite::Error>,
) -> u16 {
    match outcome {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

/// The next text frame, as JSON.
async fn next(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).expect("a JSON frame");
        }
    }
}

async fn send(socket: &mut Socket, frame: Value) {
    socket.send(Message::text(frame.to_string())).await.unwrap();
}

/// The code of an ERROR_REPLY frame from the host refusing a frame; panics on anything else.
fn refused(frame: &Value) -> u64 {
    assert_eq!(frame["signalType"], "ERROR_REPLY", "{frame}");
    assert_eq!(frame["from"], "host", "{frame}");
    assert!(frame["replyTo"].is_string(), "{frame}");
    frame["code"].as_u64().expect("a code")
}

/// Connects as the holder of development token `token`.
async fn open(daemon: &Daemon, token: &str) -> Socket {
    let bearer = format!("Bearer {token}");
    connect(daemon, Some(("authorization", bearer.as_str())))
        .await
        .unwrap_or_else(|e| panic!("{token} gets in: {e}"))
        .0
}

/// How the host closed `socket`: the close code it sent (skipping other frames), or `None`
/// if the connection ended without one.
async fn closed_with(socket: &mut Socket) -> Option<u16> {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("the connection closes in time");
        match frame {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Polls metric `prefix` until it is `want`.
async fn metric_reaches(daemon: &Daemon, prefix: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = daemon.metric(prefix).await;
        if seen == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{prefix} is {seen:?}, wanted {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
