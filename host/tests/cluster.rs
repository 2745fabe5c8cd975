//! Hosts joined over NATS, end to end: `switchboard serve --nats` daemons and a
//! `nats-server` of the test's own, all on loopback.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::guest;
use switchboard_tests::nats::NatsServer;

/// A daemon joined to `server` as host `id` of cluster `t`.
fn join(server: &NatsServer, id: &str) -> Daemon {
    join_with(server, id, &[])
}

/// [`join`], with more flags.
fn join_with(server: &NatsServer, id: &str, more: &[&str]) -> Daemon {
    let dir = data_dir(&format!("cluster-{id}"));
    let mut flags = vec![
        "--nats",
        &server.url,
        "--cluster-name",
        "t",
        "--host-id",
        id,
    ];
    flags.extend_from_slice(more);
    Daemon::start_with(&dir, &flags)
}

/// Uploads `module` as `name` on `daemon`, run by the hosts `hosts` (ids, comma-separated)
/// alone.
async fn deploy_on(daemon: &Daemon, name: &str, module: &str, hosts: &str) {
    let path = format!("/v1/handlers/{name}?hosts={hosts}");
    let (status, deployed) = daemon.put(&path, guest(module)).await;
    assert_eq!(status, 201, "{deployed}");
}

/// The version of `name` that `daemon` runs, if it runs it.
async fn version_on(daemon: &Daemon, name: &str) -> Option<u64> {
    let (status, shown) = daemon.get(&format!("/v1/handlers/{name}")).await;
    (status == 200).then(|| shown["version"].as_u64().unwrap())
}

/// Waits until every host of `hosts` runs version `version` of `name`.
async fn runs_everywhere(hosts: &[&Daemon], name: &str, version: u64) {
    for host in hosts {
        until(&format!("{name} {version} on every host"), || async {
            version_on(host, name).await == Some(version)
        })
        .await;
    }
}

/// Polls `holds` every 100 ms until it is true, for at most 30 s; fails naming `what`.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut holds: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !holds().await {
        assert!(Instant::now() < deadline, "never true: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many signals `handler` on `daemon` has started handling.
async fn started(daemon: &Daemon, handler: &str) -> u64 {
    let (_, shown) = daemon.get(&format!("/v1/handlers/{handler}")).await;
    shown["counters"]["handled"].as_u64().unwrap_or(0)
}

/// Sends `sleeper` a 3 s `Sleep` from `daemon` without waiting (its queue keeps it), and
/// SIGKILLs `victim` once it has started handling it.
async fn kill_while_handling(daemon: &Daemon, victim: &Daemon) {
    let body = json!({ "to": "sleeper", "messageType": "Sleep", "payload": { "ms": 3000 } });
    let (status, sent) = daemon.post("/v1/messages", body).await;
    assert_eq!(status, 202, "{sent}");
    until("the victim started the sleep", || async {
        started(victim, "sleeper").await == 1
    })
    .await;
    victim.kill();
}

/// Proves a message nobody awaits survives the host handling it being SIGKILLed: `sleeper`
/// runs on B alone; A sends it a 3 s `Sleep` without waiting; B is killed while it sleeps;
/// once A runs `sleeper` too, the message is offered to A after the ack wait (2 s) and
/// handled there, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_host_dies_mid_turn_is_handled_by_another() {
    let server = NatsServer::start();
    let flags = ["--nats-ack-wait", "2"];
    let (a, b) = (
        join_with(&server, "a4", &flags),
        join_with(&server, "b4", &flags),
    );
    deploy_on(&b, "sleeper", "sleeper", "b4").await;
    kill_while_handling(&a, &b).await;
    deploy_on(&a, "sleeper", "sleeper", "a4,b4").await;
    let line = r#"switchboard_signals_total{handler="sleeper",kind="MESSAGE",outcome="ok"}"#;
    until("A handled the message B died on", || async {
        a.metric(line).await == Some(1.0)
    })
    .await;
    assert_eq!(started(&a, "sleeper").await, 1);
    let redelivered = r#"switchboard_cluster_events_total{reason="redelivered"}"#;
    assert_eq!(a.metric(redelivered).await, Some(1.0));
    let host = r#"switchboard_cluster_host{cluster="t",host="a4"}"#;
    assert_eq!(a.metric(host).await, Some(1.0));
}

/// Proves a poison message (one whose turn kills the host handling it) is kept as a dead
/// letter instead of being handled again, and can be replayed: with `--nats-max-deliver 1`,
/// B is killed while handling A's `Sleep`; when the message is offered again, to A, A keeps
/// it as a dead letter (`undeliverable`, for `sleeper`) without handling it; replayed, it is
/// handled on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_a_dead_letter_after_max_deliver() {
    let server = NatsServer::start();
    let flags = ["--nats-ack-wait", "2", "--nats-max-deliver", "1"];
    let (a, b) = (
        join_with(&server, "a5", &flags),
        join_with(&server, "b5", &flags),
    );
    deploy_on(&b, "sleeper", "sleeper", "b5").await;
    kill_while_handling(&a, &b).await;
    deploy_on(&a, "sleeper", "sleeper", "a5,b5").await;
    until("A kept the message as a dead letter", || async {
        a.get("/v1/dead-letters?handler=sleeper").await.1["stored"].as_u64() == Some(1)
    })
    .await;
    assert_eq!(started(&a, "sleeper").await, 0, "A did not handle it");
    let (_, list) = a.get("/v1/dead-letters?handler=sleeper").await;
    let letter = &list["deadLetters"][0];
    assert_eq!(letter["reason"], "undeliverable", "{letter}");
    assert_eq!(letter["signal"]["messageType"], "Sleep", "{letter}");
    let id = letter["id"].as_u64().unwrap();
    let (status, replayed) = a
        .post(&format!("/v1/dead-letters/{id}/replay"), json!({}))
        .await;
    assert_eq!(status, 200, "{replayed}");
    let line = r#"switchboard_signals_total{handler="sleeper",kind="MESSAGE",outcome="ok"}"#;
    until("A handled the replayed message", || async {
        a.metric(line).await == Some(1.0)
    })
    .await;
}

/// Proves a request made over HTTP on host A is answered by a handler only host B runs,
/// uploaded on B to run there alone (`?hosts=b`); an address no host serves is answered 404 at once (no responders),
/// not 504 at the deadline; and a host in a cluster refuses what the cluster does not keep
/// yet with 409: an agent handler at deploy, keyed state in a turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_one_host_is_answered_by_a_handler_another_runs() {
    let server = NatsServer::start();
    let (a, b) = (join(&server, "a"), join(&server, "b"));
    deploy_on(&b, "echo", "echo", "b").await;

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
/// once: `echo` uploaded on B and installed by every host; 60 requests on A, 8 at a time, each answered with its
/// own payload; the three hosts handled 60 between them, each some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_on_three_hosts_shares_the_load() {
    let server = NatsServer::start();
    let hosts = [
        join(&server, "a3"),
        join(&server, "b3"),
        join(&server, "c3"),
    ];
    assert_eq!(hosts[1].deploy("echo", guest("echo")).await.0, 201);
    runs_everywhere(&[&hosts[0], &hosts[1], &hosts[2]], "echo", 1).await;
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
    deploy_on(&b, "echo", "echo", "b2").await;
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

/// Proves each event is handled once per subscribed handler across three hosts, read once
/// `GET /v1/cluster` shows nothing pending or unacknowledged: `audit`, uploaded on A, runs on A, B and C,
/// `audit2` (the same module) on C alone; 30 `UserRegistered` emitted over HTTP on A, B and C by
/// turns are each taken for both; `audit` handles 30 between its three hosts, `audit2` 30.
/// `switchboard cluster` shows both feeds; `--json` is the API's document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_handled_once_per_subscribed_handler_on_three_hosts() {
    let server = NatsServer::start();
    let hosts = [
        join(&server, "a6"),
        join(&server, "b6"),
        join(&server, "c6"),
    ];
    assert_eq!(hosts[0].deploy("audit", guest("audit")).await.0, 201);
    runs_everywhere(&[&hosts[0], &hosts[1], &hosts[2]], "audit", 1).await;
    deploy_on(&hosts[2], "audit2", "audit", "c6").await;
    for host in &hosts {
        until("every host knows both subscribers", || async {
            let (_, view) = host.get("/v1/cluster").await;
            view["subscribers"].as_array().map(Vec::len) == Some(2)
        })
        .await;
    }
    for n in 0..30 {
        let event = json!({
            "signalType": "EVENT",
            "eventType": "UserRegistered",
            "payload": { "user_id": format!("u{n}") },
        });
        let (status, taken) = hosts[n % 3].post("/v1/events", event).await;
        assert_eq!(status, 202, "{taken}");
        assert_eq!(taken["delivered"], 2, "{taken}");
    }
    let handled = |handler: &'static str| {
        let line = format!(
            r#"switchboard_signals_total{{handler="{handler}",kind="EVENT",outcome="ok"}}"#
        );
        let hosts = &hosts;
        async move {
            let mut sum = 0.0;
            for host in hosts {
                sum += host.metric(&line).await.unwrap_or(0.0);
            }
            sum
        }
    };
    until("the cluster has nothing pending", || async {
        let (_, view) = hosts[0].get("/v1/cluster").await;
        let settled: switchboard::transport::ClusterView = serde_json::from_value(view).unwrap();
        settled.settled() && handled("audit").await >= 30.0 && handled("audit2").await >= 30.0
    })
    .await;
    assert_eq!(handled("audit").await, 30.0);
    assert_eq!(handled("audit2").await, 30.0);

    let shown = hosts[1].cli(&["cluster"]);
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("host b6 of cluster t: connected"), "{text}");
    assert!(
        text.contains("audit2") && text.contains("sb-t-broadcasts"),
        "{text}"
    );
    let json = hosts[1].cli(&["cluster", "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(view["hostId"], "b6", "{view}");
}

/// Proves an upload on any host reaches every host, including one that joins later or was
/// down, and that a hot swap, a rollback and a delete are the cluster's: `echo` uploaded on
/// A runs on B (version 1, the module A took); C, started afterwards, runs it once ready.
/// With B stopped, `sleeper`'s module uploaded on C as `echo` (version 2, which answers
/// `Ping` with its name) runs on A and C, and B, started again on its
/// data directory, runs version 2 once ready. A rollback on B brings version 1 back on all
/// three (A answers `Ping` again), and a delete on C removes it from A and B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_on_one_host_reaches_every_host() {
    let server = NatsServer::start();
    let (a, b) = (join(&server, "a7"), join(&server, "b7"));
    let (status, deployed) = a.deploy("echo", guest("echo")).await;
    assert_eq!(status, 201, "{deployed}");
    runs_everywhere(&[&a, &b], "echo", 1).await;
    let (_, on_b) = b.get("/v1/handlers/echo").await;
    assert_eq!(on_b["module"], deployed["module"], "{on_b}");
    let c = join(&server, "c7");
    assert_eq!(
        version_on(&c, "echo").await,
        Some(1),
        "C caught up before ready"
    );
    let (status, reply) = c.call("echo", "Ping", json!({ "n": 1 })).await;
    assert_eq!(
        (status, &reply["payload"]),
        (200, &json!({ "n": 1 })),
        "{reply}"
    );

    // B's data directory, as `join` named it (`data_dir` would empty it).
    let b_dir =
        std::env::temp_dir().join(format!("switchboard-e2e-cluster-b7-{}", std::process::id()));
    assert!(b_dir.join("registry.json").exists() || b_dir.exists());
    b.stop();
    let (status, swapped) = c.deploy("echo", guest("sleeper")).await;
    assert_eq!(status, 200, "{swapped}");
    assert_eq!(swapped["version"], 2, "{swapped}");
    runs_everywhere(&[&a, &c], "echo", 2).await;
    let (status, reply) = a.call("echo", "Ping", json!({ "n": 2 })).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["payload"]["version"], "sleeper",
        "version 2 answers: {reply}"
    );
    let b = Daemon::start_with(
        &b_dir,
        &[
            "--nats",
            &server.url,
            "--cluster-name",
            "t",
            "--host-id",
            "b7",
        ],
    );
    assert_eq!(
        version_on(&b, "echo").await,
        Some(2),
        "B caught up before ready"
    );

    let (status, rolled) = b.rollback("echo").await;
    assert_eq!(status, 200, "{rolled}");
    runs_everywhere(&[&a, &b, &c], "echo", 1).await;
    let (status, reply) = a.call("echo", "Ping", json!({ "n": 3 })).await;
    assert_eq!(
        (status, &reply["payload"]),
        (200, &json!({ "n": 3 })),
        "{reply}"
    );

    assert_eq!(c.delete("echo").await, 204);
    for host in [&a, &b] {
        until("echo gone from every host", || async {
            version_on(host, "echo").await.is_none()
        })
        .await;
    }
}

/// Proves a record in the cluster's registry is checked before a host installs it: a NATS
/// client writes a record for `evil` whose module is a path (`../modules/<echo's hash>`,
/// which names echo's module file through the data directory) instead of a SHA-256. B
/// refuses it; the later upload of `echo2` on A, which B's watch sees after it, runs on B,
/// and `evil` never does. Without the check, B installs `evil` from echo's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_naming_a_path_is_not_installed() {
    let server = NatsServer::start();
    let (a, b) = (join(&server, "a8"), join(&server, "b8"));
    let (status, deployed) = a.deploy("echo", guest("echo")).await;
    assert_eq!(status, 201, "{deployed}");
    runs_everywhere(&[&a, &b], "echo", 1).await;
    let hash = deployed["module"].as_str().unwrap();
    let record = json!({
        "versions": [{
            "version": 1, "module": format!("../modules/{hash}"), "kind": "service",
            "memory_bytes": 134217728, "cpu_ms": 2000, "deadline_ms": 60000,
            "concurrency": 1, "mailbox": 1024, "deployed_at": 0
        }],
        "current": 1
    });
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let registry = js.get_key_value("sb-t-registry").await.unwrap();
    registry
        .put("evil", record.to_string().into())
        .await
        .unwrap();
    assert_eq!(a.deploy("echo2", guest("echo")).await.0, 201);
    runs_everywhere(&[&b], "echo2", 1).await;
    assert_eq!(
        version_on(&b, "evil").await,
        None,
        "B installed a record naming a path"
    );
}
