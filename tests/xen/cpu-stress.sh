#!/bin/sh
# Xen lab: regression check for the emulated CPU (XENLAB_CPU).  With a domU
# running, two fork-heavy loops in dom0 must neither crash nor compute
# different results.  Under QEMU 7.2 TCG with XSAVE exposed this failed in
# every run (segfaults, "malloc(): corrupted top size", ld.so assertions);
# with -cpu max,-smap,-xsave it passes.
# Usage on the host: tests/xen/run-lab.sh tests/xen/cpu-stress.sh 200
. /lab/lib.sh
SECS=${SECS:-45}
info "cpu flags: $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2 | tr ' ' '\n' | grep -E '^(avx|avx2|xsave|xsaveopt|fsgsbase|smap|smep|pcid)$' | tr '\n' ' ')"
timeout 90 xl create /lab/domu.cfg >/dev/null 2>&1 || fail xl-create "failed"
wait_count "$(clog wl1)" 0 2 90 >/dev/null || fail domu-boot "no count lines"
loop() {
	end=$(( $(cut -d. -f1 /proc/uptime) + SECS )); n=0; bad=0; ref=
	while [ "$(cut -d. -f1 /proc/uptime)" -lt $end ]; do
		r=$(ls -1 /usr/bin /usr/lib/x86_64-linux-gnu | sort | md5sum | cut -c1-8)
		[ -n "$ref" ] || ref=$r
		[ "$r" = "$ref" ] || bad=$((bad + 1))
		n=$((n + 1))
	done
	echo "$n $bad" >/tmp/loop$1
}
loop 1 & loop 2 & wait
set -- $(cat /tmp/loop1) $(cat /tmp/loop2)
crashes=$(dmesg | grep -c -E 'segfault|general protection|traps:')
dmesg | grep -E 'segfault|general protection|traps:' | head -n 5
wlbad=$(bad_lines "$(clog wl1)" 0 | wc -l)
msg="iterations $1+$3, mismatches $(($2 + $4)), dom0 crashes $crashes, domU BAD lines $wlbad"
if [ "$crashes" = 0 ] && [ $(($2 + $4)) = 0 ] && [ "$wlbad" = 0 ]; then
	pass cpu-stress "$msg"
else
	fail cpu-stress "$msg"
fi
xl destroy wl1 >/dev/null 2>&1
exit $failed
