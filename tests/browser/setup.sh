#!/usr/bin/env bash
# Test set-up for the gateway's browser test, run once by the README's test command before
# `cargo test --workspace`: Debian's headless-capable Chromium and its WebDriver server
# (chromedriver), installed with apt-get only when missing. Idempotent and cheap when
# both are there.
set -euo pipefail

log() { echo "browser set-up: $*" >&2; }

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "chromium and chromedriver are missing and there is no apt-get; install them by hand"
    exit 1
fi
. "$(dirname "${BASH_SOURCE[0]}")/../as_root.sh"
log "installing chromium and chromium-driver"
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromedriver >/dev/null 2>&1 || { log "chromedriver is still missing"; exit 1; }
