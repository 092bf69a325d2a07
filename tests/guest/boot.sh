#!/bin/bash
# Boot the vmckpt test guest in the background.
# Usage: boot.sh RUNDIR [WL_MIB] [APPEND_ARG...] [-- QEMU_ARG...]
#   WL_MIB      memory the workload fills (wl.mem, default 64)
#   APPEND_ARG  extra kernel args, e.g. wl.dirty=20 wl.marker=XYZ
#   QEMU_ARG    extra QEMU args, e.g. -incoming defer
# Env: VMCKPT_GUEST_RAM  guest RAM in MiB (default WL_MIB+192)
#      VMCKPT_ACCEL      tcg|kvm (default: kvm if /proc/cpuinfo has vmx/svm)
#      VMCKPT_GUEST_OUT  build.sh output dir (default tests/guest/out)
# Creates RUNDIR/{qemu.pid,console.sock,qmp.sock,serial.log,qemu.log,cmdline}.
set -eu
die() { echo "boot.sh: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: boot.sh RUNDIR [WL_MIB] [APPEND_ARG...] [-- QEMU_ARG...]"
here=$(cd "$(dirname "$0")" && pwd)
run=$1; shift
wl=64
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then wl=$1; shift; fi
append="console=ttyS0 quiet panic=-1 wl.mem=$wl"
while [ $# -gt 0 ] && [ "$1" != -- ]; do append="$append $1"; shift; done
[ $# -gt 0 ] && shift  # drop "--"
ram=${VMCKPT_GUEST_RAM:-$((wl + 192))}
out=${VMCKPT_GUEST_OUT:-$here/out}

"$here/build.sh" "$out" >/dev/null || die "build.sh failed"
mkdir -p "$run"
run=$(cd "$run" && pwd)
if [ -f "$run/qemu.pid" ] && kill -0 "$(cat "$run/qemu.pid")" 2>/dev/null; then
	die "QEMU already running in $run (pid $(cat "$run/qemu.pid"))"
fi
rm -f "$run/console.sock" "$run/qmp.sock" "$run/qemu.pid" "$run/serial.log"

accel=${VMCKPT_ACCEL:-}
if [ -z "$accel" ]; then
	if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then accel=kvm; else accel=tcg; fi
fi
case $accel in
kvm) cpu=host ;;
tcg) cpu=max ;;
*) die "VMCKPT_ACCEL must be tcg or kvm" ;;
esac

cmd=(qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -m "$ram" -smp 1
	-display none -nic none -no-reboot -nodefaults
	-chardev "socket,id=ser0,path=$run/console.sock,server=on,wait=off,logfile=$run/serial.log"
	-serial chardev:ser0
	-qmp "unix:$run/qmp.sock,server=on,wait=off"
	-kernel "$out/vmlinuz" -initrd "$out/initrd.cpio" -append "$append" "$@")
printf '%q ' "${cmd[@]}" >"$run/cmdline"; echo >>"$run/cmdline"
"${cmd[@]}" </dev/null >"$run/qemu.log" 2>&1 &
pid=$!
echo "$pid" >"$run/qemu.pid"
for _ in $(seq 100); do
	[ -S "$run/qmp.sock" ] && [ -S "$run/console.sock" ] && break
	kill -0 "$pid" 2>/dev/null || die "QEMU exited early: $(cat "$run/qemu.log")"
	sleep 0.1
done
[ -S "$run/qmp.sock" ] || die "QEMU did not create its sockets in 10 s"
echo "boot.sh: QEMU pid $pid ($accel, ${ram} MiB, wl.mem=$wl) in $run"
