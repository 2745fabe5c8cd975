//! Clients that read slower than they are pushed to, and pushes too large for them: a full
//! queue costs the pushes that find it full, counted, never the connection; a push larger
//! than a queue holds is refused where it is made (413).

use serde_json::json;

use super::*;

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
        let description = reply["description"].as_str().unwrap_or_default();
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
