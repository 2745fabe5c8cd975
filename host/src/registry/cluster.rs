//! The registry of a host in a cluster (`../shared/CLUSTER.md`): the cluster's registry
//! (NATS Key-Value, one record per handler) is the truth, and this host's registry file a
//! copy of what it installed.
//!
//! - A deploy, rollback or delete on any host is checked and compiled there, its module kept
//!   in the cluster's modules, and its record written with the revision it was read at, so
//!   two hosts changing one handler at once cannot both win (the loser retries a deploy with
//!   the next number, and refuses a rollback or delete as changed). The file lock is held
//!   from the read to the local install, so this host's own watch finds the record already
//!   installed.
//! - Every host watches the registry from its start: a record that differs from its copy is
//!   checked (a handler's name, limits within what this host allows, the module's SHA-256
//!   computed here) and installed, a hot swap if the handler runs; a deleted one is removed.
//!   A host that joins, or was down, catches up before it says it is ready.
//!
//! A record that fails a check is refused here and logged; the other hosts decide for
//! themselves.

use std::sync::Arc;

use futures_util::StreamExt;

use super::{Registry, RegistryError};
use crate::host::check_name;
use crate::nats::{Nats, SharedError, Watched};
use crate::store::{DataDir, HandlerRecord, RegistryFile, VersionRecord};

impl From<SharedError> for RegistryError {
    fn from(error: SharedError) -> Self {
        Self::Cluster(error.to_string())
    }
}

/// How many times a deploy numbers its version again after another host's won.
const DEPLOY_TRIES: usize = 5;

/// Whether `name` is a SHA-256 as this host writes one: 64 lower-case hex digits.
fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Registry {
    /// The cluster this registry shares, once joined.
    pub(super) fn cluster(&self) -> Option<&Arc<Nats>> {
        self.cluster.get()
    }

    /// Makes this registry the cluster's: from now on deploys, rollbacks and deletes go
    /// through the cluster's registry. Done before the admin API answers, so no change is
    /// made on this host alone.
    pub fn attach(&self, nats: Arc<Nats>) {
        let _ = self.cluster.set(nats);
    }

    /// Joins the cluster's registry (once [`Registry::attach`]ed): installs every record that
    /// differs from this host's copy, and goes on watching for changes until the host stops.
    /// Resolves once every record written before it was called has been seen.
    pub async fn join(self: &Arc<Self>) -> Result<(), RegistryError> {
        let Some(nats) = self.cluster().cloned() else {
            return Ok(());
        };
        let mut changes = Box::pin(nats.watch_records().await?);
        let (caught_up, mut told) = tokio::sync::watch::channel(false);
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(seen) = changes.next().await {
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                match seen {
                    Watched::CaughtUp => {
                        caught_up.send_replace(true);
                    }
                    Watched::Record(change) => {
                        let name = change.name.clone();
                        if let Err(error) = registry.apply(&name, change.record).await {
                            tracing::warn!(handler = %name, %error, "not installing a handler of the cluster's registry");
                        }
                    }
                }
            }
            tracing::error!(
                "stopped watching the cluster's registry: changes made on other hosts are not installed here until it restarts"
            );
        });
        told.wait_for(|caught| *caught).await.map_err(|_| {
            RegistryError::Cluster("the watch of the registry ended before it caught up".into())
        })?;
        Ok(())
    }

    /// Installs `record` of handler `name` from the cluster's registry (or removes the
    /// handler, for none), unless this host's copy is the same already.
    async fn apply(&self, name: &str, record: Option<bytes::Bytes>) -> Result<(), RegistryError> {
        check_name(name)?;
        let Some(bytes) = record else {
            let mut file = self.file.lock().await;
            if file.handlers.contains_key(name) {
                self.remove_locally(&mut file, name)?;
                tracing::info!(handler = %name, "removed: deleted in the cluster");
            }
            return Ok(());
        };
        let record: HandlerRecord = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::Cluster(format!("an unreadable record: {e}")))?;
        // A module's name is a path under the data directory: only a SHA-256 may be one.
        if let Some(bad) = record.versions.iter().find(|v| !is_sha256(&v.module)) {
            return Err(RegistryError::Cluster(format!(
                "version {} names a module that is no SHA-256",
                bad.version
            )));
        }
        let here = self.cluster().map(|nats| nats.host_id());
        if let (Some(hosts), Some(here)) = (&record.hosts, here)
            && !hosts.contains(here)
        {
            let mut file = self.file.lock().await;
            if file.handlers.contains_key(name) {
                self.remove_locally(&mut file, name)?;
                tracing::info!(handler = %name, "removed: placed on other hosts");
            }
            return Ok(());
        }
        let current = record
            .current()
            .cloned()
            .ok_or_else(|| RegistryError::Cluster("a record with no live version".into()))?;
        if let Some(beyond) = current.limits().beyond_bounds() {
            return Err(RegistryError::Cluster(format!(
                "its limits are beyond this host's: {beyond}"
            )));
        }
        if self.file.lock().await.handlers.get(name) == Some(&record) {
            return Ok(());
        }
        let _pin = self.files.pin(&current.module);
        self.fetch_module(&current.module).await?;
        let version = self.prepare(&current, None).await?;
        let mut file = self.file.lock().await;
        if file.handlers.get(name) == Some(&record) {
            return Ok(());
        }
        let mut next = file.clone();
        next.handlers.insert(name.to_owned(), record);
        self.commit_locally(&mut file, next, name, version)?;
        tracing::info!(handler = %name, version = current.version, "installed from the cluster");
        Ok(())
    }

    /// Makes sure module `hash` is in this host's data directory, from the cluster's modules
    /// if need be, its SHA-256 checked here.
    pub(super) async fn fetch_module(&self, hash: &str) -> Result<(), RegistryError> {
        if self.data.module(hash).is_ok() {
            return Ok(());
        }
        // Alone, a missing module is the data directory's to report.
        let Some(nats) = self.cluster() else {
            return Ok(());
        };
        let max = self.host.runtime().config().max_component_bytes;
        let bytes = nats.module(hash, max).await?;
        if DataDir::hash(&bytes) != hash {
            return Err(RegistryError::Cluster(format!(
                "module {hash} from the cluster does not hash to its name"
            )));
        }
        self.host.runtime().check(&bytes)?;
        self.data.put_module(&bytes)?;
        Ok(())
    }

    /// Writes `next` as this host's copy and installs `version` of `name` from it.
    pub(super) fn commit_locally(
        &self,
        file: &mut RegistryFile,
        next: RegistryFile,
        name: &str,
        version: Arc<crate::runtime::Version>,
    ) -> Result<bool, RegistryError> {
        self.data.save_registry(&next)?;
        match self.host.install(name, version) {
            Ok(deployed) => {
                *file = next;
                self.files.committed(file);
                self.restoring.done(name);
                Ok(deployed.swapped)
            }
            Err(error) => {
                self.data.save_registry(file)?;
                Err(error.into())
            }
        }
    }

    /// Forgets `name` in this host's copy and stops it.
    pub(super) fn remove_locally(
        &self,
        file: &mut RegistryFile,
        name: &str,
    ) -> Result<(), RegistryError> {
        let mut next = file.clone();
        next.handlers.remove(name);
        self.data.save_registry(&next)?;
        *file = next;
        self.files.committed(file);
        self.restoring.done(name);
        self.host.remove(name);
        Ok(())
    }

    /// Reads `name`'s record from the cluster's registry, with its revision.
    pub(super) async fn shared_record(
        nats: &Nats,
        name: &str,
    ) -> Result<(HandlerRecord, Option<u64>), RegistryError> {
        match nats.record(name).await? {
            Some((bytes, revision)) => {
                let record = serde_json::from_slice(&bytes).map_err(|e| {
                    RegistryError::Cluster(format!("an unreadable record of {name}: {e}"))
                })?;
                Ok((record, Some(revision)))
            }
            None => Ok((HandlerRecord::default(), None)),
        }
    }

    /// Writes `record` of `name` to the cluster's registry if it is still at `read`.
    pub(super) async fn share(
        nats: &Nats,
        name: &str,
        record: &HandlerRecord,
        read: Option<u64>,
    ) -> Result<(), SharedError> {
        let bytes =
            serde_json::to_vec(record).map_err(|e| SharedError::Unreachable(e.to_string()))?;
        nats.put_record(name, bytes.into(), read).await.map(drop)
    }

    /// Records a new version of `name` in the cluster's registry, numbered after the
    /// cluster's last (again, after another host's deploy won): the record written.
    pub(super) async fn share_version(
        nats: &Nats,
        name: &str,
        hosts: Option<std::collections::BTreeSet<String>>,
        version: impl Fn(u64) -> VersionRecord,
    ) -> Result<HandlerRecord, RegistryError> {
        let mut tries = 0;
        loop {
            let (mut record, read) = Self::shared_record(nats, name).await?;
            let number = record.versions.last().map_or(1, |v| v.version + 1);
            record.versions.push(version(number));
            record.current = number;
            record.hosts = hosts.clone();
            match Self::share(nats, name, &record, read).await {
                Ok(()) => return Ok(record),
                Err(SharedError::Changed) if tries < DEPLOY_TRIES => tries += 1,
                Err(SharedError::Changed) => return Err(RegistryError::Changed(name.to_owned())),
                Err(error) => return Err(error.into()),
            }
        }
    }
}
