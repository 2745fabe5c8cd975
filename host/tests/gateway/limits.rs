//! Every limit on a connection, each ending with the client or a neighbour still served:
//! the frame rate, the caps on connections, oversized frames, heartbeats, and "going away"
//! at shutdown (slow clients and large pushes are in [`super::slow`]).

use std::time::Duration;

use serde_json::json;

use super::*;

/// Past its burst, a connection's frames are refused with 429 (and counted) until the rate
/// lets more in; the connection stays up.
#[tokio::test]
async fn frames_past_the_rate_are_refused() {
    let flags = [
        "--gateway-frames-per-second",
        "1",
        "--gateway-frame-burst",
        "3",
    ];
    let daemon = daemon_with("gateway-rate", &flags).await;
    let mut ann = open(&daemon, "t-ann").await;
    for n in 0..6 {
        send(
            &mut ann,
            json!({"to": "echo", "messageType": "Ping", "payload": {"n": n}}),
        )
        .await;
    }
    let (mut acks, mut limited, mut replies) = (0, 0, 0);
    for _ in 0..9 {
        let frame = next(&mut ann).await;
        if frame["ack"].is_string() {
            acks += 1;
        } else if frame["signalType"] == "REPLY" {
            replies += 1;
        } else {
            assert_eq!(refused(&frame), 429, "{frame}");
            limited += 1;
        }
    }
    // Six frames within a second: three in the burst, at most one earned meanwhile.
    assert!((3..=4).contains(&acks), "acks {acks}, limited {limited}");
    assert_eq!((acks + limited, replies), (6, acks));
    metric_reaches(
        &daemon,
        "switchboard_gateway_frames_limited_total",
        limited as f64,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(
        &mut ann,
        json!({"to": "echo", "messageType": "Ping", "payload": {}}),
    )
    .await;
    assert!(
        next(&mut ann).await["ack"].is_string(),
        "served again at the rate"
    );
}

/// One user may hold two connections here and the gateway three: a third for the same user
/// gets 429 and a fourth in all 503, each counted; a closed one makes room again.
#[tokio::test]
async fn connections_are_capped_per_user_and_in_total() {
    let flags = [
        "--gateway-connections-per-user",
        "2",
        "--gateway-max-connections",
        "3",
    ];
    let daemon = daemon_with("gateway-caps", &flags).await;
    let first = open(&daemon, "t-ann").await;
    let _second = open(&daemon, "t-ann").await;
    let ann = Some(("authorization", "Bearer t-ann"));
    assert_eq!(refused_with(connect(&daemon, ann).await), 429);
    let _bo = open(&daemon, "t-bo").await;
    let cy = Some(("authorization", "Bearer t-cy"));
    assert_eq!(refused_with(connect(&daemon, cy).await), 503);
    metric_reaches(
        &daemon,
        "switchboard_gateway_refused_total{reason=\"user_cap\"}",
        1.0,
    )
    .await;
    metric_reaches(
        &daemon,
        "switchboard_gateway_refused_total{reason=\"total_cap\"}",
        1.0,
    )
    .await;
    drop(first);
    metric_reaches(&daemon, "switchboard_gateway_connected ", 2.0).await;
    let mut cy = open(&daemon, "t-cy").await;
    send(
        &mut cy,
        json!({"to": "echo", "messageType": "Ping", "payload": {}}),
    )
    .await;
    assert!(next(&mut cy).await["ack"].is_string());
}

/// A frame past the largest the gateway takes closes that connection with 1009; a frame
/// just under it is a signal like any other (here refused as over the largest signal).
#[tokio::test]
async fn an_oversized_frame_closes_the_connection() {
    let flags = [
        "--gateway-max-frame-bytes",
        "64KiB",
        "--max-message-bytes",
        "16KiB",
    ];
    let daemon = daemon_with("gateway-frame-size", &flags).await;
    let mut ann = open(&daemon, "t-ann").await;
    let big = |n: usize| json!({"to": "echo", "messageType": "Ping", "payload": "x".repeat(n)});
    send(&mut ann, big(40_000)).await;
    assert_eq!(
        refused(&next(&mut ann).await),
        413,
        "under the frame limit, over the signal limit"
    );
    send(&mut ann, big(100_000)).await;
    assert_eq!(closed_with(&mut ann).await, Some(1009));
    metric_reaches(
        &daemon,
        "switchboard_gateway_closed_total{reason=\"too_large\"}",
        1.0,
    )
    .await;
}

/// A client that answers no ping within the heartbeat timeout is closed with 4000; one that
/// keeps reading (so its client library answers the pings) stays connected.
#[tokio::test]
async fn a_silent_client_misses_its_heartbeat() {
    let flags = [
        "--gateway-heartbeat",
        "100ms",
        "--gateway-heartbeat-timeout",
        "400ms",
    ];
    let daemon = daemon_with("gateway-heartbeat", &flags).await;
    let mut silent = open(&daemon, "t-ann").await;
    let mut lively = open(&daemon, "t-bo").await;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        if let Ok(frame) = tokio::time::timeout(Duration::from_millis(50), lively.next()).await {
            assert!(matches!(frame, Some(Ok(Message::Ping(_)))), "{frame:?}");
        }
    }
    assert_eq!(closed_with(&mut silent).await, Some(4000));
    send(
        &mut lively,
        json!({"to": "echo", "messageType": "Ping", "payload": {}}),
    )
    .await;
    assert!(
        next(&mut lively).await["ack"].is_string(),
        "the lively client is still served"
    );
    metric_reaches(
        &daemon,
        "switchboard_gateway_closed_total{reason=\"heartbeat\"}",
        1.0,
    )
    .await;
}

/// At shutdown every client is told the host is going away (1001).
#[tokio::test]
async fn shutdown_closes_clients_going_away() {
    let daemon = daemon("gateway-going-away").await;
    let mut ann = open(&daemon, "t-ann").await;
    let mut bo = open(&daemon, "t-bo").await;
    daemon.terminate();
    assert_eq!(closed_with(&mut ann).await, Some(1001));
    assert_eq!(closed_with(&mut bo).await, Some(1001));
    assert!(daemon.wait().success());
}

/// Before any token, a connection that does not finish its request's headers within the
/// handshake timeout (10 s) is closed, so idle sockets cannot pile up unauthenticated; a
/// client connecting meanwhile is served.
#[tokio::test]
async fn a_half_sent_handshake_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = daemon("gateway-handshake").await;
    let address = daemon.gateway_url().unwrap();
    let address = address
        .trim_start_matches("ws://")
        .trim_end_matches("/v1/ws");
    let mut stalled = tokio::net::TcpStream::connect(address).await.unwrap();
    stalled
        .write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut ann = open(&daemon, "t-ann").await;
    send(
        &mut ann,
        json!({"to": "echo", "messageType": "Ping", "payload": {}}),
    )
    .await;
    assert!(next(&mut ann).await["ack"].is_string());
    let mut buffer = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(20), stalled.read(&mut buffer)).await;
    let n = read
        .expect("closed within the handshake timeout")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buffer[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// Binary frames count against the rate like text ones: refused as binary (400) within the
/// burst, then as over the rate (429).
#[tokio::test]
async fn binary_frames_count_against_the_rate() {
    let flags = [
        "--gateway-frames-per-second",
        "1",
        "--gateway-frame-burst",
        "2",
    ];
    let daemon = daemon_with("gateway-rate-binary", &flags).await;
    let mut ann = open(&daemon, "t-ann").await;
    for _ in 0..4 {
        ann.send(Message::binary(vec![0u8; 16])).await.unwrap();
    }
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(refused(&next(&mut ann).await));
    }
    assert_eq!(codes[..2], [400, 400], "{codes:?}");
    assert!(codes[2..].contains(&429), "past the burst: {codes:?}");
    assert!(
        daemon
            .metric("switchboard_gateway_frames_limited_total")
            .await
            >= Some(1.0)
    );
}
