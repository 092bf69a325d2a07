#!/bin/sh
# Build the vmckpt test guest (kernel + initramfs). Idempotent and cached.
# Usage: build.sh [OUTDIR]   (default: tests/guest/out)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/out}

die() { echo "build.sh: $*" >&2; exit 1; }

need=""
for p in qemu-system-x86 linux-image-amd64 busybox-static cpio gcc libc6-dev; do
	dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
	[ "$(id -u)" = 0 ] || die "missing packages:$need (run as root to install)"
	echo "build.sh: installing$need" >&2
	apt-get update >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y $need >&2
fi

kernel=$(ls -1 /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || die "no /boot/vmlinuz-*-amd64 (install linux-image-amd64)"
[ -x /bin/busybox ] || die "/bin/busybox missing (install busybox-static)"

mkdir -p "$out"
stamp=$( { echo "$kernel"; cat "$kernel" /bin/busybox "$here/workload.c" \
	"$here/init" "$here/build.sh"; gcc --version; } | sha256sum | cut -d' ' -f1)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] &&
   [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.cpio" ]; then
	echo "build.sh: up to date" >&2
else
	[ "$(id -u)" = 0 ] || die "must run as root (mknod /dev/console)"
	rm -f "$out/stamp"
	st="$out/stage"
	rm -rf "$st"
	mkdir -p "$st/bin" "$st/sbin" "$st/dev" "$st/proc" "$st/sys" "$st/tmp"
	gcc -static -O2 -Wall -o "$st/workload" "$here/workload.c"
	cp /bin/busybox "$st/bin/busybox"
	for a in $("$st/bin/busybox" --list); do
		[ "$a" = busybox ] || ln -s busybox "$st/bin/$a"
	done
	# the disk drivers the workload's journal needs (wl.disk=): virtio-blk
	# under QEMU, xen-blkfront in a Xen domU; init loads what it can
	kver=${kernel#/boot/vmlinuz-}
	mkdir -p "$st/modules"
	for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev \
		 virtio_pci virtio_blk xen-blkfront; do
		f=$(find "/lib/modules/$kver/kernel" -name "$m.ko*" | head -n 1)
		[ -n "$f" ] || die "module $m of $kver not found"
		case $f in
		*.ko.xz) xz -dc "$f" >"$st/modules/$m.ko" ;;
		*.ko.zst) zstd -qdc "$f" >"$st/modules/$m.ko" ;;
		*) cp "$f" "$st/modules/$m.ko" ;;
		esac
	done
	cp "$here/init" "$st/init"
	chmod 755 "$st/init" "$st/workload"
	mknod "$st/dev/console" c 5 1
	(cd "$st" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
		>"$out/initrd.cpio.tmp"
	mv "$out/initrd.cpio.tmp" "$out/initrd.cpio"
	cp "$kernel" "$out/vmlinuz"
	rm -rf "$st"
	echo "$stamp" >"$out/stamp"
	echo "build.sh: built from $kernel" >&2
fi
echo "kernel: $out/vmlinuz"
echo "initrd: $out/initrd.cpio"
