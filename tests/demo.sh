#!/bin/bash
# demo.sh - the main job, end to end (make demo): boot a real guest, save it
# sealed with vmsave, restore it with vmrestore, show its console continuing.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/build
D=$(mktemp -d /tmp/vmckpt-demo.XXXXXX)
export VMCKPT_RUNDIR=$D/run
mkdir -p "$VMCKPT_RUNDIR"
cleanup() {
    for id in $("$B/vmctl" list 2>/dev/null | awk '$1 ~ /^[0-9]+$/ {print $1}'); do
        "$B/vmctl" destroy "$id" >/dev/null 2>&1 || true
    done
    rm -rf "$D"
}
trap cleanup EXIT
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
wait_for() {     # FILE REGEX TIMEOUT
    for _ in $(seq $(($3 * 10))); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo: timed out waiting for /$2/ in $1" >&2
    return 1
}

eval "$("$ROOT/tests/guest/build.sh" 2>/dev/null |
        sed -n 's/^kernel: /KERNEL=/p; s/^initrd: /INITRD=/p')"
if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then
    ACCEL=(-accel kvm -cpu host)
else
    ACCEL=(-accel tcg -cpu max)      # kvm_pvm here cannot run a stock kernel
fi

say "vmimage keygen -o host.key    # who may read: an X25519 identity"
RECIPIENT=$("$B/vmimage" keygen -o "$D/host.key")
echo "$RECIPIENT"
say "vmimage keygen --sign -o signing.key    # who made it: an Ed25519 signing key"
SIGNER=$("$B/vmimage" keygen --sign -o "$D/signing.key")
echo "$SIGNER"

say "vmctl start demo -- ${ACCEL[*]} -m 512 -kernel vmlinuz -initrd initrd.cpio ..."
ID=$("$B/vmctl" start demo -- "${ACCEL[@]}" -m 512 -smp 1 -display none \
     -nic none -no-reboot -nodefaults -kernel "$KERNEL" -initrd "$INITRD" \
     -append "console=ttyS0 quiet panic=-1 wl.mem=128 wl.dirty=10")
echo "domain $ID"
LOG=$VMCKPT_RUNDIR/$ID/console.log
wait_for "$LOG" 'ready .*result=OK' 90
wait_for "$LOG" 'count=4 ' 30
say "tail -3 console.log    # the guest's workload: boot id, counter"
tail -3 "$LOG"

say "vmsave -r $RECIPIENT --signing-key signing.key demo demo.vmimg"
cp "$LOG" "$D/before.log"
"$B/vmsave" -v -r "$RECIPIENT" --signing-key "$D/signing.key" demo "$D/demo.vmimg"
LAST=$(grep -o 'count=[0-9]*' "$D/before.log" | tail -1)
echo "(the guest's last line before the save: $(grep count= "$D/before.log" | tail -1))"
say "vmctl list    # the domain is gone: its state is in the sealed image"
"$B/vmctl" list
say "vmimage info demo.vmimg    # without the key: the public header and its signer"
"$B/vmimage" info "$D/demo.vmimg"
say "vmrestore -i host.key demo.vmimg    # refused: this host does not trust the signer yet"
: > "$D/trusted_signers"           # an empty list: no one is trusted
"$B/vmrestore" -i "$D/host.key" --trusted-signers "$D/trusted_signers" \
    "$D/demo.vmimg" || true

say "vmimage config -i host.key demo.vmimg    # what a restore would run here"
"$B/vmimage" config -i "$D/host.key" "$D/demo.vmimg" 2>&1 | cut -c1-160 || true
GUEST=$(dirname "$KERNEL")
say "vmrestore -i host.key -t $SIGNER --allow-dir ${GUEST#"$ROOT"/} demo.vmimg"
NEW=$("$B/vmrestore" -i "$D/host.key" -t "$SIGNER" --allow-dir "$GUEST" "$D/demo.vmimg")
echo "new domain $NEW"
NLOG=$VMCKPT_RUNDIR/$NEW/console.log
wait_for "$NLOG" 'count=' 30
sleep 1.5
say "head -3 console.log of domain $NEW    # the same boot id, ${LAST} + 1 ..."
head -3 "$NLOG"
say "echo check > console    # the workload re-checks every page"
python3 "$ROOT/tests/guest/console.py" "$VMCKPT_RUNDIR/$NEW/console.sock" \
    --send check --expect 'check .*result=' --timeout 30
say "vmctl list"
"$B/vmctl" list
echo
echo "demo: the restored guest continued where it stopped, every page intact."
