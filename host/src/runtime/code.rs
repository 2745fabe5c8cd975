//! Compiled code shared by module hash: every version running the same module holds one
//! [`Code`], so ten handlers running one module (or a swap back to a module still live
//! elsewhere) cost one copy of its machine code. The cache holds weak references: the code
//! goes away with the last version that uses it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use wasmtime::component::Component;

/// A compiled component and the hash of the module it was compiled from.
pub struct Code {
    hash: String,
    component: Component,
}

impl Code {
    /// The SHA-256 of the module this was compiled from.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The compiled component.
    pub fn component(&self) -> &Component {
        &self.component
    }
}

/// Live compiled code by module hash.
#[derive(Default)]
pub(super) struct CodeCache(Mutex<HashMap<String, Weak<Code>>>);

impl CodeCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Code>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live code of module `hash`, if any version still holds it.
    pub(super) fn get(&self, hash: &str) -> Option<Arc<Code>> {
        self.lock().get(hash).and_then(Weak::upgrade)
    }

    /// Shares `component` as the code of `hash`; if another caller got there first, theirs
    /// is kept and returned, so one copy stays live.
    pub(super) fn insert(&self, hash: &str, component: Component) -> Arc<Code> {
        let mut map = self.lock();
        map.retain(|_, code| code.strong_count() > 0);
        if let Some(live) = map.get(hash).and_then(Weak::upgrade) {
            return live;
        }
        let code = Arc::new(Code {
            hash: hash.to_owned(),
            component,
        });
        map.insert(hash.to_owned(), Arc::downgrade(&code));
        code
    }

    /// How many holders the live code of `hash` has (0 when none is live).
    pub(super) fn holders(&self, hash: &str) -> usize {
        self.lock().get(hash).map_or(0, Weak::strong_count)
    }
}
