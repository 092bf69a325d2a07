#!/bin/bash
# xen.sh - vmckpt against a real Xen 4.17 booted under QEMU here
# (tests/xen/): the lab's XENLAB: lines become PASS:/FAIL:/SKIP: lines.
# VMC_NO_XEN=1 skips it (loudly).  Also `make check-xen`.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ "${VMC_NO_XEN:-0}" = 1 ]; then
    echo "SKIP: xen/lab: VMC_NO_XEN=1"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "SKIP: xen/lab: needs root (mknod, debootstrap)"
    exit 0
fi
# vmckpt.sh: PV save/restore/pipe/...; vmckpt-pvh.sh: --live of a PVH guest,
# a stage of its own because PVH under nested TCG sometimes hangs the lab
# (run-lab.sh retries a hang once, then it is a SKIP).
for script in ${XEN_SCRIPTS:-vmckpt.sh vmckpt-pvh.sh}; do
    out=$("$ROOT/tests/xen/run-lab.sh" "$ROOT/tests/xen/$script" 300 2>&1)
    rc=$?
    printf '%s\n' "$out" | sed -n 's/^XENLAB: INFO /    xen: /p'
    printf '%s\n' "$out" | sed -n 's/^XENLAB: \(PASS\|FAIL\|SKIP\) \([^ ]*\)\(.*\)/\1: xen\/\2:\3/p' |
        grep -v '^FAIL: xen/run.sh:'
    case $rc in
    0|1) ;;
    2) echo "SKIP: xen/$script: the nested Xen lab hung on every attempt (TCG flake)" ;;
    3) echo "SKIP: xen/$script: the lab skipped everything" ;;
    *) echo "FAIL: xen/$script: run-lab.sh exit $rc"
       printf '%s\n' "$out" | tail -n 5 ;;
    esac
done
exit 0
