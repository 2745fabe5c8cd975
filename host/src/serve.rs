//! `switchboard serve`: the daemon. Opens the admin API at once, restores the registry's
//! handlers from the data directory (answering ready when they are back), serves until
//! SIGTERM or ctrl-c, then finishes the signals in flight before it stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::admin::{AppState, app};
use crate::config::{duration_arg, parse_duration};
use crate::db::Db;
use crate::registry::Registry;
use crate::store::DataDir;
use crate::transport::InProcess;
use crate::{Compiler, Host, HostConfig};

/// Default address of the admin API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "switchboard-data";
/// Default longest wait for signals in flight at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// After the drain, how long HTTP requests still open (a reply being written) may take
/// before their connections are closed.
pub const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Flags of `switchboard serve`; each is also read from the environment, then from the
/// config file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address the admin API listens on [default: 127.0.0.1:7070].
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for modules, compiled artifacts and the registry [default: switchboard-data].
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Bearer token the admin API requires.
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// TOML file with `listen`, `data_dir`, `admin_token` and `drain_timeout`; flags and
    /// environment win.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Longest wait at shutdown for signals in flight, like 500ms, 30s or 2m [default: 30s].
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT", value_parser = duration_arg)]
    pub drain_timeout: Option<Duration>,
    /// At start, deploy every *.wasm in this directory under its file name, unless that
    /// handler already runs the same module. A file that fails to deploy is logged and skipped.
    #[arg(long, value_name = "DIR")]
    pub deploy_dir: Option<PathBuf>,
    /// Uploads compiled at once; more wait for a slot [default: 2].
    #[arg(long, env = "SWITCHBOARD_MAX_COMPILATIONS")]
    pub max_compilations: Option<usize>,
    /// Longest one upload may take to compile, like 30s or 2m [default: 120s].
    #[arg(long, env = "SWITCHBOARD_COMPILE_TIMEOUT", value_parser = duration_arg)]
    pub compile_timeout: Option<Duration>,
}

/// The config file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    admin_token: Option<String>,
    /// A duration like `30s`.
    drain_timeout: Option<String>,
}

/// Settings after flags, environment and config file are merged.
#[derive(Debug)]
pub struct Settings {
    /// Address the admin API listens on.
    pub listen: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Bearer token of the admin API.
    pub admin_token: String,
    /// Components to deploy at start.
    pub deploy_dir: Option<PathBuf>,
    /// Longest wait at shutdown for signals in flight.
    pub drain_timeout: Duration,
    /// Uploads compiled at once.
    pub max_compilations: usize,
    /// Longest one upload may take to compile.
    pub compile_timeout: Duration,
}

/// Everything [`run`] needs beside its listener.
pub struct RunOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Bearer token of the admin API.
    pub admin_token: String,
    /// Components to deploy at start, once the registry is restored.
    pub deploy_dir: Option<PathBuf>,
    /// Longest wait at shutdown for signals in flight.
    pub drain_timeout: Duration,
    /// Restoring handlers waits for this first; the API answers (not ready) meanwhile.
    /// For tests that look at a host caught in the middle of starting.
    pub restore_gate: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Host settings; the daemon compiles uploads in child processes of its own binary.
    pub host: HostConfig,
}

impl RunOptions {
    /// Options for a data directory and token, with the defaults for the rest.
    pub fn new(data_dir: impl Into<PathBuf>, admin_token: impl Into<String>) -> Self {
        Self {
            data_dir: data_dir.into(),
            admin_token: admin_token.into(),
            deploy_dir: None,
            drain_timeout: DRAIN_TIMEOUT,
            restore_gate: None,
            host: HostConfig::default(),
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
            drain_timeout: settings.drain_timeout,
            host: HostConfig {
                compiler,
                max_compilations: settings.max_compilations,
                compile_timeout: settings.compile_timeout,
                ..HostConfig::default()
            },
            ..Self::new(settings.data_dir, settings.admin_token)
        }
    }
}

impl ServeArgs {
    /// Merges flags and environment over the config file over the defaults.
    pub fn settings(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let Some(admin_token) = self
            .admin_token
            .or(file.admin_token)
            .filter(|t| !t.is_empty())
        else {
            bail!(
                "an admin token is required: --admin-token, SWITCHBOARD_ADMIN_TOKEN, or admin_token in the config file"
            );
        };
        let drain_timeout = match (self.drain_timeout, file.drain_timeout) {
            (Some(flag), _) => flag,
            (None, Some(text)) => parse_duration(&text).with_context(|| {
                format!("`drain_timeout = \"{text}\"` in the config file is not a duration like 500ms, 30s or 2m")
            })?,
            (None, None) => DRAIN_TIMEOUT,
        };
        Ok(Settings {
            drain_timeout,
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("the default address parses")),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            admin_token,
            deploy_dir: self.deploy_dir,
            max_compilations: self
                .max_compilations
                .filter(|n| *n > 0)
                .unwrap_or(crate::config::DEFAULT_MAX_COMPILATIONS),
            compile_timeout: self
                .compile_timeout
                .unwrap_or(crate::config::DEFAULT_COMPILE_TIMEOUT),
        })
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
    let data = DataDir::open(&options.data_dir)
        .with_context(|| format!("opening data directory {}", options.data_dir.display()))?;
    let db = Db::open(&data.path().join(crate::db::FILE_NAME))
        .with_context(|| format!("opening the store in {}", options.data_dir.display()))?;
    let host = Host::open(options.host, Arc::new(InProcess::default()), db)
        .context("starting the host")?;
    let registry = Arc::new(Registry::open(host.clone(), data).context("reading the registry")?);
    let state = AppState::new(registry.clone(), &options.admin_token);
    let address = listener.local_addr()?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        axum::serve(listener, app(state.clone()))
            .with_graceful_shutdown(async move {
                let _ = http_stopped.await;
            })
            .into_future(),
    );
    tracing::info!(
        restoring = registry.restoring_count(),
        "listening on http://{address}"
    );
    let starting = async {
        if let Some(gate) = options.restore_gate {
            gate.await;
        }
        let failed = registry.restore().await;
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
            Ok(Ok(())) => anyhow::anyhow!("the admin API stopped by itself"),
            Ok(Err(error)) => anyhow::Error::new(error).context("serving the admin API"),
            Err(error) => anyhow::Error::new(error).context("the admin API task"),
        }),
    };
    state.begin_shutdown();
    tracing::info!("shutting down: refusing new signals; finishing signals in flight");
    if !host.drain(options.drain_timeout).await {
        tracing::warn!(
            "gave up waiting for signals in flight after {:?}",
            options.drain_timeout
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<PathBuf>, token: Option<&str>) -> ServeArgs {
        ServeArgs {
            listen: None,
            data_dir: None,
            admin_token: token.map(str::to_owned),
            config,
            deploy_dir: None,
            drain_timeout: None,
            max_compilations: None,
            compile_timeout: None,
        }
    }

    #[test]
    fn flags_win_over_the_config_file_which_wins_over_defaults() {
        let path =
            std::env::temp_dir().join(format!("switchboard-config-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nadmin_token = \"from-file\"\ndrain_timeout = \"2m\"\n",
        )
        .unwrap();
        let settings = args(Some(path.clone()), None).settings().unwrap();
        assert_eq!(settings.admin_token, "from-file");
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(settings.drain_timeout, Duration::from_secs(120));
        let mut flags = args(Some(path.clone()), Some("from-flag"));
        flags.drain_timeout = Some(Duration::from_millis(500));
        let settings = flags.settings().unwrap();
        assert_eq!(settings.admin_token, "from-flag");
        assert_eq!(settings.drain_timeout, Duration::from_millis(500));

        std::fs::write(&path, "admin_token = \"t\"\ndrain_timeout = \"soon\"\n").unwrap();
        let error = args(Some(path.clone()), None).settings().unwrap_err();
        assert!(format!("{error:#}").contains("drain_timeout"), "{error:#}");

        std::fs::write(&path, "colour = \"red\"\n").unwrap();
        let error = args(Some(path), Some("t")).settings().unwrap_err();
        assert!(format!("{error:#}").contains("colour"), "{error:#}");
    }

    #[test]
    fn a_token_is_required() {
        let error = args(None, None).settings().unwrap_err();
        assert!(error.to_string().contains("admin token is required"));
        let settings = args(None, Some("t")).settings().unwrap();
        assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(settings.drain_timeout, DRAIN_TIMEOUT);
    }
}
