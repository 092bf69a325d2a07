#!/bin/bash
# Boot real Xen 4.17 under QEMU TCG and run one lab script in dom0.
#
# Usage: run-lab.sh SCRIPT [TIMEOUT_SECONDS]     (default timeout 240)
#
# SCRIPT becomes /lab/run.sh in dom0 (run by dom0's /init from /lab, stdout
# on the Xen console).  It reports with lines
#     XENLAB: PASS name ...   XENLAB: FAIL name reason   XENLAB: INFO ...
# Also packed: /lab/lib.sh (helpers: . /lab/lib.sh), /lab/bin/{vmsave,vmrestore,vmimage,vmctl,vmmigrate} from
# build/ when they exist, every file of $XENLAB_FILES (space-separated,
# landing in /lab/files/), and /lab/domu.cfg + /lab/domu/{vmlinuz,initrd.cpio}
# (those come with dom0.cpio).
#
# Prints the XENLAB lines (also "XENLAB: SKIP name reason"); exit status 0
# only if at least one PASS and no FAIL; 3 if only SKIPs; 1 on FAIL or no
# PASS; 2 when the lab itself failed (timeout, no poweroff) on every
# attempt; 4 when every attempt ended in an emulator FLAKE.  A hang is
# retried XENLAB_RETRIES times, a run whose script reported a FLAKE (and
# no FAIL) XENLAB_FLAKE_RETRIES times; each retry shows as an
# "XENLAB: RETRIED attempt=N hang|flake: ... (log: ...)" line.
# Run files: build/xenlab/runs/<time>-<pid>/{serial.log,results.txt,cmdline,lab.cpio}
# (earlier attempts: serial.attemptN.log).
#
# Env: XENLAB_OUT=DIR     build-lab.sh output (default tests/xen/out)
#      XENLAB_RUNDIR=DIR  where the run's files go (default build/xenlab/runs/<time>-<pid>)
#      XENLAB_VERBOSE=1   copy the whole serial console to stderr while running
#      XENLAB_FILES=...   extra host files to pack into /lab/files/
#      XENLAB_APPEND=...  extra dom0 kernel args (e.g. xenlab.images=1000M)
#      XENLAB_XEN_APPEND=... extra Xen command-line args
#      XENLAB_RETRIES=1   reruns after a hang / no poweroff (not after FAILs)
#      XENLAB_FLAKE_RETRIES=2  reruns after a FLAKE (a guest killed by the emulator)
#      XENLAB_KEEP=1      keep the run's concatenated initrd.cpio
#      XENLAB_TCG_THREAD=multi|single   QEMU TCG threading
#      XENLAB_CPU=max,-smap,-xsave      QEMU -cpu (see README: XSAVE under
#                         TCG corrupts dom0 userspace once a domU runs)
#      XENLAB_MEM=4G XENLAB_SMP=2 XENLAB_DOM0_MEM=2G
# On timeout the Xen debug keys q, r, 0 are sent over the serial socket first
# (domain/run-queue/dom0-register dumps land in serial.log).  While a lab
# runs, `socat - UNIX-CONNECT:RUN/serial.sock` talks to the console.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
die() { echo "run-lab: ERROR: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: run-lab.sh SCRIPT [TIMEOUT]"
script=$1
timeout=${2:-240}
[ -f "$script" ] || die "no such script: $script"
out=${XENLAB_OUT:-$here/out}
if [ "$(id -u)" != 0 ]; then
	echo "XENLAB: SKIP lab needs root (debootstrap, mknod, chroot)"
	exit 3
fi

"$here/build-lab.sh" "$out" || die "build-lab.sh failed"
out=$(cd "$out" && pwd)

runs=$top/build/xenlab/runs
if [ -z "${XENLAB_RUNDIR:-}" ] && [ -d "$runs" ]; then
	# keep the last 30 runs
	ls -1d "$runs"/*/ 2>/dev/null | head -n -30 | xargs -r rm -rf
fi
run=${XENLAB_RUNDIR:-$runs/$(date +%Y%m%dT%H%M%S)-$$}
mkdir -p "$run"
run=$(cd "$run" && pwd)
log=$run/serial.log
sock=$run/serial.sock
if [ ${#sock} -gt 100 ]; then   # sun_path limit
	sockdir=$(mktemp -d /tmp/xenlab.XXXXXX); sock=$sockdir/serial.sock
fi

# ---- lab.cpio: /lab/run.sh + tools, appended to dom0.cpio ----------------
st=$run/lab
rm -rf "$st"
mkdir -p "$st/lab/bin" "$st/lab/files"
install -m 755 "$script" "$st/lab/run.sh"
install -m 644 "$here/lib.sh" "$st/lab/lib.sh"
for t in vmsave vmrestore vmimage vmctl vmmigrate; do
	[ -x "$top/build/$t" ] && cp "$top/build/$t" "$st/lab/bin/"
done
[ -f "$top/build/libvmckpt.so.0" ] && cp "$top/build/libvmckpt.so.0" "$st/lab/bin/"
for f in ${XENLAB_FILES:-}; do
	cp -a "$f" "$st/lab/files/" || die "cannot pack $f"
done
(cd "$st" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$run/lab.cpio" ||
	die "packing lab.cpio failed"
rm -rf "$st"
# The dom0 kernel gets exactly one initrd from Xen: concatenated newc archives.
cat "$out/dom0.cpio" "$run/lab.cpio" >"$run/initrd.cpio"

# ---- boot ---------------------------------------------------------------------
xen_append="dom0_mem=${XENLAB_DOM0_MEM:-2G},max:${XENLAB_DOM0_MEM:-2G} dom0_max_vcpus=2 console=com1 com1=115200,8n1 ${XENLAB_XEN_APPEND:-}"
# Module arguments inside -initrd cannot contain commas.
dom0_append="console=hvc0 earlyprintk=xen ${XENLAB_APPEND:-}"
case $dom0_append in *,*) die "XENLAB_APPEND must not contain commas" ;; esac
cmd=(qemu-system-x86_64 -accel "tcg,thread=${XENLAB_TCG_THREAD:-multi},tb-size=1024"
	-cpu "${XENLAB_CPU:-max,-smap,-xsave}" -m "${XENLAB_MEM:-4G}" -smp "${XENLAB_SMP:-2}" -no-reboot
	-kernel "$out/xen-4.17-amd64" -append "$xen_append"
	-initrd "$out/vmlinuz $dom0_append,$run/initrd.cpio"
	-net none -display none -monitor none
	-chardev "socket,id=ser0,path=$sock,server=on,wait=off,logfile=$log"
	-serial chardev:ser0)
printf '%q ' "${cmd[@]}" >"$run/cmdline"; echo >>"$run/cmdline"

# boot_once: one QEMU run; sets timed_out, qrc, total, ready.
boot_once() {
	: >"$log"
	t0=$(date +%s.%N)
	"${cmd[@]}" </dev/null >"$run/qemu.log" 2>&1 &
	qpid=$!
	tailpid=
	if [ "${XENLAB_VERBOSE:-0}" = 1 ]; then
		tail -n +1 -f "$log" --pid=$qpid >&2 &
		tailpid=$!
	fi
	echo "run-lab: QEMU pid $qpid, log $log, timeout ${timeout}s" >&2
	ready=""
	timed_out=0
	while kill -0 $qpid 2>/dev/null; do
		if [ -z "$ready" ] && grep -aq 'XENLAB: INFO dom0-ready' "$log"; then
			ready=$(since "$t0")
		fi
		if awk -v a="$t0" -v b="$(date +%s.%N)" -v t="$timeout" 'BEGIN{exit !(b-a > t)}'; then
			timed_out=1
			# Ask Xen for a state dump before killing: CTRL-A x3 switches the
			# serial input to Xen; 'q' dumps domains, 'r' run queues, '0' dom0 vCPUs.
			python3 - "$sock" <<'PY' 2>/dev/null
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"\x01\x01\x01"); time.sleep(0.5)
for k in b"qr0":
    s.sendall(bytes([k])); time.sleep(1)
time.sleep(2)
PY
			kill $qpid 2>/dev/null
			sleep 1
			kill -9 $qpid 2>/dev/null
			break
		fi
		sleep 0.2
	done
	wait $qpid 2>/dev/null
	qrc=$?
	total=$(since "$t0")
	if [ -n "$tailpid" ]; then kill $tailpid 2>/dev/null; wait $tailpid 2>/dev/null; fi
	[ -n "$ready" ] || ready=$(tr -d '\r' <"$log" | grep -aq 'XENLAB: INFO dom0-ready' && echo "<0.2" || echo never)
	return 0
}
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# ---- run, retrying hangs and emulator flakes -----------------------------------
# A timeout or a machine that never reaches poweroff is retried (nested TCG
# occasionally wedges), and so is a run whose script reported a FLAKE (the
# emulated machine killed a guest: a triple fault in Xen's log) and no
# FAIL; a FAIL printed by a script that finished is never retried.
res=$run/results.txt
retries=${XENLAB_RETRIES:-1}
flake_retries=${XENLAB_FLAKE_RETRIES:-2}
attempt=0 nhang=0 nflake=0
: >"$run/earlier.txt"
while :; do
	attempt=$((attempt + 1))
	boot_once
	tr -d '\r' <"$log" | grep -ao 'XENLAB: .*' | grep -v '^XENLAB: TICK' >"$res"
	lasttick=$(tr -d '\r' <"$log" | grep -ao 'XENLAB: TICK.*' | tail -n 1 | sed 's/.*uptime=//')
	hung="" flaky=""
	if [ $timed_out = 1 ]; then
		hung="lab timed out after ${timeout}s, last dom0 heartbeat at uptime ${lasttick:-none}"
	elif ! grep -aq 'XENLAB: INFO poweroff' "$res"; then
		hung="lab did not reach poweroff (qemu exit $qrc)"
	elif grep -aq '^XENLAB: FLAKE' "$res" && ! grep -aq '^XENLAB: FAIL' "$res"; then
		flaky=$(grep -a -m1 '^XENLAB: FLAKE' "$res" | sed 's/^XENLAB: FLAKE //')
	fi
	echo "XENLAB: INFO host attempt=$attempt qemu_seconds=$total dom0_ready_at=$ready qemu_exit=$qrc timed_out=$timed_out" >>"$res"
	[ -n "$hung$flaky" ] || break
	if [ -n "$hung" ]; then
		nhang=$((nhang + 1))
		if [ $nhang -gt "$retries" ]; then
			echo "XENLAB: FAIL $hung (log: $log)" >>"$res"
			break
		fi
		why="hang: $hung"
	else
		nflake=$((nflake + 1))
		if [ $nflake -gt "$flake_retries" ]; then
			echo "XENLAB: INFO emulator flake on every attempt: $flaky (log: $log)" >>"$res"
			break
		fi
		why="flake: $flaky"
	fi
	mv "$log" "$run/serial.attempt$attempt.log"
	echo "XENLAB: RETRIED attempt=$attempt $why (log: $run/serial.attempt$attempt.log)" >>"$run/earlier.txt"
	echo "run-lab: attempt $attempt: $why; retrying" >&2
done
cat "$run/earlier.txt" >>"$res"
cat "$res"
pass=$(grep -c '^XENLAB: PASS' "$res")
fail=$(grep -c '^XENLAB: FAIL' "$res")
skip=$(grep -c '^XENLAB: SKIP' "$res")
echo "run-lab: $pass passed, $fail failed, $skip skipped; log: $log" >&2
if ! grep -aq 'XENLAB: INFO dom0-ready' "$res"; then
	echo "run-lab: dom0 never became ready; last console lines:" >&2
	tr -d '\r' <"$log" | tail -n 25 >&2
fi
[ "${XENLAB_KEEP:-0}" = 1 ] || rm -f "$run/initrd.cpio"
rm -f "$sock"; [ -n "${sockdir:-}" ] && rmdir "$sockdir"
[ -n "$flaky" ] && exit 4
[ "$fail" = 0 ] && [ "$pass" -gt 0 ] && exit 0
[ "$fail" = 0 ] && [ "$pass" = 0 ] && [ "$skip" -gt 0 ] && [ -z "$hung" ] && exit 3
[ -n "$hung" ] && exit 2
exit 1
