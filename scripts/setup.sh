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
# containerd, runc, crun and containernetworking-plugins run the local node's pods (CRI, CNI);
# crun is the OCI runtime where the host's cgroups allow it (see the end of this script).
# seabios and ovmf are the firmware a VMI without kernelBoot boots.
# protobuf-compiler (protoc) builds the CRI client's gRPC code (k8s-cri).
# openssh-client (ssh, scp, ssh-keygen) is what virtctl ssh/scp run, against the demo guest's
# SSH server.
PACKAGES=(python3 libsqlite3-dev busybox-static genisoimage acpica-tools util-linux docker-registry nftables libarchive-tools xorriso qemu-system-x86 qemu-utils iputils-ping dmidecode time strace containerd runc crun containernetworking-plugins seabios ovmf protobuf-compiler skopeo openssh-client)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# crun refuses every container on a hybrid cgroup host (v1 hierarchies on a tmpfs, v2 at
# unified/) whose unified hierarchy holds a controller ("cgroups in hybrid mode not supported").
# A controller there that no v1 hierarchy has and no v2 cgroup enables (hugetlb on these
# machines) is bound to a v1 hierarchy of its own, as systemd's hybrid layout mounts it; where
# that cannot be done the node keeps runc (`kubevirt-local up --oci-runtime auto` says why).
if [ "$(stat -fc %T /sys/fs/cgroup)" = tmpfs ] && [ -r /sys/fs/cgroup/unified/cgroup.controllers ] &&
  [ -z "$(cat /sys/fs/cgroup/unified/cgroup.subtree_control)" ]; then
  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    $SUDO mkdir -p "/sys/fs/cgroup/$c" && $SUDO mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" ||
      echo "setup.sh: cgroup controller $c stays on the unified hierarchy; pods run under runc" >&2
  done
fi
