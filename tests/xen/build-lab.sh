#!/bin/bash
# Build the real-Xen test lab: Xen 4.17 hypervisor + a Debian dom0 initramfs
# (xen-utils of exactly the host's libxen-dev version) + a PV domU
# (Debian kernel + the vmckpt busybox workload initramfs).
# Idempotent; cached by a stamp of its inputs.  Must run as root.
#
# Usage: build-lab.sh [OUTDIR]        (default: tests/xen/out)
# Env:   XENLAB_FORCE=1               rebuild everything (incl. debootstrap)
#
# OUTDIR after a build:
#   xen-4.17-amd64   uncompressed hypervisor (QEMU multiboot -kernel)
#   vmlinuz          dom0 kernel (same image is the PV domU kernel)
#   dom0.cpio        dom0 initramfs (newc, uncompressed); run-lab.sh appends
#                    a small lab.cpio to it
#   versions.txt     what is inside (Xen, xen-utils, libxl sonames, ...)
#   root/            the unpacked dom0 root (kept so repacks are cheap)
#   guest/           tests/guest/build.sh output (domU initramfs)
#   cache/           downloaded .debs (debootstrap + apt cache)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:-$here/out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log() { echo "build-lab: $*" >&2; }
die() { echo "build-lab: ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mknod)"

# Only one build per OUTDIR at a time.
exec 9>"$out/.lock"
flock 9

t_start=$(date +%s.%N)
elapsed() { awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# ---- host prerequisites ---------------------------------------------------
need=""
for p in debootstrap cpio qemu-system-x86 linux-image-amd64 busybox-static \
	gcc libc6-dev libxen-dev kmod; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		need="$need $p"
done
if [ -n "$need" ]; then
	log "installing on the host:$need"
	apt-get update -q >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends $need >&2
fi

XENVER=$(dpkg-query -W -f='${Version}' libxen-dev)
[ -n "$XENVER" ] || die "cannot read libxen-dev's version"

# The dom0 kernel (also the PV domU kernel): Debian's linux-image-amd64, not
# the running host kernel (uname -r may be something else entirely).
kernel=$(ls -1 /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || die "no /boot/vmlinuz-*-amd64 (install linux-image-amd64)"
KVER=${kernel#/boot/vmlinuz-}
moddir=/lib/modules/$KVER
[ -d "$moddir/kernel/drivers/xen" ] || die "$moddir/kernel/drivers/xen missing"

# ---- mirrors: exactly what the host's apt uses ----------------------------
# Prints "URI SUITE" pairs from deb822 .sources and one-line sources.list.
apt_sources() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk 'function flush() {
			if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no") {
				nu = split(uris, U, /[ \t]+/); ns = split(suites, S, /[ \t]+/)
				for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++)
					if (U[i] != "" && S[j] != "") print U[i], S[j]
			}
			types = uris = suites = ""; enabled = ""
		}
		/^[ \t]*#/ { next }
		/^[ \t]*$/ { flush(); next }
		{ k = tolower($1); v = $0; sub(/^[^:]*:[ \t]*/, "", v)
		  if (k == "types:") types = v; else if (k == "uris:") uris = v
		  else if (k == "suites:") suites = v; else if (k == "enabled:") enabled = tolower(v) }
		END { flush() }' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
			awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
	done
}
SOURCES=$(apt_sources | sort -u)
MIRROR=$(awk '$2 == "bookworm" { print $1; exit }' <<<"$SOURCES")
SECMIRROR=$(awk '$2 == "bookworm-security" { print $1; exit }' <<<"$SOURCES")
if [ -z "$MIRROR" ] || [ -z "$SECMIRROR" ]; then
	# Fallback: ask apt itself which index targets it has configured.
	it=$(apt-get indextargets --format '$(SITE) $(CODENAME)' 2>/dev/null | sort -u)
	[ -n "$MIRROR" ] || MIRROR=$(awk '$2 == "bookworm" { print $1; exit }' <<<"$it")
	[ -n "$SECMIRROR" ] || SECMIRROR=$(awk '$2 == "bookworm-security" { print $1; exit }' <<<"$it")
fi
[ -n "$MIRROR" ] || die "no bookworm mirror in the host's apt sources"
MIRROR=${MIRROR%/}
SECMIRROR=${SECMIRROR%/}

# ---- stamps ---------------------------------------------------------------
# Packages of the dom0 root.  xen-utils-4.17 and its libraries are pinned to
# libxen-dev's version (bookworm-security carries it, plain bookworm does not).
DEB_INCLUDE="kmod,procps,busybox"
# xfsprogs: a reflink XFS (mkfs.xfs -m reflink=1) for the disk-snapshot
# checkpoints of vmckpt-disk.sh.
ROOT_PKGS="xen-utils-4.17=$XENVER libxenmisc4.17=$XENVER libxenstore4=$XENVER \
libsodium23 libssl3 libnbd0 libzstd1 libjansson4 xfsprogs"
ROOT_RECIPE_REV=7    # bump when the root recipe below changes
root_stamp=$(printf '%s\n' "$ROOT_RECIPE_REV" "$XENVER" "$MIRROR" "$SECMIRROR" \
	"$DEB_INCLUDE" "$ROOT_PKGS" | sha256sum | cut -d' ' -f1)

xen_mods="xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xenfs"
# A domU's file-backed disk: blkback, over a loop device (/etc/xen/scripts/
# block runs losetup); XFS (+ the crc32c its libcrc32c asks for) to hold it.
disk_mods="xen-blkback loop xfs crc32c_generic"
stamp=$( {
	echo "$root_stamp $KVER"
	cat "$kernel" "$0" "$here/dom0-init" "$here/domu.cfg" "$here/domu-pvh.cfg" \
		"$here/domu-disk.cfg" \
		"$top/tests/guest/build.sh" "$top/tests/guest/init" \
		"$top/tests/guest/workload.c"
	for m in $xen_mods $disk_mods; do modinfo -k "$KVER" -n "$m"; done
} | sha256sum | cut -d' ' -f1)

if [ "${XENLAB_FORCE:-0}" = 1 ]; then
	rm -f "$out/stamp" "$out/root.stamp"
fi
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] &&
   [ -f "$out/dom0.cpio" ] && [ -f "$out/xen-4.17-amd64" ] && [ -f "$out/vmlinuz" ]; then
	log "up to date ($out)"
	exit 0
fi
rm -f "$out/stamp"
mkdir -p "$out/cache/debs" "$out/cache/apt"

# ---- hypervisor -----------------------------------------------------------
if [ ! -f "$out/xen-4.17-amd64" ] || [ "$(cat "$out/xen.version" 2>/dev/null)" != "$XENVER" ]; then
	log "hypervisor: xen-hypervisor-4.17-amd64=$XENVER"
	w=$(mktemp -d "$out/.xen.XXXXXX")
	dl() { ( cd "$w" && apt-get download -q -o APT::Sandbox::User=root \
		"xen-hypervisor-4.17-amd64=$XENVER" >&2 ); }
	dl || { apt-get update -q >&2 && dl; } ||
		die "apt-get download xen-hypervisor-4.17-amd64=$XENVER failed"
	dpkg-deb -x "$w"/xen-hypervisor-4.17-amd64_*.deb "$w/x"
	gz=$(ls "$w"/x/boot/xen-4.17*-amd64.gz | head -n 1)
	gunzip -c "$gz" >"$out/xen-4.17-amd64.tmp"
	mv "$out/xen-4.17-amd64.tmp" "$out/xen-4.17-amd64"
	echo "$XENVER" >"$out/xen.version"
	rm -rf "$w"
fi

# ---- dom0 root ------------------------------------------------------------
root=$out/root
safe_rm_root() {
	# Never rm -rf through a live mount (proc inside the chroot).
	if [ -d "$root" ]; then
		for m in proc sys dev/pts dev; do
			mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
		done
		if grep -q " $root/" /proc/mounts; then
			die "something is still mounted under $root"
		fi
		rm -rf "$root"
	fi
}
if [ ! -f "$out/root.stamp" ] || [ "$(cat "$out/root.stamp")" != "$root_stamp" ]; then
	t0=$(date +%s)
	safe_rm_root
	rm -f "$out/root.stamp"
	log "debootstrap bookworm from $MIRROR (security: ${SECMIRROR:-none})"
	debootstrap --variant=minbase --include="$DEB_INCLUDE" \
		--cache-dir="$out/cache/debs" bookworm "$root" "$MIRROR" \
		>"$out/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$out/debootstrap.log" >&2; die "debootstrap failed (log: $out/debootstrap.log)"; }
	# apt inside the chroot: the host's bookworm + bookworm-security mirrors.
	{
		echo "deb $MIRROR bookworm main"
		[ -z "$SECMIRROR" ] || echo "deb $SECMIRROR bookworm-security main"
	} >"$root/etc/apt/sources.list"
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
	mkdir -p "$root/var/cache/apt/archives"
	mount --bind "$out/cache/apt" "$root/var/cache/apt/archives"
	trap 'umount -l "$root/var/cache/apt/archives" 2>/dev/null || true' EXIT
	log "chroot apt: $ROOT_PKGS"
	chroot "$root" apt-get update -q >"$out/chroot-apt.log" 2>&1 ||
		{ tail -n 20 "$out/chroot-apt.log" >&2; die "apt-get update in the chroot failed"; }
	DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q \
		--no-install-recommends $ROOT_PKGS >>"$out/chroot-apt.log" 2>&1 ||
		{ tail -n 20 "$out/chroot-apt.log" >&2; die "apt-get install in the chroot failed"; }
	umount "$root/var/cache/apt/archives"
	trap - EXIT
	# xfsprogs drags in ICU (~35 MB) for xfs_scrub alone: mkfs.xfs does
	# not link it.  libvmckpt's libnbd0 does (through libxml2): then ICU
	# stays.
	[ -x "$root/usr/sbin/mkfs.xfs" ] || die "no mkfs.xfs in the dom0 root"
	chroot "$root" ldd /usr/sbin/mkfs.xfs | grep -q libicu &&
		die "mkfs.xfs links ICU: keep it"
	rm -f "$root"/sbin/xfs_scrub "$root"/usr/sbin/xfs_scrub
	chroot "$root" ldd /usr/lib/x86_64-linux-gnu/libnbd.so.0 | grep -q libicu ||
		rm -f "$root"/usr/lib/x86_64-linux-gnu/libicu*.so.*
	got=$(chroot "$root" dpkg-query -W -f='${Version}' xen-utils-4.17)
	[ "$got" = "$XENVER" ] || die "dom0 xen-utils-4.17 is $got, libxen-dev is $XENVER"
	# Slim it down: no docs, locales, apt lists, package caches.
	rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
		"$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* \
		"$root"/var/cache/apt/*.bin "$root"/var/cache/debconf/*-old \
		"$root"/etc/udev/hwdb.bin "$root"/usr/lib/udev/hwdb.bin \
		"$root"/usr/lib/udev/hwdb.d "$root"/var/cache/apt/archives/*.deb \
		"$root"/usr/lib/x86_64-linux-gnu/gconv
	echo "$root_stamp" >"$out/root.stamp"
	log "dom0 root ready in $(( $(date +%s) - t0 ))s ($(du -sh "$root" | cut -f1))"
fi

# ---- kernel modules (for the kernel we boot, not uname -r) ----------------
rm -rf "$root/lib/modules"
mkdir -p "$root/lib/modules/$KVER"
declare -A seen=()
add_mod() {
	local m=$1 f d
	[ -n "${seen[$m]:-}" ] && return 0
	seen[$m]=1
	f=$(modinfo -k "$KVER" -n "$m") || die "module $m not found for $KVER"
	case $f in *builtin*|"") return 0 ;; esac
	mkdir -p "$root/lib/modules/$KVER/$(dirname "${f#"$moddir"/}")"
	cp "$f" "$root/lib/modules/$KVER/${f#"$moddir"/}"
	for d in $(modinfo -k "$KVER" -F depends "$m" | tr ',' ' '); do add_mod "$d"; done
}
for m in $xen_mods $disk_mods; do add_mod "$m"; done
cp "$moddir"/modules.order "$moddir"/modules.builtin "$moddir"/modules.builtin.modinfo \
	"$root/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$root" "$KVER"

# ---- PV domU: same kernel, busybox workload initramfs ----------------------
"$top/tests/guest/build.sh" "$out/guest" >/dev/null
mkdir -p "$root/lab/domu"
cp "$kernel" "$root/lab/domu/vmlinuz"
cp "$out/guest/initrd.cpio" "$root/lab/domu/initrd.cpio"
cp "$here/domu.cfg" "$here/domu-pvh.cfg" "$here/domu-disk.cfg" "$root/lab/"

# ---- dom0 /init and runtime dirs -------------------------------------------
install -m 755 "$here/dom0-init" "$root/init"
mkdir -p "$root/images" "$root/var/log/xen/console" "$root/var/lib/xen" \
	"$root/var/lib/xenstored" "$root/run" "$root/proc/xen"
[ -e "$root/dev/console" ] || mknod -m 600 "$root/dev/console" c 5 1
[ -e "$root/dev/null" ] || mknod -m 666 "$root/dev/null" c 1 3

# ---- what is inside ---------------------------------------------------------
{
	echo "xen_hypervisor=$XENVER"
	echo "xen_utils=$(chroot "$root" dpkg-query -W -f='${Version}' xen-utils-4.17)"
	echo "dom0_kernel=$KVER"
	echo "mirror=$MIRROR"
	echo "security_mirror=$SECMIRROR"
	for p in libxenmisc4.17 libxenstore4 libsodium23 libssl3 libnbd0 libzstd1 libjansson4 python3 xfsprogs; do
		echo "pkg_$p=$(chroot "$root" dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo missing)"
	done
	echo "libs:"
	( cd "$root" && ls -1 usr/lib/x86_64-linux-gnu/ | grep -E \
		'^lib(xen|xl|sodium|crypto|zstd|jansson)[^ ]*\.so\.[0-9]' | sed 's/^/  /' )
	echo "verify-stream-v2: $(chroot "$root" dpkg -L xen-utils-4.17 | grep -m1 verify-stream-v2 || echo none)"
} >"$out/versions.txt"

# ---- pack ------------------------------------------------------------------
grep -q " $root/" /proc/mounts && die "something is mounted under $root; not packing"
log "packing dom0.cpio"
(cd "$root" && find . -xdev | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --quiet) >"$out/dom0.cpio.tmp"
mv "$out/dom0.cpio.tmp" "$out/dom0.cpio"
cp "$kernel" "$out/vmlinuz"
echo "$stamp" >"$out/stamp"
log "built in $(elapsed)s: $out/dom0.cpio ($(du -h "$out/dom0.cpio" | cut -f1)), Xen $XENVER, kernel $KVER"
