#!/bin/sh
# Xen lab smoke test (runs in dom0 as /lab/run.sh; see run-lab.sh):
# xl info, xl create a PV workload domU, xl save / xl restore (the counter
# must continue with the same boot id in a new domain, memory intact),
# xl save -c (checkpoint: the domain keeps running), verify-stream-v2 on
# both images.
# Usage on the host: tests/xen/run-lab.sh tests/xen/smoke.sh
. /lab/lib.sh
CFG=/lab/domu.cfg
DOM=wl1
CLOG=$(clog $DOM)
IMG=/images/$DOM.xl
CKPT=/images/$DOM-ckpt.xl

finish() {
	xl destroy $DOM >/dev/null 2>&1
	echo "---- console of $DOM (last 15 lines)"
	tail -n 15 "$CLOG" 2>/dev/null | tr -d '\r'
	echo "---- xl dmesg (last 10 lines)"
	xl dmesg 2>/dev/null | tail -n 10
	exit $failed
}

# ---- xl info ------------------------------------------------------------------
xv=$(xl info 2>/dev/null | sed -n 's/^xen_version *: *//p')
[ -n "$xv" ] || { fail xl-info "xl info failed"; finish; }
info "xen_version=$xv xen_utils=$(dpkg-query -W -f='${Version}' xen-utils-4.17)" \
	"free_memory_mb=$(xl info | sed -n 's/^free_memory *: *//p')" \
	"verify-stream-v2=$(dpkg -L xen-utils-4.17 | grep verify-stream-v2)"
pass xl-info "xen $xv"

# ---- create --------------------------------------------------------------------
step create
t=$(now)
if ! timeout 60 xl create $CFG >/tmp/create.log 2>&1; then
	cat /tmp/create.log
	fail xl-create "xl create failed"; finish
fi
t_create=$(since "$t")
id1=$(xl domid $DOM)
step wait-boot
if ! bc=$(wait_count "$CLOG" 0 3 90); then
	fail domu-boot "no workload count lines in $CLOG after 90s"; finish
fi
set -- $bc; boot=$1
info "xl create ${t_create}s, count=3 after $(since "$t")s, domid=$id1 boot=$boot"
pass domu-boot "domid $id1 boot $boot count $2 after $(since "$t")s"

# ---- save / restore ------------------------------------------------------------
step save
t=$(now)
if ! timeout 120 xl save $DOM $IMG >/tmp/save.log 2>&1; then
	cat /tmp/save.log; fail xl-save "xl save failed"; finish
fi
t_save=$(since "$t")
sleep 0.3   # let xenconsoled drain the last lines of the dead domain
l_save=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last "$l_save"); last=$2
size=$(stat -c %s $IMG)
if xl domid $DOM >/dev/null 2>&1; then
	fail xl-save "domain still exists after xl save"
else
	info "xl save ${t_save}s size=$size bytes last_count=$last"
	pass xl-save "${t_save}s $size bytes"
fi

step restore
t=$(now)
if ! timeout 120 xl restore $IMG >/tmp/restore.log 2>&1; then
	cat /tmp/restore.log; fail xl-restore "xl restore failed"; finish
fi
t_restore=$(since "$t")
id2=$(xl domid $DOM)
if ! bc=$(wait_count "$CLOG" "$l_save" $((last + 3)) 60); then
	fail xl-restore "counter did not continue after restore (last $last)"; finish
fi
set -- $(count_after "$CLOG" "$l_save" first)
first_boot=$1 first=$2
set -- $bc
info "xl restore ${t_restore}s domid=$id2 first_count=$first (saved at $last) now=$2 boot=$1"
if [ "$1" != "$boot" ] || [ "$first_boot" != "$boot" ]; then
	fail xl-restore "boot id changed: $boot -> $first_boot/$1 (guest rebooted?)"
elif [ "$id2" = "$id1" ]; then
	fail xl-restore "same domid $id1 after restore"
elif [ "$first" != $((last + 1)) ]; then
	fail xl-restore "counter jumped: saved at $last, restored first $first"
elif [ -n "$(bad_lines "$CLOG" "$l_save")" ]; then
	fail xl-restore "workload reports: $(bad_lines "$CLOG" "$l_save" | head -n 1)"
else
	pass xl-restore "${t_restore}s domid $id1 -> $id2, count $last -> $first, boot $boot"
fi
# The workload runs a full memory check when it sees the clock jump (which a
# PV restore does): every page must still match its pattern.
if ck=$(wait_line "$CLOG" "$l_save" 'VMCKPT-WL boot=[0-9a-f]+ check ' 15); then
	case $ck in
	*result=OK*) pass xl-restore-memcheck "${ck#* check }" ;;
	*) fail xl-restore-memcheck "$ck" ;;
	esac
else
	info "no workload memory check line after restore (clock did not jump?)"
fi

# ---- checkpoint (xl save -c) -------------------------------------------------
step checkpoint
l_ck=$(lines "$CLOG")
t=$(now)
if ! timeout 120 xl save -c $DOM $CKPT >/tmp/ckpt.log 2>&1; then
	cat /tmp/ckpt.log; fail xl-save-c "xl save -c failed"; finish
fi
t_ckpt=$(since "$t")
id3=$(xl domid $DOM 2>/dev/null)
set -- $(count_after "$CLOG" 0 last); cur=$2
if [ "$id3" != "$id2" ]; then
	fail xl-save-c "domain $DOM gone or changed ($id2 -> '$id3') after xl save -c"
elif ! bc=$(wait_count "$CLOG" "$l_ck" $((cur + 2)) 30); then
	fail xl-save-c "guest not running after checkpoint (count stuck at $cur)"
elif [ -n "$(bad_lines "$CLOG" "$l_ck")" ]; then
	fail xl-save-c "workload reports: $(bad_lines "$CLOG" "$l_ck" | head -n 1)"
else
	info "xl save -c ${t_ckpt}s size=$(stat -c %s $CKPT) bytes, still domid $id3, count $cur -> ${bc#* }"
	pass xl-save-c "${t_ckpt}s domain kept running"
fi

# ---- verify-stream-v2 on both images ---------------------------------------------
# (needs PYTHONPATH=/usr/lib/xen-4.17/lib/python, set by dom0's /init)
step verify
for f in $IMG $CKPT; do
	t=$(now)
	if verify-stream-v2 -q -f xl -i $f >/tmp/verify.log 2>&1; then
		pass verify-stream-v2 "$(basename $f) $(since "$t")s"
	else
		tail -n 5 /tmp/verify.log
		fail verify-stream-v2 "$(basename $f) rejected"
	fi
done
finish
