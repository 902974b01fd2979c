#!/usr/bin/env bash
# Runs every ffi-tests binary under valgrind memcheck and fails on any memory error and
# on any definitely or possibly lost block.
#
# Usage (from the repository root): bash ffi-tests/valgrind.sh
#
# Every test binary of ffi-tests (tests/*.rs: produce/consume/commit round trips, injected
# errors, rebalances, drop and close paths, offset stores, calls with every broker down,
# ...) runs once under
#   valgrind --leak-check=full --errors-for-leak-kinds=definite,possible --error-exitcode=1
# with --test-threads=1, so a leak or an error fails the run. --redzone-size=512 widens
# the guard zone around each heap block: librdkafka sizes some objects (ops) to the
# union member they use, and a field read past such a block would otherwise land in the
# next block unnoticed.
#
# Suppressions: ffi-tests/valgrind.supp (each entry explained there).
# Logs: target/valgrind/<binary>.log (valgrind) and .out (test output).
# Prints one line per binary and a final summary line; exits 0 only if all passed.
# Sets FFI_TESTS_UNDER_VALGRIND=1: tests then skip their timing checks (valgrind runs
# threads one at a time, 20-50x slower) but run every path.
# Takes about seven minutes on two cores (valgrind slows the CPU-bound parts 20-50x; most of
# these tests wait on librdkafka's timers).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind: not installed (Debian/Ubuntu: apt-get install valgrind)" >&2
    exit 2
fi

# libtest filters per binary. `close_with_rebalances_pending_never_blocks` leaves the
# clients of a round stuck inside librdkafka behind on purpose (their threads are still
# alive at exit, which valgrind reports as possibly lost thread stacks); every other test
# of that binary runs.
declare -A filters_of=(
    [rebalance]="--skip close_with_rebalances_pending_never_blocks"
)
# Test binaries to run: all of them by default, or the names given as arguments.
if [[ $# -gt 0 ]]; then
    names=("$@")
else
    names=()
    for f in ffi-tests/tests/*.rs; do
        names+=("$(basename "$f" .rs)")
    done
fi
runs=()
for name in "${names[@]}"; do
    runs+=("$name${filters_of[$name]:+ ${filters_of[$name]}}")
done
# Per-binary bound: a hang must not eat the whole budget.
per_run_timeout="${VALGRIND_RUN_TIMEOUT:-300}"

start=$(date +%s)
logdir="$root/target/valgrind"
mkdir -p "$logdir"

targets=()
for run in "${runs[@]}"; do
    targets+=(--test "${run%% *}")
done
echo "valgrind: building ${targets[*]}"
json="$(cargo test -p ffi-tests --no-run --message-format=json "${targets[@]}")"

executable_of() {
    # The test executable of target $1, from cargo's JSON messages (no jq needed).
    printf '%s\n' "$json" \
        | sed -n "s/.*\"executable\":\"\([^\"]*\/$1-[0-9a-f]*\)\".*/\1/p" \
        | tail -n 1
}

failed=0
total_errors=0
total_definite=0
total_possible=0
total_tests=0
for run in "${runs[@]}"; do
    name="${run%% *}"
    filters=""
    [[ "$run" == *" "* ]] && filters="${run#* }"
    exe="$(executable_of "$name")"
    if [[ -z "$exe" || ! -x "$exe" ]]; then
        echo "valgrind: $name: test executable not found" >&2
        failed=1
        continue
    fi
    log="$logdir/$name.log"
    out="$logdir/$name.out"
    t0=$(date +%s)
    rc=0
    # shellcheck disable=SC2086 # filters are separate words on purpose
    FFI_TESTS_UNDER_VALGRIND=1 timeout --signal=KILL "$per_run_timeout" \
        valgrind \
        --error-exitcode=1 \
        --leak-check=full \
        --errors-for-leak-kinds=definite,possible \
        --show-leak-kinds=definite,possible \
        --redzone-size=512 \
        --num-callers=40 \
        --gen-suppressions=all \
        --suppressions="$root/ffi-tests/valgrind.supp" \
        --log-file="$log" \
        "$exe" --test-threads=1 $filters >"$out" 2>&1 || rc=$?
    t1=$(date +%s)
    errors="$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n 1)"
    definite="$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1 | tr -d ,)"
    possible="$(sed -n 's/.*possibly lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1 | tr -d ,)"
    passed="$(sed -n 's/^test result: .*\. \([0-9]*\) passed.*/\1/p' "$out" | tail -n 1)"
    errors="${errors:-?}"
    definite="${definite:-0}"
    possible="${possible:-0}"
    passed="${passed:-0}"
    status="ok"
    if [[ "$rc" -ne 0 || "$errors" != "0" || "$definite" != "0" || "$possible" != "0" ]]; then
        status="FAILED (exit $rc; see $log and $out)"
        failed=1
    fi
    [[ "$errors" =~ ^[0-9]+$ ]] && total_errors=$((total_errors + errors))
    total_definite=$((total_definite + definite))
    total_possible=$((total_possible + possible))
    total_tests=$((total_tests + passed))
    echo "valgrind: $name${filters:+ [$filters]}: $passed tests passed, $errors errors, $definite bytes definitely lost, $possible bytes possibly lost, $((t1 - t0)) s: $status"
done

elapsed=$(( $(date +%s) - start ))
if [[ "$failed" -eq 0 ]]; then
    echo "valgrind summary: PASS: ${#runs[@]} binaries, $total_tests tests, $total_errors errors, $total_definite bytes definitely lost, $total_possible bytes possibly lost, ${elapsed} s"
else
    echo "valgrind summary: FAIL: ${#runs[@]} binaries, $total_tests tests, $total_errors errors, $total_definite bytes definitely lost, $total_possible bytes possibly lost, ${elapsed} s"
    exit 1
fi
