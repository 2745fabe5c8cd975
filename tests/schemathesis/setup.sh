#!/usr/bin/env bash
# Test set-up for host/tests/openapi_conformance.rs: schemathesis, pinned, in the virtual
# environment tests/python/setup.sh creates at <target>/python-venv, installed only when
# missing. Run by tests/setup.sh after the Python set-up (which makes the environment).
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
venv="$target/python-venv"

if [ ! -x "$venv/bin/python" ]; then
    bash "$root/tests/python/setup.sh"
fi
# The installed version, read from the package's metadata directory (no Python start-up).
if ! ls -d "$venv"/lib/python3*/site-packages/schemathesis-"$SCHEMATHESIS_VERSION".dist-info >/dev/null 2>&1; then
    echo "schemathesis set-up: installing schemathesis $SCHEMATHESIS_VERSION" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION"
fi
