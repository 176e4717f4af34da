#!/usr/bin/env bash
# Builds the guest for kubevirt-vmm's Linux-boot integration test (tests/boot.rs):
#   <out>/vmlinuz     Debian's cloud kernel (a bzImage), from the linux-image-cloud-amd64 package
#   <out>/initrd.img  a gzip'd cpio with busybox-static and an /init that prints
#                     KUBEVIRT-VMM-LINUX-BOOT-OK on the console and reboots
# Usage: kubevirt-vmm/scripts/build-linux-guest.sh [out-dir]   (default: target/linux-guest)
# Needs apt (Debian), dpkg-deb and cpio. The test finds the output there, or via
# KUBEVIRT_VMM_LINUX_GUEST=<out-dir>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/../../target/linux-guest}" && cd "${1:-$here/../../target/linux-guest}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

command -v cpio >/dev/null || apt-get install -y cpio >/dev/null
kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$kernel_pkg" ] || { echo "cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
apt-get download "$kernel_pkg" busybox-static >/dev/null

dpkg-deb -x "$kernel_pkg"_*.deb kernel
cp kernel/boot/vmlinuz-* "$out/vmlinuz"

dpkg-deb -x busybox-static_*.deb bb
mkdir -p root/bin root/proc root/sys root/dev
cp bb/bin/busybox root/bin/busybox
cat > root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox echo KUBEVIRT-VMM-LINUX-BOOT-OK
/bin/busybox reboot -f
INIT
chmod +x root/init
(cd root && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initrd.img"
echo "Linux guest in $out: $(basename "$kernel_pkg"), $(du -h "$out/initrd.img" | cut -f1) initrd"
