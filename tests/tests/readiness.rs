//! The daemon's start and stop, in process: `serve::run` on a listener the test binds, with a
//! restore gate the test opens, so a host caught mid-start or mid-shutdown can be looked at
//! without sleeping and hoping.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::registry::{DeployOptions, Registry};
use switchboard::serve::{RunOptions, run};
use switchboard::store::DataDir;
use switchboard::{Host, Limits};
use switchboard_tests::guest;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "readiness-token";
/// Longest a test waits for the host to reach a state before failing.
const BOUND: Duration = Duration::from_secs(60);

/// A data directory with `names` registered (deployed once, then the host dropped), each
/// with `cpu` as its CPU limit per signal.
async fn registered(tag: &str, names: &[&str], cpu: Duration) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-ready-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let host = Host::new(switchboard_tests::config()).unwrap();
    let registry = Registry::open(host, DataDir::open(&dir).unwrap()).unwrap();
    for name in names {
        let options = DeployOptions {
            limits: Some(Limits {
                cpu_time: cpu,
                ..Limits::default()
            }),
            ..DeployOptions::default()
        };
        registry.deploy(name, guest(name), options).await.unwrap();
    }
    dir
}

/// A host started by `run`, with its restore held until `open_gate`.
struct Started {
    url: String,
    client: reqwest::Client,
    gate: Option<oneshot::Sender<()>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
}

impl Started {
    async fn new(dir: &Path, drain_timeout: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (gate, gate_rx) = oneshot::channel::<()>();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let mut options = RunOptions::new(dir, TOKEN).restore_gate(async {
            let _ = gate_rx.await;
        });
        options.drain_timeout = drain_timeout;
        let task = tokio::spawn(async move {
            run(listener, options, async {
                let _ = stop_rx.await;
            })
            .await
            .map_err(|e| format!("{e:#}"))
        });
        Self {
            url,
            client: reqwest::Client::new(),
            gate: Some(gate),
            stop: Some(stop),
            task,
        }
    }

    fn open_gate(&mut self) {
        let _ = self.gate.take().expect("the gate opens once").send(());
    }

    fn shut_down(&mut self) {
        let _ = self.stop.take().expect("shutdown starts once").send(());
    }

    async fn readyz(&self) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}/readyz", self.url))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// Polls `/readyz` until it answers `status`, within [`BOUND`].
    async fn until_readyz(&self, status: u16) {
        let deadline = Instant::now() + BOUND;
        while self.readyz().await.0 != status {
            assert!(Instant::now() < deadline, "/readyz never answered {status}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn message(&self, path: &str, to: &str, message_type: &str) -> (u16, Value) {
        let body = json!({ "to": to, "messageType": message_type, "payload": {} });
        self.send(reqwest::Method::POST, path, body).await
    }

    /// Waits for `run` to return, within [`BOUND`].
    async fn finished(self) -> Result<(), String> {
        tokio::time::timeout(BOUND, self.task)
            .await
            .expect("run returned")
            .expect("run did not panic")
    }
}

/// `/readyz` is 503 while the registry's handlers are being restored (the listener is open
/// and listing works meanwhile), 200 once they are back, and 503 again from the moment
/// shutdown begins, while a signal in flight is still being finished; new signals are then
/// refused with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_restore_and_shutdown() {
    let dir = registered("phases", &["chaos"], Duration::from_secs(3)).await;
    let mut host = Started::new(&dir, Duration::from_secs(30)).await;

    let (status, text) = host.readyz().await;
    assert_eq!(status, 503, "not ready while restoring: {text}");
    assert!(text.contains("restoring"), "{text}");
    let (status, list) = host
        .send(reqwest::Method::GET, "/v1/handlers", json!(null))
        .await;
    assert_eq!(status, 200, "the registry lists while restoring: {list}");

    host.open_gate();
    host.until_readyz(200).await;

    let spin = tokio::spawn({
        let (client, url) = (host.client.clone(), host.url.clone());
        async move {
            let body = json!({ "to": "chaos", "messageType": "Spin", "payload": {} });
            let response = client
                .post(format!("{url}/v1/messages?wait=20s"))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    });
    until_spinning(&host).await;

    host.shut_down();
    host.until_readyz(503).await;
    assert!(
        !spin.is_finished(),
        "503 came while the drain was still running"
    );
    let (status, refused) = host.message("/v1/messages", "chaos", "Ping").await;
    assert_eq!(status, 503, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("shutting down"),
        "{refused}"
    );
    let event = json!({ "eventType": "Anything", "payload": {} });
    let (status, _) = host.send(reqwest::Method::POST, "/v1/events", event).await;
    assert_eq!(status, 503, "events are refused too");

    let (status, reply) = spin.await.unwrap();
    assert_eq!(status, 507, "{reply}");
    assert_eq!(
        reply["code"], 507,
        "the spin ran to its CPU limit and was answered: {reply}"
    );
    host.finished().await.unwrap();
}

/// A message to a handler that is registered but not restored yet gets 503 "restoring",
/// with and without `?wait`, not 404; once restored it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_restoring_handler_is_told_to_retry() {
    let dir = registered("restoring", &["echo"], Duration::from_secs(2)).await;
    let mut host = Started::new(&dir, Duration::from_secs(30)).await;

    for path in ["/v1/messages", "/v1/messages?wait=1s"] {
        let (status, body) = host.message(path, "echo", "Ping").await;
        assert_eq!(status, 503, "{path}: {body}");
        let error = body["error"].as_str().unwrap();
        assert_eq!(
            error, "handler `echo` is restoring; retry shortly",
            "{path}"
        );
    }
    let (status, body) = host.message("/v1/messages", "nobody", "Ping").await;
    assert_eq!(
        status, 404,
        "an unregistered address is still not found: {body}"
    );

    host.open_gate();
    host.until_readyz(200).await;
    let (status, reply) = host.message("/v1/messages?wait=5s", "echo", "Ping").await;
    assert_eq!(status, 200, "{reply}");
    host.shut_down();
    host.finished().await.unwrap();
}

/// Shutdown while handlers are still being restored stops at once, never having been ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_restoring_stops() {
    let dir = registered("stop-early", &["echo"], Duration::from_secs(2)).await;
    let mut host = Started::new(&dir, Duration::from_secs(30)).await;
    assert_eq!(host.readyz().await.0, 503);
    host.shut_down();
    host.finished().await.unwrap();
}

/// The drain gives up after the drain timeout: a signal that runs longer does not hold the
/// host open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_is_bounded_by_the_drain_timeout() {
    let dir = registered("drain-bound", &["chaos"], Duration::from_secs(30)).await;
    let mut host = Started::new(&dir, Duration::from_millis(200)).await;
    host.open_gate();
    host.until_readyz(200).await;
    let (status, _) = host.message("/v1/messages", "chaos", "Spin").await;
    assert_eq!(status, 202);
    until_spinning(&host).await;
    let stopping = Instant::now();
    host.shut_down();
    host.finished().await.unwrap();
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "stopped after {took:?}, not after the 30 s spin"
    );
}

/// Waits until `chaos` has taken the Spin message (it counts as handled once it starts).
async fn until_spinning(host: &Started) {
    let deadline = Instant::now() + BOUND;
    loop {
        let (_, chaos) = host
            .send(reqwest::Method::GET, "/v1/handlers/chaos", json!(null))
            .await;
        if chaos["counters"]["handled"] == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "the spin never started: {chaos}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
