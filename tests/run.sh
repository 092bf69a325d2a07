#!/bin/bash
# run.sh - the whole test suite (called by `make check`).  Every suite prints
# PASS:/FAIL:/SKIP: lines; the last line here is "N passed, N failed, N
# skipped".  VMC_FAST=1 shrinks the big round trips (for quick local runs).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/signing-env.sh"   # a test signing key, trusted
B=$ROOT/build
LOG=$(mktemp /tmp/vmc-run.XXXXXX)
trap 'rm -f "$LOG"' EXIT
export VMC_SRCDIR=$ROOT
cd "$ROOT"

# suite NAME CMD...: runs CMD, checks its exit status too.  A suite that
# fails gets the last lines of its own output printed, so that a CI log
# alone tells what went wrong (the whole output: build/test-logs/NAME.log).
mkdir -p "$B/test-logs"
suite() {
    local name=$1; shift
    local out=$B/test-logs/$name.log
    echo "== $name"
    "$@" >"$out" 2>&1
    local rc=$?
    cat "$out" >>"$LOG"
    grep -E '^(FAIL|SKIP|FLAKE)' "$out"
    if [ "$rc" != 0 ] && ! grep -q "^FAIL: $name" "$out"; then
        echo "FAIL: $name: exited with status $rc" | tee -a "$LOG"
    fi
    if [ "$rc" != 0 ] || grep -q '^FAIL' "$out"; then
        echo "---- $name failed; the last 40 lines of its output ($out):"
        tail -n 40 "$out" | sed 's/^/| /'
        echo "----"
    fi
}

replay() {      # replay NAME BINARY: the fuzz corpus, clean or it fails
    local res      # (not "out": that is suite's, bash scopes dynamically)
    if res=$("$2" tests/fuzz/corpus 2>&1); then
        echo "PASS: $1 ($res)"
    else
        echo "FAIL: $1: $res" | tail -5
    fi
}

suite unit "$B/tests/unit"
suite unit-asan env ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$B/asan/unit"
suite engine "$B/tests/engine"
suite engine-asan env ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$B/asan/engine"
suite fuzz-replay replay fuzz-replay "$B/tests/fuzz_replay"
suite fuzz-replay-asan replay fuzz-replay-asan "$B/asan/fuzz_replay"
suite cli tests/cli/cli.sh
suite attack tests/attack/attack.sh
suite install tests/install.sh
suite debian tests/debian.sh
for t in tests/e2e/*.sh; do
    [ -e "$t" ] || continue
    suite "$(basename "$t" .sh)" "$t"
done

p=$(grep -c '^PASS' "$LOG")
f=$(grep -c '^FAIL' "$LOG")
s=$(grep -c '^SKIP' "$LOG")
k=$(grep -c '^FLAKE' "$LOG")
[ "$k" = 0 ] || echo "retried emulator flakes: $k (the FLAKE lines above, with their evidence)"
[ "$p" = 0 ] && f=$((f + 1)) && echo "FAIL: nothing ran"
echo "$p passed, $f failed, $s skipped"
[ "$f" = 0 ]
