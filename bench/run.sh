#!/usr/bin/env bash
# The benchmark command: each Switchboard figure beside its peer, in one run, as one markdown
# table.
#
#   in-process (tests/examples/signals.rs, a host in this process, no HTTP)
#     - 64 requests in flight to `echo`: round trips per second, beside the seeds' Node IPC
#       peer (`node bench/node-ipc.js 64 SECONDS`: a child process driven with sendAndWait)
#     - the guest-to-guest hop host -> orders (Forward) -> echo -> orders -> host, mean µs of
#       HOPS sequential ones, beside two plain round trips host -> echo -> host (the goal: the
#       hop within 1.2x of two round trips); and the raw-wasmtime call of echo for scale
#   HTTP (bench/http-load.sh: a `switchboard serve` daemon, wrk at 64 connections, beside a
#   plain axum POST handler, the floor)
#     - `POST /v1/messages?wait` to echo: req/s and server CPU µs per request
#     - `POST /v1/events` with 2 subscribers: events handled by both per second
#     - `Increment` to 1,000 `counter` agents: req/s and p99, and a fixed-count check that the
#       agents' summed counts equal the 2xx answers
#
#   bench/run.sh        (or --help: prints this header)
#
# Environment: DURATION (seconds per timed run, default 5), HOPS (sequential calls for the
# hop, round-trip and raw rows, default 20000), CHECK (increments of the fixed-count check,
# default 5000), CARGO_TARGET_DIR. Loopback only; every process started is stopped on exit.
# Needs node, curl and wrk (installed with apt-get if missing). Timings on a shared machine
# vary from run to run: bench/instructions.sh counts instructions, which do not. Not part of
# the test command.
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
HOPS=${HOPS:-20000}
TARGET=${CARGO_TARGET_DIR:-target}
GUESTS="$TARGET/wasm32-wasip2/release"
SIGNALS="$TARGET/release/examples/signals"

log() { echo "run: $*" >&2; }
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT

log "building the guests, the signals example, the switchboard binary and plain_axum (release)"
rustup target add wasm32-wasip2 >/dev/null
cargo build -q --release --target wasm32-wasip2 --manifest-path guests/Cargo.toml \
  --target-dir "$TARGET" -p echo -p orders -p audit -p welcome -p counter
cargo build -q --release -p switchboard -p switchboard-tests --bin switchboard \
  --example signals --example plain_axum

# figure MODE COUNT: the number `signals MODE COUNT` prints.
figure() { "$SIGNALS" "$1" "$2" --guests "$GUESTS" | awk '{print $2}'; }

log "in-process: 64 in flight to echo for ${DURATION}s, then the Node IPC peer"
TPUT=$(figure tput "$DURATION")
NODE=$(node bench/node-ipc.js 64 "$DURATION" | sed 's/.*"per_second":\([0-9.]*\).*/\1/')
log "in-process: $HOPS hops, $HOPS round trips, $HOPS raw wasmtime calls"
HOP=$(figure hop "$HOPS")
RT=$(figure rt "$HOPS")
RAW=$(figure raw "$HOPS")

log "HTTP rows (bench/http-load.sh)"
HTTP=$(SKIP_BUILD=1 DURATION="${DURATION}s" bash bench/http-load.sh)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
cat <<EOF

Measured at commit $(git rev-parse --short HEAD) on $(nproc) cores; DURATION=${DURATION}s, HOPS=$HOPS.

$(head -2 <<<"$HTTP")
| switchboard in-process | 64 in flight to echo: round trips | $(printf '%.0f' "$TPUT")/s | – | $(ratio "$TPUT" "$NODE")× the Node IPC peer |
| Node IPC (seeds' peer) | 64 in flight, sendAndWait to a child process | $(printf '%.0f' "$NODE")/s | – | \`node bench/node-ipc.js 64 $DURATION\` |
| switchboard in-process | guest-to-guest hop host → orders → echo → orders → host | $HOP µs | – | $(ratio "$HOP" "$(awk -v r="$RT" 'BEGIN {print 2 * r}')")× two round trips (goal ≤ 1.2×) |
| switchboard in-process | two plain round trips host → echo → host | $(awk -v r="$RT" 'BEGIN {printf "%.3f", 2 * r}') µs | – | one: $RT µs |
| raw wasmtime (floor) | one call of echo's \`handle-message\`, warm instance | $RAW µs | – | no router |
$(tail -n +3 <<<"$HTTP")
EOF
