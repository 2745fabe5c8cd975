//! `switchboard serve`: the daemon. Restores the registry from the data directory, then serves
//! the admin API until SIGTERM or ctrl-c, then finishes the signals in flight.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::admin::{AppState, app};
use crate::registry::Registry;
use crate::store::DataDir;
use crate::{Host, HostConfig};

/// Default address of the admin API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "switchboard-data";
/// Longest wait for signals in flight at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// TOML file with `listen`, `data_dir` and `admin_token`; flags and environment win.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// At start, deploy every *.wasm in this directory under its file name, unless that
    /// handler already runs the same module. A file that fails to deploy is logged and skipped.
    #[arg(long, value_name = "DIR")]
    pub deploy_dir: Option<PathBuf>,
}

/// The config file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    admin_token: Option<String>,
}

/// Settings after flags, environment and config file are merged.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub deploy_dir: Option<PathBuf>,
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
        Ok(Settings {
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
        })
    }
}

/// Runs the daemon until `shutdown` resolves, then drains.
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let data = DataDir::open(&settings.data_dir)
        .with_context(|| format!("opening data directory {}", settings.data_dir.display()))?;
    let host = Host::new(HostConfig::default()).context("starting the host")?;
    let (registry, failed) = Registry::open(host.clone(), data)
        .await
        .context("restoring the registry")?;
    if let Some(dir) = &settings.deploy_dir {
        deploy_dir(&registry, dir).await?;
    }
    let registry = Arc::new(registry);
    let restored = registry.list().await.len();
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(
        handlers = restored,
        failed = ?failed,
        compiled = registry.compilations(),
        startup_ms = started.elapsed().as_millis() as u64,
        "ready; listening on http://{address}"
    );
    let state = AppState::new(registry, &settings.admin_token);
    let ready = state.clone();
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            ready.set_ready(false);
            tracing::info!("shutting down: no new requests; finishing signals in flight");
        })
        .await
        .context("serving the admin API")?;
    if !host.drain(DRAIN_TIMEOUT).await {
        tracing::warn!("gave up waiting for signals in flight after {DRAIN_TIMEOUT:?}");
    }
    tracing::info!("stopped");
    Ok(())
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
        }
    }

    #[test]
    fn flags_win_over_the_config_file_which_wins_over_defaults() {
        let path =
            std::env::temp_dir().join(format!("switchboard-config-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nadmin_token = \"from-file\"\n",
        )
        .unwrap();
        let settings = args(Some(path.clone()), None).settings().unwrap();
        assert_eq!(settings.admin_token, "from-file");
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let settings = args(Some(path.clone()), Some("from-flag"))
            .settings()
            .unwrap();
        assert_eq!(settings.admin_token, "from-flag");

        std::fs::write(&path, "colour = \"red\"\n").unwrap();
        let error = args(Some(path), Some("t")).settings().unwrap_err();
        assert!(format!("{error:#}").contains("colour"), "{error:#}");
    }

    #[test]
    fn a_token_is_required() {
        let error = args(None, None).settings().unwrap_err();
        assert!(error.to_string().contains("admin token is required"));
        assert_eq!(
            args(None, Some("t")).settings().unwrap().listen.to_string(),
            DEFAULT_LISTEN
        );
    }
}
