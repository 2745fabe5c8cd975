//! What every host of the cluster shares beside signals (`../shared/CLUSTER.md`): the
//! registry of handlers, a Key-Value bucket `sb-<cluster>-registry` holding each handler's
//! record (its versions, limits and live version) under its name, and the uploaded modules,
//! an Object Store `sb-<cluster>-modules` holding each by its SHA-256.
//!
//! A record is written with the revision it was read at (compare-and-set), so two hosts
//! changing one handler at once cannot both win; every host watches the bucket, from its
//! start, and installs what changes. Bytes are all this module knows of a record: the
//! registry reads and checks them. Both are bounded: a record at [`MAX_RECORD_BYTES`], the
//! registry and the modules in bytes (a write past them is refused, nothing dropped).

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncReadExt;

use super::{Nats, NatsError};
use crate::address::{subject_name, subject_token};

/// Largest handler record in the registry (a record keeps every version: about 1 KiB each).
pub const MAX_RECORD_BYTES: i32 = 1 << 20;
/// Bytes the registry bucket may hold, its history included.
const REGISTRY_BYTES: i64 = 64 << 20;
/// Records kept per handler: the live one and the one before, for a late reader.
const REGISTRY_HISTORY: i64 = 2;
/// Bytes the modules may take together.
const MODULE_BYTES: i64 = 4 << 30;
/// Longest a write or read of the registry or a module is waited for.
const WAIT: Duration = Duration::from_secs(30);

/// The cluster's registry and modules.
pub(super) struct Shared {
    registry: kv::Store,
    modules: object_store::ObjectStore,
}

/// What a host watching the registry sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    /// A handler's record as it stands or as it changed.
    Record(RecordChange),
    /// Every record written before the watch began has been seen (said again after later
    /// changes; once is what counts).
    CaughtUp,
}

/// A handler's record, or its deletion, as every host sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordChange {
    /// The handler's name.
    pub name: String,
    /// Its record, or none once it was deleted.
    pub record: Option<Bytes>,
    /// The registry's revision of this change.
    pub revision: u64,
}

/// Why a write to the cluster's registry was not made.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The record changed since it was read (another host wrote it): nothing was written.
    #[error("the handler's record changed in the cluster's registry meanwhile")]
    Changed,
    #[error("the cluster's registry or modules: {0}")]
    Unreachable(String),
    #[error("module {0} is not in the cluster's modules")]
    NoModule(String),
}

impl Shared {
    /// Opens (creating if need be) the registry bucket and the modules of `cluster`.
    pub(super) async fn open(
        jetstream: &jetstream::Context,
        cluster: &str,
        replicas: usize,
    ) -> Result<Self, NatsError> {
        let failed = |what: &str, error: String| {
            NatsError::JetStream(format!("opening the cluster's {what}: {error}"))
        };
        let registry = jetstream.create_or_update_key_value(kv::Config {
            bucket: format!("sb-{cluster}-registry"),
            description: "Switchboard: the handlers of the cluster".into(),
            max_value_size: MAX_RECORD_BYTES,
            history: REGISTRY_HISTORY,
            max_bytes: REGISTRY_BYTES,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        });
        let registry = tokio::time::timeout(WAIT, registry)
            .await
            .map_err(|_| failed("registry", "timed out".into()))?
            .map_err(|e| failed("registry", e.to_string()))?;
        let name = format!("sb-{cluster}-modules");
        let modules = match jetstream.get_object_store(&name).await {
            Ok(modules) => modules,
            Err(_) => jetstream
                .create_object_store(object_store::Config {
                    bucket: name,
                    description: Some("Switchboard: uploaded modules by SHA-256".into()),
                    max_bytes: MODULE_BYTES,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| failed("modules", e.to_string()))?,
        };
        Ok(Self { registry, modules })
    }
}

fn unreachable(error: impl std::fmt::Display) -> SharedError {
    SharedError::Unreachable(error.to_string())
}

impl Nats {
    /// Keeps module `hash` in the cluster's modules (once: a module kept already stays).
    pub async fn put_module(&self, hash: &str, bytes: &[u8]) -> Result<(), SharedError> {
        let modules = &self.shared.modules;
        if modules.info(hash).await.is_ok() {
            return Ok(());
        }
        let mut reader = bytes;
        tokio::time::timeout(WAIT, modules.put(hash, &mut reader))
            .await
            .map_err(|_| unreachable("timed out keeping a module"))?
            .map_err(unreachable)?;
        Ok(())
    }

    /// Module `hash` from the cluster's modules, if it is at most `max` bytes (a bigger one
    /// is not read). The caller checks the bytes hash to `hash`.
    pub async fn module(&self, hash: &str, max: usize) -> Result<Vec<u8>, SharedError> {
        use object_store::GetErrorKind;
        let read = async {
            let object = match self.shared.modules.get(hash).await {
                Ok(object) => object,
                Err(error) if error.kind() == GetErrorKind::NotFound => {
                    return Err(SharedError::NoModule(hash.to_owned()));
                }
                Err(error) => return Err(unreachable(error)),
            };
            if object.info().size > max {
                return Err(unreachable(format!(
                    "module {hash} has {} bytes, more than the {max} this host takes",
                    object.info().size
                )));
            }
            let mut bytes = Vec::with_capacity(object.info().size);
            let mut limited = object.take(max as u64 + 1);
            limited.read_to_end(&mut bytes).await.map_err(unreachable)?;
            Ok(bytes)
        };
        tokio::time::timeout(WAIT, read)
            .await
            .map_err(|_| unreachable("timed out reading a module"))?
    }

    /// A handler's record and its revision; none if it has none (or it was deleted).
    pub async fn record(&self, name: &str) -> Result<Option<(Bytes, u64)>, SharedError> {
        let entry = tokio::time::timeout(WAIT, self.shared.registry.entry(subject_token(name)))
            .await
            .map_err(|_| unreachable("timed out reading the registry"))?
            .map_err(unreachable)?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| (entry.value, entry.revision)))
    }

    /// Writes a handler's record if it is still at `read` (the revision it was read at, none
    /// if it had none): its new revision, or [`SharedError::Changed`].
    pub async fn put_record(
        &self,
        name: &str,
        record: Bytes,
        read: Option<u64>,
    ) -> Result<u64, SharedError> {
        let key = subject_token(name);
        let registry = &self.shared.registry;
        let written = async {
            match read {
                Some(revision) => {
                    registry
                        .update(&key, record, revision)
                        .await
                        .map_err(|e| match e.kind() {
                            kv::UpdateErrorKind::WrongLastRevision => SharedError::Changed,
                            _ => unreachable(e),
                        })
                }
                None => registry
                    .create(&key, record)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => SharedError::Changed,
                        _ => unreachable(e),
                    }),
            }
        };
        tokio::time::timeout(WAIT, written)
            .await
            .map_err(|_| unreachable("timed out writing the registry"))?
    }

    /// Deletes a handler's record if it is still at revision `read`.
    pub async fn delete_record(&self, name: &str, read: u64) -> Result<(), SharedError> {
        let key = subject_token(name);
        let deleted = self
            .shared
            .registry
            .delete_expect_revision(&key, Some(read));
        match tokio::time::timeout(WAIT, deleted).await {
            Ok(Ok(())) => Ok(()),
            // A refused expectation and a failure look alike here: read it again to tell.
            Ok(Err(error)) => match self.record(name).await? {
                Some((_, now)) if now != read => Err(SharedError::Changed),
                None => Err(SharedError::Changed),
                Some(_) => Err(unreachable(error)),
            },
            Err(_) => Err(unreachable("timed out writing the registry")),
        }
    }

    /// Every handler's record as it stands, then every change, as long as the stream is
    /// read (it resumes by itself after NATS comes back). A key that is no handler's name is
    /// skipped.
    pub async fn watch_records(
        &self,
    ) -> Result<impl Stream<Item = Watched> + Send + 'static, SharedError> {
        let watch = tokio::time::timeout(WAIT, self.shared.registry.watch_with_history(">"))
            .await
            .map_err(|_| unreachable("timed out watching the registry"))?
            .map_err(unreachable)?;
        // An empty bucket has nothing to catch up on: said at once.
        let empty = tokio::time::timeout(WAIT, self.shared.registry.status())
            .await
            .map_err(|_| unreachable("timed out reading the registry's state"))?
            .map_err(unreachable)?
            .values()
            == 0;
        let start = futures_util::stream::iter(empty.then_some(Watched::CaughtUp));
        let changes = watch.flat_map(|entry| {
            let mut seen = Vec::with_capacity(2);
            match entry {
                Ok(entry) => {
                    if let Some(name) = subject_name(&entry.key) {
                        seen.push(Watched::Record(RecordChange {
                            name,
                            record: (entry.operation == kv::Operation::Put).then_some(entry.value),
                            revision: entry.revision,
                        }));
                    }
                    if entry.seen_current {
                        seen.push(Watched::CaughtUp);
                    }
                }
                Err(error) => tracing::debug!(%error, "watching the cluster's registry"),
            }
            futures_util::stream::iter(seen)
        });
        Ok(start.chain(changes))
    }
}
