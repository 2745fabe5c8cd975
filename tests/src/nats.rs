//! A `nats-server` of the test's own (the one `tests/nats/setup.sh` installs), on a free
//! loopback port with JetStream in a temporary directory, stopped when dropped; and hosts
//! joined through it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::db::Db;
use switchboard::nats::{Nats, NatsOptions};
use switchboard::{Backends, Host, HostConfig};

use crate::{TempDir, target_dir};

/// A running `nats-server`, killed when dropped.
pub struct NatsServer {
    child: Child,
    /// Its client URL, `nats://127.0.0.1:<port>`.
    pub url: String,
    store: TempDir,
}

/// Starts `nats-server` on `port` with JetStream in `store`, and waits until it listens.
fn spawn(port: u16, store: &TempDir) -> Child {
    let child = Command::new(binary())
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nats-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The `nats-server` binary the test set-up installs.
pub fn binary() -> PathBuf {
    let path = target_dir().join("python-venv/bin/nats-server");
    assert!(
        path.exists(),
        "{} is missing: run `bash tests/setup.sh` (the README's test command does)",
        path.display()
    );
    path
}

impl NatsServer {
    /// Starts a server and waits until it takes connections.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let store = TempDir::new("nats");
        Self {
            child: spawn(port, &store),
            url: format!("nats://127.0.0.1:{port}"),
            store,
        }
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on its port and store, once killed.
    pub fn start_again(&mut self) {
        let port = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.child = spawn(port, &self.store);
    }

    /// How host `host_id` of cluster `test` joins this server.
    pub fn options(&self, host_id: &str) -> NatsOptions {
        NatsOptions {
            servers: vec![self.url.clone()],
            cluster: "test".to_owned(),
            host_id: host_id.to_owned(),
            ..NatsOptions::default()
        }
    }

    /// A host joined to this server as `host_id`, its store in memory.
    pub async fn host(&self, config: HostConfig, host_id: &str) -> Host {
        self.joined(config, host_id).await.0
    }

    /// [`NatsServer::host`], with its transport.
    pub async fn joined(&self, config: HostConfig, host_id: &str) -> (Host, Arc<Nats>) {
        let nats = Nats::connect(&self.options(host_id))
            .await
            .expect("joining NATS");
        let backends = Backends::new(nats.clone(), Db::in_memory().unwrap());
        (Host::open(config, backends).expect("starting a host"), nats)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
