#!/bin/sh
# Xen lab (issue 9, point 2): is a PVH domain that vmrestore builds the
# same domain that xl restore builds from the same guest state?  One xl
# save image is restored twice: by xl restore, and (sealed with vmimage
# seal --from-xl) by vmrestore, whose domain is then saved by vmsave and
# restored by vmrestore again (vmsave's own config capture).  Compared: the libxl configuration as
# created and as libxl_retrieve_domain_configuration returns it (xl list
# -l, which holds tsc_mode too) and the CPUID and MSR policy Xen applies
# (xen-cpuid -p); prints the differences as INFO lines, then PASS if
# there are none that matter (domid, uuid-less name fields excluded).
# Usage on the host: tests/xen/run-lab.sh tests/xen/pvh-config-diff.sh 300
. /lab/lib.sh
DOM=wl2
CLOG=$(clog $DOM)
finish() { xl destroy $DOM >/dev/null 2>&1; exit $failed; }

vmimage keygen -o /lab/host.key >/lab/host.rec 2>/dev/null || { fail keys keygen; finish; }
REC=$(cat /lab/host.rec)
timeout 90 xl create /lab/domu-pvh.cfg >/tmp/create.log 2>&1 || { cat /tmp/create.log; fail create "xl create"; finish; }
wait_count "$CLOG" 0 3 120 >/dev/null || { fail boot "no counter"; finish; }
xl list -l $DOM | grep -v -E '"domid"' >/images/created.json
xen-cpuid -p "$(xl domid $DOM)" >/images/created.cpuid 2>&1
timeout 120 xl save $DOM /images/a.xl >/tmp/s.log 2>&1 || { cat /tmp/s.log; fail save "xl save"; finish; }
cp /images/a.xl /images/b.xl

# dump TAG: the restored domain as libxl and Xen see it
dump() {
	_id=$(xl domid $DOM)
	xl list -l $DOM | grep -v -E '"domid"' >"/images/$1.json"
	xen-cpuid -p "$_id" 2>&1 | sed 's/^Domain [0-9]* policy/Domain policy/' >"/images/$1.cpuid"
}
timeout 120 xl restore /images/a.xl >/tmp/r.log 2>&1 || { cat /tmp/r.log; fail xl-restore "xl restore"; finish; }
sleep 2
dump xl
xl destroy $DOM
vmimage seal --from-xl -r "$REC" -o /images/b.vmimg /images/b.xl 2>/tmp/seal.log || { cat /tmp/seal.log; fail seal "seal --from-xl"; finish; }
timeout 120 vmrestore -i /lab/host.key /images/b.vmimg >/tmp/vr.log 2>&1 || { cat /tmp/vr.log; fail vmrestore "vmrestore"; finish; }
sleep 2
dump vm
# and vmsave's own config capture: vmsave it, vmrestore that
timeout 120 vmsave -r "$REC" $DOM /images/c.vmimg >/tmp/vs.log 2>&1 || { cat /tmp/vs.log; fail vmsave "vmsave"; finish; }
timeout 120 vmrestore -i /lab/host.key /images/c.vmimg >/tmp/vr2.log 2>&1 || { cat /tmp/vr2.log; fail vmrestore2 "vmrestore"; finish; }
sleep 2
dump vm2
xl destroy $DOM

n=0
for t in vm vm2; do
	for what in json cpuid; do
		if ! cmp -s /images/xl.$what /images/$t.$what; then
			n=$((n + 1))
			diff /images/xl.$what /images/$t.$what | head -n 40 | sed "s/^/XENLAB: INFO diff-xl-$t-$what: /"
		fi
	done
done
diff /images/created.json /images/xl.json | grep -v domid | head -n 20 | sed 's/^/XENLAB: INFO created-vs-xl-restored: /'
info "cpuid policy lines: xl $(wc -l </images/xl.cpuid), vmrestore $(wc -l </images/vm.cpuid)"
if [ $n = 0 ]; then
	pass pvh-config-same "xl restore and vmrestore build the same PVH domain (libxl config with tsc_mode, CPUID/MSR policy)"
else
	fail pvh-config-same "$n comparisons differ (INFO lines)"
fi
finish
