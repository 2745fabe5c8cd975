//! Keeping the data directory tidy: a module and its compiled artifacts stay on disk exactly
//! as long as some version in the registry refers to them, or a deploy in progress needs
//! them. A refused upload leaves nothing behind; a delete takes its files along unless
//! another handler runs the same module; at start-up, whatever no version refers to (and any
//! temp file a crash left mid-write) is removed.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use crate::store::{DataDir, RegistryFile};

/// Which modules are referenced or in use by a deploy in progress.
pub(super) struct Files {
    data: DataDir,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Modules some version in the registry file refers to.
    referenced: HashSet<String>,
    /// Modules a deploy, rollback or restore in progress holds, with how many hold each.
    pins: HashMap<String, usize>,
}

/// Holds a module's files while a deploy works with them; when the last pin goes and no
/// version refers to the module (the deploy failed or was abandoned), its files are removed.
pub(super) struct Pin<'a> {
    files: &'a Files,
    hash: String,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut state = self.files.lock();
        let last = match state.pins.get_mut(&self.hash) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => {
                state.pins.remove(&self.hash);
                true
            }
        };
        if last && !state.referenced.contains(&self.hash) {
            tracing::debug!(module = %self.hash, "removing the files of a module no version uses");
            self.files.data.forget_module(&self.hash);
        }
    }
}

fn referenced(file: &RegistryFile) -> HashSet<String> {
    file.handlers
        .values()
        .flat_map(|h| h.versions.iter().map(|v| v.module.clone()))
        .collect()
}

impl Files {
    /// Tracks the files of `data`, whose registry currently reads `file`.
    pub(super) fn new(data: DataDir, file: &RegistryFile) -> Self {
        Self {
            data,
            state: Mutex::new(State {
                referenced: referenced(file),
                pins: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps module `hash`'s files until the pin drops.
    pub(super) fn pin(&self, hash: &str) -> Pin<'_> {
        *self.lock().pins.entry(hash.to_owned()).or_default() += 1;
        Pin {
            files: self,
            hash: hash.to_owned(),
        }
    }

    /// Records what the registry file refers to after a change, and removes the files of
    /// modules it no longer refers to and no deploy holds. Call with the registry locked.
    pub(super) fn committed(&self, file: &RegistryFile) {
        let now = referenced(file);
        let mut state = self.lock();
        let dropped: Vec<String> = state
            .referenced
            .difference(&now)
            .filter(|hash| !state.pins.contains_key(*hash))
            .cloned()
            .collect();
        state.referenced = now;
        for hash in dropped {
            tracing::debug!(module = %hash, "removing the files of a module no version uses");
            self.data.forget_module(&hash);
        }
    }

    /// At start-up: removes temp files left mid-write, modules no version refers to, and
    /// artifacts of such modules or of another engine build than `engine`.
    pub(super) fn sweep(&self, engine: &str) {
        let temp = self.data.remove_temp_files();
        let state = self.lock();
        let mut modules = 0;
        for hash in self.data.modules() {
            if !state.referenced.contains(&hash) && !state.pins.contains_key(&hash) {
                self.data.forget_module(&hash);
                modules += 1;
            }
        }
        let mut artifacts = 0;
        for (hash, built_by) in self.data.artifacts() {
            let used = state.referenced.contains(&hash) || state.pins.contains_key(&hash);
            if !used || built_by != engine {
                self.data.forget_artifact(&hash, &built_by);
                artifacts += 1;
            }
        }
        if temp + modules + artifacts > 0 {
            tracing::info!(
                temp_files = temp,
                modules,
                artifacts,
                "removed files no version uses from the data directory"
            );
        }
    }
}
