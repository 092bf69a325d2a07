#!/bin/sh
# install.sh - the library as a library: libvmckpt.so exports only vmc_*
# symbols; a small program compiles and runs against the installed headers
# alone; `make install` puts every file in its place and `make uninstall`
# takes every one back.  Prints PASS:/FAIL: lines (tests/run.sh counts them).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${B:-$ROOT/build}
T=$(mktemp -d /tmp/vmc-install-XXXXXX)
trap 'rm -rf "$T"' EXIT
pass() { echo "PASS: $1${2:+ ($2)}"; }
fail() { echo "FAIL: $1: $2"; }

n=exports_only_vmc
others=$(nm -D --defined-only "$B/libvmckpt.so.0" | awk '{print $3}' | grep -v '^vmc_')
count=$(nm -D --defined-only "$B/libvmckpt.so.0" | awk '{print $3}' | grep -c '^vmc_')
if [ -n "$others" ]; then
    fail $n "exported beside vmc_*: $(echo $others | head -c 300)"
elif [ "$count" -lt 50 ]; then
    fail $n "only $count vmc_ symbols exported"
else
    pass $n "$count symbols, all vmc_*"
fi

n=install_layout
if ! make -s -C "$ROOT" install DESTDIR="$T/root" PREFIX=/usr >"$T/install.log" 2>&1; then
    fail $n "make install: $(tail -3 "$T/install.log")"
else
    missing=
    for f in bin/vmsave bin/vmrestore bin/vmimage bin/vmctl bin/vmmigrate \
             include/vmckpt.h include/vmckpt_wire.h include/vmckpt_qemu.h \
             include/vmckpt_xl.h lib/libvmckpt.so.0 \
             lib/libvmckpt.so lib/pkgconfig/vmckpt.pc share/man/man1/vmsave.1 \
             share/man/man5/vmckpt.5 share/bash-completion/completions/vmckpt \
             share/bash-completion/completions/vmmigrate \
             lib/systemd/system/vmckpt-checkpoint@.service \
             lib/systemd/system/vmckpt-checkpoint@.timer; do
        [ -e "$T/root/usr/$f" ] || missing="$missing $f"
    done
    [ -z "$missing" ] && pass $n || fail $n "not installed:$missing"
fi

n=program_against_installed_header
cat >"$T/prog.c" <<'C'
#include <stdio.h>
#include <vmckpt.h>

int main(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    if (!ctx || vmc_init(ctx) < 0)
        return 1;
    printf("%s|%s|%u\n", vmc_strerror(VMC_E_AUTH),
           vmc_record_name(VMC_REC_END), (unsigned)VMC_SLOT_X25519);
    vmc_ctx_free(ctx);
    return 0;
}
C
if ! cc -std=c11 -Wall -Wextra -Werror -I"$T/root/usr/include" -o "$T/prog" \
        "$T/prog.c" -L"$T/root/usr/lib" -lvmckpt >"$T/cc.log" 2>&1; then
    fail $n "$(head -5 "$T/cc.log")"
elif ! out=$(LD_LIBRARY_PATH="$T/root/usr/lib" "$T/prog"); then
    fail $n "the program failed: $out"
elif [ "$out" != "$(printf '%s' "$out" | grep '^[a-z].*|END|1$')" ]; then
    fail $n "unexpected output: $out"
else
    pass $n "$out"
fi

n=each_installed_header_alone
bad=
for h in vmckpt.h vmckpt_wire.h vmckpt_qemu.h vmckpt_xl.h; do
    printf '#include <%s>\n' "$h" >"$T/h.c"
    cc -std=c11 -Wall -Wextra -Werror -fsyntax-only -I"$T/root/usr/include" \
        "$T/h.c" >"$T/h.log" 2>&1 || bad="$bad $h"
done
[ -z "$bad" ] && pass $n || fail $n "does not compile alone:$bad $(head -3 "$T/h.log")"

n=uninstall_removes_all
if ! make -s -C "$ROOT" uninstall DESTDIR="$T/root" PREFIX=/usr >"$T/un.log" 2>&1; then
    fail $n "make uninstall: $(tail -3 "$T/un.log")"
elif left=$(find "$T/root" ! -type d | sed "s|$T/root||") && [ -n "$left" ]; then
    fail $n "left behind: $(echo $left)"
else
    pass $n
fi
