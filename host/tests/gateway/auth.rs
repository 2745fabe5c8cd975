//! Who gets in: holders of a development token or a valid JWT (HS256 with the secret,
//! RS256 or ES256 with a key named by `kid`), by header or by subprotocol; nobody else, and
//! a client whose token expires is closed with 4001.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;

/// A JWT for `sub`, expiring `expires_in` seconds from now (negative: in the past), for
/// `audience`, signed by `key` with `alg` and naming `kid`.
fn token(
    sub: &str,
    expires_in: i64,
    audience: &str,
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": sub, "exp": now + expires_in, "aud": audience});
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// An HS256 JWT signed with `secret`.
fn hs256(sub: &str, expires_in: i64, audience: &str, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    token(sub, expires_in, audience, Algorithm::HS256, None, &key)
}

fn fixture_key(name: &str) -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/").to_owned() + name)
        .unwrap()
}

/// Without a token, with a wrong one, or with the admin token, the upgrade is refused
/// with 401; a client token grants nothing on the admin API either. Every refusal is
/// counted by reason.
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
    let listed = reqwest::Client::new()
        .get(format!("http://{}/v1/handlers", daemon.address()))
        .bearer_auth("t-ann")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 401, "a client token on the admin API");
    metric_reaches(
        &daemon,
        "switchboard_gateway_refused_total{reason=\"token\"}",
        4.0,
    )
    .await;
}

/// A browser's way in: the token beside `switchboard.v1` in `Sec-WebSocket-Protocol`; the
/// server answers with `switchboard.v1` only, and the client is its user.
#[tokio::test]
async fn a_browser_gets_in_by_subprotocol() {
    let daemon = daemon("gateway-subprotocol").await;
    let offered = Some(("sec-websocket-protocol", "switchboard.v1, t-bo"));
    let (mut bo, response) = connect(&daemon, offered).await.expect("bo gets in");
    let chosen = response.headers().get("sec-websocket-protocol").unwrap();
    assert_eq!(
        chosen.to_str().unwrap(),
        "switchboard.v1",
        "never the token"
    );
    send(
        &mut bo,
        json!({"to": "echo", "messageType": "Ping", "payload": {}}),
    )
    .await;
    assert!(next(&mut bo).await["ack"].is_string());
    assert_eq!(next(&mut bo).await["to"], "user:bo");
    metric_reaches(&daemon, "switchboard_gateway_connected ", 1.0).await;
}

/// A valid JWT lets its `sub` in, whether HS256 with the secret or RS256/ES256 with the key
/// its `kid` names; an expired one, one for another audience, one signed with another
/// secret, or one naming an unknown key gets 401.
#[tokio::test]
async fn jwts_are_checked_before_the_upgrade() {
    let daemon = daemon("gateway-jwt").await;
    let rsa = EncodingKey::from_rsa_pem(&fixture_key("rsa.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(&fixture_key("ec.pem")).unwrap();
    let refusals = [
        hs256("dee", -5, AUDIENCE, JWT_SECRET),
        hs256("dee", 60, "billing", JWT_SECRET),
        hs256("dee", 60, AUDIENCE, "guess"),
        token("dee", 60, AUDIENCE, Algorithm::RS256, Some("rsa-2"), &rsa),
        token("dee", -5, AUDIENCE, Algorithm::ES256, Some("ec-1"), &ec),
    ];
    for refused in refusals {
        let header = format!("Bearer {refused}");
        let header = Some(("authorization", header.as_str()));
        assert_eq!(refused_with(connect(&daemon, header).await), 401);
    }
    let accepted = [
        ("dee", hs256("dee", 60, AUDIENCE, JWT_SECRET)),
        (
            "eve",
            token("eve", 60, AUDIENCE, Algorithm::RS256, Some("rsa-1"), &rsa),
        ),
        (
            "fay",
            token("fay", 60, AUDIENCE, Algorithm::ES256, Some("ec-1"), &ec),
        ),
    ];
    for (user, good) in accepted {
        let mut client = open(&daemon, &good).await;
        send(
            &mut client,
            json!({"to": "echo", "messageType": "Ping", "payload": {}}),
        )
        .await;
        assert!(next(&mut client).await["ack"].is_string());
        let reply = next(&mut client).await;
        assert_eq!(
            reply["to"],
            format!("user:{user}"),
            "the JWT's sub is the user: {reply}"
        );
    }
}

/// A signed, unexpired JWT is still refused (401, saying why) when its `sub` cannot be a
/// user id (a NUL, a newline, a leading space), or when its header lists critical
/// extensions, which the gateway does not understand (RFC 7515); a neighbour gets in.
#[tokio::test]
async fn jwts_with_bad_user_ids_or_critical_headers_are_refused() {
    let daemon = daemon("gateway-jwt-strict").await;
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let critical = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"sub": "dee", "exp": now + 60, "aud": AUDIENCE});
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".into()]);
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let refusals = [
        (
            hs256("dee\0", 60, AUDIENCE, JWT_SECRET),
            "control character",
        ),
        (
            hs256("dee\nadmin", 60, AUDIENCE, JWT_SECRET),
            "control character",
        ),
        (hs256(" dee", 60, AUDIENCE, JWT_SECRET), "whitespace"),
        (critical, "critical extensions"),
    ];
    for (token, why) in refusals {
        let header = format!("Bearer {token}");
        match connect(&daemon, Some(("authorization", header.as_str()))).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401);
                let body = response.body().as_deref().unwrap_or_default();
                let body = String::from_utf8_lossy(body);
                assert!(body.contains(why), "{why}: {body}");
            }
            other => panic!("{why}: expected a 401, got {other:?}"),
        }
    }
    let mut dee = open(&daemon, &hs256("dee", 60, AUDIENCE, JWT_SECRET)).await;
    send(
        &mut dee,
        json!({"to": "echo", "messageType": "Ping", "payload": {}}),
    )
    .await;
    assert!(next(&mut dee).await["ack"].is_string());
}

/// A connection whose token expires while it is open is closed with 4001 (token expired),
/// and counted.
#[tokio::test]
async fn a_connection_is_closed_when_its_token_expires() {
    let daemon = daemon("gateway-expiry").await;
    let soon = hs256("gus", 2, AUDIENCE, JWT_SECRET);
    let mut gus = open(&daemon, &soon).await;
    send(
        &mut gus,
        json!({"to": "echo", "messageType": "Ping", "payload": {}}),
    )
    .await;
    assert!(
        next(&mut gus).await["ack"].is_string(),
        "open before it expires"
    );
    assert_eq!(closed_with(&mut gus).await, Some(4001));
    metric_reaches(
        &daemon,
        "switchboard_gateway_closed_total{reason=\"expired\"}",
        1.0,
    )
    .await;
}
