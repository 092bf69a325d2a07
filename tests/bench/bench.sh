#!/bin/bash
# bench.sh - sealed stream throughput vs zstd and cat, measured in one run
# on the same data (make bench).  Prints MB/s, sizes and ratios; asserts
# nothing (machines here are shared and noisy: compare ratios).
#   VMC_BENCH_SIZE (default 1G), VMC_BENCH_RUNS (default 3, median taken)
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/signing-env.sh"   # a test signing key, trusted
B=$ROOT/build
SIZE=${VMC_BENCH_SIZE:-1G}
RUNS=${VMC_BENCH_RUNS:-3}
W=$(mktemp -d /dev/shm/vmc-bench.XXXXXX)   # tmpfs: measure CPU, not disks
trap 'rm -rf "$W"' EXIT

"$B/tests/gendata" "$SIZE" 42 > "$W/data"
BYTES=$(stat -c %s "$W/data")
REC=$("$B/vmimage" keygen -o "$W/id.key")

now() { date +%s.%N; }
# median of RUNS timings of a shell command
timeit() {
    local ts=() t0 t1
    for _ in $(seq "$RUNS"); do
        rm -f "$W/out" "$W/out.partial"
        t0=$(now); bash -c "$1"; t1=$(now)
        ts+=("$(echo "$t1 - $t0" | bc -l)")
    done
    printf '%s\n' "${ts[@]}" | sort -g | sed -n "$(( (RUNS + 1) / 2 ))p"
}
mbs() { echo "scale=1; $BYTES / $1 / 1000000" | bc -l; }
ratio() { echo "scale=3; $1 / $2" | bc -l; }

echo "data: $BYTES bytes of guest-memory-like pages (gendata: 35% zero,"
echo "      40% text/code-like, 25% random), $(nproc) CPUs, median of $RUNS runs"
echo

t_cat=$(timeit "cat '$W/data' | cat > '$W/out'")
t_zstd=$(timeit "cat '$W/data' | zstd -q -1 -T0 -c > '$W/out'")
zstd -q -1 -T0 -c "$W/data" > "$W/data.zst"
s_zstd=$(stat -c %s "$W/data.zst")
t_seal=$(timeit "cat '$W/data' | '$B/vmimage' seal -q -r $REC -o '$W/out'")
cat "$W/data" | "$B/vmimage" seal -q -r "$REC" -o "$W/img"
s_img=$(stat -c %s "$W/img")
t_zstdd=$(timeit "cat '$W/data.zst' | zstd -q -d -c > '$W/out'")
t_unseal=$(timeit "cat '$W/img' | '$B/vmimage' unseal -i '$W/id.key' -o '$W/out' -")
t_verify=$(timeit "cat '$W/img' | '$B/vmimage' verify -q -i '$W/id.key' -")
# the same build with signatures off (format 1): what signing costs
t_sealu=$(timeit "cat '$W/data' | '$B/vmimage' seal -q --unsigned -r $REC -o '$W/out'")
cat "$W/data" | "$B/vmimage" seal -q --unsigned -r "$REC" -o "$W/imgu"
t_unsealu=$(timeit "cat '$W/imgu' | '$B/vmimage' unseal -i '$W/id.key' -o '$W/out' -")
"$B/vmimage" unseal -i "$W/id.key" "$W/img" | cmp - "$W/data"

printf '%-34s %8s %10s %14s\n' step seconds MB/s bytes
printf '%-34s %8.3f %10s %14s\n' "cat | cat" "$t_cat" "$(mbs "$t_cat")" "$BYTES"
printf '%-34s %8.3f %10s %14s\n' "cat | zstd -1 -T0" "$t_zstd" "$(mbs "$t_zstd")" "$s_zstd"
printf '%-34s %8.3f %10s %14s\n' "cat | vmimage seal (x25519)" "$t_seal" "$(mbs "$t_seal")" "$s_img"
printf '%-34s %8.3f %10s %14s\n' "cat | zstd -d" "$t_zstdd" "$(mbs "$t_zstdd")" "$BYTES"
printf '%-34s %8.3f %10s %14s\n' "cat | vmimage unseal" "$t_unseal" "$(mbs "$t_unseal")" "$BYTES"
printf '%-34s %8.3f %10s\n' "cat | vmimage verify" "$t_verify" "$(mbs "$t_verify")"
printf '%-34s %8.3f %10s %14s\n' "cat | vmimage seal --unsigned" "$t_sealu" "$(mbs "$t_sealu")" "$(stat -c %s "$W/imgu")"
printf '%-34s %8.3f %10s\n' "cat | vmimage unseal (unsigned)" "$t_unsealu" "$(mbs "$t_unsealu")"
echo
echo "ratios (target in brackets):"
echo "  seal throughput / zstd -1 -T0   = $(ratio "$t_zstd" "$t_seal")  [>= 0.9]"
echo "  image size / zstd output        = $(ratio "$s_img" "$s_zstd")  [<= 1.02]"
echo "  unseal throughput / zstd -d     = $(ratio "$t_zstdd" "$t_unseal")  [>= 0.9]"
echo "  verify throughput / zstd -d     = $(ratio "$t_zstdd" "$t_verify")"
echo "  seal throughput / cat           = $(ratio "$t_cat" "$t_seal")"
echo "  seal time, signed / unsigned    = $(ratio "$t_seal" "$t_sealu")  [<= 1.02]"
echo "  unseal time, signed / unsigned  = $(ratio "$t_unseal" "$t_unsealu")  [compare: one Ed25519 check per chunk]"
echo "bench: unsealed bytes identical to the input (cmp)"
