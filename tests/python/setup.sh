#!/usr/bin/env bash
# Test set-up for the Python example handler, run once by the README's test command before
# `cargo test --workspace` (never by the test binaries, which would race each other).
#
# Idempotent and cheap when everything is there. Each step runs only when needed:
#   1. Debian's python3 / python3-venv, installed with apt-get only when missing;
#   2. a virtual environment at <target>/python-venv;
#   3. componentize-py at the pinned version inside it;
#   4. examples/python/greeter built into <target>/python/greeter.wasm when its sources or
#      wit/ are newer than the component.
# <target> is $CARGO_TARGET_DIR if set, else ./target, as for cargo.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
venv="$target/python-venv"
out_dir="$target/python"

log() { echo "python set-up: $*" >&2; }

. "$(dirname "${BASH_SOURCE[0]}")/../as_root.sh"

# True when `$1` can create a virtual environment with pip in it (Debian's python3 needs
# python3-venv for ensurepip).
can_make_venv() {
    command -v "$1" >/dev/null 2>&1 && "$1" -c 'import venv, ensurepip' >/dev/null 2>&1
}

# 1 + 2. The virtual environment, and what it takes to make one.
if [ ! -x "$venv/bin/python" ]; then
    python=python3
    if ! can_make_venv "$python"; then
        log "installing Debian's python3 and python3-venv"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
        # A python3 earlier on PATH (pyenv, say) may still lack venv: use Debian's own.
        can_make_venv "$python" || python=/usr/bin/python3
    fi
    log "creating $venv"
    rm -rf "$venv"
    mkdir -p "$target"
    "$python" -m venv "$venv"
fi

# 3. componentize-py, pinned. Reading the installed version from the package's metadata
# directory keeps this check free of a Python start-up when it is already right.
if ! ls -d "$venv"/lib/python3*/site-packages/componentize_py-"$COMPONENTIZE_PY_VERSION".dist-info >/dev/null 2>&1; then
    log "installing componentize-py $COMPONENTIZE_PY_VERSION"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# 4. The example handler, rebuilt when any of its inputs is newer than the component.
build_handler() {
    local name="$1" src="$root/examples/python/$1" wasm="$out_dir/$1.wasm"
    if [ -f "$wasm" ] && [ -z "$(find "$src" "$root/wit" "${BASH_SOURCE[0]}" -newer "$wasm" \
        -not -path '*/__pycache__*' -print -quit)" ]; then
        return
    fi
    log "building $wasm"
    mkdir -p "$out_dir"
    # Bindings are generated into a scratch directory per build, never into the sources.
    (cd "$src" && "$venv/bin/componentize-py" -d "$root/wit" -w handler \
        componentize app -o "$wasm.tmp")
    mv "$wasm.tmp" "$wasm"
}

build_handler greeter
