#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine (idempotent; root or sudo).
# Rust comes with the machine; everything else the project needs is listed here.
set -euo pipefail

# Debian packages the test suite uses. Keep this list the single source of truth.
# genisoimage (isoinfo, isovfy), util-linux (blkid), libarchive-tools (bsdtar) and xorriso
# read back the cloud-init images. iputils-ping pings the demo guest through the masquerade NAT.
# time (/usr/bin/time) measures the launcher's peak RSS in scripts/launcher-footprint.sh.
# strace shows that a guest flush becomes an fdatasync (kubevirt-vmm/tests/blk_flush_fdatasync.rs).
# busybox-static (not busybox) runs in an empty container root file system as well as on the host.
# containerd, runc and containernetworking-plugins run the local node's pods (CRI, CNI).
# seabios and ovmf are the firmware a VMI without kernelBoot boots.
# protobuf-compiler (protoc) builds the CRI client's gRPC code (k8s-cri).
# openssh-client (ssh, scp, ssh-keygen) is what virtctl ssh/scp run, against the demo guest's
# SSH server.
PACKAGES=(python3 libsqlite3-dev busybox-static genisoimage acpica-tools util-linux docker-registry nftables libarchive-tools xorriso qemu-system-x86 qemu-utils iputils-ping dmidecode time strace containerd runc containernetworking-plugins seabios ovmf protobuf-compiler skopeo openssh-client)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
