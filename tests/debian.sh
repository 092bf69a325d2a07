#!/bin/sh
# debian.sh - the Debian packages: dpkg-buildpackage builds them from a
# copy of the tree (libvmckpt0, libvmckpt-dev, vmckpt, vmckpt-xen); the
# tools and the library depend on no Xen library, the xen module does;
# unpacked into a scratch root, the tools run from it, see no xen backend
# without vmckpt-xen and see it with it; lintian finds no error.
# Prints PASS:/FAIL: lines (tests/run.sh counts them).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d /tmp/vmc-deb-XXXXXX)
trap 'rm -rf "$T"' EXIT
pass() { echo "PASS: $1${2:+ ($2)}"; }
fail() { echo "FAIL: $1: $2"; }
ARCH=$(dpkg --print-architecture)
MA=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

n=debian/dpkg-buildpackage
mkdir -p "$T/src"
(cd "$ROOT" && git ls-files -z | xargs -0 tar -cf - ) | tar -xf - -C "$T/src"
if ! (cd "$T/src" && DEB_BUILD_OPTIONS="parallel=$(nproc)" \
        dpkg-buildpackage -us -uc -b) >"$T/build.log" 2>&1; then
    fail $n "$(tail -5 "$T/build.log" | tr '\n' ' ')"
    exit 0
fi
debs=$(ls "$T"/*.deb 2>/dev/null | wc -l)
for p in libvmckpt0 libvmckpt-dev vmckpt vmckpt-xen; do
    [ -f "$T/${p}_0.1.0-1_$ARCH.deb" ] || { fail $n "no $p package"; exit 0; }
done
pass $n "$debs packages"

n=debian/no-xen-without-vmckpt-xen
bad=
for p in libvmckpt0 vmckpt; do
    d=$(dpkg-deb -f "$T/${p}_0.1.0-1_$ARCH.deb" Depends)
    case "$d" in *xen*) bad="$bad $p: $d;" ;; esac
done
xd=$(dpkg-deb -f "$T/vmckpt-xen_0.1.0-1_$ARCH.deb" Depends)
case "$xd" in *libxen*) ;; *) bad="$bad vmckpt-xen does not depend on libxen: $xd;" ;; esac
[ -z "$bad" ] && pass $n "vmckpt-xen: $xd" || fail $n "$bad"

n=debian/scratch-root
R=$T/root
for p in libvmckpt0 vmckpt; do dpkg -x "$T/${p}_0.1.0-1_$ARCH.deb" "$R"; done
run() { LD_LIBRARY_PATH="$R/usr/lib/$MA" VMCKPT_BACKEND_DIR="$R/usr/lib/$MA/vmckpt/backends" "$@"; }
libs=$(run ldd "$R/usr/bin/vmsave" | awk '{print $1}' | tr '\n' ' ')
without=$(run "$R/usr/bin/vmimage" --help 2>&1 | grep '^Backends')
dpkg -x "$T/vmckpt-xen_0.1.0-1_$ARCH.deb" "$R"
with=$(run "$R/usr/bin/vmimage" --help 2>&1 | grep '^Backends')
if case "$libs" in *xen*) true ;; *) false ;; esac; then
    fail $n "vmsave links Xen libraries: $libs"
elif ! run "$R/usr/bin/vmsave" --version >/dev/null 2>&1; then
    fail $n "the unpacked vmsave does not run"
elif [ "$without" != "Backends in this build: qemu (xen: not installed (the vmckpt-xen package))." ]; then
    fail $n "without vmckpt-xen: '$without'"
elif [ "$with" != "Backends in this build: qemu xen." ]; then
    fail $n "with vmckpt-xen: '$with'"
else
    pass $n "without vmckpt-xen: qemu only; with it: qemu xen"
fi

# A hostile or foreign xen.so in the backend directory is left out, and
# the tools say why: not a shared object, or no vmc_backend_module.
n=debian/foreign-module-refused
mkdir -p "$T/bad1" "$T/bad2"
echo "not a library" > "$T/bad1/xen.so"
echo 'int unrelated(void) { return 0; }' > "$T/bad2/m.c"
cc -shared -fPIC -o "$T/bad2/xen.so" "$T/bad2/m.c"
b1=$(LD_LIBRARY_PATH="$R/usr/lib/$MA" VMCKPT_BACKEND_DIR="$T/bad1" "$R/usr/bin/vmimage" --help 2>&1 | grep '^Backends')
b2=$(LD_LIBRARY_PATH="$R/usr/lib/$MA" VMCKPT_BACKEND_DIR="$T/bad2" "$R/usr/bin/vmimage" --help 2>&1 | grep '^Backends')
case "$b1|$b2" in
"Backends in this build: qemu (xen: "*"bad1/xen.so"*")."'|'"Backends in this build: qemu (xen: $T/bad2/xen.so was built for another libvmckpt).")
    pass $n ;;
*)  fail $n "not a library: '$b1'; no entry point: '$b2'" ;;
esac

n=debian/lintian
lintian --no-tag-display-limit "$T"/*.changes >"$T/lintian.log" 2>&1
errors=$(grep -c '^E:' "$T/lintian.log")
warnings=$(grep -c '^W:' "$T/lintian.log")
if [ "$errors" != 0 ]; then
    fail $n "$(grep '^E:' "$T/lintian.log" | head -5 | tr '\n' ' ')"
else
    pass $n "0 errors, $warnings warnings$(grep '^W:' "$T/lintian.log" | sed 's/^W: [^:]*: /; /' | sort -u | tr -d '\n' | head -c 400)"
fi
