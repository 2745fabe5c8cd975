#!/usr/bin/env bash
# The static checks, run by the README's test command before `cargo test --workspace`:
# clippy with warnings denied, rustfmt, rustdoc with warnings denied, and cargo-deny's
# licenses, bans and sources checks against deny.toml (not advisories: its database cannot be
# fetched here, see deny.toml). Installs clippy and rustfmt (rustup components) and cargo-deny
# (from crates.io, several minutes to build) only when missing. Runs every check and fails if
# any failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "checks: $*" >&2; }

if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
    log "installing clippy and rustfmt"
    rustup component add clippy rustfmt
fi
if ! cargo deny --version >/dev/null 2>&1; then
    log "installing cargo-deny"
    cargo install cargo-deny --locked
fi

failed=()
check() {
    local name="$1"
    shift
    log "$name: $*"
    if ! "$@"; then
        failed+=("$name")
    fi
}

check fmt cargo fmt --all --check
check deny cargo deny check --hide-inclusion-graph licenses bans sources
check clippy cargo clippy --workspace --all-targets -- -D warnings
check doc env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

if ((${#failed[@]})); then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "all passed"
