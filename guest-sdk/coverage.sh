#!/usr/bin/env bash
# Measure the line coverage of the guest SDK's native unit tests (`cargo test -p switchboard-sdk`).
#
# Not part of the test command or CI: run it by hand when you want the numbers.
#   bash guest-sdk/coverage.sh            # per-file report for guest-sdk/src
#   bash guest-sdk/coverage.sh --show     # also print every uncovered line (llvm-cov show)
#
# Needs the rustup component `llvm-tools-preview` (llvm-profdata and llvm-cov of the same
# LLVM version as rustc: the profraw format must match; Debian's `llvm` package is usually
# older). Builds into its own target dir ($CARGO_TARGET_DIR/coverage, default
# target/coverage) so it never mixes instrumented and normal artifacts. The generated wit
# bindings, other crates and the standard library are left out of the report.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
sysroot="$(rustc --print sysroot)"
bin="$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
if [[ ! -x "$bin/llvm-profdata" ]]; then
    echo "llvm-profdata not found in $bin: run 'rustup component add llvm-tools-preview'" >&2
    exit 1
fi

target="${CARGO_TARGET_DIR:-$root/target}/coverage"
profiles="$target/profraw"
rm -rf "$profiles"
mkdir -p "$profiles"

# Build and run the unit tests instrumented; each test process writes its own profile.
export CARGO_TARGET_DIR="$target"
export RUSTFLAGS="-C instrument-coverage"
export LLVM_PROFILE_FILE="$profiles/sdk-%p-%m.profraw"
cargo test -p switchboard-sdk --lib --tests

# The test binary that just ran (the newest switchboard_sdk-* executable).
binary="$(ls -t "$target"/debug/deps/switchboard_sdk-* | grep -v '\.d$' | head -n 1)"

"$bin/llvm-profdata" merge -sparse "$profiles"/*.profraw -o "$target/sdk.profdata"

ignore='(/\.cargo/registry/|/rustc/|/library/|/host/|/tests/)'
"$bin/llvm-cov" report "$binary" --instr-profile="$target/sdk.profdata" \
    --ignore-filename-regex="$ignore" --show-region-summary=false --show-branch-summary=false \
    --show-instantiation-summary=false
if [[ "${1:-}" == "--show" ]]; then
    "$bin/llvm-cov" show "$binary" --instr-profile="$target/sdk.profdata" \
        --ignore-filename-regex="$ignore" -use-color=false \
        | grep -E '^ *[0-9]+\| +0\||^/' || true
fi
