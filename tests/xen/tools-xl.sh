#!/bin/sh
# Xen lab: vmckpt's host-built tools inside dom0 on a real xl image.
# The binaries from build/ (linked on the host against libsodium, libcrypto,
# libzstd, libjansson and Debian's libxen*) must load and run in dom0; an
# `xl save` image sealed with `vmimage seal --from-xl`, verified, unsealed
# with `--to-xl` must be byte-identical and restore with `xl restore`.
# Usage on the host: make && tests/xen/run-lab.sh tests/xen/tools-xl.sh
. /lab/lib.sh
DOM=wl1
CLOG=$(clog $DOM)
finish() { xl destroy $DOM >/dev/null 2>&1; exit $failed; }

if [ ! -x /lab/bin/vmimage ]; then
	echo "XENLAB: SKIP tools-xl vmckpt tools not built (run make first)"
	finish
fi
for b in /lab/bin/vm*; do
	miss=$(ldd "$b" 2>&1 | grep -E 'not found|No such' | tr -s ' \t' ' ')
	[ -z "$miss" ] || fail tools-ldd "$(basename "$b"): $miss"
done
[ $failed = 0 ] && pass tools-ldd "$(ls /lab/bin | grep -c '^vm') binaries resolve: $(ldd /lab/bin/vmsave | awk '/libxen(light|ctrl)|sodium|zstd|jansson/ {print $1}' | tr '\n' ' ')"
info "$(vmimage --version 2>&1 | head -n 1)"

step create
timeout 90 xl create /lab/domu.cfg >/tmp/create.log 2>&1 || { cat /tmp/create.log; fail xl-create "failed"; finish; }
wait_count "$CLOG" 0 2 90 >/dev/null || { fail domu-boot "no count lines"; finish; }
boot=$(count_after "$CLOG" 0 last | cut -d' ' -f1)
step save
timeout 120 xl save $DOM /images/a.xl >/tmp/save.log 2>&1 || { cat /tmp/save.log; fail xl-save "failed"; finish; }
sleep 0.3
l=$(lines "$CLOG")
last=$(count_after "$CLOG" 0 last | cut -d' ' -f2)

step seal
vmimage keygen --symmetric -o /images/k >/tmp/keygen.log 2>&1 || { cat /tmp/keygen.log; fail vmimage-keygen "failed"; finish; }
t=$(now)
if vmimage seal -k /images/k --from-xl --name $DOM -o /images/a.vmimg /images/a.xl >/tmp/seal.log 2>&1; then
	pass vmimage-seal "$(since "$t")s $(stat -c %s /images/a.xl) -> $(stat -c %s /images/a.vmimg) bytes"
else
	cat /tmp/seal.log; fail vmimage-seal "failed"; finish
fi
t=$(now)
if vmimage verify -k /images/k /images/a.vmimg >/tmp/verify.log 2>&1; then
	pass vmimage-verify "$(since "$t")s"
else
	cat /tmp/verify.log; fail vmimage-verify "failed"
fi
rm -f /images/a.vmimg.xl
if vmimage unseal -k /images/k --to-xl -o /images/b.xl /images/a.vmimg >/tmp/unseal.log 2>&1 &&
   cmp /images/a.xl /images/b.xl; then
	pass vmimage-unseal "byte-identical xl image"
else
	cat /tmp/unseal.log; fail vmimage-unseal "unseal failed or differs"; finish
fi
rm -f /images/a.xl /images/a.vmimg
step restore
if timeout 120 xl restore /images/b.xl >/tmp/restore.log 2>&1 &&
   bc=$(wait_count "$CLOG" "$l" $((last + 2)) 60) && [ "${bc% *}" = "$boot" ] &&
   [ -z "$(bad_lines "$CLOG" "$l")" ]; then
	pass xl-restore-unsealed "domid $(xl domid $DOM), count $last -> ${bc#* }, boot $boot"
else
	cat /tmp/restore.log; fail xl-restore-unsealed "guest did not continue (last $last, now '$bc')"
fi
finish
