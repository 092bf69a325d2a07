#!/bin/sh
# Xen lab, PVH stage (runs in dom0 as /lab/run.sh; see run-lab.sh):
# a PVH workload domU: xl save / xl restore, then live migration to
# localhost (xl migrate), counter and memory checked after each.  Also
# records that PV live migration fails on Debian's Xen (no shadow paging:
# log-dirty unavailable) and that the PV source keeps running afterwards.
# Usage on the host: tests/xen/run-lab.sh tests/xen/pvh.sh 300
# PVH under nested TCG has been seen to hang the whole emulated machine:
# run this as its own stage (run-lab.sh retries a hang once).
. /lab/lib.sh
DOM=wl2
CLOG=$(clog $DOM)
IMG=/images/$DOM.xl

finish() {
	xl destroy $DOM >/dev/null 2>&1
	xl destroy wl1 >/dev/null 2>&1
	echo "---- console of $DOM (last 10 lines)"
	tail -n 10 "$CLOG" 2>/dev/null | tr -d '\r'
	exit $failed
}
# check_continues FROM_LINE LAST_COUNT NAME: the counter goes on from
# LAST_COUNT with boot id $boot after line FROM_LINE, memory check OK.
check_continues() {
	if ! bc=$(wait_count "$CLOG" "$1" $(($2 + 3)) 60); then
		fail "$3" "counter did not continue (last $2)"; return 1
	fi
	set -- "$1" "$2" "$3" $(count_after "$CLOG" "$1" first)
	if [ "$4" != "$boot" ] || [ "${bc% *}" != "$boot" ]; then
		fail "$3" "boot id changed: $boot -> $4 (guest rebooted?)"; return 1
	fi
	if [ -n "$(bad_lines "$CLOG" "$1")" ]; then
		fail "$3" "workload reports: $(bad_lines "$CLOG" "$1" | head -n 1)"; return 1
	fi
	gap=$(($5 - $2))
	return 0
}

step create-pvh
t=$(now)
if ! timeout 90 xl create /lab/domu-pvh.cfg >/tmp/create.log 2>&1; then
	cat /tmp/create.log; fail pvh-create "xl create failed"; finish
fi
t_create=$(since "$t")
if ! bc=$(wait_count "$CLOG" 0 3 120); then
	fail pvh-boot "no workload count lines after 120s"; finish
fi
boot=${bc% *}
pass pvh-boot "xl create ${t_create}s, count 3 after $(since "$t")s, domid $(xl domid $DOM)"

# ---- save / restore ------------------------------------------------------------
step save-pvh
t=$(now)
if ! timeout 120 xl save $DOM $IMG >/tmp/save.log 2>&1; then
	cat /tmp/save.log; fail pvh-save "xl save failed"; finish
fi
t_save=$(since "$t")
sleep 0.3
l=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last "$l"); last=$2
pass pvh-save "${t_save}s $(stat -c %s $IMG) bytes"
step restore-pvh
t=$(now)
if ! timeout 120 xl restore $IMG >/tmp/restore.log 2>&1; then
	cat /tmp/restore.log; fail pvh-restore "xl restore failed"; finish
fi
t_restore=$(since "$t")
check_continues "$l" "$last" pvh-restore &&
	pass pvh-restore "${t_restore}s domid $(xl domid $DOM), first count +$gap after $last"

# ---- live migration to localhost -------------------------------------------------
step migrate-pvh
l=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last "$l"); last=$2
id=$(xl domid $DOM)
t=$(now)
# -s '': run HOST (here "xl migrate-receive") instead of "ssh HOST xl migrate-receive".
if timeout 180 xl migrate -s '' $DOM 'xl migrate-receive' >/tmp/migrate.log 2>&1; then
	t_mig=$(since "$t")
	info "xl migrate: $(grep -a -E 'migration target|Migration successful|downtime|Saving' /tmp/migrate.log | tr '\n' ' ' | cut -c1-300)"
	id2=$(xl domid $DOM 2>/dev/null)
	if [ -z "$id2" ] || [ "$id2" = "$id" ]; then
		fail pvh-migrate "domain id after migrate: '$id2' (was $id)"
	elif check_continues "$l" "$last" pvh-migrate; then
		pass pvh-migrate "${t_mig}s live to localhost, domid $id -> $id2, first count +$gap"
	fi
else
	tail -n 15 /tmp/migrate.log
	fail pvh-migrate "xl migrate failed"
fi
xl destroy $DOM >/dev/null 2>&1

# ---- PV live migration: expected to fail, source must survive ---------------------
step pv-live
if timeout 90 xl create /lab/domu.cfg >/tmp/create1.log 2>&1 &&
   bc=$(wait_count "$(clog wl1)" 0 2 90); then
	pvlog=$(clog wl1)
	id=$(xl domid wl1)
	if timeout 120 xl migrate -s '' wl1 'xl migrate-receive' >/tmp/migrate1.log 2>&1; then
		info "PV live migration succeeded (shadow paging available?)"
	else
		info "PV live migration fails as expected: $(grep -a -m1 -i 'logdirty' /tmp/migrate1.log | cut -c1-200)"
	fi
	l=$(lines "$pvlog")
	set -- $(count_after "$pvlog" 0 last)
	if xl domid wl1 >/dev/null 2>&1 && wait_count "$pvlog" "$l" $(($2 + 2)) 30 >/dev/null; then
		pass pv-live-fail-keeps-source "wl1 still running (domid $(xl domid wl1), was $id)"
	else
		xl list
		fail pv-live-fail-keeps-source "wl1 not running after the failed live migration"
	fi
else
	cat /tmp/create1.log; fail pv-create "PV domU did not start"
fi
finish
