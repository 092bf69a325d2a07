#!/bin/sh
# vmckpt on a real Xen 4.17, live stage (runs in dom0 as /lab/run.sh; see
# run-lab.sh): vmsave --live of a PVH workload domU (libxl's
# LIBXL_SUSPEND_LIVE pre-copy, HAP log-dirty) + vmrestore, counter and
# memory checked; --checkpoint --live --max-downtime 1 --live-timeout 1
# (a forced stop, the guest runs on); --max-downtime, which drives
# libxenguest's xc_domain_save directly with vmckpt's pre-copy policy
# (rounds reported, the inner libxl stream checked by verify-stream-v2,
# restored, memory checked); then vmsave --live
# of a PV domU, which Debian's Xen
# cannot do (built without shadow paging: no PV log-dirty): it must fail
# with one line, leave no file, and leave the domain running.
# Usage on the host: tests/xen/run-lab.sh tests/xen/vmckpt-pvh.sh 300
# PVH under nested TCG has been seen to hang the whole emulated machine:
# this is a stage of its own, and run-lab.sh retries a hang once.
. /lab/lib.sh
DOM=wl2
CLOG=$(clog $DOM)
IMG=/images/$DOM.vmimg

finish() {
	xl destroy $DOM >/dev/null 2>&1
	xl destroy wl1 >/dev/null 2>&1
	echo "---- console of $DOM (last 8 lines)"
	tail -n 8 "$CLOG" 2>/dev/null | tr -d '\r'
	exit $failed
}
step keys
vmimage keygen -o /lab/host.key >/lab/host.rec 2>/tmp/kg.log ||
	{ cat /tmp/kg.log; fail vmckpt-tools "vmimage keygen failed"; finish; }
REC=$(cat /lab/host.rec)

# ---- PVH: vmsave --live + vmrestore -------------------------------------------
step create-pvh
t=$(now)
if ! timeout 90 xl create /lab/domu-pvh.cfg >/tmp/create.log 2>&1; then
	cat /tmp/create.log; fail pvh-create "xl create failed"; finish
fi
bc=$(wait_count "$CLOG" 0 3 120) || { fail pvh-boot "no workload count lines after 120s"; finish; }
boot=${bc% *}
id1=$(xl domid $DOM)
pass pvh-boot "domid $id1 boot $boot, count 3 after $(since "$t")s"

step live-pvh
l0=$(lines "$CLOG")
t=$(now)
if ! timeout 180 vmsave --live -v -r "$REC" $DOM $IMG >/tmp/live.out 2>&1; then
	cat /tmp/live.out; fail pvh-vmsave-live "vmsave --live failed"; finish
fi
t_live=$(since "$t")
sleep 0.3
l_save=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last); last=$2
if xl domid $DOM >/dev/null 2>&1; then
	fail pvh-vmsave-live "domain still exists after vmsave --live"; finish
fi
# The guest ran during the pre-copy: counter lines between the start of
# the save and the stop.
ran=$(awk -v from="$l0" 'NR > from && /VMCKPT-WL boot=.* count=/' "$CLOG" | wc -l)
pass pvh-vmsave-live "${t_live}s $(stat -c %s $IMG) bytes, $ran count lines during the save: $(tr '\n' ' ' </tmp/live.out)"
vmimage verify -q -i /lab/host.key $IMG 2>/tmp/v.log || fail pvh-verify "$(cat /tmp/v.log)"

step restore-pvh
t=$(now)
if ! id2=$(timeout 120 vmrestore -i /lab/host.key $IMG 2>/tmp/restore.err); then
	cat /tmp/restore.err; fail pvh-vmrestore "vmrestore failed"; finish
fi
t_restore=$(since "$t")
if continuity "$CLOG" "$l_save" "$last" pvh-vmrestore; then
	pass pvh-vmrestore "${t_restore}s domid $id1 -> $id2, boot $boot, count $last -> $(count_after "$CLOG" "$l_save" last | cut -d' ' -f2)"
fi
if ck=$(wait_line "$CLOG" "$l_save" 'VMCKPT-WL boot=[0-9a-f]+ check ' 15); then
	case $ck in
	*result=OK*) pass pvh-memcheck "${ck#* check }" ;;
	*) fail pvh-memcheck "$ck" ;;
	esac
else
	info "pvh: no workload memory check line after the restore (clock did not jump?)"
fi

# ---- PVH: --live-timeout stops a pre-copy that cannot meet --max-downtime ----
# (libxenguest path; --checkpoint: the guest must run on afterwards)
step live-pvh-timeout
l_t=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last); cur=$2
if ! timeout 180 vmsave --checkpoint --live --max-downtime 1 --live-timeout 1 --json \
	-r "$REC" $DOM /images/wl2t.vmimg >/tmp/t.json 2>/tmp/t.err; then
	fail pvh-live-timeout "vmsave failed: $(cat /tmp/t.err)"
elif ! grep -q '"forced_stop":true' /tmp/t.json; then
	fail pvh-live-timeout "no forced stop: $(cut -c1-300 /tmp/t.json)"
elif [ "$(xl domid $DOM 2>/dev/null)" != "$id2" ]; then
	fail pvh-live-timeout "domain $id2 gone after --checkpoint: $(xl list | tr '\n' ' ')"
elif continuity "$CLOG" "$l_t" "$cur" pvh-live-timeout running; then
	pass pvh-live-timeout "$id2 kept running: $(cut -c1-300 /tmp/t.json)"
fi
rm -f /images/wl2t.vmimg

# ---- PVH: --max-downtime: xc_domain_save directly, with our pre-copy policy --
step live-pvh-libxenguest
set -- $(count_after "$CLOG" 0 last); cur=$2
l0=$(lines "$CLOG")
t=$(now)
if ! timeout 180 vmsave --live --max-downtime 100 -v -r "$REC" $DOM /images/wl2d.vmimg >/tmp/d.out 2>&1; then
	cat /tmp/d.out; fail pvh-vmsave-live-libxenguest "vmsave --live --max-downtime failed"; finish
fi
t_d=$(since "$t")
sleep 0.3
l_d=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last); last=$2
ran=$(awk -v from="$l0" 'NR > from && /VMCKPT-WL boot=.* count=/' "$CLOG" | wc -l)
if xl domid $DOM >/dev/null 2>&1; then
	fail pvh-vmsave-live-libxenguest "domain still exists after the save"; finish
elif ! grep -q 'pre-copy rounds' /tmp/d.out; then
	fail pvh-vmsave-live-libxenguest "no pre-copy rounds reported: $(tr '\n' ' ' </tmp/d.out)"
else
	pass pvh-vmsave-live-libxenguest "${t_d}s, $ran count lines during the save: $(tr '\n' ' ' </tmp/d.out)"
fi
# The libxl stream around libxc's is ours here: Xen's own checker must agree.
if vmimage unseal -i /lab/host.key -o /images/inner.libxl /images/wl2d.vmimg 2>/tmp/v.log &&
   verify-stream-v2 -q -f libxl -i /images/inner.libxl >>/tmp/v.log 2>&1; then
	pass pvh-libxenguest-stream "verify-stream-v2 -f libxl accepts the inner stream"
else
	tail -n 5 /tmp/v.log; fail pvh-libxenguest-stream "inner stream rejected: $(tail -n 1 /tmp/v.log)"
fi
rm -f /images/inner.libxl
t=$(now)
if ! id3=$(timeout 120 vmrestore -i /lab/host.key /images/wl2d.vmimg 2>/tmp/restore.err); then
	cat /tmp/restore.err; fail pvh-vmrestore-libxenguest "vmrestore failed"; finish
fi
t_r=$(since "$t")
if continuity "$CLOG" "$l_d" "$last" pvh-vmrestore-libxenguest; then
	pass pvh-vmrestore-libxenguest "${t_r}s domid $id2 -> $id3, count $last -> $(count_after "$CLOG" "$l_d" last | cut -d' ' -f2)"
fi
if ck=$(wait_line "$CLOG" "$l_d" 'VMCKPT-WL boot=[0-9a-f]+ check ' 15); then
	case $ck in
	*result=OK*) pass pvh-memcheck-libxenguest "${ck#* check }" ;;
	*) fail pvh-memcheck-libxenguest "$ck" ;;
	esac
fi
xl destroy $DOM >/dev/null 2>&1

# ---- PV: vmsave --live cannot work here; it must fail cleanly -------------------
step pv-live
PLOG=$(clog wl1)
if ! timeout 90 xl create /lab/domu.cfg >/tmp/create1.log 2>&1 ||
   ! bc=$(wait_count "$PLOG" 0 3 90); then
	cat /tmp/create1.log; fail pv-create "PV domU did not start"; finish
fi
boot=${bc% *}
id=$(xl domid wl1)
l=$(lines "$PLOG")
set -- $(count_after "$PLOG" 0 last); cur=$2
if timeout 120 vmsave --live -r "$REC" wl1 /images/pv.vmimg >/tmp/pvlive.out 2>/tmp/pvlive.err; then
	# Not what Debian's build does; say so, and check the image is good.
	info "PV vmsave --live succeeded (shadow paging available?): $(cat /tmp/pvlive.out)"
	if id3=$(timeout 120 vmrestore -i /lab/host.key /images/pv.vmimg 2>/tmp/pvr.err) &&
	   continuity "$PLOG" "$(lines "$PLOG")" "$cur" pv-vmsave-live running; then
		pass pv-vmsave-live "PV live save + restore worked, domid $id -> $id3"
	fi
elif [ -e /images/pv.vmimg ] || ls /images/ | grep -q partial; then
	fail pv-vmsave-live-refused "left behind: $(ls /images)"
elif [ "$(wc -l </tmp/pvlive.err)" != 1 ] || [ "$(xl domid wl1 2>/dev/null)" != "$id" ]; then
	fail pv-vmsave-live-refused "domid $id -> '$(xl domid wl1 2>&1)'; stderr: $(cat /tmp/pvlive.err)"
elif continuity "$PLOG" "$l" "$cur" pv-vmsave-live-refused running; then
	pass pv-vmsave-live-refused "wl1 $id still running; $(cat /tmp/pvlive.err)"
fi
# --max-downtime is for PVH only: refused before anything starts
if vmsave --live --max-downtime 100 -r "$REC" wl1 /images/pv2.vmimg >/dev/null 2>/tmp/pvmd.err; then
	fail pv-max-downtime-refused "vmsave --live --max-downtime of a PV guest succeeded?"
elif [ "$(wc -l </tmp/pvmd.err)" != 1 ] || [ -e /images/pv2.vmimg ] ||
     [ "$(xl domid wl1 2>/dev/null)" != "$id" ]; then
	fail pv-max-downtime-refused "domid $id -> '$(xl domid wl1 2>&1)'; stderr: $(cat /tmp/pvmd.err)"
else
	pass pv-max-downtime-refused "$(cat /tmp/pvmd.err)"
fi
finish
