//! Clients that read slowly or not at all, and pushes too large for them: only a write that
//! stalls closes a client (4002); a full queue costs the pushes that find it full, counted,
//! never the connection; a push larger than a queue holds is refused where it is made (413).

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::*;

/// How long after a stalled client's 4002 its socket is shut.
const SHUT_AFTER: Duration = Duration::from_secs(2);

/// Reads `socket` until it ends: the close code the host sent, if any. Nothing but the end
/// may follow a close frame.
async fn read_to_the_end(socket: &mut Socket) -> Option<u16> {
    let deadline = Instant::now() + WAIT;
    let mut code = None;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("the stream ends in time");
        match frame {
            Some(Ok(Message::Close(frame))) => code = frame.map(|f| u16::from(f.code)),
            Some(Ok(other)) => assert!(code.is_none(), "{other:?} after the close frame"),
            Some(Err(_)) | None => return code,
        }
    }
}

/// Has `storm` push `n` `Pushed` events of `pad` bytes each to `user` in one signal.
async fn flood(daemon: &Daemon, user: &str, n: u32, pad: u32) {
    let storm = json!({"user": user, "n": n, "pad": pad});
    let (status, reply) = daemon.call("storm", "PushStorm", storm).await;
    assert_eq!(status, 200, "{reply}");
}

/// Sends echo a ping and reads until its ack, handing every push read meanwhile to `pushed`.
async fn ping_through(socket: &mut Socket, mut pushed: impl FnMut(&Value)) {
    send(
        socket,
        json!({"to": "echo", "messageType": "Ping", "payload": {}}),
    )
    .await;
    loop {
        let frame = next(socket).await;
        if frame["ack"].is_string() {
            return;
        }
        pushed(&frame);
    }
}

/// A client that stops reading while a handler floods it (8 MiB, more than the sockets'
/// buffers hold) is closed once no byte has moved for the write stall (1 s here): one that
/// reads again within the 2 s after gets what was on its way, the 4002 close frame and the
/// end of the stream; one that never reads is shut out 2 s after its 4002. A neighbour is
/// served throughout.
#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_write_stall() {
    let stall = Duration::from_secs(1);
    let daemon = daemon_with("gateway-stalled", &["--gateway-write-stall", "1s"]).await;
    assert_eq!(daemon.deploy("storm", guest("storm")).await.0, 201);
    let mut ann = open(&daemon, "t-ann").await;
    let mut cy = open(&daemon, "t-cy").await;
    let mut bo = open(&daemon, "t-bo").await;
    metric_reaches(&daemon, "switchboard_gateway_connected ", 3.0).await;
    let started = Instant::now();
    flood(&daemon, "ann", 64, 128_000).await;
    flood(&daemon, "cy", 64, 128_000).await;
    metric_reaches(&daemon, "switchboard_gateway_slow_disconnects_total", 2.0).await;
    let stalled = started.elapsed();
    assert!(stalled >= stall, "closed before the stall: {stalled:?}");

    assert_eq!(
        read_to_the_end(&mut ann).await,
        Some(4002),
        "ann read again"
    );
    metric_reaches(&daemon, "switchboard_gateway_connected ", 1.0).await;
    let shut = started.elapsed();
    assert!(
        shut >= stall + SHUT_AFTER && shut < stall + SHUT_AFTER + Duration::from_secs(3),
        "cy, who never read, was shut out after {shut:?}"
    );
    read_to_the_end(&mut cy).await;
    metric_reaches(
        &daemon,
        "switchboard_gateway_closed_total{reason=\"slow\"}",
        2.0,
    )
    .await;
    ping_through(&mut bo, |frame| panic!("bo got {frame}")).await;
}

/// A client that reads slowly but steadily (32 KiB at a time, about every half second)
/// while a handler floods it stays connected past several write stalls (2 s here), though
/// the host could not write it everything: each push is either delivered, in order, or
/// counted as undelivered (it found the queue full). The client is served afterwards.
#[tokio::test]
async fn a_client_reading_slowly_stays_connected() {
    let daemon = daemon_with("gateway-slow-reader", &["--gateway-write-stall", "2s"]).await;
    assert_eq!(daemon.deploy("storm", guest("storm")).await.0, 201);
    let url = daemon.gateway_url().unwrap();
    let mut request = url.into_client_request().unwrap();
    let bearer = "Bearer t-ann".parse().unwrap();
    request.headers_mut().insert("authorization", bearer);
    let config = WebSocketConfig::default().read_buffer_size(32 << 10);
    let (mut ann, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), false)
        .await
        .unwrap();
    metric_reaches(&daemon, "switchboard_gateway_connected ", 1.0).await;
    let n = 480;
    flood(&daemon, "ann", n, 16_000).await;
    let mut got = Vec::new();
    let mut pushed = |frame: &Value| got.push(frame["payload"]["i"].as_u64().expect("a push"));
    let slow_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < slow_until {
        pushed(&next(&mut ann).await);
        // The reading pace under test: a 16 KB push every quarter second.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        daemon
            .metric("switchboard_gateway_slow_disconnects_total")
            .await,
        Some(0.0)
    );
    let written = daemon.metric("switchboard_gateway_frames_out_total").await;
    assert!(
        written < Some(f64::from(n)),
        "the host was still writing to the slow reader: {written:?} frames out"
    );
    ping_through(&mut ann, &mut pushed).await;
    assert!(got.is_sorted_by(|a, b| a < b), "in order: {got:?}");
    let undelivered = daemon
        .metric("switchboard_gateway_undelivered_total")
        .await
        .unwrap();
    assert_eq!(got.len() as f64 + undelivered, f64::from(n));
}

/// A handler pushing to a client faster than it is read fills the client's queue, bounded
/// by count (two signals) or by bytes (16 KiB: two of these 6 KB pushes): the pushes that
/// find it full are counted as undelivered, and the client, reading all along, stays
/// connected and gets the pushes after.
#[tokio::test]
async fn a_full_queue_costs_pushes_not_the_connection() {
    let bounds = [
        ("gateway-full-count", vec!["--gateway-queue", "2"]),
        (
            "gateway-full-bytes",
            vec![
                "--gateway-queue",
                "100000",
                "--gateway-queue-bytes",
                "16KiB",
            ],
        ),
    ];
    for (name, flags) in bounds {
        let daemon = daemon_with(name, &flags).await;
        assert_eq!(daemon.deploy("storm", guest("storm")).await.0, 201);
        let mut ann = open(&daemon, "t-ann").await;
        metric_reaches(&daemon, "switchboard_gateway_connected ", 1.0).await;
        flood(&daemon, "ann", 500, 6000).await;
        flood(&daemon, "ann", 1, 10).await;
        let mut pads = Vec::new();
        ping_through(&mut ann, |frame| {
            pads.push(frame["payload"]["pad"].as_str().expect("a push").len())
        })
        .await;
        assert_eq!(pads.last(), Some(&10), "{name}: the push after the flood");
        let undelivered = daemon
            .metric("switchboard_gateway_undelivered_total")
            .await
            .unwrap();
        assert_eq!(pads.len() as f64 + undelivered, 501.0, "{name}");
        assert!(undelivered > 0.0, "{name}: the queue filled");
        assert_eq!(
            daemon.metric("switchboard_gateway_closed_total").await,
            None,
            "{name}: nobody was closed"
        );
    }
}

/// A push or a kept push larger than a client's queue can ever hold (64 KiB here) is
/// refused at the handler's call with 413, naming the setting; nothing of it reaches the
/// client, which stays connected and gets the next push.
#[tokio::test]
async fn a_push_larger_than_the_queue_is_refused_at_the_handler() {
    let daemon = daemon_with(
        "gateway-push-too-large",
        &["--gateway-queue-bytes", "64KiB"],
    )
    .await;
    assert_eq!(daemon.deploy("storm", guest("storm")).await.0, 201);
    let mut ann = open(&daemon, "t-ann").await;
    metric_reaches(&daemon, "switchboard_gateway_connected ", 1.0).await;
    for storm in ["PushStorm", "KeepStorm"] {
        let large = json!({"user": "ann", "n": 1, "pad": 100_000});
        let (_, reply) = daemon.call("storm", storm, large).await;
        assert_eq!(reply["code"], 413, "{storm}: {reply}");
        let description = reply["error"].as_str().unwrap_or_default();
        assert!(
            description.contains("--gateway-queue-bytes"),
            "{storm}: {reply}"
        );
    }
    flood(&daemon, "ann", 1, 10).await;
    let pushed = next(&mut ann).await;
    assert_eq!(pushed["payload"]["pad"], "x".repeat(10), "{pushed}");
    ping_through(&mut ann, |frame| panic!("ann got {frame}")).await;
}
