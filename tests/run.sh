#!/bin/bash
# run.sh - the whole test suite (called by `make check`).  Every suite prints
# PASS:/FAIL:/SKIP: lines; the last line here is "N passed, N failed, N
# skipped".  VMC_FAST=1 shrinks the big round trips (for quick local runs).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/build
LOG=$(mktemp /tmp/vmc-run.XXXXXX)
trap 'rm -f "$LOG"' EXIT
export VMC_SRCDIR=$ROOT
cd "$ROOT"

suite() {       # suite NAME CMD...: runs CMD, checks its exit status too
    local name=$1; shift
    echo "== $name"
    "$@" 2>&1 | tee -a "$LOG" | grep -E '^(FAIL|SKIP)'
    local rc=${PIPESTATUS[0]}
    if [ "$rc" != 0 ] && ! grep -q "^FAIL: $name" "$LOG"; then
        echo "FAIL: $name: exited with status $rc" | tee -a "$LOG"
    fi
}

replay() {      # replay NAME BINARY: the fuzz corpus, clean or it fails
    if out=$("$2" tests/fuzz/corpus 2>&1); then
        echo "PASS: $1 ($out)"
    else
        echo "FAIL: $1: $out" | tail -5
    fi
}

suite unit "$B/tests/unit"
suite unit-asan env ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$B/asan/unit"
suite fuzz-replay replay fuzz-replay "$B/tests/fuzz_replay"
suite fuzz-replay-asan replay fuzz-replay-asan "$B/asan/fuzz_replay"
suite cli tests/cli/cli.sh
for t in tests/e2e/*.sh; do
    [ -e "$t" ] || continue
    suite "$(basename "$t" .sh)" "$t"
done

p=$(grep -c '^PASS' "$LOG")
f=$(grep -c '^FAIL' "$LOG")
s=$(grep -c '^SKIP' "$LOG")
[ "$p" = 0 ] && f=$((f + 1)) && echo "FAIL: nothing ran"
echo "$p passed, $f failed, $s skipped"
[ "$f" = 0 ]
