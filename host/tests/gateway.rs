//! The client gateway against the real daemon, with a real WebSocket client: only holders
//! of a client token get in (by header or by subprotocol), a client's messages are
//! acknowledged and answered, pushes reach it, and a bad frame is refused without closing
//! the connection.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::{WAIT, guest};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The secret of the client JWTs the test daemons accept, for the audience [`AUDIENCE`].
const JWT_SECRET: &str = "test-jwt-secret";
const AUDIENCE: &str = "chat";

/// A daemon whose gateway lets in `t-ann` (user `ann`) and `t-bo` (user `bo`), and HS256
/// JWTs signed with [`JWT_SECRET`] for [`AUDIENCE`] (no clock leeway), with `echo` and
/// `reminders` deployed.
async fn daemon(name: &str) -> Daemon {
    let dir = data_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens.toml");
    std::fs::write(&tokens, "\"t-ann\" = \"ann\"\n\"t-bo\" = \"bo\"\n").unwrap();
    let tokens = tokens.to_str().unwrap().to_owned();
    let flags = [
        "--gateway-listen",
        "127.0.0.1:0",
        "--gateway-tokens",
        &tokens,
        "--gateway-jwt-secret",
        JWT_SECRET,
        "--gateway-jwt-audience",
        AUDIENCE,
        "--gateway-jwt-leeway",
        "0",
    ];
    let daemon = Daemon::start_with(&dir, &flags);
    for handler in ["echo", "reminders"] {
        assert_eq!(daemon.deploy(handler, guest(handler)).await.0, 201);
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

/// Without a token, with a wrong one, or with the admin token, the upgrade is refused
/// with 401.
#[tokio::test]
async fn only_client_tokens_get_in() {
    let daemon = daemon("gateway-auth").await;
    assert_eq!(refused_with(connect(&daemon, None).await), 401);
    let wrong = Some(("authorization", "Bearer t-nobody"));
    assert_eq!(refused_with(connect(&daemon, wrong).await), 401);
    let admin = format!("Bearer {}", switchboard_tests::daemon::TOKEN);
    let admin = Some(("authorization", admin.as_str()));
    assert_eq!(refused_with(connect(&daemon, admin).await), 401);
    let foreign = Some(("sec-websocket-protocol", "chat, t-ann"));
    assert_eq!(refused_with(connect(&daemon, foreign).await), 401);
}

/// A client in by its bearer header sends a message: it is acknowledged with the id the host
/// gave it, and the reply refers to that id. A malformed frame and a message to an agent are
/// refused, and the connection stays up.
#[tokio::test]
async fn a_client_message_is_acknowledged_and_answered() {
    let daemon = daemon("gateway-messages").await;
    let (mut ann, _) = connect(&daemon, Some(("authorization", "Bearer t-ann")))
        .await
        .expect("ann gets in");
    send(
        &mut ann,
        json!({"to": "echo", "messageType": "Ping", "payload": {"n": 1}}),
    )
    .await;
    let ack = next(&mut ann).await;
    let id = ack["ack"]
        .as_str()
        .expect("an ack with the message's id")
        .to_owned();
    let reply = next(&mut ann).await;
    assert_eq!(reply["signalType"], "REPLY", "{reply}");
    assert_eq!(reply["replyTo"], id.as_str());
    assert_eq!(reply["to"], "user:ann");
    assert_eq!(reply["payload"], json!({"n": 1}));

    ann.send(Message::text("{not json")).await.unwrap();
    assert_eq!(next(&mut ann).await["refused"]["code"], 400);
    let forged = json!({"to": "echo", "messageType": "Ping", "from": "user:bo", "payload": {}});
    send(&mut ann, forged).await;
    let refused = next(&mut ann).await;
    assert_eq!(
        refused["refused"]["code"], 400,
        "a client does not set `from`: {refused}"
    );
    send(
        &mut ann,
        json!({"to": "agent:reminders/bo", "messageType": "Get", "payload": {}}),
    )
    .await;
    assert_eq!(next(&mut ann).await["refused"]["code"], 403);
    send(
        &mut ann,
        json!({"to": "echo", "messageType": "Ping", "payload": {"n": 2}}),
    )
    .await;
    assert!(
        next(&mut ann).await["ack"].is_string(),
        "still up after refusals"
    );
    assert_eq!(next(&mut ann).await["payload"], json!({"n": 2}));
}

/// A browser's way in: the token beside `switchboard.v1` in `Sec-WebSocket-Protocol`; the
/// server answers with `switchboard.v1` only. A push from a handler (a reminder firing)
/// reaches the user.
#[tokio::test]
async fn a_browser_gets_in_by_subprotocol_and_receives_pushes() {
    let daemon = daemon("gateway-push").await;
    let offered = Some(("sec-websocket-protocol", "switchboard.v1, t-bo"));
    let (mut bo, response) = connect(&daemon, offered).await.expect("bo gets in");
    let chosen = response.headers().get("sec-websocket-protocol").unwrap();
    assert_eq!(
        chosen.to_str().unwrap(),
        "switchboard.v1",
        "never the token"
    );
    let (status, reply) = daemon
        .call(
            "agent:reminders/bo",
            "Remind",
            json!({"text": "stretch", "after_ms": 50}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let pushed = next(&mut bo).await;
    assert_eq!(pushed["signalType"], "MESSAGE", "{pushed}");
    assert_eq!(pushed["to"], "user:bo");
    assert_eq!(pushed["messageType"], "Reminded");
    assert_eq!(pushed["from"], "agent:reminders/bo");
    assert_eq!(pushed["payload"], json!({"text": "stretch"}));
}

/// The same user on two connections (two tabs) gets both copies of what is addressed to it;
/// when one closes, the other still gets everything, and the user stays online.
#[tokio::test]
async fn a_user_on_two_connections_gets_both_copies() {
    let daemon = daemon("gateway-tabs").await;
    let token = Some(("authorization", "Bearer t-ann"));
    let (mut first, _) = connect(&daemon, token).await.expect("ann's first tab");
    let (mut second, _) = connect(&daemon, token).await.expect("ann's second tab");
    let remind = |text: &str| json!({"text": text, "after_ms": 20});
    let (status, _) = daemon
        .call("agent:reminders/ann", "Remind", remind("both"))
        .await;
    assert_eq!(status, 200);
    for tab in [&mut first, &mut second] {
        assert_eq!(next(tab).await["payload"], json!({"text": "both"}));
    }
    first.close(None).await.unwrap();
    drop(first);
    daemon
        .call("agent:reminders/ann", "Remind", remind("second only"))
        .await;
    assert_eq!(
        next(&mut second).await["payload"],
        json!({"text": "second only"})
    );
}

/// Presence: a user's first connection opening and its last one closing reach a handler
/// subscribed to the presence events (`lobby`), which sees the user online while either of
/// two tabs is open and offline once both are closed.
#[tokio::test]
async fn presence_is_seen_by_a_subscribed_handler() {
    let daemon = daemon("gateway-presence").await;
    assert_eq!(daemon.deploy("lobby", guest("lobby")).await.0, 201);
    let who = async || daemon.call("lobby", "Who", json!({})).await.1["payload"]["online"].clone();
    let until = async |want: Value| {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let seen = who().await;
            if seen == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "online: {seen}, wanted {want}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    until(json!([])).await;
    let token = Some(("authorization", "Bearer t-ann"));
    let (mut first, _) = connect(&daemon, token).await.unwrap();
    until(json!(["ann"])).await;
    let (mut second, _) = connect(&daemon, token).await.unwrap();
    first.close(None).await.unwrap();
    drop(first);
    // Give a wrong "offline" time to arrive: the second tab keeps ann online.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    until(json!(["ann"])).await;
    second.close(None).await.unwrap();
    drop(second);
    until(json!([])).await;
}

/// An HS256 JWT for `sub`, expiring `expires_in` seconds from now (negative: in the past),
/// for `audience`, signed with `secret`.
fn jwt(sub: &str, expires_in: i64, audience: &str, secret: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": sub, "exp": now + expires_in, "aud": audience});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A valid JWT lets its `sub` in; an expired one, one for another audience or one signed
/// with another secret gets 401.
#[tokio::test]
async fn jwts_are_checked_before_the_upgrade() {
    let daemon = daemon("gateway-jwt").await;
    let bearer = |token: String| format!("Bearer {token}");
    let expired = bearer(jwt("cy", -5, AUDIENCE, JWT_SECRET));
    let wrong_audience = bearer(jwt("cy", 60, "billing", JWT_SECRET));
    let wrong_secret = bearer(jwt("cy", 60, AUDIENCE, "guess"));
    for refused in [expired, wrong_audience, wrong_secret] {
        let header = Some(("authorization", refused.as_str()));
        assert_eq!(refused_with(connect(&daemon, header).await), 401);
    }
    let good = bearer(jwt("cy", 60, AUDIENCE, JWT_SECRET));
    let (mut cy, _) = connect(&daemon, Some(("authorization", good.as_str())))
        .await
        .expect("a valid JWT gets in");
    send(
        &mut cy,
        json!({"to": "echo", "messageType": "Ping", "payload": {"n": 3}}),
    )
    .await;
    assert!(next(&mut cy).await["ack"].is_string());
    let reply = next(&mut cy).await;
    assert_eq!(reply["to"], "user:cy", "the JWT's sub is the user: {reply}");
}
