#!/usr/bin/env bash
# Counts CPU instructions per signal with valgrind's callgrind (Ir: instructions executed),
# a figure that repeats on a shared, noisy machine where timings do not. Rows:
#
#   a  in-process round trip host -> echo -> host
#   b  guest-to-guest hop host -> orders (Forward) -> echo -> orders -> host
#   c  64 requests in flight to echo, in-process
#   d  HTTP `POST /v1/messages?wait=5s` to echo, through a `switchboard serve` daemon
#   e  HTTP `POST /v1/events` of `UserRegistered`, subscribed by `audit` and `welcome`
#      (per event handled by both; `welcome` also gets an ErrorReply for its push to a user
#      who is not connected, which is part of the cost)
#   f  HTTP `POST /v1/messages?wait=5s` `Increment {"by":1}` to `agent:counter/<id>`, over 100
#      agent ids in turn (a durable keyed-state write per signal)
#   g  the floor: echo's `handle-message` called on one warm instance with wasmtime's
#      component API alone, no Switchboard router
#
#   bench/instructions.sh          (or --help: prints this header)
#
# Method. In-process rows (a, b, c, g) run `tests/examples/signals.rs` twice under callgrind,
# with N1 and N2 signals after the same warm-up, and report (Ir(N2) - Ir(N1)) / (N2 - N1):
# start-up, compiling and warm-up cancel. Daemon rows (d, e, f) trace one daemon, send WARMUP
# requests, `callgrind_control --zero`, send REQUESTS requests one at a time with one curl
# process (a separate process, never counted), wait a second for events to be handled, then
# `callgrind_control --dump`: instructions of the daemon alone between the two, divided by the
# requests answered (any answer but 2xx fails the run) or, for events, by the events handled
# (deliveries to audit and welcome from /metrics `switchboard_signals_total{kind="EVENT"}`,
# halved; not events accepted). That window also holds the
# daemon's idle background work (the epoch ticker) for the time it lasts: small, not removed.
#
# Valgrind cannot map the default reservation of wasmtime's pooling allocator (terabytes of
# address space), so every host runs with a small pool: `max_instances` 3 (`--max-instances
# 3`, plus 4 slots for describe probes; 5 did not fit: valgrind refused a 73 GiB reservation).
# Every deployed handler holds one slot, hence two daemons: echo, audit and
# welcome in one (one instance each), and `counter` alone in the other, uploaded with
# `concurrency=3` (its default of 32 agents at once would need 32 instances). Default
# `--smc-check`. The daemon runs with `--trace-children=yes` only so that its compile children
# (`switchboard compile-artifact`) run on valgrind's simulated CPU too: natively they would
# compile for CPU features (e.g. AVX-VNNI) the traced daemon does not have, and it would refuse
# the artifacts. Each process writes its own file; only the daemon's is read. Loopback only.
#
# Environment: N1, N2 (in-process signal counts, default 1000 and 3000), WARMUP and REQUESTS
# (daemon rows, default 200 and 1000), CARGO_TARGET_DIR. Needs valgrind (3.19 used) and curl.
# Not part of the test command.
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
N1=${N1:-1000}
N2=${N2:-3000}
WARMUP=${WARMUP:-200}
REQUESTS=${REQUESTS:-1000}
TARGET=${CARGO_TARGET_DIR:-target}
GUESTS="$TARGET/wasm32-wasip2/release"
SIGNALS="$TARGET/release/examples/signals"
SWITCHBOARD="$TARGET/release/switchboard"
TOKEN=bench-token

log() { echo "instructions: $*" >&2; }
command -v valgrind >/dev/null || { log "valgrind is needed (apt-get install valgrind)"; exit 1; }

log "building the guests, the signals example and the switchboard binary (release)"
rustup target add wasm32-wasip2 >/dev/null
cargo build -q --release --target wasm32-wasip2 --manifest-path guests/Cargo.toml \
  --target-dir "$TARGET" -p echo -p orders -p audit -p welcome -p counter
# One cargo command for everything the bench scripts run, so features unify the same way and
# nothing is built twice.
cargo build -q --release -p switchboard -p switchboard-tests --bin switchboard \
  --example signals --example plain_axum

WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The Ir total of a callgrind output file.
ir() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

# in_process MODE: instructions per signal of `signals MODE`, from runs of N1 and N2 signals.
in_process() {
  local mode=$1 n out a b
  for n in "$N1" "$N2"; do
    out="$WORK/$mode.$n.out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$SIGNALS" "$mode" "$n" \
      --guests "$GUESTS" --max-instances 3 >"$WORK/$mode.$n.log" 2>&1 ||
      { log "signals $mode $n failed:"; cat "$WORK/$mode.$n.log" >&2; exit 1; }
  done
  a=$(ir "$WORK/$mode.$N1.out")
  b=$(ir "$WORK/$mode.$N2.out")
  echo $(((b - a) / (N2 - N1)))
}

# start_daemon PORT [DEPLOY_DIR]: starts `switchboard serve` under callgrind; sets DAEMON.
start_daemon() {
  local port=$1 deploy=()
  [[ -z ${2:-} ]] || deploy=(--deploy-dir "$2")
  SWITCHBOARD_ADMIN_TOKEN=$TOKEN RUST_LOG=warn valgrind --tool=callgrind --trace-children=yes \
    --callgrind-out-file="$WORK/daemon-$port.%p" "$SWITCHBOARD" serve --listen "127.0.0.1:$port" \
    --data-dir "$WORK/data-$port" "${deploy[@]}" --max-instances 3 \
    >"$WORK/daemon-$port.log" 2>&1 &
  DAEMON=$!
  for _ in $(seq 1200); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return
    kill -0 "$DAEMON" 2>/dev/null || break
    sleep 0.5
  done
  log "the daemon on port $port did not get ready:"; cat "$WORK/daemon-$port.log" >&2; exit 1
}

# requests FILE COUNT URL BODY_COMMAND: writes a curl config of COUNT POSTs to URL, request i
# with the body printed by `BODY_COMMAND i`.
requests() {
  local file=$1 count=$2 url=$3 body=$4 i
  : >"$file"
  for ((i = 0; i < count; i++)); do
    [[ $i -eq 0 ]] || echo next >>"$file"
    printf 'url = "%s"\nheader = "Authorization: Bearer %s"\nheader = "Content-Type: application/json"\ndata = "%s"\noutput = /dev/null\nwrite-out = "%%{http_code}\\n"\nsilent\n' \
      "$url" "$TOKEN" "$($body "$i" | sed 's/"/\\"/g')" >>"$file"
  done
}
ping() { echo '{"to":"echo","messageType":"Ping","payload":{"n":1}}'; }
registered() { echo "{\"eventType\":\"UserRegistered\",\"payload\":{\"user_id\":\"u$1\",\"name\":\"Ann\"}}"; }
increment() { echo "{\"to\":\"agent:counter/c$(($1 % 100))\",\"messageType\":\"Increment\",\"payload\":{\"by\":1}}"; }

# send FILE: runs the requests, fails unless every answer was 2xx, prints how many.
send() {
  local codes
  codes=$(curl -K "$1")
  if grep -qv '^2' <<<"$codes"; then
    log "some requests failed: $(sort <<<"$codes" | uniq -c | tr '\n' ' ')"; exit 1
  fi
  wc -l <<<"$codes"
}

# events_handled PORT: events handled by audit and welcome so far, from /metrics.
events_handled() {
  curl -sf "http://127.0.0.1:$1/metrics" |
    awk '/^switchboard_signals_total\{/ && /kind="EVENT"/ && (/handler="audit"/ || /handler="welcome"/) {n += $NF} END {print n + 0}'
}

# dumps PORT: how many dumps the daemon on PORT has written.
dumps() { compgen -G "$WORK/daemon-$1.$DAEMON.*" | wc -l || true; }

# daemon_row PORT WARM_FILE RUN_FILE: sets IR to the daemon's instructions between --zero and
# --dump around RUN_FILE, SENT to the requests in it, and BEFORE to the events handled before.
daemon_row() {
  local port=$1 dumps
  send "$2" >/dev/null
  sleep 1
  BEFORE=$(events_handled "$port")
  callgrind_control --zero "$DAEMON" >/dev/null 2>&1
  SENT=$(send "$3")
  sleep 1
  dumps=$(dumps "$port")
  callgrind_control --dump "$DAEMON" >/dev/null 2>&1
  for _ in $(seq 100); do
    (($(dumps "$port") > dumps)) && break
    sleep 0.1
  done
  IR=$(ir "$(ls -t "$WORK"/daemon-"$port"."$DAEMON".* | head -1)")
}

log "in-process rows: N1=$N1, N2=$N2 signals each, under callgrind"
A=$(in_process rt)
B=$(in_process hop)
C=$(in_process tputn)
G=$(in_process raw)

log "daemon with echo, audit and welcome: $WARMUP warm-up requests, then $REQUESTS measured"
mkdir -p "$WORK/deploy-1"
cp "$GUESTS"/{echo,audit,welcome}.wasm "$WORK/deploy-1/"
start_daemon 7181 "$WORK/deploy-1"
requests "$WORK/ping-warm" "$WARMUP" "http://127.0.0.1:7181/v1/messages?wait=5s" ping
requests "$WORK/ping" "$REQUESTS" "http://127.0.0.1:7181/v1/messages?wait=5s" ping
daemon_row 7181 "$WORK/ping-warm" "$WORK/ping"
D=$((IR / SENT))
requests "$WORK/event-warm" "$WARMUP" "http://127.0.0.1:7181/v1/events" registered
requests "$WORK/event" "$REQUESTS" "http://127.0.0.1:7181/v1/events" registered
daemon_row 7181 "$WORK/event-warm" "$WORK/event"
HANDLED=$(($(events_handled 7181) - BEFORE))
((HANDLED == 2 * SENT)) || log "warning: $SENT events accepted but $HANDLED deliveries handled (want $((2 * SENT)))"
E=$((IR * 2 / HANDLED))
kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true

log "daemon with counter (concurrency 3): $WARMUP warm-up requests, then $REQUESTS measured"
start_daemon 7182
curl -sf -X PUT -H "Authorization: Bearer $TOKEN" --data-binary "@$GUESTS/counter.wasm" \
  'http://127.0.0.1:7182/v1/handlers/counter?concurrency=3' >/dev/null
requests "$WORK/inc-warm" "$WARMUP" "http://127.0.0.1:7182/v1/messages?wait=5s" increment
requests "$WORK/inc" "$REQUESTS" "http://127.0.0.1:7182/v1/messages?wait=5s" increment
daemon_row 7182 "$WORK/inc-warm" "$WORK/inc"
F=$((IR / SENT))
kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true

COMMIT=$(git rev-parse --short HEAD)
cat <<EOF

Instructions per signal (callgrind Ir, commit $COMMIT; in-process: N1=$N1, N2=$N2; daemon: $REQUESTS requests after $WARMUP)

| row | signal | instructions per signal |
|---|---|---:|
| a | in-process round trip host → echo → host | $A |
| b | guest-to-guest hop host → orders → echo → orders → host | $B |
| c | in-process, 64 in flight to echo (per round trip) | $C |
| d | HTTP \`POST /v1/messages?wait\` to echo (daemon) | $D |
| e | HTTP \`POST /v1/events\`, 2 subscribers (daemon, per event handled by both) | $E |
| f | HTTP \`Increment\` to \`agent:counter/<id>\`, 100 ids (daemon) | $F |
| g | floor: raw wasmtime call of echo's \`handle-message\`, warm instance | $G |
EOF
