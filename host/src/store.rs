//! The data directory: uploaded modules by content hash, compiled artifacts, and the
//! registry file, every write atomic (temp file, fsync, rename, fsync the directory).
//!
//! ```text
//! DIR/registry.json                       handlers, versions, current version, limits
//! DIR/modules/<sha256>.wasm               uploaded components, as uploaded
//! DIR/cache/<sha256>-<engine>.cwasm       compiled artifacts for this engine build
//! ```
//!
//! A kill -9 at any moment leaves either the old or the new file in place, never half of one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::Limits;

const REGISTRY_FILE: &str = "registry.json";
/// Version of the registry file's format.
const REGISTRY_FORMAT: u32 = 1;

/// Why the data directory could not be read or written.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the registry {path} is not valid")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the registry {path} has format {found}; this build reads format {REGISTRY_FORMAT}")]
    Format { path: PathBuf, found: u32 },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// One version of a handler as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Its number, counting from 1 per handler.
    pub version: u64,
    /// SHA-256 of the component, naming its file under `modules/`.
    pub module: String,
    /// `service` or `agent`, as deployed.
    pub kind: String,
    /// Limits it runs under.
    pub memory_bytes: u64,
    pub cpu_ms: u64,
    /// Wall-clock deadline per signal; registries written before it existed get the default.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    pub concurrency: u32,
    pub mailbox: u32,
    /// When it was uploaded, in ms since the Unix epoch.
    pub deployed_at: u64,
    /// What its `describe` said when it was deployed, as the runtime writes it; a restart
    /// uses it instead of running `describe` again (absent in registries written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<serde_json::Value>,
}

impl VersionRecord {
    /// The limits this version runs under.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes,
            cpu_time: std::time::Duration::from_millis(self.cpu_ms),
            deadline: std::time::Duration::from_millis(self.deadline_ms),
            concurrency: self.concurrency,
            mailbox: self.mailbox,
        }
    }
}

fn default_deadline_ms() -> u64 {
    crate::config::DEFAULT_DEADLINE.as_millis() as u64
}

/// One handler as persisted: every version kept, and which one is live.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerRecord {
    pub versions: Vec<VersionRecord>,
    /// The live version's number.
    pub current: u64,
    /// In a cluster, the ids of the hosts that run it (none: every host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<std::collections::BTreeSet<String>>,
}

impl HandlerRecord {
    /// The live version.
    pub fn current(&self) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version == self.current)
    }
}

/// The registry file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryFile {
    pub format: u32,
    pub handlers: BTreeMap<String, HandlerRecord>,
}

impl Default for RegistryFile {
    fn default() -> Self {
        Self {
            format: REGISTRY_FORMAT,
            handlers: BTreeMap::new(),
        }
    }
}

/// A data directory, created on open if missing.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens (creating if needed) the data directory at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for dir in [root.clone(), root.join("modules"), root.join("cache")] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        Ok(Self { root })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The content hash naming a module.
    pub fn hash(bytes: &[u8]) -> String {
        let digest = Sha256::digest(bytes);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn module_path(&self, hash: &str) -> PathBuf {
        self.root.join("modules").join(format!("{hash}.wasm"))
    }

    /// Where the compiled artifact of module `hash` for engine key `engine` is cached.
    pub fn artifact_path(&self, hash: &str, engine: &str) -> PathBuf {
        self.root
            .join("cache")
            .join(format!("{hash}-{engine}.cwasm"))
    }

    /// Stores a module under its content hash (once) and returns the hash.
    pub fn put_module(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let hash = Self::hash(bytes);
        let path = self.module_path(&hash);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok(hash)
    }

    /// Reads a stored module.
    pub fn module(&self, hash: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.module_path(hash);
        fs::read(&path).map_err(io_err("reading module", &path))
    }

    /// A compiled artifact for `hash` built by an engine with compatibility key `engine`.
    pub fn artifact(&self, hash: &str, engine: &str) -> Option<Vec<u8>> {
        fs::read(self.artifact_path(hash, engine)).ok()
    }

    /// Caches a compiled artifact.
    pub fn put_artifact(&self, hash: &str, engine: &str, bytes: &[u8]) -> Result<(), StoreError> {
        write_atomic(&self.artifact_path(hash, engine), bytes)
    }

    /// Drops a cached artifact (e.g. one this engine refused).
    pub fn forget_artifact(&self, hash: &str, engine: &str) {
        let _ = fs::remove_file(self.artifact_path(hash, engine));
    }

    /// Removes module `hash` and every artifact compiled from it, for any engine.
    pub fn forget_module(&self, hash: &str) {
        let _ = fs::remove_file(self.module_path(hash));
        for (artifact, engine) in self.artifacts() {
            if artifact == hash {
                self.forget_artifact(&artifact, &engine);
            }
        }
    }

    /// The hashes of the stored modules.
    pub fn modules(&self) -> Vec<String> {
        self.names("modules", ".wasm")
    }

    /// The cached artifacts, as (module hash, engine key).
    pub fn artifacts(&self) -> Vec<(String, String)> {
        self.names("cache", ".cwasm")
            .into_iter()
            .filter_map(|name| {
                let (hash, engine) = name.split_once('-')?;
                Some((hash.to_owned(), engine.to_owned()))
            })
            .collect()
    }

    /// Names in `dir` ending with `suffix`, without it; temp files are not listed.
    fn names(&self, dir: &str, suffix: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.root.join(dir)) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .filter_map(|name| name.strip_suffix(suffix).map(str::to_owned))
            .collect()
    }

    /// Removes the temp files a crash left behind mid-write; returns how many.
    pub fn remove_temp_files(&self) -> usize {
        let mut removed = 0;
        for dir in [
            self.root.clone(),
            self.root.join("modules"),
            self.root.join("cache"),
        ] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let is_temp = entry.file_name().to_string_lossy().ends_with(".tmp");
                if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
                    removed += usize::from(fs::remove_file(entry.path()).is_ok());
                }
            }
        }
        removed
    }

    /// Reads the registry; a missing file is an empty registry.
    pub fn load_registry(&self) -> Result<RegistryFile, StoreError> {
        let path = self.root.join(REGISTRY_FILE);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RegistryFile::default()),
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        let file: RegistryFile =
            serde_json::from_slice(&text).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if file.format != REGISTRY_FORMAT {
            return Err(StoreError::Format {
                path,
                found: file.format,
            });
        }
        Ok(file)
    }

    /// Replaces the registry atomically.
    pub fn save_registry(&self, registry: &RegistryFile) -> Result<(), StoreError> {
        let text = serde_json::to_vec_pretty(registry).expect("the registry always serializes");
        write_atomic(&self.root.join(REGISTRY_FILE), &text)
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{unique}.tmp", std::process::id()));
    let mut file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    file.write_all(bytes).map_err(io_err("writing", &tmp))?;
    file.sync_all().map_err(io_err("syncing", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("renaming into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("switchboard-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn record(version: u64) -> VersionRecord {
        VersionRecord {
            version,
            module: "ab".into(),
            kind: "service".into(),
            memory_bytes: 1 << 20,
            cpu_ms: 100,
            deadline_ms: 2_000,
            concurrency: 1,
            mailbox: 8,
            deployed_at: 1,
            description: None,
        }
    }

    #[test]
    fn registry_round_trips_and_starts_empty() {
        let data = DataDir::open(temp_dir("registry")).unwrap();
        assert_eq!(data.load_registry().unwrap(), RegistryFile::default());
        let mut registry = RegistryFile::default();
        registry.handlers.insert(
            "echo".into(),
            HandlerRecord {
                versions: vec![record(1), record(2)],
                current: 2,
                hosts: None,
            },
        );
        data.save_registry(&registry).unwrap();
        let loaded = data.load_registry().unwrap();
        assert_eq!(loaded, registry);
        assert_eq!(loaded.handlers["echo"].current().unwrap().version, 2);
        assert_eq!(record(1).limits().cpu_time.as_millis(), 100);
        assert_eq!(record(1).limits().deadline.as_millis(), 2_000);
    }

    /// Proves a version written before the per-signal deadline existed loads with the
    /// default deadline.
    #[test]
    fn a_record_without_a_deadline_gets_the_default() {
        let old = r#"{"version":1,"module":"ab","kind":"service","memory_bytes":1048576,
            "cpu_ms":100,"concurrency":1,"mailbox":8,"deployed_at":1}"#;
        let record: VersionRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.limits().deadline, crate::config::DEFAULT_DEADLINE);
    }

    #[test]
    fn modules_are_stored_once_by_content_hash() {
        let data = DataDir::open(temp_dir("modules")).unwrap();
        let hash = data.put_module(b"component").unwrap();
        assert_eq!(hash, DataDir::hash(b"component"));
        assert_eq!(hash.len(), 64);
        assert_eq!(data.put_module(b"component").unwrap(), hash);
        assert_eq!(data.module(&hash).unwrap(), b"component");
        assert!(data.artifact(&hash, "e1").is_none());
        data.put_artifact(&hash, "e1", b"compiled").unwrap();
        assert_eq!(data.artifact(&hash, "e1").unwrap(), b"compiled");
        assert!(
            data.artifact(&hash, "e2").is_none(),
            "artifacts are per engine"
        );
    }

    #[test]
    fn a_corrupt_or_foreign_registry_is_an_error_not_a_panic() {
        let dir = temp_dir("corrupt");
        let data = DataDir::open(&dir).unwrap();
        fs::write(dir.join(REGISTRY_FILE), b"{\"format\":1,\"hand").unwrap();
        assert!(matches!(
            data.load_registry(),
            Err(StoreError::Corrupt { .. })
        ));
        fs::write(dir.join(REGISTRY_FILE), b"{\"format\":9,\"handlers\":{}}").unwrap();
        assert!(matches!(
            data.load_registry(),
            Err(StoreError::Format { found: 9, .. })
        ));
    }

    #[test]
    fn concurrent_writes_of_one_file_all_succeed() {
        let data = DataDir::open(temp_dir("concurrent")).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        data.put_artifact("h", "e", b"compiled").unwrap();
                    }
                });
            }
        });
        assert_eq!(data.artifact("h", "e").unwrap(), b"compiled");
    }

    #[test]
    fn no_temp_files_are_left_behind() {
        let dir = temp_dir("tmp");
        let data = DataDir::open(&dir).unwrap();
        data.save_registry(&RegistryFile::default()).unwrap();
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
