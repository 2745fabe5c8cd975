//! Bringing the registry's handlers back at start-up, several at once, while the registry
//! already answers: listing works, deploys and deletes go through, and a message to a
//! handler not yet back is told to retry rather than that nothing is there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Registry;
use crate::address::{Address, Kind};
use crate::store::{RegistryFile, VersionRecord};

/// Handlers restored at once: each restore deserializes (or compiles) a component and runs
/// its `describe`, so a slow one no longer holds up the rest, while a large registry does
/// not start everything at once on a small machine.
pub const RESTORE_CONCURRENCY: usize = 4;

/// Handlers registered but not live yet, by name, with the address each will serve.
#[derive(Debug, Default)]
pub(super) struct Restoring(Mutex<HashMap<String, String>>);

impl Restoring {
    /// Every handler of `file` that has a live version to restore.
    pub(super) fn from_file(file: &RegistryFile) -> Self {
        let names = file
            .handlers
            .iter()
            .filter_map(|(name, record)| {
                let current = record.current()?;
                let address = match current.kind.as_str() {
                    "agent" => Address::agent_handler(name).to_string(),
                    _ => name.clone(),
                };
                Some((name.clone(), address))
            })
            .collect();
        Self(Mutex::new(names))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `name` as no longer waiting to be restored (it is live, failed, or gone).
    pub(super) fn done(&self, name: &str) {
        self.lock().remove(name);
    }
}

impl Registry {
    /// The handler that will serve `to` once restored, if it is still being restored.
    pub fn restoring(&self, to: &str) -> Option<String> {
        let serves_to = |serves: &str| match Address::parse(to) {
            Ok(Address::Agent {
                handler: Some(handler),
                ..
            }) => serves == Address::agent_handler(handler).to_string(),
            // The short form: any agent handler may turn out to serve it.
            Ok(Address::Agent { handler: None, .. }) => Address::kind_of(serves) == Kind::Agent,
            _ => serves == to,
        };
        self.restoring
            .lock()
            .iter()
            .find(|(_, serves)| serves_to(serves))
            .map(|(name, _)| name.clone())
    }

    /// How many handlers are still being restored.
    pub fn restoring_count(&self) -> usize {
        self.restoring.lock().len()
    }

    /// Brings every registered handler's live version back up, [`RESTORE_CONCURRENCY`] at
    /// a time, from cached artifacts where possible. A handler that cannot be restored is
    /// logged and left out; the returned list names them. Dropping the future stops the
    /// restores that have not finished.
    pub async fn restore(self: &Arc<Self>) -> Vec<String> {
        let file = self.file.lock().await.clone();
        let permits = Arc::new(Semaphore::new(RESTORE_CONCURRENCY));
        let mut tasks = JoinSet::new();
        for (name, record) in file.handlers {
            let Some(current) = record.current().cloned() else {
                continue;
            };
            let (registry, permits) = (self.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let outcome = registry.restore_one(&name, &current).await;
                registry.restoring.done(&name);
                (name, outcome)
            });
        }
        let mut failed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(error))) => {
                    tracing::error!(handler = %name, %error, "could not restore handler");
                    failed.push(name);
                }
                Err(error) => tracing::error!(%error, "a restore task failed"),
            }
        }
        failed.sort();
        failed
    }

    /// Prepares `record` without holding the registry, then makes it live unless an
    /// operator changed the handler meanwhile (a deploy, rollback or delete wins).
    async fn restore_one(
        &self,
        name: &str,
        record: &VersionRecord,
    ) -> Result<(), super::RegistryError> {
        let _pin = self.files.pin(&record.module);
        let version = self.prepare(record, None).await?;
        let file = self.file.lock().await;
        let still_current = file
            .handlers
            .get(name)
            .is_some_and(|h| h.current == record.version);
        if still_current && !self.host.handlers().iter().any(|h| h.name == name) {
            self.host.install(name, version)?;
        } else {
            tracing::info!(handler = %name, "changed while restoring; keeping the change");
        }
        drop(file);
        self.host.router().transport_ready().await;
        Ok(())
    }
}
