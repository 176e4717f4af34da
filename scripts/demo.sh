#!/usr/bin/env bash
# The main job: the local control plane (`kubevirt-local up`: API server, CRDs, controllers, node
# agent) with the real kubectl; a VM applied with kubectl boots on our own VMM and is deleted with a
# graceful ACPI shutdown; upstream's examples go through the same API; upstream's webhook checks
# refuse a broken VM; the launcher on its own, also on the pod network; the VMM embedded directly.
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures=${KUBEVIRT_FIXTURES:-../shared/fixtures/upstream}

scripts/setup.sh
cargo build --release --locked -p kubevirt-controller -p kubevirt-local -p kubevirt-launcher -p kubevirt-demo-guest
cargo build --release --locked --example build_vm --example vmm_hello --example vmm_virtio_selftest
bin=${CARGO_TARGET_DIR:-target}/release

data=$(mktemp -d)
server=
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
"$bin"/kubevirt-demo-image target/demo-image
echo "== kubevirt-local up: API server + CRDs + VM controller + node agent, in one process"
# `up` prints one JSON line on stdout once the whole plane is ready (also --ready-file): no polling.
# It also runs the local node's kubelet and its private containerd; --stop-pods-on-exit stops both
# when the demo stops `up`.
mkfifo "$data/ready"
"$bin"/kubevirt-local up --data-dir "$data" --listen 127.0.0.1:0 --launcher "$bin"/kubevirt-launcher \
  --ready-file "$data/ready.json" --stop-pods-on-exit > "$data/ready" 2> "$data/up.log" &
server=$!
exec 3< "$data/ready"
read -r ready <&3 || { echo "kubevirt-local up did not become ready:"; cat "$data/up.log"; exit 1; }
echo "ready: $ready"
export KUBECONFIG="$data/kubeconfig"
k() { kubectl --cache-dir "$data/cache" "$@"; }

echo "== the demo VM, applied with kubectl, boots on our VMM (examples/vm-demo.yaml)"
k apply -f examples/vm-demo.yaml
k wait --for=create vmi/demo --timeout=60s >/dev/null
k wait --for=jsonpath='{.status.phase}'=Running vmi/demo --timeout=60s
k get vm,vmi -o wide
echo "-- its virt-launcher pod (the VMI controller made it, the scheduler placed it, the kubelet runs it):"
k get pods -l kubevirt.io=virt-launcher -o wide
pod=$(k get pods -l kubevirt.io/domain=demo -o name)
echo "-- its console: kubectl logs $pod -c guest-console-log"
for _ in $(seq 1 50); do
  k logs "$pod" -c guest-console-log | grep -q "cloud-init: hostname" && break
  sleep 0.2
done
k logs "$pod" -c guest-console-log | tr -d '\r'
echo "== kubectl delete vm: the guest gets the ACPI power button, then the VMI and its pod go"
k delete vm demo --wait=true
k wait --for=delete "$pod" --timeout=60s
k get vm,vmi,pods

echo "== upstream's examples, applied with kubectl (the Halted VM stays Stopped; the replica set makes its VMIs)"
k apply -f "$fixtures"/kubevirt-examples-vm-cirros.yaml -f "$fixtures"/kubevirt-examples-vmi-replicaset-cirros.yaml \
  -f "$fixtures"/cdi-example-import-kubevirt-datavolume.yaml
k scale vmirs vmi-replicaset-cirros --replicas=3
sleep 1
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

echo "== examples/vmi-demo.yaml straight through kubevirt-launcher (no API server): the console is this terminal"
# The guest answers commands typed on the console; here they come from a pipe.
(sleep 1; printf 'disks\r'; sleep 0.3; printf 'uname\r'; sleep 0.3; printf 'poweroff\r') |
  "$bin"/kubevirt-launcher run examples/vmi-demo.yaml --run-dir "$data/launcher" \
    --cache-dir "$data/images" --volumes-dir "$data/volumes"

echo "== the same guest on the pod network: masquerade NAT + DHCP in a scratch network namespace"
pod=kvdemo-pod-$$; peer=kvdemo-peer-$$
ip netns add "$pod"; ip netns add "$peer"
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; ip netns del "$pod" 2>/dev/null; ip netns del "$peer" 2>/dev/null; rm -rf "$data"' EXIT
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
