#!/bin/sh
# Xen lab, PVH stress stage (runs in dom0 as /lab/run.sh; see run-lab.sh and
# tests/xen/stress.sh, which boots it and prints the rates): in one boot, N
# rounds of live saves of the PVH workload domU, through vmckpt and through
# xl, on the same guest, so that their per-operation crash rates can be
# compared (issue 9: PVH guests dying of a triple fault under nested TCG).
#
# One round:
#   vmckpt A: xl create; vmsave --live (libxl, fresh domain); vmrestore;
#             vmsave --live --max-downtime 100 (libxenguest, restored
#             domain); vmrestore; xl destroy
#   vmckpt B: xl create; vmsave --live --max-downtime 100 (libxenguest,
#             fresh); vmrestore; vmsave --live (libxl, restored); vmrestore
#   xl:       xl create; xl migrate live to localhost (fresh); xl migrate
#             live again (of the domain migrate-receive built); xl destroy
# Every operation prints one line
#   XENLAB: STRESS op=OP result=ok|crash|hang|fail secs=S dom=ID [evidence]
# crash = Xen's log shows the domain died (triple fault, crash) or it
#         vanished; hang = it exists but its counter stopped; fail = the
#         tool failed while the guest lived (a product bug: also a FAIL).
# After a crash or hang the chain is abandoned and the next one starts
# with a fresh domain.  The hypervisor log is read with `xl dmesg -c`.
# N: dom0 command line xenlab.n=N (XENLAB_APPEND), default 5.
# xenlab.mode=restored: instead, one domain saved over and over (libxl
# path, libxenguest path, xl migrate in turn, each restored), a new one
# only after a death: restored domains without the boot cost.
. /lab/lib.sh
DOM=wl2
CLOG=$(clog $DOM)
ILOG=$(clog $DOM--incoming)
N=$(sed -n 's/.*xenlab\.n=\([0-9]*\).*/\1/p' /proc/cmdline)
N=${N:-5}

vmimage keygen -o /lab/host.key >/lab/host.rec 2>/tmp/kg.log ||
	{ cat /tmp/kg.log; fail stress-keys "vmimage keygen failed"; exit 1; }
REC=$(cat /lab/host.rec)
xl dmesg -c >/dev/null 2>&1
: >/images/xen.log

# xen_new: the hypervisor log since the last call (kept in /images/xen.log)
xen_new() {
	xl dmesg -c 2>/dev/null | tr -d '\r' | tee -a /images/xen.log
}
# died TEXT: the line of TEXT (Xen's log) saying a domain died, if any
died() {
	printf '%s\n' "$1" | grep -a -m1 -E 'Triple fault|crashed|Domain [0-9]+ .*crash|Unhandled|fatal' |
		sed 's/^ *//' | cut -c1-160
}
record() {      # record OP RESULT SECS [EVIDENCE]
	echo "XENLAB: STRESS op=$1 result=$2 secs=$3 dom=$(xl domid $DOM 2>/dev/null || echo -) ${4:-}"
}
# alive FROM LAST: the counter goes on past LAST after console line FROM,
# same boot id, within 60 s
# (xl migrate-receive builds the domain as wl2--incoming: xenconsoled may
# log it under that name until its SIGHUP, so that log counts too)
alive() {
	_t=$(now)
	while :; do
		for _f in "$CLOG:$1" "$ILOG:0"; do
			set -- "$1" "$2" $(count_after "${_f%:*}" "${_f##*:}" last)
			[ $# = 4 ] && [ "$4" -ge $(($2 + 3)) ] && [ "$3" = "$boot" ] && return 0
		done
		elapsed_gt "$_t" 60 && return 1
		sleep 0.5
	done
}
last_count() {
	set -- $(count_after "$CLOG" 0 last) $(count_after "$ILOG" 0 last)
	[ $# -ge 2 ] || { echo 0; return; }
	[ $# = 4 ] && [ "$4" -gt "$2" ] && { echo "$4"; return; }
	echo "$2"
}

# judge OP SECS RC OUTFILE FROM LAST [gone]: classify one operation.
# "gone": success means the domain no longer runs here (a vmsave that
# destroys it); otherwise the counter must go on after line FROM.
judge() {
	_x=$(xen_new)
	_d=$(died "$_x")
	if [ -n "$_d" ]; then
		record "$1" crash "$2" "xen: $_d; tool: $(tail -n 1 "$4" | cut -c1-200)"
		return 1
	fi
	if [ "$3" != 0 ]; then
		if ! xl domid $DOM >/dev/null 2>&1; then
			record "$1" crash "$2" "domain vanished; tool: $(tail -n 1 "$4" | cut -c1-200)"
		else
			record "$1" fail "$2" "rc=$3: $(tail -n 2 "$4" | tr '\n' ' ' | cut -c1-300)"
			fail "stress-$1" "rc=$3: $(tail -n 1 "$4" | cut -c1-200)"
		fi
		return 1
	fi
	if [ "${7:-}" = gone ]; then
		if xl domid $DOM >/dev/null 2>&1; then
			record "$1" fail "$2" "domain still exists after the save"
			fail "stress-$1" "domain still exists after the save"
			return 1
		fi
		record "$1" ok "$2" "$(grep -o 'pre-copy rounds [0-9]*' "$4")"
		return 0
	fi
	if ! alive "$5" "$6"; then
		_x=$(xen_new); _d=$(died "$_x")
		if [ -n "$_d" ]; then
			record "$1" crash "$2" "xen: $_d (after the operation)"
		elif ! xl domid $DOM >/dev/null 2>&1; then
			record "$1" crash "$2" "domain vanished after the operation"
		else
			record "$1" hang "$2" "counter stopped at $(last_count) (saved at $6)"
		fi
		return 1
	fi
	record "$1" ok "$2"
}

create() {      # create: a fresh PVH domain, counter at 3; sets boot
	xl destroy $DOM >/dev/null 2>&1
	xen_new >/dev/null
	: >"$ILOG"
	_t=$(now)
	_l=$(lines "$CLOG")
	if ! timeout 90 xl create /lab/domu-pvh.cfg >/tmp/create.log 2>&1; then
		record boot fail "$(since "$_t")" "xl create: $(tail -n 1 /tmp/create.log)"
		fail stress-boot "xl create: $(tail -n 1 /tmp/create.log)"
		return 1
	fi
	if ! _bc=$(wait_count "$CLOG" "$_l" 3 120); then
		_x=$(xen_new); _d=$(died "$_x")
		if [ -n "$_d" ]; then
			record boot crash "$(since "$_t")" "xen: $_d"
		else
			record boot hang "$(since "$_t")" "no counter after 120 s"
		fi
		return 1
	fi
	boot=${_bc% *}
	xen_new >/dev/null
	record boot ok "$(since "$_t")"
}

vmsave_op() {   # vmsave_op OP ARGS...: save live, then restore
	_op=$1; shift
	_t=$(now)
	timeout 180 vmsave -v --live "$@" -r "$REC" $DOM /images/s.vmimg >/tmp/op.out 2>&1
	_rc=$?
	judge "$_op" "$(since "$_t")" $_rc /tmp/op.out 0 0 gone || return 1
	_last=$(last_count)
	_l=$(lines "$CLOG")
	_t=$(now)
	timeout 120 vmrestore -i /lab/host.key /images/s.vmimg >/tmp/op.out 2>&1
	_rc=$?
	rm -f /images/s.vmimg
	judge vmrestore "$(since "$_t")" $_rc /tmp/op.out "$_l" "$_last"
}

xl_migrate_op() {
	_t=$(now)
	_l=$(lines "$CLOG")
	_last=$(last_count)
	: >"$ILOG"
	timeout 180 xl migrate -s '' $DOM 'xl migrate-receive' >/tmp/op.out 2>&1
	_rc=$?
	kill -HUP "$(cat /run/xenconsoled.pid)" 2>/dev/null
	judge "$1" "$(since "$_t")" $_rc /tmp/op.out "$_l" "$_last"
}

MODE=$(sed -n 's/.*xenlab\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)
info "stress: N=$N rounds of PVH live saves, vmckpt and xl, mode ${MODE:-rounds}"
i=0
# mode "restored": one domain saved over and over, each save restored
# (the libxl path, the libxenguest path and xl migrate in turn); a new
# domain only after a death.  Ops are named by the domain's past.
if [ "$MODE" = restored ]; then
	past=none
	while [ $i -lt "$N" ]; do
		i=$((i + 1))
		step "stress-restored-$i"
		if [ "$past" = none ]; then create && past=fresh || continue; fi
		vmsave_op vmsave-libxl-$past && past=restored || { past=none; continue; }
		vmsave_op vmsave-libxenguest-$past --max-downtime 100 || { past=none; continue; }
		xl_migrate_op xl-migrate-$past || past=none
	done
	i=$N
fi
while [ $i -lt "$N" ]; do
	i=$((i + 1))
	step "stress-round-$i"
	create && vmsave_op vmsave-libxl-fresh &&
		vmsave_op vmsave-libxenguest-restored --max-downtime 100
	create && vmsave_op vmsave-libxenguest-fresh --max-downtime 100 &&
		vmsave_op vmsave-libxl-restored
	create && xl_migrate_op xl-migrate-fresh && xl_migrate_op xl-migrate-restored
	xl destroy $DOM >/dev/null 2>&1
done
info "stress: done, $i rounds"
grep -a -c 'Triple fault' /images/xen.log | sed 's/^/XENLAB: INFO stress: triple-fault lines in the Xen log: /'
pass stress-pvh "$i rounds ran (the rates: tests/xen/stress.sh)"
exit $failed
