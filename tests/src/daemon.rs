//! A real `switchboard serve` process on a loopback port, for tests that drive it over HTTP
//! like an operator would. The process is killed when the handle drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The admin token test daemons use.
pub const TOKEN: &str = "test-token";

/// The `switchboard` binary that `cargo test` built for this test, with the same features as
/// the test itself (so wasmtime is compiled once, not again by a separate `cargo build`).
///
/// Cargo sets `CARGO_BIN_EXE_switchboard` when it runs an integration test of the
/// `switchboard` package, so tests that drive the daemon live in `host/tests/`.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var_os("CARGO_BIN_EXE_switchboard")
            .map(PathBuf::from)
            .expect(
                "CARGO_BIN_EXE_switchboard is unset: daemon tests belong in host/tests/ and \
                 run through `cargo test`, which builds the binary and sets it",
            )
    })
}

/// Runs the `switchboard` CLI with `args` and nothing taken from the environment.
pub fn cli(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .env_remove("SWITCHBOARD_URL")
        .env_remove("SWITCHBOARD_ADMIN_TOKEN")
        .output()
        .expect("running switchboard")
}

/// A fresh, empty data directory under the system temp dir.
pub fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Sends a request and returns its status and JSON body (null if the body is not JSON).
async fn answer(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.expect("the daemon answers");
    let status = response.status().as_u16();
    let json_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    // Every JSON answer says so, whichever way the API wrote it.
    assert!(
        json_type || body.is_null(),
        "a JSON body without its content type: {body}"
    );
    (status, body)
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// How long it took from spawning the process to its admin API listening.
    pub listening: Duration,
    /// How long it took from spawning the process to its handlers restored (ready).
    pub startup: Duration,
    client: reqwest::Client,
    /// Bytes the daemon has written to its log (stderr) so far.
    log_bytes: Arc<AtomicU64>,
    /// The client gateway's `host:port`, when it listens.
    gateway: Arc<std::sync::Mutex<Option<String>>>,
}

impl Daemon {
    /// Starts `switchboard serve` on a free loopback port with `data_dir`, and waits until
    /// it says it is ready (listening, and every handler restored).
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Like [`Daemon::start`], with more `serve` flags (e.g. `--max-instances 3`).
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> Self {
        let started = Instant::now();
        let mut child = Command::new(binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-token",
                TOKEN,
                "--data-dir",
            ])
            .arg(data_dir)
            .args(flags)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting switchboard serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log_bytes = Arc::new(AtomicU64::new(0));
        let counted = log_bytes.clone();
        let gateway = Arc::new(std::sync::Mutex::new(None));
        let gateway_seen = gateway.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                counted.fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
                if let Some(at) = line.find("client gateway listening on ws://") {
                    let rest = &line[at + "client gateway listening on ws://".len()..];
                    let address = rest.split('/').next().unwrap_or("").to_owned();
                    *gateway_seen.lock().unwrap() = Some(address);
                }
                if let Some(at) = line.find("listening on http://") {
                    let address = line[at + "listening on http://".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    let _ = tx.send(Some((address, Instant::now())));
                } else if line.contains("ready to serve") {
                    let _ = tx.send(None);
                }
                eprintln!("[daemon] {line}");
            }
        });
        let listening = rx.recv_timeout(Duration::from_secs(120)).ok().flatten();
        let ready = rx.recv_timeout(Duration::from_secs(120)).is_ok();
        let Some((address, listening)) = listening.filter(|_| ready) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not start listening and get ready");
        };
        Self {
            child,
            url: format!("http://{address}"),
            listening: listening - started,
            startup: started.elapsed(),
            // A fresh connection per request: a refused upload's unread body makes the server
            // close its connection, which a pooled client would otherwise try to reuse.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("an HTTP client"),
            log_bytes,
            gateway,
        }
    }

    /// The client gateway's `ws://host:port/v1/ws`, when it listens.
    pub fn gateway_url(&self) -> Option<String> {
        let address = self.gateway.lock().unwrap().clone()?;
        Some(format!("ws://{address}/v1/ws"))
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address the daemon listens on, `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Bytes the daemon has written to its log (stderr) so far, as read by the fixture.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }

    /// A request to `path` with the admin token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    /// A request to `path` without any token.
    pub fn anonymous(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url))
    }

    /// Uploads a component as `name`; returns the status and JSON body.
    pub async fn deploy(&self, name: &str, bytes: Vec<u8>) -> (u16, serde_json::Value) {
        self.put(&format!("/v1/handlers/{name}"), bytes).await
    }

    /// PUTs component bytes to `path` (which may carry a query).
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> (u16, serde_json::Value) {
        let request = self.request(reqwest::Method::PUT, path);
        answer(
            request
                .header("content-type", "application/wasm")
                .body(bytes),
        )
        .await
    }

    /// POSTs a JSON body to `path`.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        answer(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    /// Rolls handler `name` back.
    pub async fn rollback(&self, name: &str) -> (u16, serde_json::Value) {
        let path = format!("/v1/handlers/{name}/rollback");
        answer(self.request(reqwest::Method::POST, &path)).await
    }

    /// Deletes handler `name`; returns the status.
    pub async fn delete(&self, name: &str) -> u16 {
        let path = format!("/v1/handlers/{name}");
        answer(self.request(reqwest::Method::DELETE, &path)).await.0
    }

    /// Sends a message and waits for the reply; returns the status and JSON body.
    pub async fn call(
        &self,
        to: &str,
        message_type: &str,
        payload: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let body = serde_json::json!({ "to": to, "messageType": message_type, "payload": payload });
        answer(
            self.request(reqwest::Method::POST, "/v1/messages?wait=5s")
                .json(&body),
        )
        .await
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        answer(self.request(reqwest::Method::GET, path)).await
    }

    /// The value of a metric line starting with `prefix` (e.g. `switchboard_compilations`).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        metric_at(&self.client, &self.url, prefix).await
    }

    /// Runs `switchboard ARGS --url URL --token TOKEN` against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        cli(&[args, &["--url", &self.url, "--token", TOKEN]].concat())
    }

    /// Asks the daemon to stop (SIGTERM); usable while others share it.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("waiting for the daemon")
    }

    /// Stops the daemon with SIGTERM and waits for it to exit.
    pub fn stop(self) -> std::process::ExitStatus {
        self.terminate();
        self.wait()
    }

    /// Kills the daemon with SIGKILL, as a crash would, and returns once it is dead (its
    /// files, and so the store's lock, closed), as a supervisor would see it before starting
    /// another; usable while others share it.
    pub fn kill(&self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let stat = Path::new("/proc").join(&pid).join("stat");
        let deadline = Instant::now() + Duration::from_secs(10);
        let tasks = Path::new("/proc").join(&pid).join("task");
        while Instant::now() < deadline {
            // Gone, or a zombie whose other threads have exited too: either way the kernel
            // has closed its files. (The main thread turns zombie while others may still be
            // exiting, holding the files, the store's lock among them.)
            let state = std::fs::read_to_string(&stat).ok();
            let zombie = |s: &str| {
                s.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            };
            let alone = || std::fs::read_dir(&tasks).map_or(true, |t| t.count() <= 1);
            let dead = state.as_deref().is_none_or(|s| zombie(s) && alone());
            if dead {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the daemon did not die within 10 s of SIGKILL");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the first metric line starting with `prefix` at `url`'s `/metrics` (a host
/// this fixture did not start), or `None` if there is none or it cannot be read.
pub async fn metric_at(client: &reqwest::Client, url: &str, prefix: &str) -> Option<f64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
