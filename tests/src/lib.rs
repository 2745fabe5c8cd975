//! Support for Switchboard's end-to-end tests: builds the example guests once per test
//! process with `cargo build --target wasm32-wasip2`, and starts real hosts with them.

pub mod daemon;
pub mod nats;
pub mod pair;
pub mod raw;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use switchboard::db::Db;
use switchboard::{Backends, Failure, Host, HostConfig, Json, Limits, Signal};

/// How long tests wait for a reply before calling it lost.
pub const WAIT: Duration = Duration::from_secs(10);

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The workspace's target directory: `$CARGO_TARGET_DIR` (relative to the repository root if
/// relative), else `target/` in the repository root, as for cargo and `tests/python/setup.sh`.
pub fn target_dir() -> PathBuf {
    let root = root();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"))
}

/// Builds every guest in `guests/` for wasm32-wasip2 (once per process) and returns the
/// directory holding the components.
pub fn guests_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = root();
        let target = target_dir();
        let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root.join("guests"))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("running cargo to build the guests");
        assert!(
            output.status.success(),
            "building the guests failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        target.join("wasm32-wasip2").join("release")
    })
}

/// The bytes of a compiled guest component, e.g. `guest("echo")`.
pub fn guest(name: &str) -> Vec<u8> {
    let path = guests_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The host settings in-process tests start from: the defaults, with every handler open to
/// clients (`--open-to-clients '*'`), since these tests send as `user:` clients themselves.
pub fn config() -> HostConfig {
    HostConfig {
        open_to_clients: vec!["*".into()],
        ..HostConfig::default()
    }
}

/// A host on the in-process transport with `names` deployed under their own names, each
/// with the default limits.
pub async fn host_with(names: &[&str]) -> Host {
    let host = Host::new(config()).expect("starting a host");
    for name in names {
        host.deploy(name, guest(name), None)
            .await
            .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
    }
    host
}

/// Limits with a short CPU budget, so runaway guests are stopped quickly in tests.
pub fn tight_limits() -> Limits {
    Limits {
        cpu_time: Duration::from_millis(300),
        memory_bytes: 32 << 20,
        ..Limits::default()
    }
}

/// JSON from a literal.
pub fn json(value: serde_json::Value) -> Json {
    Json::from_value(&value)
}

/// Requests `to` from the host and returns the reply payload as a tree, or the failure.
pub async fn call(
    host: &Host,
    to: &str,
    message_type: &str,
    payload: serde_json::Value,
) -> Result<serde_json::Value, Failure> {
    host.call(to, message_type, json(payload), WAIT)
        .await
        .map(|j| j.to_value())
}

/// Waits for the next signal a client receives.
pub async fn next(rx: &mut tokio::sync::mpsc::Receiver<Signal>) -> Signal {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a signal within the wait")
        .expect("the client is still connected")
}

/// The value of the metric line starting with `prefix` (name and labels, e.g.
/// `switchboard_state_conflicts_total{handler="tally"}`), or 0 if there is none yet.
pub fn metric(host: &Host, prefix: &str) -> f64 {
    let text = host.router().render_metrics();
    text.lines()
        .find_map(|line| line.strip_prefix(prefix)?.strip_prefix(' '))
        .map_or(0.0, |n| n.parse().expect("a metric value is a number"))
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name starts with `name`.
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchboard-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        Self(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens the store file at `path` again once its last holder let go of `store` (a dropped
/// host's workers, committer and flusher finish on their own, and the file stays locked
/// until the store's last flush), waiting a bounded time.
pub async fn reopen_store(path: &Path, store: Weak<Db>) -> Arc<Db> {
    let reopened = tokio::time::timeout(WAIT, async {
        loop {
            if store.strong_count() == 0
                && let Ok(db) = Db::open(path)
            {
                return db;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    reopened.expect("the store file reopens after its host was dropped")
}

/// A host on the in-process transport keeping its state in `db`.
pub fn host_on(config: HostConfig, db: Arc<Db>) -> Host {
    let transport = Arc::new(switchboard::transport::InProcess::default());
    Host::open(config, Backends::new(transport, db)).expect("starting a host")
}
