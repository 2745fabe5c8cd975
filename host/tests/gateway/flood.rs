//! A flood of half-sent upgrade requests, reopened as they are closed, cannot keep an
//! honest client out: at the cap on connections not upgraded yet, the one idle or half-sent
//! the longest is shed for the newcomer.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Places for connections not upgraded yet in the test daemon.
const PLACES: usize = 16;
/// Flooding connections, more than the places.
const FLOODERS: usize = 24;

/// Keeps one half-sent upgrade request open, opening another whenever the host closes it,
/// until the task is aborted; counts the reopenings.
async fn flood(address: String, reopened: std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    loop {
        let Ok(mut stream) = tokio::net::TcpStream::connect(&address).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        if stream
            .write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            .await
            .is_ok()
        {
            let mut buffer = [0u8; 256];
            // Held until the host closes it (or answers and then closes it).
            while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
        }
        reopened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An honest client on a slow link: sends its upgrade request in two parts `pause` apart,
/// and gives the first line of the answer.
async fn upgrade_slowly(address: &str, pause: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    tokio::time::sleep(pause).await;
    let rest = "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nAuthorization: Bearer t-ann\r\n\r\n";
    if stream.write_all(rest.as_bytes()).await.is_err() {
        return "closed while sending".into();
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 256];
    while !answer.contains(&b'\n') {
        match stream.read(&mut buffer).await {
            Ok(n) if n > 0 => answer.extend_from_slice(&buffer[..n]),
            _ => return format!("closed after {:?}", String::from_utf8_lossy(&answer)),
        }
    }
    let line = String::from_utf8_lossy(&answer);
    line.lines().next().unwrap_or_default().to_owned()
}

/// With more half-sent handshakes than places, each reopened as soon as it is closed, an
/// honest client still connects every time it tries and is answered, and the flood is
/// counted as shed. (Before the gateway shed at its cap, the newcomer was the one dropped:
/// an honest client connected 2 times in 56 tries.) One that sends its request in two parts
/// 30 ms apart is upgraded too: a connection has 100 ms before it may be shed. (When the
/// newest connection could be shed at once, the flood's reopenings shed it between its
/// parts every time, and a fast client, rarely, between its accept and its headers.)
#[tokio::test]
async fn a_handshake_flood_cannot_keep_an_honest_client_out() {
    let places = PLACES.to_string();
    let daemon = daemon_with(
        "gateway-handshake-flood",
        &["--gateway-max-handshakes", &places],
    )
    .await;
    let address = daemon
        .gateway_url()
        .unwrap()
        .trim_start_matches("ws://")
        .trim_end_matches("/v1/ws")
        .to_owned();
    let reopened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| tokio::spawn(flood(address.clone(), reopened.clone())))
        .collect();
    // Every place is taken before the honest client comes.
    metric_reaches(&daemon, "switchboard_gateway_handshakes ", PLACES as f64).await;
    for attempt in 0..10 {
        let bearer = "Bearer t-ann";
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            connect(&daemon, Some(("authorization", bearer))),
        )
        .await;
        let mut ann = match connected {
            Ok(Ok((socket, _))) => socket,
            Ok(Err(error)) => panic!("attempt {attempt}: the honest client was refused: {error}"),
            Err(_) => panic!("attempt {attempt}: the honest client's upgrade hung"),
        };
        send(
            &mut ann,
            json!({"to": "echo", "messageType": "Ping", "payload": {"attempt": attempt}}),
        )
        .await;
        assert!(next(&mut ann).await["ack"].is_string());
        let reply = next(&mut ann).await;
        assert_eq!(reply["signalType"], "REPLY", "{reply}");
    }
    for attempt in 0..5 {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            upgrade_slowly(&address, Duration::from_millis(30)),
        )
        .await
        .expect("the slow client's upgrade hung");
        assert!(
            answer.starts_with("HTTP/1.1 101"),
            "attempt {attempt}: the slow client got {answer:?}"
        );
    }
    assert!(
        reopened.load(std::sync::atomic::Ordering::Relaxed) >= FLOODERS - PLACES,
        "the flood went on, its connections shed and reopened"
    );
    let shed = daemon
        .metric("switchboard_gateway_handshakes_shed_total{reason=\"reading_headers\"}")
        .await
        .unwrap_or(0.0);
    assert!(shed >= (FLOODERS - PLACES) as f64, "shed {shed}");
    for flooder in flooders {
        flooder.abort();
    }
}
