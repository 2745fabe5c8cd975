//! Tests of keyed state: reads, scopes, optimistic concurrency, group commit, quotas, purge
//! and persistence. Timer tests are in `timer_tests`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::db::Db;

pub(super) fn open(db: Arc<Db>, limits: StateLimits) -> Arc<StateStore> {
    StateStore::open(db, limits, Arc::new(Metrics::default())).unwrap()
}

pub(super) fn memory() -> Arc<StateStore> {
    open(Db::in_memory().unwrap(), StateLimits::default())
}

/// A batch of `writes` in `scope`, reading nothing.
pub(super) fn writes(scope: &Scope, writes: &[(&str, Option<&[u8]>)]) -> Batch {
    Batch {
        scope: scope.clone(),
        writes: writes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(<[u8]>::to_vec)))
            .collect(),
        ..Batch::default()
    }
}

pub(super) fn value(store: &StateStore, scope: &Scope, key: &str) -> Option<Vec<u8>> {
    store.get(scope, key).unwrap().value
}

/// A fresh store file in its own directory, removed with it on drop.
pub(super) struct TempFile {
    dir: PathBuf,
    /// The store file's path.
    pub(super) path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh store file, see [`TempFile`].
pub(super) fn temp_path() -> TempFile {
    let dir = std::env::temp_dir().join(format!("sb-state-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(crate::db::FILE_NAME);
    TempFile { dir, path }
}

/// Opens the store file at `path` again, waiting (bounded) until the last holder let go.
pub(super) fn reopen(path: &std::path::Path) -> Arc<Db> {
    (0..500)
        .find_map(|_| {
            Db::open(path).ok().or_else(|| {
                std::thread::sleep(Duration::from_millis(10));
                None
            })
        })
        .expect("the store reopens")
}

/// Waits (bounded) until `ready` holds.
pub(super) fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting until {what}");
}

/// Proves a committed write is read back with a version, an overwrite gets a newer version,
/// and a delete leaves the key absent with version 0.
#[tokio::test]
async fn reads_see_committed_writes_and_deletes() {
    let store = memory();
    let scope = Scope::handler("svc");
    assert_eq!(
        store.get(&scope, "k").unwrap(),
        Versioned {
            value: None,
            version: 0
        }
    );
    let first = store
        .commit(writes(&scope, &[("k", Some(b"1"))]))
        .await
        .unwrap();
    let read = store.get(&scope, "k").unwrap();
    assert_eq!(
        read,
        Versioned {
            value: Some(b"1".to_vec()),
            version: first.version
        }
    );
    assert!(first.version > 0);
    let second = store
        .commit(writes(&scope, &[("k", Some(b"2"))]))
        .await
        .unwrap();
    assert!(second.version > first.version);
    assert_eq!(store.get(&scope, "k").unwrap().version, second.version);
    store.commit(writes(&scope, &[("k", None)])).await.unwrap();
    assert_eq!(
        store.get(&scope, "k").unwrap(),
        Versioned {
            value: None,
            version: 0
        }
    );
    assert!(store.keys(&scope, "").unwrap().is_empty());
}

/// Proves `keys` lists exactly the keys with the prefix, in order, and `entries` everything
/// of the scope with values.
#[tokio::test]
async fn keys_by_prefix_in_order() {
    let store = memory();
    let scope = Scope::agent("h", "a");
    let batch = writes(
        &scope,
        &[
            ("user/2", Some(b"b")),
            ("user/1", Some(b"a")),
            ("users", Some(b"c")),
            ("other", Some(b"")),
        ],
    );
    store.commit(batch).await.unwrap();
    assert_eq!(store.keys(&scope, "user/").unwrap(), ["user/1", "user/2"]);
    assert_eq!(
        store.keys(&scope, "user").unwrap(),
        ["user/1", "user/2", "users"]
    );
    assert_eq!(
        store.keys(&scope, "").unwrap(),
        ["other", "user/1", "user/2", "users"]
    );
    assert!(store.keys(&scope, "zzz").unwrap().is_empty());
    let entries = store.entries(&scope).unwrap();
    assert_eq!(
        entries[0],
        ("other".to_owned(), Vec::new()),
        "an empty value is a value"
    );
    assert_eq!(entries.len(), 4);
}

/// Proves scopes are isolated: a handler's own scope, its agents, other handlers, and hostile
/// ids with NUL bytes or look-alike prefixes never see each other's keys, and listing agents
/// and purging a handler stay within it.
#[tokio::test]
async fn scopes_are_isolated_even_for_hostile_ids() {
    let store = memory();
    let alice = Scope::agent("h", "alice");
    store
        .commit(writes(&alice, &[("secret", Some(b"a"))]))
        .await
        .unwrap();
    let hostile = [
        Scope::handler("h"),
        Scope::agent("h", ""),
        Scope::agent("h", "alice\0"),
        Scope::agent("h", "alic"),
        Scope::agent("h", "alice\0secret"),
        Scope::agent("h\0alice", "alice"),
        Scope::handler("h\0alice"),
        Scope::agent("h2", "alice"),
        Scope::agent("", "h\0alice"),
    ];
    for scope in &hostile {
        store
            .commit(writes(scope, &[("mine", Some(b"x"))]))
            .await
            .unwrap();
    }
    for scope in &hostile {
        assert_eq!(
            value(&store, scope, "secret"),
            None,
            "{scope:?} read alice's key"
        );
        assert_eq!(store.keys(scope, "").unwrap(), ["mine"], "{scope:?}");
    }
    assert_eq!(store.keys(&alice, "").unwrap(), ["secret"]);
    assert_eq!(
        store.agents("h", None, 100).unwrap(),
        ["", "alic", "alice", "alice\0", "alice\0secret"]
    );
    store.purge("h").unwrap();
    assert_eq!(value(&store, &alice, "secret"), None);
    assert!(store.agents("h", None, 100).unwrap().is_empty());
    for scope in hostile.iter().filter(|s| s.handler != "h") {
        assert_eq!(
            value(&store, scope, "mine").as_deref(),
            Some(&b"x"[..]),
            "{scope:?} was purged"
        );
    }
}

/// Proves `agents` pages through a handler's agents in order, and that an agent whose last
/// key is deleted is no longer listed.
#[tokio::test]
async fn agents_are_listed_in_pages() {
    let store = memory();
    for agent in ["c", "a", "b", "d"] {
        store
            .commit(writes(&Scope::agent("h", agent), &[("k", Some(b"1"))]))
            .await
            .unwrap();
    }
    store
        .commit(writes(&Scope::agent("g", "z"), &[("k", Some(b"1"))]))
        .await
        .unwrap();
    assert_eq!(store.agents("h", None, 2).unwrap(), ["a", "b"]);
    assert_eq!(store.agents("h", Some("b"), 10).unwrap(), ["c", "d"]);
    store
        .commit(writes(&Scope::agent("h", "c"), &[("k", None)]))
        .await
        .unwrap();
    assert_eq!(store.agents("h", Some("b"), 10).unwrap(), ["d"]);
}

/// Proves optimistic concurrency: two turns that read one version of a counter both try to
/// write; the first commits, the second gets a conflict, and re-running it keeps both
/// increments (none lost).
#[tokio::test]
async fn a_conflicting_read_modify_write_is_refused() {
    let store = memory();
    let scope = Scope::handler("svc");
    let increment = |seen: &Versioned| {
        let n = seen.value.as_ref().map_or(0, |v| v[0]) + 1;
        let mut batch = writes(&scope, &[("n", Some(&[n]))]);
        batch.reads.insert("n".into(), seen.version);
        batch
    };
    let seen = store.get(&scope, "n").unwrap();
    let (a, b) = (increment(&seen), increment(&seen));
    store.commit(a).await.unwrap();
    let error = store.commit(b).await.unwrap_err();
    assert!(
        matches!(&error, CommitError::Conflict { key } if key == "n"),
        "{error}"
    );
    assert_eq!(error.code(), 409);
    assert_eq!(
        value(&store, &scope, "n"),
        Some(vec![1]),
        "the refused turn wrote nothing"
    );
    let again = increment(&store.get(&scope, "n").unwrap());
    store.commit(again).await.unwrap();
    assert_eq!(
        value(&store, &scope, "n"),
        Some(vec![2]),
        "no increment lost"
    );
}

/// Proves a key deleted and created again gets a version the earlier reader never saw, so
/// its stale read is refused (no ABA), and a key read as absent conflicts once created.
#[tokio::test]
async fn a_recreated_key_is_not_mistaken_for_the_one_read() {
    let store = memory();
    let scope = Scope::handler("svc");
    store
        .commit(writes(&scope, &[("k", Some(b"same"))]))
        .await
        .unwrap();
    let seen = store.get(&scope, "k").unwrap().version;
    store.commit(writes(&scope, &[("k", None)])).await.unwrap();
    store
        .commit(writes(&scope, &[("k", Some(b"same"))]))
        .await
        .unwrap();
    let mut stale = writes(&scope, &[("other", Some(b"x"))]);
    stale.reads.insert("k".into(), seen);
    assert!(matches!(
        store.commit(stale).await,
        Err(CommitError::Conflict { .. })
    ));
    let mut absent = writes(&scope, &[("other", Some(b"x"))]);
    absent.reads.insert("new".into(), 0);
    store
        .commit(writes(&scope, &[("new", Some(b"1"))]))
        .await
        .unwrap();
    assert!(matches!(
        store.commit(absent).await,
        Err(CommitError::Conflict { .. })
    ));
    assert_eq!(value(&store, &scope, "other"), None);
}

/// Proves purge removes a handler's keys, usage and timers durably, and nothing else.
#[tokio::test]
async fn purge_removes_one_handler() {
    let file = temp_path();
    let path = &file.path;
    let store = open(Db::open(path).unwrap(), StateLimits::default());
    let mut batch = writes(&Scope::agent("h", "a"), &[("k", Some(b"1"))]);
    batch.schedule.push(Timer {
        id: Timer::new_id(),
        handler: "h".into(),
        scope: Scope::agent("h", "a"),
        due_ms: 5,
        signal: b"s".to_vec(),
    });
    store.commit(batch).await.unwrap();
    store
        .commit(writes(&Scope::handler("h"), &[("k", Some(b"1"))]))
        .await
        .unwrap();
    store
        .commit(writes(&Scope::handler("other"), &[("k", Some(b"2"))]))
        .await
        .unwrap();
    store.purge("h").unwrap();
    drop(store);
    let store = open(reopen(path), StateLimits::default());
    assert_eq!(value(&store, &Scope::agent("h", "a"), "k"), None);
    assert_eq!(value(&store, &Scope::handler("h"), "k"), None);
    assert_eq!(store.usage("h").unwrap(), 0);
    assert_eq!(store.timers_of("h").unwrap(), 0);
    assert!(store.due(u64::MAX, 10).unwrap().is_empty());
    assert_eq!(
        value(&store, &Scope::handler("other"), "k"),
        Some(b"2".to_vec())
    );
    assert_eq!(store.usage("other").unwrap(), 2);
}

/// Proves values, versions, usage and timers survive closing and reopening the store file,
/// and versions keep increasing after it.
#[tokio::test]
async fn state_survives_reopening_the_file() {
    let file = temp_path();
    let path = &file.path;
    let scope = Scope::agent("counter", "alice");
    let timer = Timer {
        id: Timer::new_id(),
        handler: "counter".into(),
        scope: scope.clone(),
        due_ms: 1_000,
        signal: b"ping".to_vec(),
    };
    let written = {
        let store = open(Db::open(path).unwrap(), StateLimits::default());
        let mut batch = writes(&scope, &[("n", Some(b"41")), ("gone", None)]);
        batch.schedule.push(timer.clone());
        store.commit(batch).await.unwrap()
    };
    let store = open(reopen(path), StateLimits::default());
    assert_eq!(
        store.get(&scope, "n").unwrap(),
        Versioned {
            value: Some(b"41".to_vec()),
            version: written.version
        }
    );
    assert_eq!(store.usage("counter").unwrap(), 3);
    assert_eq!(store.agents("counter", None, 10).unwrap(), ["alice"]);
    assert_eq!(store.due(2_000, 10).unwrap(), [timer]);
    let next = store
        .commit(writes(&scope, &[("n", Some(b"42"))]))
        .await
        .unwrap();
    assert!(next.version > written.version);
}
