//! Deployed handlers and their versions, persisted to the data directory.
//!
//! Every change (deploy, rollback, delete) is checked before anything moves, written to the
//! registry file, and only then made live. A version is compiled once: its artifact is cached
//! under the module's hash and the engine's compatibility key, so a restart deserializes
//! instead of compiling. [`Registry::open`] reads the registry file; [`Registry::restore`]
//! then brings the handlers back, several at once, while the registry already answers.

mod restore;

pub use restore::RESTORE_CONCURRENCY;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use thiserror::Error;
use tokio::sync::Mutex;

use crate::config::Limits;
use crate::host::{DeployError, Host, check_name};
use crate::runtime::{Component, HandlerKind, LoadError, Runtime, Version, VersionSpec};
use crate::store::{DataDir, HandlerRecord, RegistryFile, StoreError, VersionRecord};

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
}

impl From<LoadError> for RegistryError {
    fn from(e: LoadError) -> Self {
        Self::Deploy(e.into())
    }
}

/// What an operator chooses when deploying, beside the component.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeployOptions {
    /// Overrides the kind the handler describes itself as.
    pub kind: Option<HandlerKind>,
    /// Limits; the host's defaults if not given.
    pub limits: Option<Limits>,
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
    pub message_types: Vec<String>,
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
    file: Mutex<RegistryFile>,
    compilations: AtomicU64,
    restoring: restore::Restoring,
}

fn kind_name(kind: HandlerKind) -> &'static str {
    match kind {
        HandlerKind::Service => "service",
        HandlerKind::Agent => "agent",
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Registry {
    /// Opens the registry in `data`. Its handlers are registered but not running until
    /// [`Registry::restore`] brings them back; until then [`Registry::restoring`] names them.
    pub fn open(host: Host, data: DataDir) -> Result<Self, StoreError> {
        let file = data.load_registry()?;
        Ok(Self {
            host,
            data,
            restoring: restore::Restoring::from_file(&file),
            file: Mutex::new(file),
            compilations: AtomicU64::new(0),
        })
    }

    /// The host this registry deploys to.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Components compiled from source since start (cached artifacts are not counted).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// A component for module `hash`: the cached artifact if this engine can use it, else
    /// compiled from `bytes` (or the stored module) and cached.
    async fn component(
        &self,
        hash: &str,
        bytes: Option<Vec<u8>>,
    ) -> Result<Component, RegistryError> {
        let runtime = self.host.runtime();
        let engine = runtime.engine_key();
        // Reading and deserializing an artifact blocks: keep it off the threads that serve
        // requests, which answer while handlers are being restored.
        let cached = {
            let (runtime, data) = (runtime.clone(), self.data.clone());
            let (hash, engine) = (hash.to_owned(), engine.clone());
            tokio::task::spawn_blocking(move || {
                data.artifact(&hash, &engine)
                    .map(|artifact| runtime.from_artifact(&artifact))
            })
            .await
            .map_err(|e| LoadError::Interrupted(e.to_string()))?
        };
        match cached {
            Some(Ok(component)) => return Ok(component),
            Some(Err(error)) => {
                tracing::warn!(module = hash, %error, "dropping an unusable cached artifact");
                self.data.forget_artifact(hash, &engine);
            }
            None => {}
        }
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => self.data.module(hash)?,
        };
        let component = runtime.compile(bytes).await?;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        self.data
            .put_artifact(hash, &engine, &Runtime::artifact(&component)?)?;
        Ok(component)
    }

    async fn prepare(
        &self,
        record: &VersionRecord,
        bytes: Option<Vec<u8>>,
    ) -> Result<Arc<Version>, RegistryError> {
        let component = self.component(&record.module, bytes).await?;
        let spec = VersionSpec {
            number: Some(record.version),
            limits: record.limits(),
            kind: Some(match record.kind.as_str() {
                "agent" => HandlerKind::Agent,
                _ => HandlerKind::Service,
            }),
        };
        Ok(self.host.runtime().prepare(&component, spec).await?)
    }

    /// Uploads a new version of `name`: checked, persisted, then live (a hot swap if the
    /// handler was running).
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Vec<u8>,
        options: DeployOptions,
    ) -> Result<DeployView, RegistryError> {
        check_name(name)?;
        let hash = DataDir::hash(&bytes);
        let component = self.component_checked(&hash, bytes).await?;
        let mut file = self.file.lock().await;
        let number = file
            .handlers
            .get(name)
            .and_then(|h| h.versions.last())
            .map_or(1, |v| v.version + 1);
        let limits = options
            .limits
            .unwrap_or(self.host.runtime().config().default_limits);
        let spec = VersionSpec {
            number: Some(number),
            limits,
            kind: options.kind,
        };
        let version = self.host.runtime().prepare(&component, spec).await?;
        let record = VersionRecord {
            version: number,
            module: hash,
            kind: kind_name(version.description.kind).to_owned(),
            memory_bytes: limits.memory_bytes,
            cpu_ms: limits.cpu_time.as_millis() as u64,
            deadline_ms: limits.deadline.as_millis() as u64,
            concurrency: limits.concurrency,
            mailbox: limits.mailbox,
            deployed_at: now_millis(),
        };
        let mut next = file.clone();
        let entry = next.handlers.entry(name.to_owned()).or_default();
        entry.versions.push(record);
        entry.current = number;
        self.data.save_registry(&next)?;
        match self.host.install(name, version) {
            Ok(deployed) => {
                *file = next;
                self.restoring.done(name);
                drop(file);
                let handler = self.view(name).await?;
                Ok(DeployView {
                    handler,
                    swapped: deployed.swapped,
                })
            }
            Err(error) => {
                self.data.save_registry(&file)?;
                Err(error.into())
            }
        }
    }

    /// Stores the module and compiles it, before anything else changes.
    async fn component_checked(
        &self,
        hash: &str,
        bytes: Vec<u8>,
    ) -> Result<Component, RegistryError> {
        // Compile first: a module that does not compile is never stored.
        let component = self.component(hash, Some(bytes.clone())).await?;
        self.data.put_module(&bytes)?;
        Ok(component)
    }

    /// Makes the version before the live one live again.
    pub async fn rollback(&self, name: &str) -> Result<HandlerView, RegistryError> {
        let mut file = self.file.lock().await;
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
        let version = self.prepare(&previous, None).await?;
        let mut next = file.clone();
        if let Some(entry) = next.handlers.get_mut(name) {
            entry.current = previous.version;
        }
        self.data.save_registry(&next)?;
        if let Err(error) = self.host.install(name, version) {
            self.data.save_registry(&file)?;
            return Err(error.into());
        }
        *file = next;
        self.restoring.done(name);
        drop(file);
        self.view(name).await
    }

    /// Stops and forgets a handler; its modules stay on disk, shared by content hash.
    pub async fn delete(&self, name: &str) -> Result<(), RegistryError> {
        let mut file = self.file.lock().await;
        if !file.handlers.contains_key(name) {
            return Err(RegistryError::NotFound(name.to_owned()));
        }
        let mut next = file.clone();
        next.handlers.remove(name);
        self.data.save_registry(&next)?;
        *file = next;
        self.restoring.done(name);
        self.host.remove(name);
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
            message_types: info.description.message_types,
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
