#!/usr/bin/env bash
# kubevirt-vmm versus QEMU on the same PVH guest and raw disk (benches/vmm_blk_qemu.rs).
# Installs Debian's qemu-system-x86 if it is missing, then runs the bench; arguments go to it:
#   scripts/bench-qemu.sh [MiB per run (256)] [runs (9)] [tcg|kvm|both]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-system-x86_64 >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86
fi
cargo bench --bench vmm_blk_qemu -- "$@"
