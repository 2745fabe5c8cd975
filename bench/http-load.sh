#!/usr/bin/env bash
# Measures a `switchboard serve` daemon over HTTP at 64 connections with wrk, side by side with
# a plain axum POST handler (`host/examples/plain_axum.rs`, the floor), in one run. Rows:
#
#   messages  `POST /v1/messages?wait=5s` to `echo`: requests per second, and CPU per request
#             (the server process's user+system time from /proc/PID/stat over the requests
#             served)
#   events    `POST /v1/events` of `UserRegistered`, subscribed by `audit` and `welcome`:
#             events handled by both per second (from /metrics
#             `switchboard_signals_total{kind="EVENT",outcome="ok"}` over the run, halved), not
#             events accepted; CPU per event handled
#   counter   `Increment {"by":1}` to 1,000 `counter` agents (`agent:counter/c0` .. `c999`,
#             round-robin per wrk thread) with default settings: requests per second, p99
#             latency (`wrk --latency`), CPU per request. Then a fixed-count check: CHECK
#             increments (default 5000) sent with curl, 64 at a time, to 1,000 fresh agents;
#             each agent's count is read back with `Get {}`, and their sum must equal the
#             number of 2xx answers
#
#   bench/http-load.sh [SWITCHBOARD_BINARY ...]
#
# Each binary given is measured in turn (e.g. an older build beside the current one); with
# none, the release build of this checkout is used. Prints a markdown table (one row for the
# axum floor, three per binary); progress goes to stderr. Loopback only; each wrk run lasts
# DURATION (default 5s) after a 1 s warm-up. Needs wrk (installed with apt-get if missing) and
# curl. Every process started is stopped on exit. Not part of the test command.
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
CHECK=${CHECK:-5000}
TARGET=${CARGO_TARGET_DIR:-target}
TOKEN=bench-token

log() { echo "http-load: $*" >&2; }

command -v wrk >/dev/null || { log "installing wrk"; apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if [[ -z ${SKIP_BUILD:-} ]]; then
  log "building the guests, the switchboard binary and plain_axum (release)"
  rustup target add wasm32-wasip2 >/dev/null
  cargo build -q --release --target wasm32-wasip2 --manifest-path guests/Cargo.toml \
    --target-dir "$TARGET" -p echo -p audit -p welcome -p counter
  # The same command as bench/instructions.sh and bench/run.sh, so nothing is built twice.
  cargo build -q --release -p switchboard -p switchboard-tests --bin switchboard \
    --example signals --example plain_axum
fi
GUESTS="$TARGET/wasm32-wasip2/release"
BINARIES=("$@")
[ ${#BINARIES[@]} -gt 0 ] || BINARIES=("$TARGET/release/switchboard")

WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = '{"to":"echo","messageType":"Ping","payload":{"n":1}}'
LUA
cat >"$WORK/event.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = '{"eventType":"UserRegistered","payload":{"user_id":"u1","name":"Ann"}}'
LUA
# PREFIX is replaced per run, so the warm-up's agents are not the measured ones.
cat >"$WORK/increment.lua.in" <<LUA
local n = 0
local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer $TOKEN" }
request = function()
  n = n + 1
  local body = '{"to":"agent:counter/PREFIX' .. (n % 1000) .. '","messageType":"Increment","payload":{"by":1}}'
  return wrk.format("POST", nil, headers, body)
end
LUA
sed 's/PREFIX/w/' "$WORK/increment.lua.in" >"$WORK/increment-warm.lua"
sed 's/PREFIX/c/' "$WORK/increment.lua.in" >"$WORK/increment.lua"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# events_ok PORT: events handled without error by audit and welcome so far.
events_ok() {
  curl -sf "http://127.0.0.1:$1/metrics" | awk '/^switchboard_signals_total\{/ && /kind="EVENT"/ &&
    /outcome="ok"/ && (/handler="audit"/ || /handler="welcome"/) {n += $NF} END {print n + 0}'
}

# wrk_run PID URL LUA [WARM_LUA]: a 1 s warm-up, then DURATION of wrk; sets OUT (wrk's report),
# RPS, REQUESTS, NON2XX, TICKS (server CPU ticks), SECONDS_RUN, P99, and HANDLED (events, if
# EVENTS_PORT is set).
wrk_run() {
  local pid=$1 url=$2 lua=$3 warm=${4:-$3} before after events_before=0
  wrk -t2 -c"$CONNECTIONS" -d1s -s "$warm" "$url" >/dev/null
  sleep 0.5
  [[ -z ${EVENTS_PORT:-} ]] || events_before=$(events_ok "$EVENTS_PORT")
  before=$(cpu_ticks "$pid")
  OUT=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$lua" "$url")
  after=$(cpu_ticks "$pid")
  [[ -z ${EVENTS_PORT:-} ]] || HANDLED=$(($(events_ok "$EVENTS_PORT") - events_before))
  TICKS=$((after - before))
  RPS=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$OUT")
  REQUESTS=$(awk '/requests in/ {print $1}' <<<"$OUT")
  SECONDS_RUN=$(awk '/requests in/ {sub(/s,?$/, "", $4); print $4}' <<<"$OUT")
  NON2XX=$(awk '/Non-2xx/ {print $NF}' <<<"$OUT")
  NON2XX=${NON2XX:-0}
  P99=$(awk '$1 == "99%" {print $2}' <<<"$OUT")
}
# cpu_us COUNT: server CPU µs per COUNT (of the last wrk_run).
cpu_us() { awk -v t="$TICKS" -v hz="$(getconf CLK_TCK)" -v n="$1" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}'; }
row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }
# floor RATE CPU_US: how a row compares with the axum floor.
floor() { awk -v r="$1" -v c="$2" -v fr="$FLOOR_RPS" -v fc="$FLOOR_CPU" 'BEGIN {printf "%.2f× the floor'"'"'s rate, %.1f× its CPU", r / fr, c / fc}'; }

wait_for() {
  for _ in $(seq 300); do curl -sf "$1" >/dev/null && return; sleep 0.1; done
  log "no answer from $1"; exit 1
}

echo "| server | measurement (HTTP: 64 connections, $DURATION) | figure | server CPU µs each | p99 / notes |"
echo "|---|---|---:|---:|---|"

log "plain axum"
"$TARGET/release/examples/plain_axum" 127.0.0.1:7171 &
AXUM=$!
for _ in $(seq 100); do curl -sf -d '{}' http://127.0.0.1:7171/echo >/dev/null && break; sleep 0.1; done
wrk_run $AXUM http://127.0.0.1:7171/echo "$WORK/post.lua"
FLOOR_RPS=$RPS
FLOOR_CPU=$(cpu_us "$REQUESTS")
row "plain axum (floor)" "POST echoing its body" "$RPS req/s" "$FLOOR_CPU" "p99 $P99, non-2xx $NON2XX"
kill $AXUM
wait $AXUM 2>/dev/null || true

port=7172
for bin in "${BINARIES[@]}"; do
  log "switchboard: $bin"
  mkdir -p "$WORK/deploy-$port"
  cp "$GUESTS"/{echo,audit,welcome,counter}.wasm "$WORK/deploy-$port/"
  SWITCHBOARD_ADMIN_TOKEN=$TOKEN RUST_LOG=warn "$bin" serve --listen 127.0.0.1:$port \
    --data-dir "$WORK/data-$port" --deploy-dir "$WORK/deploy-$port" 2>"$WORK/log-$port" &
  PID=$!
  wait_for http://127.0.0.1:$port/readyz
  base="http://127.0.0.1:$port"

  wrk_run $PID "$base/v1/messages?wait=5s" "$WORK/post.lua"
  cpu=$(cpu_us "$REQUESTS")
  row "switchboard" "\`POST /v1/messages?wait\` to echo" "$RPS req/s" "$cpu" "p99 $P99, non-2xx $NON2XX; $(floor "$RPS" "$cpu")"

  EVENTS_PORT=$port wrk_run $PID "$base/v1/events" "$WORK/event.lua"
  rate=$(awk -v h="$HANDLED" -v s="$SECONDS_RUN" 'BEGIN {printf "%.0f", h / 2 / s}')
  cpu=$(cpu_us $((HANDLED / 2 > 0 ? HANDLED / 2 : 1)))
  row "switchboard" "\`POST /v1/events\`, 2 subscribers: events handled by both" "$rate events/s" "$cpu" \
    "$REQUESTS accepted ($NON2XX refused) at $RPS/s, $HANDLED deliveries handled in the run; $(floor "$rate" "$cpu")"

  wrk_run $PID "$base/v1/messages?wait=5s" "$WORK/increment.lua" "$WORK/increment-warm.lua"
  cpu=$(cpu_us "$REQUESTS")
  row "switchboard" "\`Increment\` to 1,000 counter agents" "$RPS req/s" "$cpu" "p99 $P99, non-2xx $NON2XX; $(floor "$RPS" "$cpu")"

  log "fixed-count check: $CHECK increments to 1,000 fresh agents, then a Get of each"
  config() { # config FILE COUNT OUTPUT BODY_FORMAT (printf format taking the agent number)
    local i
    : >"$1"
    for ((i = 0; i < $2; i++)); do
      ((i == 0)) || echo next >>"$1"
      # shellcheck disable=SC2059
      printf "url = \"$base/v1/messages?wait=30s\"\nheader = \"Authorization: Bearer $TOKEN\"\nheader = \"Content-Type: application/json\"\ndata = \"$4\"\noutput = \"$3\"\nwrite-out = \"%%{http_code} \"\nsilent\n" "$((i % 1000))" >>"$1"
    done
  }
  config "$WORK/check" "$CHECK" /dev/null '{\\"to\\":\\"agent:counter/k%d\\",\\"messageType\\":\\"Increment\\",\\"payload\\":{\\"by\\":1}}'
  ok=$(curl -s --parallel --parallel-max "$CONNECTIONS" -K "$WORK/check" 2>/dev/null | tr ' ' '\n' | grep -c '^2' || true)
  config "$WORK/get" 1000 - '{\\"to\\":\\"agent:counter/k%d\\",\\"messageType\\":\\"Get\\",\\"payload\\":{}}'
  sum=$(curl -s --parallel --parallel-max "$CONNECTIONS" -K "$WORK/get" 2>/dev/null | grep -o '"count":[0-9]*' | awk -F: '{s += $2} END {print s + 0}')
  if ((sum == ok)); then verdict="equal"; else verdict="NOT EQUAL"; fi
  row "switchboard" "fixed-count check: $CHECK increments, 1,000 agents" "" "" "2xx answers $ok, summed counts $sum: $verdict"
  ((sum == ok)) || log "the summed counts ($sum) differ from the 2xx answers ($ok)"

  kill $PID
  wait $PID 2>/dev/null || true
  port=$((port + 1))
done
