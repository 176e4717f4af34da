#!/usr/bin/env bash
# The main job, as far as it exists today: start the local control plane, install the CRDs with the
# real kubectl, run upstream's VMs through it, show upstream's webhook checks refusing a broken VM,
# and boot a guest on our own VMM. It grows as the launcher and the local node land.
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures=${KUBEVIRT_FIXTURES:-../shared/fixtures/upstream}

scripts/setup.sh
cargo build --release --locked -p kubevirt-controller -p kubevirt-local -p kubevirt-launcher
cargo build --release --locked --example build_vm --example vmm_hello --example vmm_virtio_selftest
bin=target/release

data=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
"$bin"/kubevirt-local apiserver --data-dir "$data" --listen 127.0.0.1:0 > "$data/server.log" 2>&1 &
server=$!
for _ in $(seq 50); do grep -q listening "$data/server.log" 2>/dev/null && break; sleep 0.1; done
head -2 "$data/server.log"
export KUBECONFIG="$data/kubeconfig"
k() { kubectl --cache-dir "$data/cache" "$@"; }

echo "== install the CRDs (kubevirt-controller crds | kubectl apply -f -)"
"$bin"/kubevirt-controller crds | k apply -f - | tail -3
echo "== upstream's examples, applied with kubectl"
k apply -f "$fixtures"/kubevirt-examples-vm-cirros.yaml -f "$fixtures"/kubevirt-examples-vmi-replicaset-cirros.yaml \
  -f "$fixtures"/cdi-example-import-kubevirt-datavolume.yaml
k scale vmirs vmi-replicaset-cirros --replicas=3
k patch vm vm-cirros --type=merge --subresource=status -p '{"status":{"printableStatus":"Stopped"}}'
k get vm,vmirs,dv

echo "== a broken VM is refused with field paths (upstream's webhook checks, run in admission)"
cat <<'YAML' | k apply -f - || true
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

echo "== the same checks offline (kubevirt-controller validate)"
"$bin"/kubevirt-controller validate -f "$fixtures"/kubevirt-examples-vmi-fedora.yaml

echo "== a VM built in Rust (examples/build_vm.rs), applied"
"$bin"/examples/build_vm | k apply -f -

echo "== examples/vmi-demo.yaml through kubevirt-launcher: kernel from an OCI image, virtio disks, our VMM"
"$bin"/kubevirt-launcher demo-image target/demo-image
# The guest answers commands typed on the console; here they come from a pipe.
(sleep 1; printf 'disks\r'; sleep 0.3; printf 'uname\r'; sleep 0.3; printf 'poweroff\r') |
  "$bin"/kubevirt-launcher run examples/vmi-demo.yaml --run-dir "$data/launcher" \
    --cache-dir "$data/images" --volumes-dir "$data/volumes"

echo "== the same guest on the pod network: masquerade NAT + DHCP in a scratch network namespace"
pod=kvdemo-pod-$$; peer=kvdemo-peer-$$
ip netns add "$pod"; ip netns add "$peer"
trap 'kill "$server" 2>/dev/null || true; ip netns del "$pod" 2>/dev/null; ip netns del "$peer" 2>/dev/null; rm -rf "$data"' EXIT
ip link add eth0 netns "$pod" type veth peer name peer0 netns "$peer"
ip -n "$pod" addr add 10.244.0.5/24 dev eth0; ip -n "$peer" addr add 10.244.0.1/24 dev peer0
ip -n "$pod" link set eth0 up; ip -n "$peer" link set peer0 up
sed -e '/autoattachPodInterface/d' -e 's/^  volumes:/  networks: [{name: default, pod: {}}]\n  volumes:/' \
  -e 's/^      rng: {}/      rng: {}\n      interfaces: [{name: default, masquerade: {}}]/' examples/vmi-demo.yaml > "$data/vmi-net.yaml"
(sleep 2; ip netns exec "$peer" ping -c 2 10.244.0.5 >&2; printf 'ip\r'; sleep 0.3; printf 'poweroff\r') |
  ip netns exec "$pod" "$bin"/kubevirt-launcher run "$data/vmi-net.yaml" --pod-network \
    --run-dir "$data/launcher-net" --cache-dir "$data/images" --volumes-dir "$data/volumes"

echo "== a guest on our own VMM, embedded directly (examples/vmm_hello.rs)"
"$bin"/examples/vmm_hello

echo "== virtio devices proven by a driver inside the guest (examples/vmm_virtio_selftest.rs)"
"$bin"/examples/vmm_virtio_selftest
