#!/usr/bin/env bash
# Measures kubevirt-launcher's footprint and speed on the demo VMI (examples/vmi-demo.yaml):
# peak RSS of the whole launcher process (the demo guest touches well under 1 MiB of its 64 MiB,
# so this is the launcher's own overhead) against the 16 MiB goal, and the time from starting
# the process to the guest's first console byte on stdout. The image cache is warmed first.
# The demo guest waits for commands, so each run types `poweroff` on the launcher's stdin.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p kubevirt-launcher -p kubevirt-demo-guest
target/release/kubevirt-demo-image target/demo-image >/dev/null
run=(target/release/kubevirt-launcher run --vmi examples/vmi-demo.yaml --cache-dir target/launcher-cache --volumes-dir target/volumes)
printf 'poweroff\r' | "${run[@]}" >/dev/null 2>&1 # warm the cache
for i in 1 2 3 4 5; do
  printf 'poweroff\r' | /usr/bin/time -f "%M" "${run[@]}" 2>&1 >/dev/null | tail -1
done | sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "peak RSS: median %.1f MiB = %.2fx the 16 MiB goal\n", m/1024, m/1024/16}'
python3 - "${run[@]}" <<'PY'
import subprocess, sys, time, statistics
samples = []
for _ in range(5):
    t = time.monotonic()
    p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.read(1)
    samples.append((time.monotonic() - t) * 1000)
    p.stdin.write(b"poweroff\r"); p.stdin.close()
    p.stdout.read(); p.wait()
print(f"process start -> first console byte: median {statistics.median(samples):.1f} ms")
PY

# With the pod network (root): masquerade NAT, DHCP and virtio-net in a scratch network namespace
# per run (the launcher builds the bridge there, as in a fresh pod). Measures peak RSS again and
# the time from start to the guest holding its DHCP address.
if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null; then
  net_vmi=$(mktemp --suffix=.yaml)
  sed -e '/autoattachPodInterface/d' -e 's/^  volumes:/  networks: [{name: default, pod: {}}]\n  volumes:/' \
    -e 's/^      rng: {}/      rng: {}\n      interfaces: [{name: default, masquerade: {}}]/' examples/vmi-demo.yaml > "$net_vmi"
  ns=kvfoot-$$
  fresh_ns() {
    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"
    ip -n "$ns" link add eth0 type veth peer name eth0-peer
    ip -n "$ns" addr add 10.244.0.5/24 dev eth0
    ip -n "$ns" link set eth0 up
  }
  trap 'ip netns del "$ns" 2>/dev/null || true; rm -f "$net_vmi"' EXIT
  net_run=(ip netns exec "$ns" target/release/kubevirt-launcher run --vmi "$net_vmi" --pod-network --cache-dir target/launcher-cache --volumes-dir target/volumes)
  for i in 1 2 3 4 5; do
    fresh_ns
    (sleep 1; printf 'poweroff\r') | /usr/bin/time -f "%M" "${net_run[@]}" 2>&1 >/dev/null | tail -1
  done | sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "with the pod network: peak RSS median %.1f MiB = %.2fx the 16 MiB goal\n", m/1024, m/1024/16}'
  for i in 1 2 3 4 5; do
    fresh_ns
    python3 - "${net_run[@]}" <<'PY'
import subprocess, sys, time
t = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
seen = b""
while b"(DHCP)" not in seen:
    chunk = p.stdout.read1(4096)
    if not chunk:
        break
    seen += chunk
print(f"{(time.monotonic() - t) * 1000:.1f}")
p.stdin.write(b"poweroff\r"); p.stdin.close()
p.stdout.read(); p.wait()
PY
  done | sort -n | awk '{a[NR]=$1} END {printf "with the pod network: process start -> guest has its DHCP address: median %.1f ms\n", a[int((NR+1)/2)]}'
fi
