//! The public keys client JWTs may be signed with, by key id (`kid`), from a TOML file:
//!
//! ```toml
//! [[key]]
//! kid = "2026-12"
//! alg = "RS256"            # or "ES256"
//! pem = "keys/2026-12.pem" # a PEM public key: a path (relative to this file) or the PEM text
//! ```
//!
//! Keys rotate by adding the next key to the file before tokens signed with it appear, and
//! removing the old one once its tokens have expired. A token naming a `kid` the gateway does
//! not know makes it read the file again (at most every [`RELOAD_EVERY`]), so no restart is
//! needed; a file that no longer reads keeps the keys read before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use thiserror::Error;

/// Shortest time between two readings of the keys file for unknown key ids.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// The keys file could not be used.
#[derive(Debug, Error)]
pub enum KeysError {
    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the keys file {path} is not TOML with [[key]] tables of kid, alg and pem: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("key `{kid}` in {path}: `alg` must be RS256 or ES256, not `{alg}`")]
    Algorithm {
        path: String,
        kid: String,
        alg: String,
    },
    #[error("key `{kid}` in {path} is not a PEM {alg} public key: {reason}")]
    Key {
        path: String,
        kid: String,
        alg: String,
        reason: String,
    },
    #[error("key id `{kid}` appears twice in {path}")]
    Repeated { path: String, kid: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    key: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    kid: String,
    alg: String,
    pem: String,
}

/// Keys by key id.
pub(crate) type Keys = HashMap<String, (Algorithm, DecodingKey)>;

/// The keys of a keys file, read again when a token names a key id it lacks.
pub struct KeySet {
    path: PathBuf,
    keys: RwLock<Keys>,
    read_at: Mutex<Instant>,
}

impl KeySet {
    /// Reads the keys file at `path`.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        Ok(Self {
            keys: RwLock::new(read(path)?),
            path: path.to_owned(),
            read_at: Mutex::new(Instant::now()),
        })
    }

    /// The algorithm and key of `kid`.
    pub fn key(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        if let Some(found) = self.known(kid) {
            return Some(found);
        }
        {
            let mut read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
            if read_at.elapsed() < RELOAD_EVERY {
                return None;
            }
            *read_at = Instant::now();
        }
        match read(&self.path) {
            Ok(keys) => *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys,
            Err(error) => tracing::warn!(%error, "kept the client keys read before"),
        }
        self.known(kid)
    }

    fn known(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(kid).cloned()
    }
}

fn read(path: &Path) -> Result<Keys, KeysError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: shown.clone(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, &shown, |pem| {
        let at = dir.join(pem);
        std::fs::read(&at).map_err(|source| KeysError::Read {
            path: at.display().to_string(),
            source,
        })
    })
}

/// The keys of a keys file's `text` (`shown` names the file in errors); `read_pem` reads a
/// `pem` that is a path rather than the PEM text. Apart from the reading so that the fuzz
/// target `keys_file` parses exactly what a file holds without touching the file system.
pub(crate) fn parse(
    text: &str,
    shown: &str,
    read_pem: impl Fn(&str) -> Result<Vec<u8>, KeysError>,
) -> Result<Keys, KeysError> {
    let shown = shown.to_owned();
    let file: File = toml::from_str(text).map_err(|source| KeysError::Parse {
        path: shown.clone(),
        source,
    })?;
    let mut keys = Keys::new();
    for entry in file.key {
        let algorithm = match entry.alg.as_str() {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            _ => {
                return Err(KeysError::Algorithm {
                    path: shown,
                    kid: entry.kid,
                    alg: entry.alg,
                });
            }
        };
        let pem = if entry.pem.trim_start().starts_with("-----BEGIN") {
            entry.pem.clone().into_bytes()
        } else {
            read_pem(&entry.pem)?
        };
        let key = match algorithm {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            _ => DecodingKey::from_ec_pem(&pem),
        }
        .map_err(|e| KeysError::Key {
            path: shown.clone(),
            kid: entry.kid.clone(),
            alg: entry.alg.clone(),
            reason: e.to_string(),
        })?;
        if keys.insert(entry.kid.clone(), (algorithm, key)).is_some() {
            return Err(KeysError::Repeated {
                path: shown,
                kid: entry.kid,
            });
        }
    }
    Ok(keys)
}
