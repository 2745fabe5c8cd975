//! A `nats-server` of the test's own (the one `tests/nats/setup.sh` installs), on a free
//! loopback port with JetStream in a temporary directory, stopped when dropped; and hosts
//! joined through it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

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

/// Starts `nats-server` on `port` with JetStream in `store`, and waits until it says it is
/// ready; `None` if it exits first (the port was taken: another server's readiness must
/// never pass for its own).
fn spawn(port: u16, store: &TempDir) -> Option<Child> {
    let config = store.path().join("server.conf");
    let mut command = Command::new(binary());
    if config.exists() {
        command.arg("-c").arg(&config).envs(PASSWORDS);
    }
    let mut child = command
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nats-server");
    let stderr = child.stderr.take().expect("piped stderr");
    let (ready, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Server is ready") {
                let _ = ready.send(());
            }
        }
    });
    match said.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => Some(child),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
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

/// A port free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The passwords of the users in `examples/nats/accounts.conf`, for the tests.
pub const PASSWORDS: [(&str, &str); 2] = [
    ("SWITCHBOARD_NATS_HOST_PASSWORD", "host-secret"),
    ("SWITCHBOARD_NATS_OUTSIDER_PASSWORD", "outsider-secret"),
];

impl NatsServer {
    /// Starts a server and waits until it takes connections. A port another test took in
    /// the meantime makes it try another.
    pub fn start() -> Self {
        Self::start_in(TempDir::new("nats"))
    }

    /// Starts a server with the users of the repository's least-privilege configuration
    /// (`examples/nats/accounts.conf`, passwords [`PASSWORDS`]).
    pub fn start_with_accounts() -> Self {
        let store = TempDir::new("nats-accounts");
        let shipped =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nats/accounts.conf");
        std::fs::copy(&shipped, store.path().join("accounts.conf")).expect("copying accounts.conf");
        std::fs::write(store.path().join("server.conf"), "include accounts.conf\n")
            .expect("writing server.conf");
        Self::start_in(store)
    }

    fn start_in(store: TempDir) -> Self {
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, &store) {
                return Self {
                    child,
                    url: format!("nats://127.0.0.1:{port}"),
                    store,
                };
            }
        }
        panic!("nats-server did not start on any of 5 free ports");
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on its port and store, once killed.
    pub fn start_again(&mut self) {
        let port = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.child = spawn(port, &self.store).expect("nats-server starting again on its port");
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
        self.joined_with(config, &self.options(host_id)).await
    }

    /// [`NatsServer::joined`], joining with `options`.
    pub async fn joined_with(
        &self,
        config: HostConfig,
        options: &NatsOptions,
    ) -> (Host, Arc<Nats>) {
        let nats = Nats::connect(options).await.expect("joining NATS");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a server that cannot take its port is not mistaken for the one that has it:
    /// starting a second server on a running one's port gives nothing, and the first still
    /// takes connections.
    #[test]
    fn a_taken_port_is_not_mistaken_for_a_started_server() {
        let first = NatsServer::start();
        let port: u16 = first.url.rsplit(':').next().unwrap().parse().unwrap();
        let store = TempDir::new("nats-second");
        assert!(spawn(port, &store).is_none());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    }
}
