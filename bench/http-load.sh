#!/usr/bin/env bash
# Measures `POST /v1/messages?wait` against `echo` at 64 connections, side by side with a
# plain axum POST handler, in one run: requests per second (wrk) and CPU per request (the
# server process's user+system time from /proc divided by the requests served).
#
#   bench/http-load.sh [SWITCHBOARD_BINARY ...]
#
# Each binary given is measured in turn (e.g. an older build beside the current one); with
# none, the release build of this checkout is used. Loopback only; each run lasts DURATION
# (default 10s). Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
TARGET=${CARGO_TARGET_DIR:-target}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
rustup target add wasm32-wasip2 >/dev/null
cargo build -q --release --target wasm32-wasip2 --manifest-path guests/Cargo.toml --target-dir "$TARGET" -p echo
cargo build -q --release -p switchboard --bin switchboard --example plain_axum
ECHO="$TARGET/wasm32-wasip2/release/echo.wasm"
BINARIES=("$@")
[ ${#BINARIES[@]} -gt 0 ] || BINARIES=("$TARGET/release/switchboard")

WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-token"
wrk.body = '{"to":"echo","messageType":"Ping","payload":{"n":1}}'
LUA

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure NAME PID URL: runs wrk and prints requests/s and CPU µs per request.
measure() {
  local name=$1 pid=$2 url=$3 before after out rps requests hz
  hz=$(getconf CLK_TCK)
  wrk -t2 -c"$CONNECTIONS" -d2s -s "$WORK/post.lua" "$url" >/dev/null # warm up
  before=$(cpu_ticks "$pid")
  out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/post.lua" "$url")
  after=$(cpu_ticks "$pid")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf '%-40s %10s req/s  %8.1f µs CPU/request  non-2xx: %s\n' "$name" "$rps" \
    "$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN {print t / hz * 1e6 / n}')" "${errors:-0}"
}

wait_for() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

"$TARGET/release/examples/plain_axum" 127.0.0.1:7171 & AXUM=$!
wait_for_post() { for _ in $(seq 100); do curl -sf -d '{}' "$1" >/dev/null && return; sleep 0.1; done; exit 1; }
wait_for_post http://127.0.0.1:7171/echo
measure "plain axum POST (echo body)" $AXUM http://127.0.0.1:7171/echo
kill $AXUM

port=7172
for bin in "${BINARIES[@]}"; do
  mkdir -p "$WORK/deploy-$port"; cp "$ECHO" "$WORK/deploy-$port/echo.wasm"
  SWITCHBOARD_ADMIN_TOKEN=bench-token RUST_LOG=warn "$bin" serve --listen 127.0.0.1:$port \
    --data-dir "$WORK/data-$port" --deploy-dir "$WORK/deploy-$port" & PID=$!
  wait_for http://127.0.0.1:$port/readyz
  measure "switchboard ($bin)" $PID "http://127.0.0.1:$port/v1/messages?wait=5s"
  kill $PID; wait $PID 2>/dev/null || true
  port=$((port + 1))
done
