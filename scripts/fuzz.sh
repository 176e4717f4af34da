#!/usr/bin/env bash
# Runs every cargo-fuzz target of the project (the fuzz crates kubevirt-vmm/fuzz: guest-facing
# devices and formats; kubevirt-api/fuzz: what users hand the API; kubevirt-local/fuzz: what
# clients send the API server (patches, selectors, protobuf); kubevirt-launcher/fuzz: DHCP from
# the guest, cloud-init ISOs, OCI manifests, references and layers) for a bounded time, starting
# from the committed corpus, and fails on any crash, leak or timeout. Prints how many inputs each
# target executed.
#
#   scripts/fuzz.sh                  # FUZZ_SECONDS (default 30) per target
#   FUZZ_SECONDS=300 scripts/fuzz.sh # a longer local session
#
# Only the stable toolchain is needed: cargo-fuzz passes -Z flags (sanitizer, coverage
# instrumentation) to rustc, which stable accepts with RUSTC_BOOTSTRAP=1. The default
# AddressSanitizer build is used. New coverage found in a run stays in a temporary directory;
# to keep it, merge it into the committed corpus by hand (see kubevirt-vmm/fuzz/README.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
FUZZ_CRATES=(kubevirt-vmm/fuzz kubevirt-api/fuzz kubevirt-local/fuzz kubevirt-launcher/fuzz)

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/fuzz}

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

total=0
count=0
for crate in "${FUZZ_CRATES[@]}"; do
cd "$root/$crate"
targets=$(cargo fuzz list)
cargo fuzz build  # every target of the crate
for t in $targets; do
  mkdir -p "$work/$t/new" "$work/$t/artifacts" corpus/"$t"
  log="$work/$t/log"
  seeds=$(find corpus/"$t" -type f | wc -l)
  # The first corpus directory receives new inputs (temporary); the committed one is only read.
  # -timeout: one input running longer than 10 s is a hang, reported like a crash.
  if ! cargo fuzz run "$t" "$work/$t/new" corpus/"$t" -- \
      -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$work/$t/artifacts/" >"$log" 2>&1; then
    tail -n 60 "$log"
    mkdir -p artifacts/"$t"
    cp "$work/$t/artifacts/"* artifacts/"$t"/ 2>/dev/null || true
    echo "fuzz: $t FAILED; reproducing input(s) copied to $crate/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log")
  secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log")
  cov=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | grep -o 'cov: [0-9]*' || true)
  new=$(find "$work/$t/new" -type f | wc -l)
  echo "fuzz: $t: ${runs:?no libFuzzer summary} executions in ${secs}s from $seeds seeds, no crash (${cov:-cov: ?}, $new new inputs)"
  total=$((total + runs))
  count=$((count + 1))
done
done
echo "fuzz: $count target(s), $total executions in all"
