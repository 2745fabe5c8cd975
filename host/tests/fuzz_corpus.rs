//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/`) through the check its fuzz
//! target runs (`switchboard::fuzzing`), as an ordinary test: no nightly, no
//! instrumentation. An input that once crashed a target stays in its corpus, so the crash
//! cannot come back unnoticed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use switchboard::fuzzing::{EMBEDDED_HOST, EmbeddedHost, TARGETS};

/// `fuzz/corpus/` in the repository.
fn corpora() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// The inputs of `target`'s corpus, sorted; it must have some.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = corpora().join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus of `{target}` is empty");
    files
}

/// Every corpus belongs to a fuzz target, and every fuzz target has a corpus.
#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    let mut targets: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    targets.push(EMBEDDED_HOST);
    targets.sort();
    let mut corpora: Vec<String> = std::fs::read_dir(corpora())
        .expect("fuzz/corpus")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    corpora.sort();
    assert_eq!(corpora, targets);
    for target in targets {
        inputs(target);
    }
}

/// Every input of the parsers' corpora passes its target's checks.
#[test]
fn parser_corpora_pass_their_checks() {
    let mut failed = Vec::new();
    for (target, check) in TARGETS {
        for path in inputs(target) {
            let data = std::fs::read(&path).expect("a corpus input");
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failed.push(path);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "inputs that fail their check: {failed:#?}"
    );
}

/// Every input of the embedded host's corpus passes its checks, against the real guests.
#[test]
fn embedded_host_corpus_passes_its_checks() {
    let host = EmbeddedHost::new(switchboard_tests::guests_dir());
    for path in inputs(EMBEDDED_HOST) {
        let data = std::fs::read(&path).expect("a corpus input");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| host.run(&data))) {
            eprintln!("{} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}
