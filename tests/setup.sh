#!/usr/bin/env bash
# Everything `cargo test --workspace` needs beyond Rust, installed only when missing: the
# Python example handler's toolchain and build, schemathesis (the OpenAPI conformance
# test), Chromium with its WebDriver server, and nats-server (the cluster tests).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/python/setup.sh"
bash "$here/schemathesis/setup.sh"
bash "$here/browser/setup.sh"
bash "$here/nats/setup.sh"
