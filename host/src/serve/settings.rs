//! `switchboard serve`'s settings: flags and environment over the config file over the
//! defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::cluster_args::ClusterArgs;
use super::gateway_args::GatewayArgs;
use super::host_limits::HostLimitArgs;
use super::signal_limits::SignalLimitArgs;
use super::{DEFAULT_DATA_DIR, DEFAULT_LISTEN, DRAIN_TIMEOUT};
use crate::HostConfig;
use crate::config::{MAX_INSTANCES_LIMIT, bytes_arg, duration_arg, parse_bytes, parse_duration};
use crate::listener::{self as connections, ConnectionLimits};
use crate::nats::NatsOptions;

/// Flags of `switchboard serve`; each is also read from the environment, then from the
/// config file.
#[derive(Debug, Default, clap::Args)]
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
    /// TOML file with `listen`, `data_dir`, `admin_token`, `drain_timeout`,
    /// `max_connections`, `header_read_timeout`, `idle_timeout`, `mailbox_bytes`,
    /// `queue_budget_bytes`, `max_instances`, `instance_idle`, `max_compilations`,
    /// `compile_timeout`, a `[signals]` table of the per-signal limits and a `[limits]` table
    /// of the other host-wide limits below (sizes there in bytes); flags and
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
    /// Most connections to the admin API open at once. At the cap, the connection idle or
    /// sending its request headers the longest is closed to make room; busy ones never are
    /// [default: 10000, lowered to fit the open-file limit].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Longest time a client may take to send a request's headers, from their first byte,
    /// like 500ms or 10s [default: 10s].
    #[arg(long, env = "SWITCHBOARD_HEADER_READ_TIMEOUT", value_parser = duration_arg)]
    pub header_read_timeout: Option<Duration>,
    /// Longest time a connection stays open with no request on it [default: 60s].
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", value_parser = duration_arg)]
    pub idle_timeout: Option<Duration>,
    /// Bytes of signals one handler's mailbox may hold, like 8MiB; past it, senders get 503
    /// [default: 64MiB].
    #[arg(long, env = "SWITCHBOARD_MAILBOX_BYTES", value_parser = bytes_arg)]
    pub mailbox_bytes: Option<usize>,
    /// Bytes of signals all mailboxes may hold together, like 1GiB; past it, senders get
    /// 503 [default: 1GiB].
    #[arg(long, env = "SWITCHBOARD_QUEUE_BUDGET_BYTES", value_parser = bytes_arg)]
    pub queue_budget_bytes: Option<usize>,
    /// Most handler instances alive at once, across all handlers (up to 10000). Every
    /// deployed handler is guaranteed one, so it also caps the handlers deployed
    /// [default: 1000].
    #[arg(long, env = "SWITCHBOARD_MAX_INSTANCES", value_parser = max_instances_arg)]
    pub max_instances: Option<u32>,
    /// How long a warm instance waits for a signal before it is released, like 500ms, 30s
    /// or 2m [default: 30s].
    #[arg(long, env = "SWITCHBOARD_INSTANCE_IDLE", value_parser = duration_arg)]
    pub instance_idle: Option<Duration>,
    /// Uploads compiled at once; more wait for a slot [default: 2].
    #[arg(long, env = "SWITCHBOARD_MAX_COMPILATIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_compilations: Option<u32>,
    /// Longest one upload may take to compile, like 30s or 2m [default: 120s].
    #[arg(long, env = "SWITCHBOARD_COMPILE_TIMEOUT", value_parser = duration_arg)]
    pub compile_timeout: Option<Duration>,
    #[command(flatten)]
    pub signals: SignalLimitArgs,
    #[command(flatten)]
    pub limits: HostLimitArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Parses `--max-instances`: 1 to [`MAX_INSTANCES_LIMIT`].
fn max_instances_arg(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .and_then(|n| check_max_instances(n).ok())
        .ok_or_else(|| {
            format!("`{text}` is not a number of instances from 1 to {MAX_INSTANCES_LIMIT}")
        })
}

/// Checks a pool size from the config file: 1 to [`MAX_INSTANCES_LIMIT`].
fn check_max_instances(n: u32) -> anyhow::Result<u32> {
    if !(1..=MAX_INSTANCES_LIMIT).contains(&n) {
        bail!("`max_instances = {n}` in the config file is not from 1 to {MAX_INSTANCES_LIMIT}");
    }
    Ok(n)
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
    max_connections: Option<u32>,
    /// A duration like `10s`.
    header_read_timeout: Option<String>,
    /// A duration like `60s`.
    idle_timeout: Option<String>,
    mailbox_bytes: Option<Size>,
    queue_budget_bytes: Option<Size>,
    max_instances: Option<u32>,
    /// A duration like `30s`.
    instance_idle: Option<String>,
    max_compilations: Option<u32>,
    /// A duration like `120s`.
    compile_timeout: Option<String>,
    /// The per-signal limits.
    #[serde(default)]
    signals: SignalLimitArgs,
    /// The other host-wide limits.
    #[serde(default)]
    limits: HostLimitArgs,
    /// How the host joins a cluster.
    #[serde(default)]
    cluster: ClusterArgs,
}

/// A size in the config file: a number of bytes, or text like `64MiB`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(usize),
    Text(String),
}

/// The flag's value, else the config file's `key` (a duration), else `default`.
fn duration_setting(
    flag: Option<Duration>,
    file: Option<String>,
    key: &str,
    default: Duration,
) -> anyhow::Result<Duration> {
    match (flag, file) {
        (Some(flag), _) => Ok(flag),
        (None, Some(text)) => parse_duration(&text).with_context(|| {
            format!(
                "`{key} = \"{text}\"` in the config file is not a duration like 500ms, 30s or 2m"
            )
        }),
        (None, None) => Ok(default),
    }
}

/// The flag's value, else the config file's `key` (a size), else `default`.
fn size_setting(
    flag: Option<usize>,
    file: Option<Size>,
    key: &str,
    default: usize,
) -> anyhow::Result<usize> {
    match (flag, file) {
        (Some(flag), _) => Ok(flag),
        (None, Some(Size::Bytes(n))) => Ok(n),
        (None, Some(Size::Text(text))) => parse_bytes(&text).with_context(|| {
            format!(
                "`{key} = \"{text}\"` in the config file is not a size like 1048576, 64MiB or 1GiB"
            )
        }),
        (None, None) => Ok(default),
    }
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
    /// The client gateway, if it is on.
    pub gateway: Option<crate::serve::GatewayOptions>,
    /// Longest wait at shutdown for signals in flight.
    pub drain_timeout: Duration,
    /// The admin API's connection limits.
    pub connections: ConnectionLimits,
    /// The host's settings.
    pub host_config: HostConfig,
    /// How the host joins a cluster over NATS; `None` runs it alone.
    pub cluster: Option<NatsOptions>,
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
        self.merge(file)
    }

    /// The settings a config file's `text` gives with no flags or environment: what the fuzz
    /// target `config_file` reads.
    pub(crate) fn from_file_text(text: &str) -> anyhow::Result<Settings> {
        let file = toml::from_str::<FileConfig>(text).context("parsing the config file")?;
        Self::default().merge(file)
    }

    /// These flags over `file` over the defaults.
    fn merge(self, file: FileConfig) -> anyhow::Result<Settings> {
        let Some(admin_token) = self
            .admin_token
            .or(file.admin_token)
            .filter(|t| !t.is_empty())
        else {
            bail!(
                "an admin token is required: --admin-token, SWITCHBOARD_ADMIN_TOKEN, or admin_token in the config file"
            );
        };
        let drain_timeout = duration_setting(
            self.drain_timeout,
            file.drain_timeout,
            "drain_timeout",
            DRAIN_TIMEOUT,
        )?;
        let connections = ConnectionLimits {
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .map_or(connections::DEFAULT_MAX_CONNECTIONS, |n| n as usize),
            header_read_timeout: duration_setting(
                self.header_read_timeout,
                file.header_read_timeout,
                "header_read_timeout",
                connections::DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            idle_timeout: duration_setting(
                self.idle_timeout,
                file.idle_timeout,
                "idle_timeout",
                connections::DEFAULT_IDLE_TIMEOUT,
            )?,
            ..ConnectionLimits::default()
        };
        let defaults = HostConfig::default();
        let host_config = HostConfig {
            mailbox_bytes: size_setting(
                self.mailbox_bytes,
                file.mailbox_bytes,
                "mailbox_bytes",
                defaults.mailbox_bytes,
            )?,
            queue_budget_bytes: size_setting(
                self.queue_budget_bytes,
                file.queue_budget_bytes,
                "queue_budget_bytes",
                defaults.queue_budget_bytes,
            )?,
            ..defaults
        };
        let mut host = host_config;
        if let Some(max) = self.max_instances.or(file.max_instances) {
            host.max_instances = check_max_instances(max)?;
        }
        host.instance_idle = match (self.instance_idle, file.instance_idle) {
            (Some(flag), _) => flag,
            (None, Some(text)) => parse_duration(&text).with_context(|| {
                format!("`instance_idle = \"{text}\"` in the config file is not a duration like 500ms, 30s or 2m")
            })?,
            (None, None) => host.instance_idle,
        };
        if let Some(n) = self.max_compilations.or(file.max_compilations) {
            host.max_compilations = n.max(1) as usize;
        }
        host.compile_timeout = duration_setting(
            self.compile_timeout,
            file.compile_timeout,
            "compile_timeout",
            host.compile_timeout,
        )?;
        self.signals.or(file.signals).apply(&mut host);
        self.limits.or(file.limits).apply(&mut host);
        self.gateway.apply(&mut host);
        let cluster = self.cluster.or(file.cluster).options()?;
        let gateway = self.gateway.options()?;
        if cluster.is_some() && gateway.is_some() {
            bail!(
                "the client gateway does not run on a host that joined a cluster (--nats) until users are known cluster-wide: leave out --gateway-listen, or --nats"
            );
        }
        host.clustered = cluster.is_some();
        let host_config = host;
        Ok(Settings {
            drain_timeout,
            connections,
            host_config,
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
            gateway,
            cluster,
        })
    }
}

#[cfg(test)]
mod tests;
