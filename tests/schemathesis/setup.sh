#!/usr/bin/env bash
# Test set-up for host/tests/openapi_conformance.rs: schemathesis, pinned, in the virtual
# environment tests/python/setup.sh creates at <target>/python-venv, installed only when
# missing. Run by tests/setup.sh after the Python set-up (which makes the environment).
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

. "$(dirname "${BASH_SOURCE[0]}")/../pip_install.sh"
pip_install schemathesis schemathesis schemathesis "$SCHEMATHESIS_VERSION"
