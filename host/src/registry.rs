//! Deployed handlers and their versions, persisted to the data directory.
//!
//! Every change (deploy, rollback, delete) is checked before anything moves, written to the
//! registry file, and only then made live. A version is compiled once: its artifact is cached
//! under the module's hash and the engine's compatibility key, so a restart deserializes
//! instead of compiling. [`Registry::open`] reads the registry file; [`Registry::restore`]
//! then brings the handlers back, several at once, while the registry already answers.

mod cluster;
mod deploy;
mod restore;
mod tidy;

pub use restore::RESTORE_CONCURRENCY;

use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;
use tokio::sync::Mutex;

use crate::config::Limits;
use crate::host::{DeployError, Host};
use crate::runtime::{HandlerKind, LoadError};
use crate::store::{self, DataDir, HandlerRecord, RegistryFile, StoreError};

/// Why a registry operation failed. Nothing changed.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no handler is deployed as `{0}`")]
    NotFound(String),
    #[error("handler `{0}` has no earlier version to roll back to")]
    NoEarlierVersion(String),
    #[error("handler `{0}` changed while this operation was being prepared; nothing was done")]
    Changed(String),
    /// The cluster's registry could not be read or written, or held something this host
    /// refuses.
    #[error("the cluster's registry: {0}")]
    Cluster(String),
    /// The hosts asked for cannot be: on a host alone, or without the host deploying.
    #[error("{0}")]
    Placement(String),
}

impl From<LoadError> for RegistryError {
    fn from(e: LoadError) -> Self {
        Self::Deploy(e.into())
    }
}

/// What an operator chooses when deploying, beside the component.
#[derive(Clone, Debug, Default)]
pub struct DeployOptions {
    /// Overrides the kind the handler describes itself as.
    pub kind: Option<HandlerKind>,
    /// Limits; the host's defaults if not given.
    pub limits: Option<Limits>,
    /// In a cluster, the ids of the hosts that run it, this one among them; every host if
    /// not given.
    pub hosts: Option<std::collections::BTreeSet<String>>,
}

/// A version as listed.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct VersionView {
    pub version: u64,
    pub module: String,
    pub deployed_at: u64,
}

/// Limits as shown to operators.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct LimitsView {
    pub memory_bytes: u64,
    pub cpu_ms: u64,
    /// Wall-clock deadline per signal, in milliseconds.
    pub deadline_ms: u64,
    pub concurrency: u32,
    pub mailbox: u32,
}

/// What a handler declared about itself.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DescriptionView {
    /// `any`, `none`, or `only` the types in `message_types`.
    #[schema(value_type = String, pattern = "^(any|none|only)$")]
    pub accepts: &'static str,
    pub message_types: Vec<String>,
    /// Which of them clients (`user:<id>`) may send: `any`, `none`, or `only` the types in
    /// `client_message_types`.
    #[schema(value_type = String, pattern = "^(any|none|only)$")]
    pub clients: &'static str,
    pub client_message_types: Vec<String>,
    pub events: Vec<String>,
    pub data_changes: Vec<String>,
}

/// Live counters of a handler.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CountersView {
    pub handled: u64,
    pub failed: u64,
    pub traps: u64,
    pub queued: usize,
}

/// A handler as listed and inspected.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct HandlerView {
    pub name: String,
    pub address: String,
    #[schema(value_type = String, pattern = "^(service|agent)$")]
    pub kind: &'static str,
    /// The live version.
    pub version: u64,
    /// The live version's module hash.
    pub module: String,
    pub versions: Vec<VersionView>,
    pub description: DescriptionView,
    pub limits: LimitsView,
    pub counters: CountersView,
}

/// The result of a deploy.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeployView {
    #[serde(flatten)]
    pub handler: HandlerView,
    /// Whether it replaced a live version.
    pub swapped: bool,
}

/// The persistent registry of a host.
pub struct Registry {
    host: Host,
    data: DataDir,
    /// Held only to check and commit a change, never across compiling or `describe`.
    file: Mutex<RegistryFile>,
    files: tidy::Files,
    restoring: restore::Restoring,
    /// The cluster whose registry this host shares, once joined.
    cluster: std::sync::OnceLock<Arc<crate::nats::Nats>>,
}

fn kind_name(kind: HandlerKind) -> &'static str {
    match kind {
        HandlerKind::Service => "service",
        HandlerKind::Agent => "agent",
    }
}

impl Registry {
    /// Opens the registry in `data`, removing what a crash or an earlier run left behind
    /// (temp files, modules and artifacts no version refers to). Its handlers are registered
    /// but not running until [`Registry::restore`] brings them back; until then
    /// [`Registry::restoring`] names them.
    pub fn open(host: Host, data: DataDir) -> Result<Self, StoreError> {
        let file = data.load_registry()?;
        let files = tidy::Files::new(data.clone(), &file);
        files.sweep(&host.runtime().engine_key());
        Ok(Self {
            host,
            data,
            files,
            restoring: restore::Restoring::from_file(&file),
            file: Mutex::new(file),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// The host this registry deploys to.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Components handed to the compiler since start (shared code and cached artifacts are
    /// not counted).
    pub fn compilations(&self) -> u64 {
        self.host.runtime().compilations()
    }

    /// Makes the version before the live one live again. The registry is not held while
    /// that version is loaded and described; if the handler changed meanwhile, nothing is
    /// done ([`RegistryError::Changed`]).
    pub async fn rollback(&self, name: &str) -> Result<HandlerView, RegistryError> {
        let (previous, current) = {
            let file = self.file.lock().await;
            let record = file
                .handlers
                .get(name)
                .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            let previous = record
                .versions
                .iter()
                .filter(|v| v.version < record.current)
                .max_by_key(|v| v.version)
                .cloned()
                .ok_or_else(|| RegistryError::NoEarlierVersion(name.to_owned()))?;
            (previous, record.current)
        };
        let _pin = self.files.pin(&previous.module);
        self.fetch_module(&previous.module).await?;
        let version = self.prepare(&previous, None).await?;
        let mut file = self.file.lock().await;
        let unchanged = |record: &store::HandlerRecord| {
            record.current == current && record.versions.contains(&previous)
        };
        if !file.handlers.get(name).is_some_and(unchanged) {
            return Err(RegistryError::Changed(name.to_owned()));
        }
        let mut next = file.clone();
        if let Some(entry) = next.handlers.get_mut(name) {
            entry.current = previous.version;
        }
        // In a cluster, the rollback is the cluster's: made only if no host changed the
        // handler since this one installed what it runs.
        if let Some(nats) = self.cluster() {
            let (shared, read) = Self::shared_record(nats, name).await?;
            let Some(entry) = next.handlers.get(name).filter(|_| unchanged(&shared)) else {
                return Err(RegistryError::Changed(name.to_owned()));
            };
            match Self::share(nats, name, entry, read).await {
                Err(crate::nats::SharedError::Changed) => {
                    return Err(RegistryError::Changed(name.to_owned()));
                }
                other => other?,
            }
        }
        self.commit_locally(&mut file, next, name, version)?;
        drop(file);
        self.host.router().transport_ready().await;
        self.view(name).await
    }

    /// Stops and forgets a handler; its modules and artifacts go too unless another
    /// handler's version uses them.
    pub async fn delete(&self, name: &str) -> Result<(), RegistryError> {
        let mut file = self.file.lock().await;
        if let Some(nats) = self.cluster() {
            match nats.record(name).await? {
                Some((_, read)) => match nats.delete_record(name, read).await {
                    Err(crate::nats::SharedError::Changed) => {
                        return Err(RegistryError::Changed(name.to_owned()));
                    }
                    other => other?,
                },
                None if !file.handlers.contains_key(name) => {
                    return Err(RegistryError::NotFound(name.to_owned()));
                }
                None => {}
            }
        } else if !file.handlers.contains_key(name) {
            return Err(RegistryError::NotFound(name.to_owned()));
        }
        if file.handlers.contains_key(name) {
            self.remove_locally(&mut file, name)?;
        }
        Ok(())
    }

    /// Every handler, sorted by name.
    pub async fn list(&self) -> Vec<HandlerView> {
        let file = self.file.lock().await;
        self.host
            .handlers()
            .into_iter()
            .filter_map(|info| {
                file.handlers
                    .get(&info.name)
                    .map(|record| view(info, record))
            })
            .collect()
    }

    /// One handler.
    pub async fn view(&self, name: &str) -> Result<HandlerView, RegistryError> {
        let file = self.file.lock().await;
        let record = file.handlers.get(name);
        let info = self.host.handlers().into_iter().find(|h| h.name == name);
        match (info, record) {
            (Some(info), Some(record)) => Ok(view(info, record)),
            _ => Err(RegistryError::NotFound(name.to_owned())),
        }
    }
}

fn view(info: crate::host::HandlerInfo, record: &HandlerRecord) -> HandlerView {
    HandlerView {
        name: info.name,
        address: info.address,
        kind: kind_name(info.description.kind),
        version: info.version,
        module: record
            .current()
            .map(|v| v.module.clone())
            .unwrap_or_default(),
        versions: record
            .versions
            .iter()
            .map(|v| VersionView {
                version: v.version,
                module: v.module.clone(),
                deployed_at: v.deployed_at,
            })
            .collect(),
        description: DescriptionView {
            accepts: info.description.accepts.as_str(),
            message_types: info.description.accepts.types().to_vec(),
            clients: info.description.clients.as_str(),
            client_message_types: info.description.clients.types().to_vec(),
            events: info.description.events,
            data_changes: info.description.data_changes,
        },
        limits: LimitsView {
            memory_bytes: info.limits.memory_bytes,
            cpu_ms: info.limits.cpu_time.as_millis() as u64,
            deadline_ms: info.limits.deadline.as_millis() as u64,
            concurrency: info.limits.concurrency,
            mailbox: info.limits.mailbox,
        },
        counters: CountersView {
            handled: info.handled,
            failed: info.failed,
            traps: info.traps,
            queued: info.queued,
        },
    }
}
