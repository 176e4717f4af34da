#!/usr/bin/env bash
# The main job, as far as it exists today: generate the CRDs, check upstream's own examples the way
# upstream's webhooks would, and build a VM in Rust. It grows as the launcher and control plane land.
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures=${KUBEVIRT_FIXTURES:-../shared/fixtures/upstream}

scripts/setup.sh
cargo build --release --locked -p kubevirt-controller
cargo build --release --locked --example build_vm
bin=target/release/kubevirt-controller

echo "== CRDs (kubevirt-controller crds | kubectl apply -f -)"
"$bin" crds > target/crds.yaml
grep -c '^kind: CustomResourceDefinition' target/crds.yaml | xargs printf '%s CRDs written to target/crds.yaml\n'

echo "== upstream examples through strict decoding, defaults and validation"
"$bin" validate -f "$fixtures"/kubevirt-examples-vm-cirros.yaml "$fixtures"/kubevirt-examples-vmi-fedora.yaml \
  "$fixtures"/cdi-example-import-kubevirt-datavolume.yaml "$fixtures"/userguide-snapshot_restore_api-01-VirtualMachineSnapshot.yaml

echo "== a broken VM is refused with field paths"
cat <<'YAML' | "$bin" validate -f - || true
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: broken}
spec:
  running: true
  runStrategy: Always
  template:
    spec:
      domain:
        devices:
          disks: [{name: root, disk: {bus: ide}}]
YAML

echo "== a VM built in Rust (examples/build_vm.rs)"
target/release/examples/build_vm
