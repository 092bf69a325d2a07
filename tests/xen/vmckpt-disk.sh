#!/bin/sh
# vmckpt on a real Xen 4.17 with a PV domU's file-backed disks (runs in
# dom0 as /lab/run.sh): the workload keeps a journal on xvdb (wl.disk);
# xvda holds 64 MiB of data and is carried first, so that the journal is
# read seconds after a checkpoint's guest runs again (only a disk frozen
# inside the pause agrees with the memory then); both are raw files on a
# reflink XFS (a loop-mounted image, mkfs.xfs -m reflink=1).
# A checkpoint of its memory alone is refused, --memory-only is timed;
# vmsave --checkpoint --disks (the disk frozen by a reflink while the domain
# is still suspended) restored as a --clone on its own disk beside the
# running original: both guests' disk and memory agree; a stopped
# vmsave --disks restored with --disk-dir into another directory (the
# restored disk 0600 and sparse, memory and disk agree, the counter goes
# on); the same checkpoint of that domain, whose disk is now on tmpfs (no
# reflink: a sparse copy inside the pause), timed against the other two;
# vmmigrate --disks of it within dom0 into a third directory (no shared
# storage): the copy's memory and disks agree; saved again without its
# disks, which then move: vmrestore --disk ID=PATH finds them.
# Usage on the host: tests/xen/run-lab.sh tests/xen/vmckpt-disk.sh 300
. /lab/lib.sh
CFG=/lab/domu-disk.cfg
DOM=wld
CLOG=$(clog $DOM)
XFS=/xfs
export VMCKPT_ALLOW_DIRS=/xfs:/images

finish() {
	for d in $DOM $DOM-clone $DOM--incoming; do xl destroy $d >/dev/null 2>&1; done
	echo "---- console of $DOM (last 8 lines)"
	tail -n 8 "$CLOG" 2>/dev/null | tr -d '\r'
	echo "---- xen-hotplug.log (last 8 lines)"
	tail -n 8 /var/log/xen/xen-hotplug.log 2>/dev/null
	exit $failed
}
# jnum FILE KEY: a number member of vmsave --json's summary
jnum() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$1"; }
ms() { awk -v n="${1:-0}" 'BEGIN { printf "%.1f", n / 1e6 }'; }
step keys
vmimage keygen -o /lab/host.key >/lab/host.rec 2>/tmp/kg.log ||
	{ cat /tmp/kg.log; fail vmckpt-tools "vmimage keygen failed"; finish; }
REC=$(cat /lab/host.rec)

# ---- a reflink XFS inside dom0 --------------------------------------------
step xfs
t=$(now)
mkdir -p $XFS
if modprobe xfs 2>/tmp/xfs.log && truncate -s 512M /images/xfs.img &&
   mkfs.xfs -q -m reflink=1 /images/xfs.img >>/tmp/xfs.log 2>&1 &&
   mount -o loop /images/xfs.img $XFS 2>>/tmp/xfs.log; then
	truncate -s 1M $XFS/r && cp --reflink=always $XFS/r $XFS/r2 2>>/tmp/xfs.log &&
		info "xfs: reflink XFS on $XFS in $(since "$t")s" ||
		fail xfs "no reflink on $XFS: $(tail -n 2 /tmp/xfs.log)"
	rm -f $XFS/r $XFS/r2
else
	fail xfs "cannot mount a reflink XFS: $(tail -n 3 /tmp/xfs.log | tr '\n' ' ')"
	mkdir -p /images/xfs && XFS=/images/xfs
fi
# xvda: 256 MiB with 64 MiB of data (what a copy without reflink copies
# inside the pause, and what the image carries before the journal);
# xvdb: the journal's 64 MiB
truncate -s 256M $XFS/wld-data.raw
dd if=/dev/urandom of=$XFS/wld-data.raw bs=1M seek=64 count=64 conv=notrunc 2>/dev/null
truncate -s 64M $XFS/wld.raw

step create
t=$(now)
xl create $CFG "disk=['format=raw,vdev=xvda,access=rw,target=$XFS/wld-data.raw','format=raw,vdev=xvdb,access=rw,target=$XFS/wld.raw']" \
	>/tmp/create.log 2>&1 || { cat /tmp/create.log; fail domu-disk-boot "xl create"; finish; }
id1=$(xl domid $DOM)
if ! j=$(wait_line "$CLOG" 0 'VMCKPT-WL boot=[0-9a-f]+ disk (dev|seq)=' 90); then
	fail domu-disk-boot "no disk journal line: $(tail -n 3 "$CLOG" | tr -d '\r' | tr '\n' ' ')"; finish
fi
case $j in *result=BAD*) fail domu-disk-boot "$j"; finish ;; esac
bc=$(wait_count "$CLOG" 0 3 60) || { fail domu-disk-boot "no count lines"; finish; }
set -- $bc; boot=$1
pass domu-disk-boot "domid $id1 in $(since "$t")s, boot $boot: ${j#*VMCKPT-WL boot=$boot }"

# ---- a checkpoint of its memory alone: refused; --memory-only timed ------
step checkpoint-refused
l=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last); cur=$2
if vmsave -c -r "$REC" $DOM /images/m.vmimg >/tmp/ck0.out 2>/tmp/ck0.err ||
   [ "$(wc -l </tmp/ck0.err)" != 1 ] || ! grep -q "writable disk xvd" /tmp/ck0.err ||
   [ -e /images/m.vmimg ]; then
	fail disk-checkpoint-refused "$(cat /tmp/ck0.err) $(ls /images/m.vmimg 2>/dev/null)"
elif continuity "$CLOG" "$l" "$cur" disk-checkpoint-refused running; then
	pass disk-checkpoint-refused "$(cat /tmp/ck0.err)"
fi
if vmsave -c --memory-only --json -r "$REC" $DOM /images/m.vmimg >/tmp/ckm.out 2>/tmp/ckm.err; then
	dt_mem=$(jnum /tmp/ckm.out downtime_ns)
	info "checkpoint --memory-only: downtime $(ms "$dt_mem") ms ($(tr '\n' ' ' </tmp/ckm.err | cut -c1-100))"
else
	fail disk-checkpoint-memory-only "$(cat /tmp/ckm.err)"
fi
rm -f /images/m.vmimg

# ---- --checkpoint --disks on the reflink XFS, restored as a clone --------
step checkpoint-disks
l=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last); cur=$2
t=$(now)
if ! vmsave -c --disks --json -r "$REC" $DOM /images/ck.vmimg >/tmp/ck.out 2>/tmp/ck.err; then
	fail disk-checkpoint "vmsave -c --disks: $(cat /tmp/ck.err)"; finish
fi
t_ck=$(since "$t")
dt_ref=$(jnum /tmp/ck.out downtime_ns)
if ! grep -q '"disks_carried":2' /tmp/ck.out; then
	fail disk-checkpoint "JSON: $(cat /tmp/ck.out)"
elif [ "$(xl domid $DOM 2>/dev/null)" != "$id1" ]; then
	fail disk-checkpoint "$DOM is not running as $id1 any more"; finish
elif [ -n "$(ls -A $XFS | grep -v '^wld\(-data\)\?.raw$')" ]; then
	fail disk-checkpoint "left in $XFS: $(ls -A $XFS)"
elif continuity "$CLOG" "$l" "$cur" disk-checkpoint running; then
	pass disk-checkpoint "${t_ck}s, downtime $(ms "$dt_ref") ms (reflink), $(stat -c %s /images/ck.vmimg) bytes, $DOM kept running"
fi
mkdir -p /images/clone
t=$(now)
if ! cid=$(vmrestore --clone --disk-dir /images/clone -i /lab/host.key /images/ck.vmimg 2>/tmp/clone.err); then
	fail disk-checkpoint-clone "vmrestore --clone: $(cat /tmp/clone.err)"
else
	t_cl=$(since "$t")
	CCLOG=$(clog $DOM-clone)
	if [ ! -f /images/clone/$DOM-clone-xvda.raw ] || [ ! -f /images/clone/$DOM-clone-xvdb.raw ]; then
		fail disk-checkpoint-clone "no /images/clone/$DOM-clone-xvd[ab].raw: $(ls /images/clone)"
	elif ! continuity "$CCLOG" 0 "$cur" disk-checkpoint-clone replay; then
		:
	elif ! disk_verdict $DOM-clone; then
		fail disk-checkpoint-clone "the clone's memory and disk disagree: $V"
	else
		vc=$V
		if disk_verdict $DOM; then
			pass disk-checkpoint-clone "${t_cl}s domid $cid beside $id1; clone: $vc; original: $V"
		else
			fail disk-checkpoint-clone "the original after the clone: $V"
		fi
	fi
	xl destroy $DOM-clone >/dev/null 2>&1
fi
rm -rf /images/clone /images/ck.vmimg

# ---- vmsave --disks (stopped) -> vmrestore --disk-dir elsewhere ----------
step save-disks
l=$(lines "$CLOG")
t=$(now)
if ! vmsave --disks --json -r "$REC" $DOM /images/$DOM.vmimg >/tmp/save.out 2>/tmp/save.err; then
	fail disk-save "vmsave --disks: $(cat /tmp/save.err)"; finish
fi
t_save=$(since "$t")
sleep 0.3
l_save=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last "$l_save"); last=$2
if xl domid $DOM >/dev/null 2>&1; then
	fail disk-save "domain still exists after vmsave --disks"; finish
elif ! grep -q '"disks_carried":2' /tmp/save.out; then
	fail disk-save "JSON: $(cat /tmp/save.out)"
else
	pass disk-save "${t_save}s, $(stat -c %s /images/$DOM.vmimg) bytes, disk $(jnum /tmp/save.out disk_bytes) octets in $(ms "$(jnum /tmp/save.out disk_time_ns)") ms"
fi
mkdir -p /images/host2
t=$(now)
if ! id2=$(vmrestore --disk-dir /images/host2 -i /lab/host.key /images/$DOM.vmimg 2>/tmp/restore.err); then
	fail disk-restore "vmrestore --disk-dir: $(cat /tmp/restore.err)"; finish
fi
t_restore=$(since "$t")
a=$(stat -c '%a %s %b %B' /images/host2/$DOM-xvdb.raw 2>&1)
u=$(set -- $a; echo $(($3 * $4)))
if [ "${a% * *}" != "600 67108864" ] || [ "$u" -ge $((8 << 20)) ]; then
	fail disk-restore "restored journal disk: '$a' ($u octets used): not 0600, 64 MiB, sparse"
elif ! cmp -s /images/host2/$DOM-xvda.raw $XFS/wld-data.raw; then
	fail disk-restore "the restored data disk differs from the original"
elif ! continuity "$CLOG" "$l_save" "$last" disk-restore replay; then
	:
elif ! disk_verdict $DOM; then
	fail disk-restore "memory and disk disagree: $V"
else
	pass disk-restore "${t_restore}s domid $id1 -> $id2 on /images/host2/$DOM-xvd[ab].raw (xvdb: $a: $u octets used): $V"
fi
rm -f /images/$DOM.vmimg

# ---- the same checkpoint, the disk on tmpfs: a sparse copy in the pause --
step checkpoint-copy
l=$(lines "$CLOG")
set -- $(count_after "$CLOG" 0 last); cur=$2
if vmsave -c --disks --json -r "$REC" $DOM /images/ck2.vmimg >/tmp/ck2.out 2>/tmp/ck2.err &&
   continuity "$CLOG" "$l" "$cur" disk-checkpoint-copy running; then
	dt_copy=$(jnum /tmp/ck2.out downtime_ns)
	if disk_verdict $DOM; then
		pass disk-checkpoint-copy "downtime $(ms "$dt_copy") ms (sparse copies on tmpfs): $V"
	else
		fail disk-checkpoint-copy "after the checkpoint: $V"
	fi
else
	fail disk-checkpoint-copy "$(cat /tmp/ck2.err)"
fi
rm -f /images/ck2.vmimg
# what the frozen copies cost alone (the downtimes above are dominated by
# the memory and vary with the host's load): cp does what vmc_disk_snapshot
# does, a FICLONE on XFS, SEEK_DATA + copy_file_range on tmpfs
t=$(now)
cp --reflink=always $XFS/wld-data.raw $XFS/c1 && cp --reflink=always $XFS/wld.raw $XFS/c2
t_ref=$(since "$t"); rm -f $XFS/c1 $XFS/c2
mkdir -p /images/c; t=$(now)
cp --sparse=always /images/host2/$DOM-xvda.raw /images/host2/$DOM-xvdb.raw /images/c/
t_cp=$(since "$t"); rm -rf /images/c
info "the frozen copies alone (cp): reflink on XFS ${t_ref}s, sparse copy on tmpfs ${t_cp}s"
info "checkpoint downtime: --memory-only $(ms "$dt_mem") ms," \
	"--disks with a reflink (XFS) $(ms "$dt_ref") ms," \
	"--disks with a sparse copy (tmpfs, 65 MiB of data) $(ms "${dt_copy:-0}") ms"

# ---- vmmigrate --disks within this dom0: no shared storage ---------------
# --no-live: this Xen has no shadow paging for PV log-dirty.
# The receiver builds wld--incoming on new files in its --disk-dir, runs it
# on COMMIT and takes the name once the source is gone; the copy's memory
# and disks agree (its console may be logged under either name).
step migrate-disks
busybox ip link set lo up 2>/dev/null || busybox ifconfig lo 127.0.0.1 up
vmimage keygen -o /lab/recv.key >/lab/recv.rec 2>/tmp/kg2.log ||
	{ cat /tmp/kg2.log; fail disk-vmmigrate "vmimage keygen failed"; finish; }
echo "$REC this dom0" >/lab/authorized_senders
mkdir -p /images/host3
vmmigrate --listen 127.0.0.1:8111 --once -i /lab/recv.key --disk-dir /images/host3 \
	--authorized-senders /lab/authorized_senders --timeout 60 >/tmp/recv.out 2>/tmp/recv.err &
rpid=$!
for _i in $(seq 50); do grep -q 'listening on' /tmp/recv.err 2>/dev/null && break; sleep 0.2; done
ILOG=$(clog $DOM--incoming)
l_i=$(lines "$ILOG")
old_id=$(xl domid $DOM)
t=$(now)
if ! timeout 240 vmmigrate -i /lab/host.key --receiver-key "$(cat /lab/recv.rec)" --disks --no-live \
	--json --timeout 60 $DOM 127.0.0.1:8111 >/tmp/migd.out 2>/tmp/migd.err; then
	kill $rpid 2>/dev/null
	fail disk-vmmigrate "vmmigrate --disks: $(cat /tmp/migd.err) receiver: $(cat /tmp/recv.err)"; finish
fi
t_m=$(since "$t")
wait $rpid
new_id=$(xl domid $DOM 2>/dev/null)
tty=$(xenstore-read "/local/domain/$new_id/console/tty" 2>/dev/null)
l_c=$(lines "$CLOG")
[ -n "$tty" ] && printf 'check\n' >"$tty"
V=""
for _i in $(seq 60); do
	V=$(awk -v a="$l_c" -v b="$l_i" 'FNR == 1 { f++ } (f == 1 && FNR > a || f == 2 && FNR > b) &&
		/VMCKPT-WL boot=[0-9a-f]+ disk seq=.*result=/ { sub(/\r$/, ""); print; exit }' \
		"$CLOG" "$ILOG" 2>/dev/null)
	[ -n "$V" ] && break
	sleep 0.5
done
a=$(stat -c '%a %s' /images/host3/$DOM-xvdb.raw 2>&1)
if [ -z "$new_id" ] || [ "$new_id" = "$old_id" ] || [ "$(named $DOM--incoming)" != 0 ]; then
	fail disk-vmmigrate "after the migration: $(xl list | tr '\n' ' ')"
elif ! grep -q '"disks_carried":2' /tmp/migd.out; then
	fail disk-vmmigrate "JSON: $(cat /tmp/migd.out)"
elif [ "$a" != "600 67108864" ]; then
	fail disk-vmmigrate "the journal disk in /images/host3: '$a'"
elif ! xenstore-ls -f /local/domain/0/backend 2>/dev/null |
	grep -q "/$new_id/.*/params = \"/images/host3/$DOM-xvdb.raw\""; then
	fail disk-vmmigrate "the copy's xvdb is not on /images/host3: $(xenstore-ls -f /local/domain/0/backend 2>/dev/null | grep "/$new_id/.*/params" | tr '\n' ' ')"
else
	case $V in
	*result=OK*) pass disk-vmmigrate "${t_m}s, domid $old_id -> $new_id on /images/host3/$DOM-xvd[ab].raw, downtime $(ms "$(jnum /tmp/migd.out downtime_ns)") ms: ${V#*VMCKPT-WL }" ;;
	*) fail disk-vmmigrate "memory and disk of the copy: '${V:-no verdict}'" ;;
	esac
fi

# ---- another host's paths: the disks moved, vmrestore --disk -------------
# A stopped save without --disks records them (ids, sizes) without their
# content; the files move to /images/host4; the restore finds them there
# through --disk ID=PATH, in their format, and the backend points there.
step remap
l=$(lines "$CLOG")
# the migrated copy logs under either name: its last count is the higher
set -- $(count_after "$CLOG" 0 last); cur=${2:-0}
set -- $(count_after "$ILOG" 0 last); [ "${2:-0}" -gt "$cur" ] && cur=$2
if ! vmsave -r "$REC" $DOM /images/nod.vmimg 2>/tmp/nod.err; then
	fail disk-remap "vmsave without --disks: $(cat /tmp/nod.err)"; finish
fi
mkdir -p /images/host4
mv /images/host3/$DOM-xvda.raw /images/host4/data.raw
mv /images/host3/$DOM-xvdb.raw /images/host4/journal.raw
if vmrestore -i /lab/host.key /images/nod.vmimg >/dev/null 2>/tmp/gone.err ||
   ! grep -q "host3/$DOM-xvd" /tmp/gone.err; then
	fail disk-remap "restore with its disks moved away, no --disk: $(cat /tmp/gone.err)"; finish
fi
if ! id4=$(vmrestore -i /lab/host.key --disk xvda=/images/host4/data.raw \
		--disk xvdb=/images/host4/journal.raw /images/nod.vmimg 2>/tmp/remap.err); then
	fail disk-remap "vmrestore --disk: $(cat /tmp/remap.err)"; finish
fi
if ! xenstore-ls -f /local/domain/0/backend 2>/dev/null |
	grep -q "/$id4/.*/params = \"/images/host4/journal.raw\""; then
	fail disk-remap "xvdb is not on /images/host4: $(xenstore-ls -f /local/domain/0/backend 2>/dev/null | grep "/$id4/.*/params" | tr '\n' ' ')"
elif ! continuity "$CLOG" "$l" "$cur" disk-remap replay; then
	:
elif ! disk_verdict $DOM; then
	fail disk-remap "memory and disk disagree: $V"
else
	pass disk-remap "domid $id4 on /images/host4/{data,journal}.raw (recorded: /images/host3): $V"
fi
rm -f /images/nod.vmimg
finish
