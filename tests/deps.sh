#!/bin/sh
# Installs what building and testing vmckpt needs on Debian 12 (as root).
set -eu
PKGS="build-essential pkg-config libsodium-dev libssl-dev libzstd-dev libjansson-dev zstd \
clang libclang-rt-14-dev python3 man-db groff-base bc bsdutils iproute2 \
qemu-system-x86 linux-image-amd64 busybox-static cpio libxen-dev tcpdump \
debhelper dpkg-dev fakeroot lintian fusefat dosfstools libnbd-dev qemu-utils gdb \
libarchive-tools"
# gdb: e2e 17 SIGKILLs vmsave at exact points of the disk merge
# libarchive-tools: e2e 15 packs an unsealed disk with bsdtar (pax, sparse)
# make bench: the disk bench's references (nbdcopy; qemu-img is in qemu-utils)
[ "${1:-}" = bench ] && PKGS="$PKGS libnbd-bin"
# QEMU runs as this system user when vmckpt runs as root (vmctl(1)); make
# install and the vmckpt package create it too.
if [ "$(id -u)" = 0 ] && ! getent passwd vmckpt-qemu >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin vmckpt-qemu
fi
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
