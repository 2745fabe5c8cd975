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

/// With more half-sent handshakes than places, each reopened as soon as it is closed, an
/// honest client still connects every time it tries and is answered, and the flood is
/// counted as shed. (Before the gateway shed at its cap, the newcomer was the one dropped:
/// an honest client connected 2 times in 56 tries.)
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
