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
# or kills the guest with a triple fault (run-lab.sh retries a hang once,
# a FLAKE twice; each retry is printed as a FLAKE: line with its evidence,
# and a stage that flaked on every attempt is a SKIP, never a PASS).
# vmckpt-disk.sh: a PV domU's file-backed disk carried by --disks (a
# stopped save restored elsewhere, a reflink checkpoint restored as a
# clone); its own stage, as it boots its own domU (4-6.5 min of QEMU on a
# loaded 2-core host, hence its longer timeout; vmckpt-pvh.sh, with its
# PVH disk step, took 7.9 min there).
# Every FAIL line names the run's serial log (under build/xenlab/runs/).
# XEN_SCRIPTS: SCRIPT[:TIMEOUT] ... (default timeout 360 s)
for spec in ${XEN_SCRIPTS:-vmckpt.sh vmckpt-disk.sh:600 vmckpt-pvh.sh:600}; do
    script=${spec%%:*}
    tmo=${spec#"$script"}; tmo=${tmo#:}
    out=$("$ROOT/tests/xen/run-lab.sh" "$ROOT/tests/xen/$script" "${tmo:-360}" 2>&1)
    rc=$?
    log=$(printf '%s\n' "$out" | sed -n 's/^run-lab: .* skipped; log: //p' | tail -n 1)
    printf '%s\n' "$out" | sed -n 's/^XENLAB: INFO /    xen: /p'
    printf '%s\n' "$out" | sed -n "s|^XENLAB: RETRIED \(.*\)|FLAKE: xen/$script: retried \1|p"
    printf '%s\n' "$out" | sed -n 's/^XENLAB: \(PASS\|FAIL\|SKIP\) \([^ ]*\)\(.*\)/\1: xen\/\2:\3/p' |
        grep -v '^FAIL: xen/run.sh:' | sed "/^FAIL: /s|\$| (log: ${log:-?})|" |
        { if [ $rc = 4 ]; then grep -v '^PASS: '; else cat; fi; }
    case $rc in
    0|1) ;;
    2) echo "SKIP: xen/$script: the nested Xen lab hung on every attempt (TCG flake; log: ${log:-?})" ;;
    3) echo "SKIP: xen/$script: the lab skipped everything" ;;
    4) echo "SKIP: xen/$script: the emulated machine killed the guest on every attempt (emulator flake, see FLAKE lines): $(printf '%s\n' "$out" | sed -n 's/^XENLAB: FLAKE //p' | tail -n 1) (log: ${log:-?})" ;;
    *) echo "FAIL: xen/$script: run-lab.sh exit $rc (log: ${log:-?})"
       printf '%s\n' "$out" | tail -n 5 ;;
    esac
done
exit 0
