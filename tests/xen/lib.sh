# Helpers for Xen lab scripts (packed by run-lab.sh as /lab/lib.sh).
# Use from a lab script:   . /lab/lib.sh
#
# Reporting (one line each on the console; run-lab.sh collects them):
#   info TEXT / pass NAME TEXT / fail NAME TEXT ("failed" is set to 1)
#   step NAME   progress marker (XENLAB-STEP, not a result)
# Timing:      t=$(now); ...; secs=$(since "$t")
# Guest console (xenconsoled logs every guest to /var/log/xen/console/guest-NAME.log):
#   clog DOM                          the console log path of domain DOM
#   lines LOG                         lines in LOG so far (an offset)
#   count_after LOG FROM first|last [UPTO]  "BOOT COUNT" of a workload count line
#   wait_count LOG FROM MIN TIMEOUT   wait for count >= MIN after line FROM
#   wait_line LOG FROM ERE TIMEOUT    first line matching ERE after FROM
#   bad_lines LOG FROM                workload lines reporting BAD / exit
#   disk_verdict DOM                  the workload's disk check (sets V)
# The workload prints "VMCKPT-WL boot=<id> count=<n> gen=<g> ok" every ~0.5 s
# (tests/guest/workload.c).  Keep polling cheap: every fork costs a lot in a
# PV dom0 under TCG, so each poll is one awk.
failed=0
info() { echo "XENLAB: INFO $*"; }
pass() { echo "XENLAB: PASS $*"; }
fail() { echo "XENLAB: FAIL $*"; failed=1; }
step() { echo "XENLAB-STEP $* uptime=$(cut -d' ' -f1 /proc/uptime)"; }
# Emulator flakes (PVH under nested TCG: a guest dies of a triple fault at
# some base rate that xl's own operations show too; tests/xen/stress.sh
# measures it).  flake_begin: from here on guest deaths are the
# emulator's: clears Xen's log (the serial log keeps it all).  xen_fault:
# the first line of Xen's log since then saying a guest died.
flake_begin() { xl dmesg -c >/dev/null 2>&1; }
xen_fault() {
	xl dmesg 2>/dev/null | tr -d '\r' |
		grep -a -m1 -E 'Triple fault|Domain [0-9]+ crashed|domain_crash' |
		sed 's/^ *//' | cut -c1-200
}
# flake NAME REASON EVIDENCE: the stage cannot go on because the emulated
# machine killed the guest: run-lab.sh retries the stage; never a PASS.
flake() { echo "XENLAB: FLAKE $1 $2; $3"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
elapsed_gt() { awk -v a="$1" -v b="$(now)" -v t="$2" 'BEGIN { exit !(b - a > t) }'; }

clog() { echo "/var/log/xen/console/guest-$1.log"; }
lines() { wc -l 2>/dev/null <"$1" || echo 0; }
# count_after: a count paired with a line offset is read up to that line
# (UPTO): a running guest appends while this reads, and the two disagree.
count_after() {
	awk -v from="$2" -v which="$3" -v upto="${4:-0}" '
		upto > 0 && NR > upto { exit }
		NR > from && match($0, /VMCKPT-WL boot=[0-9a-f]+ count=[0-9]+/) {
			split(substr($0, RSTART, RLENGTH), f, /[ =]/)
			b = f[3]; c = f[5]
			if (which == "first") exit
		}
		END { if (c != "") print b, c }' "$1" 2>/dev/null
}
wait_count() {
	_t=$(now)
	while :; do
		set -- "$1" "$2" "$3" "$4" $(count_after "$1" "$2" last)
		if [ $# = 6 ] && [ "$6" -ge "$3" ]; then echo "$5 $6"; return 0; fi
		elapsed_gt "$_t" "$4" && return 1
		sleep 0.5
	done
}
wait_line() {
	_t=$(now)
	while :; do
		_l=$(awk -v from="$2" -v re="$3" 'NR > from && $0 ~ re { sub(/\r$/, ""); print; exit }' "$1" 2>/dev/null)
		[ -n "$_l" ] && { echo "$_l"; return 0; }
		elapsed_gt "$_t" "$4" && return 1
		sleep 0.5
	done
}
bad_lines() { awk -v from="$2" 'NR > from && /VMCKPT-WL/ && /BAD|exited/' "$1" 2>/dev/null; }
# wait_gone DOM TIMEOUT: wait until domain DOM no longer exists.
wait_gone() {
	_t=$(now)
	while xl domid "$1" >/dev/null 2>&1; do
		elapsed_gt "$_t" "$2" && return 1
		sleep 0.3
	done
}
# went_back LOG FROM: the first workload count line after line FROM whose
# boot id differs from the first one's, or whose count is below the one
# before it (a console ring replayed by a restore may repeat a line, so
# equal counts are fine); nothing if the counter only went forward.
went_back() {
	awk -v from="$2" '
		NR > from && match($0, /VMCKPT-WL boot=[0-9a-f]+ count=[0-9]+/) {
			split(substr($0, RSTART, RLENGTH), f, /[ =]/)
			if (b != "" && (f[3] != b || f[5] + 0 < c)) {
				printf "boot=%s count=%s after boot=%s count=%s\n", f[3], f[5], b, c
				exit
			}
			b = f[3]; c = f[5] + 0
		}' "$1" 2>/dev/null
}
# continuity LOG FROM LAST NAME [running|replay]: after line FROM of LOG the
# workload counter goes on with boot id $boot (sets bc to the count line
# waited for), never backwards, no BAD lines, and starts past LAST (a
# restored domain); "running": a domain that kept running, from LAST on;
# "replay": a restore whose console ring repeats its last line, from LAST on.
continuity() {
	if ! bc=$(wait_count "$1" "$2" $(($3 + 3)) 60); then
		fail "$4" "counter did not continue (last $3)"; return 1
	fi
	set -- "$1" "$2" "$3" "$4" "${5:-}" $(count_after "$1" "$2" first)
	if [ "$6" != "$boot" ] || [ "${bc% *}" != "$boot" ]; then
		fail "$4" "boot id changed: $boot -> $6 (guest rebooted?)"; return 1
	elif [ "$5" != running ] && [ "$7" -lt $(($3 + 1)) ] &&
	     { [ "$5" != replay ] || [ "$7" -lt "$3" ]; }; then
		fail "$4" "counter went back: saved at $3, then $7"; return 1
	elif [ -n "$(went_back "$1" "$2")" ]; then
		fail "$4" "counter: $(went_back "$1" "$2")"; return 1
	elif [ -n "$(bad_lines "$1" "$2")" ]; then
		fail "$4" "workload reports: $(bad_lines "$1" "$2" | head -n 1)"; return 1
	fi
	return 0
}
# disk_verdict DOM: the workload's disk check (wl.disk), asked for on the
# guest's console (its pty, which xl console writes to as well); sets V to
# the line, "boot=B disk seq=S ondisk=D inflight=I blocks=N result=OK|BAD
# [why=W]"; true when result=OK.
disk_verdict() {
	_log=$(clog "$1")
	_tty=$(xenstore-read "/local/domain/$(xl domid "$1")/console/tty" 2>/dev/null)
	_from=$(lines "$_log")
	[ -n "$_tty" ] && printf 'check\n' >"$_tty"
	V=$(wait_line "$_log" "$_from" 'VMCKPT-WL boot=[0-9a-f]+ disk seq=.*result=' 30) ||
		V="no disk verdict on $1's console (tty '$_tty')"
	V=${V#*VMCKPT-WL }
	case $V in *result=OK*) return 0 ;; esac
	return 1
}
# named DOM: how many domains called DOM exist
named() { xl list 2>/dev/null | awk -v n="$1" '$1 == n' | wc -l; }
# Signed streams: this dom0 signs with a key of its own and trusts it.
if [ -z "${VMCKPT_SIGNING_KEY:-}" ] && command -v vmimage >/dev/null 2>&1; then
	[ -s /lab/trusted_signers ] ||
		vmimage keygen --sign -o /lab/signing.key >/lab/trusted_signers 2>/dev/null
	export VMCKPT_SIGNING_KEY=/lab/signing.key VMCKPT_TRUSTED_SIGNERS=/lab/trusted_signers
fi
