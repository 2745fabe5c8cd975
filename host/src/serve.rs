//! `switchboard serve`: the daemon. Opens the admin API at once, restores the registry's
//! handlers from the data directory (answering ready when they are back), serves until
//! SIGTERM or ctrl-c, then finishes the signals in flight before it stops. The accept loop
//! ([`crate::listener`]) bounds the connections clients may hold open, on the admin API and
//! the client gateway alike.

pub mod cluster_args;
pub mod gateway_args;
pub mod host_limits;
pub mod memory;
pub mod open_files;
mod settings;
pub mod signal_limits;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::admin::{AppState, app};
use crate::db::Db;
pub use crate::listener::ConnectionLimits;
use crate::listener::{self, Counters};
use crate::nats::{Nats, NatsOptions};
use crate::registry::Registry;
use crate::store::DataDir;
use crate::transport::{InProcess, Transport};
use crate::{Backends, Compiler, Host, HostConfig};
pub use settings::{ServeArgs, Settings};

/// Default address of the admin API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "switchboard-data";
/// Longest wait at shutdown for clients' connections to close after "going away".
const GATEWAY_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Default longest wait for signals in flight at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// After the drain, how long HTTP requests still open (a reply being written) may take
/// before their connections are closed.
pub const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Everything [`run`] needs beside its listener.
pub struct RunOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Bearer token of the admin API.
    pub admin_token: String,
    /// Components to deploy at start, once the registry is restored.
    pub deploy_dir: Option<PathBuf>,
    /// The client gateway, if it is on.
    pub gateway: Option<GatewayOptions>,
    /// Longest wait at shutdown for signals in flight.
    pub drain_timeout: Duration,
    /// The admin API's connection limits (the cap lowered to fit the open-file limit).
    pub connections: ConnectionLimits,
    /// The host's settings.
    pub host_config: HostConfig,
    /// How signals reach the hosts that serve them: in process unless given another, or
    /// unless `cluster` is given.
    pub transport: Arc<dyn Transport>,
    /// The NATS cluster to join at start; its transport replaces `transport`.
    pub cluster: Option<NatsOptions>,
    /// Restoring handlers waits for this first; the API answers (not ready) meanwhile.
    /// For tests that look at a host caught in the middle of starting.
    pub restore_gate: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

pub use gateway_args::GatewayOptions;

impl RunOptions {
    /// Options for a data directory and token, with the defaults for the rest.
    pub fn new(data_dir: impl Into<PathBuf>, admin_token: impl Into<String>) -> Self {
        Self {
            data_dir: data_dir.into(),
            admin_token: admin_token.into(),
            deploy_dir: None,
            gateway: None,
            drain_timeout: DRAIN_TIMEOUT,
            connections: ConnectionLimits::default(),
            host_config: HostConfig::default(),
            transport: Arc::new(InProcess::default()),
            cluster: None,
            restore_gate: None,
        }
    }

    /// Holds restoring handlers back until `gate` resolves.
    pub fn restore_gate(mut self, gate: impl Future<Output = ()> + Send + 'static) -> Self {
        self.restore_gate = Some(Box::pin(gate));
        self
    }
}

impl From<Settings> for RunOptions {
    fn from(settings: Settings) -> Self {
        // A compile that runs apart can be killed and gives its memory back; without a path
        // to this binary the host still compiles, on its own threads.
        let compiler = match std::env::current_exe() {
            Ok(program) => Compiler::Subprocess(program),
            Err(error) => {
                tracing::warn!(%error, "compiling uploads in-process: this binary's path is unknown");
                Compiler::InProcess
            }
        };
        Self {
            deploy_dir: settings.deploy_dir,
            gateway: settings.gateway,
            cluster: settings.cluster,
            drain_timeout: settings.drain_timeout,
            connections: settings.connections,
            host_config: HostConfig {
                compiler,
                ..settings.host_config
            },
            ..Self::new(settings.data_dir, settings.admin_token)
        }
    }
}

/// Binds `settings.listen` and runs the daemon on it until `shutdown` resolves.
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    run(listener, settings.into(), shutdown).await
}

/// Runs the daemon on `listener` until `shutdown` resolves. The admin API answers at once;
/// `/readyz` turns 200 once the registry's handlers are restored and the deploy directory
/// is deployed. On shutdown, `/readyz` turns 503 and new signals are refused while the
/// signals in flight finish (up to the drain timeout), then the API stops.
pub async fn run(
    listener: TcpListener,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    memory::tune_allocator();
    let _trimmer = memory::Trimmer::start();
    let data = DataDir::open(&options.data_dir)
        .with_context(|| format!("opening data directory {}", options.data_dir.display()))?;
    let db = Db::open(&data.path().join(crate::db::FILE_NAME))
        .with_context(|| format!("opening the store in {}", options.data_dir.display()))?;
    let mut joined = None;
    let transport: Arc<dyn Transport> = match &options.cluster {
        Some(cluster) => {
            let nats = Nats::connect(cluster)
                .await
                .context("joining the cluster")?;
            tracing::info!(
                servers = %cluster.servers.join(","),
                cluster = %cluster.cluster,
                host_id = %cluster.host_id,
                "joined the cluster over NATS"
            );
            joined = Some(nats.clone());
            nats
        }
        None => options.transport.clone(),
    };
    let mut config = options.host_config.clone();
    config.clustered |= options.cluster.is_some();
    let host = Host::open(config, Backends::new(transport, db)).context("starting the host")?;
    let registry = Arc::new(Registry::open(host.clone(), data).context("reading the registry")?);
    // A host of a cluster changes handlers through the cluster's registry from the first
    // request the admin API answers.
    if let Some(nats) = joined {
        registry.attach(nats);
    }
    let state = AppState::new(registry.clone(), &options.admin_token);
    let address = listener.local_addr()?;
    let limits = fit_open_files(options.connections);
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn({
        let (app, host) = (app(state.clone()), host.clone());
        async move {
            let stop = async {
                let _ = http_stopped.await;
            };
            let counters = Counters::admin(host.router().metrics());
            listener::serve(listener, app, limits, counters, stop).await;
        }
    });
    let gateway = match &options.gateway {
        Some(settings) => {
            let tokens = match &settings.tokens {
                Some(path) => crate::gateway::Tokens::load(path)?,
                None => crate::gateway::Tokens::default(),
            };
            let jwt = match &settings.jwt {
                Some(jwt) => Some(crate::gateway::Jwt::new(jwt)?),
                None => None,
            };
            let listen = settings.listen;
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the client gateway to {listen}"))?;
            let gateway_address = listener.local_addr()?;
            let (gateway, stop) = crate::gateway::Gateway::new(
                host.router().clone(),
                tokens,
                jwt,
                settings.limits.clone(),
            );
            let app = gateway.app();
            tracing::info!("client gateway listening on ws://{gateway_address}/v1/ws");
            let counters = Counters::gateway(&host.router().metrics().gateway);
            let limits = crate::gateway::handshake_limits(settings.max_handshakes);
            let task = tokio::spawn(listener::serve(
                listener,
                app,
                limits,
                counters,
                std::future::pending(),
            ));
            Some((task, stop))
        }
        None => None,
    };
    tracing::info!(
        restoring = registry.restoring_count(),
        max_connections = limits.max_connections,
        max_instances = options.host_config.max_instances,
        instance_idle = ?options.host_config.instance_idle,
        "listening on http://{address}"
    );
    let starting = async {
        if let Some(gate) = options.restore_gate {
            gate.await;
        }
        let failed = registry.restore().await;
        // A host of a cluster installs what the cluster's registry holds before it is ready.
        registry
            .join()
            .await
            .context("reading the cluster's registry")?;
        if let Some(dir) = &options.deploy_dir {
            deploy_dir(&registry, dir).await?;
        }
        state.mark_ready();
        let handlers = registry.list().await.len();
        tracing::info!(
            handlers,
            failed = ?failed,
            compiled = registry.compilations(),
            startup_ms = started.elapsed().as_millis() as u64,
            "ready to serve"
        );
        std::future::pending::<anyhow::Result<()>>().await
    };
    let failure = tokio::select! {
        () = shutdown => None,
        outcome = starting => outcome.err(),
        joined = &mut server => Some(match joined {
            Ok(()) => anyhow::anyhow!("the admin API stopped by itself"),
            Err(error) => anyhow::Error::new(error).context("the admin API task"),
        }),
    };
    state.begin_shutdown();
    if let Some((task, stop)) = &gateway {
        // Clients are told the host is going away (1001), then the listener goes.
        stop.going_away(GATEWAY_CLOSE_GRACE).await;
        task.abort();
    }
    tracing::info!("shutting down: refusing new signals; finishing signals in flight");
    // Other hosts take what comes for this host's services from now on.
    host.router().leave_cluster().await;
    if !host.drain(options.drain_timeout).await {
        tracing::warn!(
            "gave up waiting for signals in flight after {:?}",
            options.drain_timeout
        );
    }
    host.router().close_transport().await;
    let _ = stop_http.send(());
    if !server.is_finished()
        && tokio::time::timeout(HTTP_CLOSE_GRACE, &mut server)
            .await
            .is_err()
    {
        tracing::warn!("closing HTTP connections still open after {HTTP_CLOSE_GRACE:?}");
        server.abort();
    }
    tracing::info!("stopped");
    failure.map_or(Ok(()), Err)
}

/// Raises the open-file limit and lowers the connection cap to what it leaves room for.
fn fit_open_files(limits: ConnectionLimits) -> ConnectionLimits {
    let files = open_files::raise_limit();
    let max_connections = open_files::connection_cap(limits.max_connections, files);
    if max_connections < limits.max_connections {
        tracing::info!(
            max_connections,
            asked = limits.max_connections,
            open_files = files,
            "connection cap lowered to fit the open-file limit"
        );
    }
    ConnectionLimits {
        max_connections,
        ..limits
    }
}

/// Deploys the components in `dir` whose module is not already live under their name.
async fn deploy_dir(registry: &Registry, dir: &std::path::Path) -> anyhow::Result<()> {
    let live: std::collections::HashMap<_, _> = registry
        .list()
        .await
        .into_iter()
        .map(|h| (h.name, h.module))
        .collect();
    for (name, path) in crate::run_command::wasm_files(dir).await? {
        let bytes = tokio::fs::read(&path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        if live.get(&name) == Some(&DataDir::hash(&bytes)) {
            continue;
        }
        match registry.deploy(&name, bytes, Default::default()).await {
            Ok(done) => {
                tracing::info!(handler = %name, version = done.handler.version, "deployed from {}", path.display())
            }
            Err(error) => tracing::warn!(handler = %name, %error, "skipped {}", path.display()),
        }
    }
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
