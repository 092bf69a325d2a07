#!/bin/sh
# vmckpt on a real Xen 4.17 (runs in dom0 as /lab/run.sh; see run-lab.sh):
# vmsave + vmrestore of a PV domU (new domid, console continues, memory
# intact), the image verified and its inner stream checked by Xen's own
# verify-stream-v2, vmsave --checkpoint, a corrupt image refused with no
# domain left, a save to a full filesystem with the domain still running,
# an `xl save` image sealed with vmimage seal --from-xl and restored by
# vmrestore, a vmsave image unsealed with --to-xl and restored by xl
# restore, vmrestore -c reading the console back, a name clash refused
# up front, `vmsave DOM - | vmrestore -` (the new domain is built as
# DOM--incoming and renamed once the source is gone), the same pipe with
# --checkpoint refused (the source stays, the copy is destroyed), and
# xl save / xl restore timed on the same domain for comparison.
# Usage on the host: tests/xen/run-lab.sh tests/xen/vmckpt.sh 300
. /lab/lib.sh
CFG=/lab/domu.cfg
DOM=wl1
CLOG=$(clog $DOM)
IMG=/images/$DOM.vmimg

finish() {
	xl destroy $DOM >/dev/null 2>&1
	xl destroy $DOM--incoming >/dev/null 2>&1
	echo "---- console of $DOM (last 8 lines)"
	tail -n 8 "$CLOG" 2>/dev/null | tr -d '\r'
	exit $failed
}
ndoms() { xl list 2>/dev/null | awk 'NR > 1' | wc -l; }

step keys
vmimage keygen -o /lab/host.key >/lab/host.rec 2>/tmp/kg.log ||
	{ cat /tmp/kg.log; fail vmckpt-tools "vmimage keygen failed"; finish; }
REC=$(cat /lab/host.rec)
info "$(vmsave --help | grep -i 'backends in this build')"

step create
xl create $CFG >/tmp/create.log 2>&1 || { cat /tmp/create.log; fail xl-create "xl create"; finish; }
id1=$(xl domid $DOM)
bc=$(wait_count "$CLOG" 0 3 90) || { fail domu-boot "no count lines"; finish; }
set -- $bc; boot=$1
pass domu-boot "domid $id1 boot $boot"

# ---- vmsave (default: destroy after durable) + vmrestore ------------------
step vmsave
t=$(now)
if ! vmsave -v -r "$REC" $DOM $IMG >/tmp/save.out 2>&1; then
	cat /tmp/save.out; fail vmsave "vmsave failed"; finish
fi
t_save=$(since "$t")
sleep 0.3
l_save=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last "$l_save"); last=$2
if xl domid $DOM >/dev/null 2>&1; then
	fail vmsave "domain still exists after vmsave"
else
	pass vmsave "${t_save}s $(stat -c %s $IMG) bytes: $(tr '\n' ' ' </tmp/save.out)"
fi
info "vmsave ${t_save}s image=$(stat -c %s $IMG) bytes"
if vmimage verify -q -i /lab/host.key $IMG 2>/tmp/v.log &&
   vmimage unseal -i /lab/host.key -o /images/inner.libxl $IMG 2>>/tmp/v.log &&
   verify-stream-v2 -q -f libxl -i /images/inner.libxl >>/tmp/v.log 2>&1; then
	pass verify "vmimage verify + verify-stream-v2 -f libxl on the inner stream"
else
	tail -n 5 /tmp/v.log; fail verify "image or inner stream rejected"
fi
rm -f /images/inner.libxl

step vmrestore
t=$(now)
if ! id2=$(vmrestore -i /lab/host.key $IMG 2>/tmp/restore.err); then
	cat /tmp/restore.err; fail vmrestore "vmrestore failed"; finish
fi
t_restore=$(since "$t")
if continuity "$CLOG" "$l_save" "$last" vmrestore; then
	pass vmrestore "${t_restore}s domid $id1 -> $id2 (xl says $(xl domid $DOM)), boot $boot"
fi
info "vmrestore ${t_restore}s"

# ---- --checkpoint -------------------------------------------------------
step checkpoint
l_ck=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last); cur=$2
t=$(now)
if vmsave --checkpoint -r "$REC" $DOM /images/ck.vmimg >/tmp/ck.out 2>&1 &&
   [ "$(xl domid $DOM 2>/dev/null)" = "$id2" ] &&
   continuity "$CLOG" "$l_ck" "$cur" vmsave-checkpoint running; then
	pass vmsave-checkpoint "$(since "$t")s, domain $id2 kept running"
else
	cat /tmp/ck.out; fail vmsave-checkpoint "checkpoint failed or guest stopped"
fi

# ---- a corrupt image is refused, no domain left ---------------------------
step corrupt
cp $IMG /images/bad.vmimg
printf 'X' | dd of=/images/bad.vmimg bs=1 seek=$(( $(stat -c %s $IMG) / 2 )) conv=notrunc 2>/dev/null
n0=$(ndoms)
if vmrestore --clone -i /lab/host.key /images/bad.vmimg >/tmp/bad.out 2>/tmp/bad.err; then
	fail corrupt-refused "vmrestore accepted a corrupt image"
elif [ "$(ndoms)" != "$n0" ] || [ "$(wc -l </tmp/bad.err)" != 1 ]; then
	fail corrupt-refused "domains $n0 -> $(ndoms); stderr: $(cat /tmp/bad.err)"
else
	pass corrupt-refused "$(cat /tmp/bad.err)"
fi
rm -f /images/bad.vmimg

# ---- full filesystem: the domain keeps running ----------------------------
step full
mkdir -p /full && mount -t tmpfs -o size=8m tmpfs /full
l_f=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last); cur=$2
if vmsave -r "$REC" $DOM /full/x.vmimg >/tmp/full.out 2>&1; then
	fail full-fs "vmsave to a full filesystem succeeded?"
elif [ -n "$(ls /full)" ] || ! xl domid $DOM >/dev/null 2>&1; then
	fail full-fs "left: $(ls /full); domain: $(xl domid $DOM 2>&1)"
elif continuity "$CLOG" "$l_f" "$cur" full-fs running; then
	pass full-fs "$(cat /tmp/full.out)"
fi
umount /full

# ---- vmrestore -c: the console, read back ------------------------------------
step console
vmsave -r "$REC" $DOM /images/c.vmimg >/dev/null 2>&1
set -- $(count_after "$CLOG" 0 last); cur=$2
( vmrestore -c -i /lab/host.key /images/c.vmimg </dev/null >/tmp/console.out 2>/tmp/console.err & echo $! >/tmp/console.pid )
t=$(now)
while ! grep -q "boot=$boot count=" /tmp/console.out 2>/dev/null; do
	elapsed_gt "$t" 40 && break
	sleep 0.5
done
kill "$(cat /tmp/console.pid)" 2>/dev/null
if grep -q "boot=$boot count=" /tmp/console.out; then
	pass vmrestore-console "$(grep "boot=$boot count=" /tmp/console.out | tail -n 1 | tr -d '\r')"
else
	fail vmrestore-console "no console lines: $(head -c 300 /tmp/console.err)"
fi
sleep 1
xl domid $DOM >/dev/null 2>&1 || fail vmrestore-console "domain gone after detaching"

# ---- an xl save image, sealed, restored by vmrestore ----------------------
step xl-import
set -- $(count_after "$CLOG" 0 last); cur=$2
if xl save $DOM /images/old.xl >/tmp/xl.log 2>&1 &&
   l_x=$(lines "$CLOG") &&
   vmimage seal --from-xl -r "$REC" -o /images/old.vmimg /images/old.xl 2>>/tmp/xl.log &&
   vmrestore -i /lab/host.key /images/old.vmimg >>/tmp/xl.log 2>&1 &&
   continuity "$CLOG" "$l_x" "$cur" xl-import; then
	pass xl-import "xl save -> vmimage seal --from-xl -> vmrestore"
else
	tail -n 5 /tmp/xl.log; fail xl-import "failed"
fi
rm -f /images/old.xl /images/old.vmimg
# ---- and back: a vmsave image unsealed to an xl save file, xl restore -------
step xl-export
set -- $(count_after "$CLOG" 0 last); cur=$2
if vmsave -q -r "$REC" $DOM /images/exp.vmimg >/tmp/xe.log 2>&1 &&
   l_e=$(lines "$CLOG") &&
   vmimage unseal --to-xl -i /lab/host.key -o /images/exp.xl /images/exp.vmimg 2>>/tmp/xe.log &&
   timeout 120 xl restore /images/exp.xl >>/tmp/xe.log 2>&1 &&
   continuity "$CLOG" "$l_e" "$cur" xl-export; then
	pass xl-export "vmsave -> vmimage unseal --to-xl -> xl restore, domid $(xl domid $DOM)"
else
	tail -n 5 /tmp/xe.log; fail xl-export "failed"
	xl domid $DOM >/dev/null 2>&1 || { finish; }
fi
rm -f /images/exp.vmimg /images/exp.xl
# ---- a name clash without a save in progress: refused up front -------------
step clash
n0=$(ndoms)
id_c=$(xl domid $DOM)
if vmrestore -i /lab/host.key $IMG >/tmp/clash.out 2>/tmp/clash.err; then
	fail clash-refused "vmrestore restored over a running $DOM"
elif [ "$(ndoms)" != "$n0" ] || [ "$(wc -l </tmp/clash.err)" != 1 ] ||
     [ "$(xl domid $DOM 2>/dev/null)" != "$id_c" ]; then
	fail clash-refused "domains $n0 -> $(ndoms); stderr: $(cat /tmp/clash.err)"
else
	pass clash-refused "$(cat /tmp/clash.err)"
fi

# ---- vmsave DOM - | vmrestore - ----------------------------------------------
step pipe
id_p=$(xl domid $DOM)
l_p=$(lines "$CLOG")
t=$(now)
{ vmsave -v -r "$REC" $DOM - 2>/tmp/pipe-save.err; echo $? >/tmp/pipe-save.rc; } |
	vmrestore -i /lab/host.key - >/tmp/pipe.out 2>/tmp/pipe.err
rc_r=$?
t_pipe=$(since "$t")
l_p2=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last "$l_p2"); last=$2
id_new=$(xl domid $DOM 2>/dev/null)
ilog=$(clog $DOM--incoming)
[ -s "$ilog" ] && info "pipe: the incoming domain's console went to $ilog"
if [ "$(cat /tmp/pipe-save.rc)" != 0 ] || [ $rc_r != 0 ]; then
	fail vmsave-pipe-vmrestore "vmsave rc $(cat /tmp/pipe-save.rc): $(head -c 300 /tmp/pipe-save.err); vmrestore rc $rc_r: $(head -c 300 /tmp/pipe.err)"
elif [ "$(named $DOM)" != 1 ] || [ "$(named $DOM--incoming)" != 0 ]; then
	fail vmsave-pipe-vmrestore "domains afterwards: $(xl list | awk 'NR > 1 { printf "%s(%s) ", $1, $2 }')"
elif [ -z "$id_new" ] || [ "$id_new" = "$id_p" ] || [ "$(cat /tmp/pipe.out)" != "$id_new" ]; then
	fail vmsave-pipe-vmrestore "domid $id_p -> '$id_new', vmrestore printed '$(cat /tmp/pipe.out)'"
elif [ -n "$(went_back "$CLOG" "$l_p")" ]; then
	fail vmsave-pipe-vmrestore "counter: $(went_back "$CLOG" "$l_p")"
elif continuity "$CLOG" "$l_p2" "$last" vmsave-pipe-vmrestore replay; then
	pass vmsave-pipe-vmrestore "${t_pipe}s domid $id_p -> $id_new, one $DOM, boot $boot, count $last -> $(count_after "$CLOG" "$l_p2" last | cut -d' ' -f2)"
fi
info "pipe: vmsave: $(tr '\n' ' ' </tmp/pipe-save.err | cut -c1-200)"
if ck=$(wait_line "$CLOG" "$l_p" 'VMCKPT-WL boot=[0-9a-f]+ check ' 15); then
	case $ck in
	*result=OK*) pass pipe-memcheck "${ck#* check }" ;;
	*) fail pipe-memcheck "$ck" ;;
	esac
else
	info "pipe: no workload memory check line after the restore (clock did not jump?)"
fi

# ---- the same with --checkpoint: the source stays, the copy must not run -----
step pipe-checkpoint
id_p=$(xl domid $DOM)
n0=$(ndoms)
l_k=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last); cur=$2
t=$(now)
{ vmsave --checkpoint -r "$REC" $DOM - 2>/tmp/pk-save.err; echo $? >/tmp/pk-save.rc; } |
	vmrestore -i /lab/host.key - >/tmp/pk.out 2>/tmp/pk.err
rc_r=$?
if [ $rc_r = 0 ]; then
	fail pipe-checkpoint-refused "vmrestore succeeded beside its running source: $(cat /tmp/pk.out)"
elif [ "$(cat /tmp/pk-save.rc)" != 0 ]; then
	fail pipe-checkpoint-refused "vmsave --checkpoint failed: $(cat /tmp/pk-save.err)"
elif [ "$(wc -l </tmp/pk.err)" != 1 ] || [ "$(ndoms)" != "$n0" ] ||
     [ "$(named $DOM--incoming)" != 0 ] || [ "$(xl domid $DOM 2>/dev/null)" != "$id_p" ]; then
	fail pipe-checkpoint-refused "domains $n0 -> $(ndoms) ($(xl list | awk 'NR > 1 { printf "%s ", $1 }')); stderr: $(cat /tmp/pk.err)"
elif continuity "$CLOG" "$l_k" "$cur" pipe-checkpoint-refused running; then
	pass pipe-checkpoint-refused "$(since "$t")s, $DOM $id_p kept running: $(cat /tmp/pk.err)"
fi

# ---- xl save / xl restore of the same domain, for comparison ----------------
step xl-baseline
t=$(now)
if xl save $DOM /images/base.xl >/tmp/base.log 2>&1; then
	t_xs=$(since "$t")
	t=$(now)
	if xl restore /images/base.xl >>/tmp/base.log 2>&1; then
		t_xr=$(since "$t")
		info "xl save ${t_xs}s / xl restore ${t_xr}s ($(stat -c %s /images/base.xl) bytes);" \
			"vmsave ${t_save}s = $(awk -v a="$t_save" -v b="$t_xs" 'BEGIN { printf "%.2f", a / b }')x," \
			"vmrestore ${t_restore}s = $(awk -v a="$t_restore" -v b="$t_xr" 'BEGIN { printf "%.2f", a / b }')x," \
			"image $(stat -c %s $IMG) bytes = $(awk -v a="$(stat -c %s $IMG)" -v b="$(stat -c %s /images/base.xl)" 'BEGIN { printf "%.2f", a / b }')x"
	else
		tail -n 3 /tmp/base.log; info "xl restore failed (comparison only)"
	fi
else
	tail -n 3 /tmp/base.log; info "xl save failed (comparison only)"
fi
rm -f /images/base.xl

# ---- a domain that already died is refused, never "saved" -----------------
# on_crash=preserve keeps a panicked guest as a crashed domain: vmsave must
# say in one line that it shut down before the save (with Xen's reason),
# write nothing, and leave it for inspection (never run its dead vCPU
# again, as a resume would).
step dead-refused
DEAD=wl1dead
if ! xl create $CFG "name=\"$DEAD\"" 'on_crash="preserve"' >/tmp/create.log 2>&1 ||
   ! wait_count "$(clog $DEAD)" 0 2 90 >/dev/null; then
	cat /tmp/create.log; fail dead-refused "no second PV domain to crash"
else
	id_x=$(xl domid $DEAD)
	tty=$(xenstore-read /local/domain/$id_x/console/tty 2>/dev/null)
	[ -n "$tty" ] && echo panic >"$tty"
	for i in $(seq 1 60); do
		case $(xl list $DEAD 2>/dev/null | awk 'NR == 2 { print $5 }') in *c*) break ;; esac
		sleep 0.5
	done
	vmsave -r "$REC" $DEAD /images/dead.vmimg >/tmp/dead.out 2>/tmp/dead.err
	rc=$?
	if ! xl list $DEAD 2>/dev/null | awk 'NR == 2 { exit $5 !~ /c/ }'; then
		fail dead-refused "the domain did not crash: $(xl list $DEAD 2>&1 | tr '\n' ' ')"
	elif [ $rc != 1 ] || [ "$(wc -l </tmp/dead.err)" != 1 ] ||
	     ! grep -q "^vmsave: $DEAD: the domain had already shut down before the save (reason crash[;)].*: there is no running guest to save; domain left as it was, nothing written$" /tmp/dead.err; then
		fail dead-refused "vmsave exit $rc: $(cat /tmp/dead.err)"
	elif ls /images/dead.vmimg* >/dev/null 2>&1; then
		fail dead-refused "a file was left: $(ls /images/*dead*)"
	elif [ "$(xl domid $DEAD 2>/dev/null)" != "$id_x" ]; then
		fail dead-refused "the crashed domain $id_x is gone"
	else
		pass dead-refused "$(cat /tmp/dead.err)"
	fi
	xl destroy $DEAD >/dev/null 2>&1
fi
finish
