#!/bin/bash
# stress.sh [N] | --summary SERIAL_LOG - `make check-xen-stress N=...`: boots the Xen lab once with
# tests/xen/stress-pvh.sh (N rounds of PVH live saves through vmckpt and
# through xl on the same guest) and prints, per operation and per tool, how
# often the guest died, with the Xen log line of every death.  Not part of
# `make check` (about 1.5 min of lab time per round).
#
# Rates are deaths / attempts with a 95 % Wilson interval; two tools'
# rates differ when their intervals do not overlap.  With per-operation
# rates near 10 %, N=10 (40 vmckpt live saves against 20 xl live
# migrations) separates a doubled rate only roughly: see the issue-9 note.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
summary() {
	awk '
	function wilson(k, n,   p, z, d, c, h, lo) {
		if (n == 0) return "-"
		z = 1.96; p = k / n; d = 1 + z*z/n; c = p + z*z/(2*n)
		h = z * sqrt(p*(1-p)/n + z*z/(4*n*n))
		lo = 100*(c-h)/d; if (lo < 0) lo = 0
		return sprintf("%.0f-%.0f%%", lo, 100*(c+h)/d)
	}
	function add(key, res) {
		n[key]++
		if (res == "crash" || res == "hang") k[key]++
		if (res == "fail") f[key]++
		if (!(key in seen)) { seen[key] = 1; order[++no] = key }
	}
	/^XENLAB: STRESS / {
		op = ""; res = ""
		for (i = 3; i <= NF; i++) {
			if ($i ~ /^op=/) op = substr($i, 4)
			if ($i ~ /^result=/) { res = substr($i, 8); sub(/[^a-z].*/, "", res) }
		}
		add(op, res)
		if (op ~ /^vmsave-/) add("ALL vmckpt live saves", res)
		if (op ~ /^xl-migrate/) add("ALL xl live migrations", res)
		if (res == "crash" || res == "hang") ev[++ne] = $0
	}
	END {
		printf "%-30s %8s %7s %6s %8s  %s\n", "operation", "attempts", "deaths", "fails", "rate", "95% interval"
		for (j = 1; j <= no; j++) {
			key = order[j]
			printf "%-30s %8d %7d %6d %7.1f%%  %s\n", key, n[key], k[key], f[key],
				100 * k[key] / n[key], wilson(k[key], n[key])
		}
		for (j = 1; j <= ne; j++) print "death: " ev[j]
	}' "$1"
}
# stress.sh --summary LOG: the rates of an earlier run (its serial.log)
if [ "${1:-}" = --summary ]; then
	tr -d '\r' <"$2" | grep -a '^XENLAB: STRESS' >"/tmp/stress-summary.$$"
	summary "/tmp/stress-summary.$$"
	rm -f "/tmp/stress-summary.$$"
	exit 0
fi
N=${1:-${N:-5}}
timeout=$((N * 240 + 180))
run=${XENLAB_RUNDIR:-$top/build/xenlab/stress-$(date +%Y%m%dT%H%M%S)}
mkdir -p "$run"
echo "stress: N=$N, lab timeout ${timeout}s, run files in $run" >&2
# MODE=restored (make check-xen-stress MODE=restored): see stress-pvh.sh
XENLAB_RUNDIR=$run XENLAB_RETRIES=0 XENLAB_FLAKE_RETRIES=0 \
XENLAB_APPEND="xenlab.n=$N ${MODE:+xenlab.mode=$MODE} ${XENLAB_APPEND:-}" \
	"$here/run-lab.sh" "$here/stress-pvh.sh" "$timeout" >"$run/lab.out" 2>&1
rc=$?
grep -a '^XENLAB: \(FAIL\|INFO stress\)' "$run/lab.out"
summary "$run/lab.out" | tee "$run/summary.txt"
echo "stress: lab exit $rc; serial log: $run/serial.log" >&2
grep -q '^XENLAB: STRESS' "$run/lab.out" || { echo "stress: no operation ran" >&2; exit 1; }
exit 0
