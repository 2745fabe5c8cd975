//! Deploying a version: checked, compiled (or shared, or mapped from the artifact cache) and
//! described without holding the registry, so listing and other changes go on meanwhile;
//! only the final check-and-commit takes the registry's lock.

use std::sync::Arc;

use super::{DeployOptions, DeployView, Registry, RegistryError, kind_name};
use crate::runtime::{Code, HandlerKind, LoadError, Version, VersionSpec};
use crate::store::{DataDir, RegistryFile, VersionRecord};

/// The number the next version of `name` gets in `file`.
fn next_number(file: &RegistryFile, name: &str) -> u64 {
    file.handlers
        .get(name)
        .and_then(|h| h.versions.last())
        .map_or(1, |v| v.version + 1)
}

impl Registry {
    /// The compiled code of module `hash`: the live copy if a version already runs it, else
    /// the cached artifact if this engine can use it, else compiled from `bytes` (or the
    /// stored module) and cached. The caller pins `hash` so its files stay meanwhile.
    pub(super) async fn code(
        &self,
        hash: &str,
        bytes: Option<Vec<u8>>,
    ) -> Result<Arc<Code>, RegistryError> {
        let runtime = self.host.runtime();
        if let Some(bytes) = &bytes {
            // Stored first, even when the code is already live: a version of a handler
            // being deleted may still hold the code while its module file is removed, and a
            // restart needs the module. The caller's pin removes it again if the version is
            // not accepted.
            self.data.put_module(bytes)?;
        }
        if let Some(code) = runtime.shared(hash) {
            return Ok(code);
        }
        let engine = runtime.engine_key();
        let path = self.data.artifact_path(hash, &engine);
        // Mapping an artifact blocks: keep it off the threads that serve requests, which
        // answer while handlers are being restored.
        let map = |runtime: Arc<crate::runtime::Runtime>, path: std::path::PathBuf| async move {
            tokio::task::spawn_blocking(move || runtime.from_artifact_file(&path))
                .await
                .map_err(|e| LoadError::Interrupted(e.to_string()))?
        };
        if path.exists() {
            match map(runtime.clone(), path.clone()).await {
                Ok(component) => return Ok(runtime.share(hash, component)),
                Err(error) => {
                    tracing::warn!(module = hash, %error, "dropping an unusable cached artifact");
                    self.data.forget_artifact(hash, &engine);
                }
            }
        }
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => self.data.module(hash)?,
        };
        let artifact = runtime.precompile(bytes).await?;
        self.data.put_artifact(hash, &engine, &artifact)?;
        drop(artifact);
        let component = map(runtime.clone(), path).await?;
        Ok(runtime.share(hash, component))
    }

    /// Loads a recorded version (described again only if its record does not say what it
    /// described itself as), without holding the registry.
    pub(super) async fn prepare(
        &self,
        record: &VersionRecord,
        bytes: Option<Vec<u8>>,
    ) -> Result<Arc<Version>, RegistryError> {
        let code = self.code(&record.module, bytes).await?;
        let spec = VersionSpec {
            number: Some(record.version),
            limits: record.limits(),
            kind: Some(match record.kind.as_str() {
                "agent" => HandlerKind::Agent,
                _ => HandlerKind::Service,
            }),
            // What it said at deploy time; a record that has none (or one unreadable) is
            // described again.
            description: record
                .description
                .clone()
                .and_then(|d| serde_json::from_value(d).ok()),
        };
        Ok(self.host.runtime().prepare(&code, spec).await?)
    }

    /// Uploads a new version of `name`: checked, persisted, then live (a hot swap if the
    /// handler was running). An upload refused at any step leaves the data directory as it
    /// was. The registry is locked only to number, record and install the version.
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Vec<u8>,
        options: DeployOptions,
    ) -> Result<DeployView, RegistryError> {
        // check_room checks the name too, and refuses a new handler the pool has no slot for.
        self.host.check_room(name)?;
        if let Some(hosts) = &options.hosts {
            let here = self.cluster().map(|nats| nats.host_id().to_owned());
            match here {
                None => {
                    return Err(RegistryError::Placement(
                        "`hosts` places a handler on hosts of a cluster; this host runs alone"
                            .into(),
                    ));
                }
                Some(here) if !hosts.contains(&here) => {
                    return Err(RegistryError::Placement(format!(
                        "upload it on one of the hosts it runs on ({}); this is host {here}",
                        hosts.iter().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
                Some(_) => {}
            }
        }
        let runtime = self.host.runtime();
        // Refused here, an upload never reaches the compiler and nothing is written.
        runtime.check(&bytes)?;
        let hash = DataDir::hash(&bytes);
        let _pin = self.files.pin(&hash);
        let shared = self.cluster().map(|nats| (nats.clone(), bytes.clone()));
        let code = self.code(&hash, Some(bytes)).await?;
        // In a cluster, a module that compiled is kept where every host finds it, before its
        // record names it.
        if let Some((nats, bytes)) = shared {
            nats.put_module(&hash, &bytes).await?;
        }
        let limits = options.limits.unwrap_or(runtime.config().default_limits);
        let provisional = next_number(&*self.file.lock().await, name);
        let spec = VersionSpec {
            number: Some(provisional),
            limits,
            kind: options.kind,
            description: None,
        };
        let mut version = runtime.prepare(&code, spec).await?;

        let deployed_at = self.host.runtime().config().clock.now_millis();
        let record = |number| VersionRecord {
            version: number,
            module: hash.clone(),
            kind: kind_name(version.description.kind).to_owned(),
            memory_bytes: limits.memory_bytes,
            cpu_ms: limits.cpu_time.as_millis() as u64,
            deadline_ms: limits.deadline.as_millis() as u64,
            concurrency: version.limits.concurrency,
            mailbox: limits.mailbox,
            deployed_at,
            description: serde_json::to_value(&version.description).ok(),
        };
        let mut file = self.file.lock().await;
        // Another deploy of this handler may have committed meanwhile (on any host of the
        // cluster): number it afresh.
        let entry = match self.cluster() {
            Some(nats) => Self::share_version(nats, name, options.hosts.clone(), record).await?,
            None => {
                let mut entry = file.handlers.get(name).cloned().unwrap_or_default();
                let number = next_number(&file, name);
                entry.versions.push(record(number));
                entry.current = number;
                entry.hosts = None;
                entry
            }
        };
        if version.id != entry.current {
            version = version.renumbered(entry.current);
        }
        let mut next = file.clone();
        next.handlers.insert(name.to_owned(), entry);
        let swapped = self.commit_locally(&mut file, next, name, version)?;
        drop(file);
        // Served once the other hosts can reach it.
        self.host.router().transport_ready().await;
        let handler = self.view(name).await?;
        Ok(DeployView { handler, swapped })
    }
}
