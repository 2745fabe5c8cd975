#!/usr/bin/env bash
# Fuzzes every target (or the TARGETs named) in turn, SECONDS_PER_TARGET seconds each
# (default 600), one fuzzer process at a time, and merges what each run found into the
# target's committed corpus (fuzz/corpus/<target>/), kept minimal: the fewest inputs that
# reach every edge the old corpus and the new finds reach, beside the seeds (seed-*, from
# the tests) and the inputs that once crashed a target (regression-*), which always stay.
# A crash or hang stops the script, its input kept in fuzz/artifacts/<target>/.
#
# Needs nightly Rust and cargo-fuzz (`cargo install cargo-fuzz`). The build has debug
# assertions (overflow checks) and no sanitizer: the code fuzzed is safe Rust, and
# wasmtime's own signal handlers do not mix with AddressSanitizer's. Set SANITIZER=address
# to use it anyway. Logs, with each run's executions, are in fuzz/target/logs/.
#
#   fuzz/run.sh [SECONDS_PER_TARGET [TARGET...]]
set -euo pipefail

seconds="${1:-600}"
shift || true
cd "$(dirname "$0")"
fuzz_dir="$(pwd)"
root="$(cd .. && pwd)"

# The embedded host runs the real guests, built as the tests build them.
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
(cd "$root/guests" && cargo build --release --target wasm32-wasip2 --target-dir "$target_dir")
export SWITCHBOARD_GUESTS_DIR="$target_dir/wasm32-wasip2/release"

# The fuzz build keeps its own target directory (fuzz/target), whatever the caller set.
unset CARGO_TARGET_DIR
flags=(--sanitizer "${SANITIZER:-none}" --debug-assertions)
cargo +nightly fuzz build "${flags[@]}"

mkdir -p target/logs
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
for target in "${targets[@]}"; do
    case "$target" in
        embedded_host) per_input=60 ;;
        *) per_input=10 ;;
    esac
    found="target/found/$target"
    rm -rf "$found" && mkdir -p "$found"
    echo "fuzzing $target for ${seconds}s"
    # New inputs go to $found; the committed corpus is only read. One fuzzing process
    # (libFuzzer's default; `-jobs` would fork workers that log to fuzz-<n>.log instead).
    log="target/logs/$target.log"
    if ! cargo +nightly fuzz run "${flags[@]}" "$target" "$found" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout="$per_input" \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "$target failed: see $fuzz_dir/$log and $fuzz_dir/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units)' "$log" || true
    # The corpus anew: its seeds (seed-*) and regression inputs (regression-*), and the
    # fewest other inputs, old or found, that reach every edge they reach together.
    merged="target/merged/$target"
    rm -rf "$merged" && mkdir -p "$merged"
    find "corpus/$target" -type f \( -name 'seed-*' -o -name 'regression-*' \) -exec cp {} "$merged" \;
    cargo +nightly fuzz run "${flags[@]}" "$target" "$merged" "corpus/$target" "$found" -- \
        -merge=1 -use_counters=0 -timeout="$per_input" >>"$log" 2>&1
    rm -rf "corpus/$target" && mv "$merged" "corpus/$target"
    echo "$target: $(ls "corpus/$target" | wc -l) inputs in its corpus"
done
