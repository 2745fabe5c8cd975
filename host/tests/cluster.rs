//! Hosts joined over NATS, end to end: `switchboard serve --nats` daemons and a
//! `nats-server` of the test's own, all on loopback.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::guest;
use switchboard_tests::nats::NatsServer;

/// A daemon joined to `server` as host `id` of cluster `t`.
fn join(server: &NatsServer, id: &str) -> Daemon {
    let dir = data_dir(&format!("cluster-{id}"));
    let flags = [
        "--nats",
        &server.url,
        "--cluster-name",
        "t",
        "--host-id",
        id,
    ];
    Daemon::start_with(&dir, &flags)
}

/// Proves a request made over HTTP on host A is answered by a handler only host B runs,
/// uploaded to B alone; an address no host serves is answered 404 at once (no responders),
/// not 504 at the deadline; and a host in a cluster refuses what the cluster does not keep
/// yet with 409: an agent handler at deploy, keyed state in a turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_one_host_is_answered_by_a_handler_another_runs() {
    let server = NatsServer::start();
    let (a, b) = (join(&server, "a"), join(&server, "b"));
    let (status, deployed) = b.deploy("echo", guest("echo")).await;
    assert_eq!(status, 201, "{deployed}");

    for n in 0..5 {
        let (status, reply) = a.call("echo", "Ping", json!({ "n": n })).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["from"], "echo");
        assert_eq!(reply["payload"], json!({ "n": n }));
    }
    let handled = r#"switchboard_signals_total{handler="echo",kind="MESSAGE",outcome="ok"}"#;
    assert_eq!(b.metric(handled).await, Some(5.0), "B handled all five");

    let (status, error) = a.call("nobody", "Ping", json!({})).await;
    assert_eq!(status, 404, "{error}");

    let (status, refused) = b.deploy("counter", guest("counter")).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused.to_string().contains("--nats"), "{refused}");
    assert_eq!(b.deploy("chaos", guest("chaos")).await.0, 201);
    let (status, refused) = a.call("chaos", "BigState", json!({ "bytes": 10 })).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused.to_string().contains("cluster"), "{refused}");
}

/// Proves a service on three hosts shares their load and answers every request exactly
/// once: `echo` deployed on A, B and C; 60 requests on A, 8 at a time, each answered with its
/// own payload; the three hosts handled 60 between them, each some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_on_three_hosts_shares_the_load() {
    let server = NatsServer::start();
    let hosts = [
        join(&server, "a3"),
        join(&server, "b3"),
        join(&server, "c3"),
    ];
    for host in &hosts {
        assert_eq!(host.deploy("echo", guest("echo")).await.0, 201);
    }
    let a = &hosts[0];
    let numbers: Vec<u32> = (0..60).collect();
    for batch in numbers.chunks(8) {
        let calls = batch
            .iter()
            .map(|&n| async move { (n, a.call("echo", "Ping", json!({ "n": n })).await) });
        for (n, (status, reply)) in futures_util::future::join_all(calls).await {
            assert_eq!(status, 200, "{reply}");
            assert_eq!(reply["payload"], json!({ "n": n }));
        }
    }
    let line = r#"switchboard_signals_total{handler="echo",kind="MESSAGE",outcome="ok"}"#;
    let mut handled = Vec::new();
    for host in &hosts {
        handled.push(host.metric(line).await.unwrap_or(0.0));
    }
    assert_eq!(handled.iter().sum::<f64>(), 60.0, "{handled:?}");
    assert!(handled.iter().all(|&n| n > 0.0), "{handled:?}");
}

/// Polls `GET /readyz` on `daemon` until its status is `want`, for at most 30 s; its body.
async fn readyz_until(daemon: &Daemon, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = daemon
            .anonymous(reqwest::Method::GET, "/readyz")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Proves a host that loses NATS says so and refuses rather than drops: with the server
/// killed, A's `/readyz` turns 503 naming the cluster, and a request for `echo`, which only
/// B runs, is answered 503 saying it was not sent; with the server back on its port, both
/// hosts reconnect by themselves, `/readyz` is 200 again, and B answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_loses_nats_refuses_and_reconnects_by_itself() {
    let mut server = NatsServer::start();
    let (a, b) = (join(&server, "a2"), join(&server, "b2"));
    assert_eq!(b.deploy("echo", guest("echo")).await.0, 201);
    assert_eq!(a.call("echo", "Ping", json!({"n": 1})).await.0, 200);

    server.kill();
    let why = readyz_until(&a, 503).await;
    assert!(why.contains("cluster"), "{why}");
    let (status, refused) = a.call("echo", "Ping", json!({"n": 2})).await;
    assert_eq!(status, 503, "{refused}");
    assert!(refused.to_string().contains("not sent"), "{refused}");

    server.start_again();
    readyz_until(&a, 200).await;
    readyz_until(&b, 200).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, reply) = a.call("echo", "Ping", json!({"n": 3})).await;
        if status == 200 {
            assert_eq!(reply["payload"], json!({"n": 3}));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never answered again: {status} {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Proves `serve` refuses the client gateway beside `--nats`, at start, saying why.
#[test]
fn the_gateway_is_refused_beside_nats() {
    let dir = data_dir("cluster-gateway");
    let output = switchboard_tests::daemon::cli(&[
        "serve",
        "--admin-token",
        "t",
        "--data-dir",
        dir.to_str().unwrap(),
        "--nats",
        "nats://127.0.0.1:1",
        "--gateway-listen",
        "127.0.0.1:0",
        "--gateway-tokens",
        "tokens.toml",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--gateway-listen") && stderr.contains("--nats"),
        "{stderr}"
    );
}
