#!/usr/bin/env bash
# Runs every cargo-fuzz target of the project (the fuzz crates kubevirt-vmm/fuzz: guest-facing
# devices and formats; kubevirt-api/fuzz: what users hand the API; kubevirt-local/fuzz: what
# clients send the API server (patches, selectors, protobuf); kubevirt-launcher/fuzz: DHCP from
# the guest, cloud-init ISOs, OCI manifests, references and layers) for a bounded time, starting
# from the committed corpus, and fails on any crash, leak or timeout.
#
# After each target's run the inputs it found are merged into the target's corpus directory
# (corpus/<target>/, committed) with libFuzzer's -merge=1 -use_counters=0: only inputs that reach
# code (edges) the corpus does not reach yet are kept, and the inputs already there stay as they
# are (with hit counts as features, as the fuzzing itself uses, a 20 s run kept hundreds). A target's
# corpus is capped at FUZZ_CORPUS_MAX_BYTES (default 256 KiB): past it, the largest of the new
# inputs are dropped again. Each target's run appends one line to FUZZ_RECORD (default
# target/fuzz-runs.tsv: date, commit, target, seconds, executions, new inputs kept, corpus
# inputs and bytes) and the summary is printed; `git status` then shows the corpus growth to commit
# (docs/TESTING.md, "Fuzzing").
#
#   scripts/fuzz.sh                  # FUZZ_SECONDS (default 30) per target
#   FUZZ_SECONDS=300 scripts/fuzz.sh # a longer local session
#   FUZZ_MERGE=0 scripts/fuzz.sh     # leave the corpus as it is (new inputs are discarded)
#
# Only the stable toolchain is needed: cargo-fuzz passes -Z flags (sanitizer, coverage
# instrumentation) to rustc, which stable accepts with RUSTC_BOOTSTRAP=1. The default
# AddressSanitizer build is used.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
FUZZ_CRATES=(kubevirt-vmm/fuzz kubevirt-api/fuzz kubevirt-local/fuzz kubevirt-launcher/fuzz)

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
FUZZ_MERGE=${FUZZ_MERGE:-1}
FUZZ_CORPUS_MAX_BYTES=${FUZZ_CORPUS_MAX_BYTES:-262144}
FUZZ_RECORD=${FUZZ_RECORD:-$root/target/fuzz-runs.tsv}
case "$FUZZ_SECONDS$FUZZ_CORPUS_MAX_BYTES" in
  *[!0-9]*) echo "fuzz: FUZZ_SECONDS and FUZZ_CORPUS_MAX_BYTES must be whole numbers" >&2; exit 2 ;;
esac
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/fuzz}

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
mkdir -p "$(dirname "$FUZZ_RECORD")"
if [ ! -s "$FUZZ_RECORD" ]; then
  printf 'date\tcommit\ttarget\tseconds\texecutions\tnew_inputs_kept\tcorpus_inputs\tcorpus_bytes\n' >"$FUZZ_RECORD"
fi
summary="$work/summary"

# Bytes of the files in directory $1.
bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }

# Merge the inputs of $2 that add edges into corpus directory $1 of target $3, then drop the
# largest of the inputs the merge added until the corpus is under FUZZ_CORPUS_MAX_BYTES. Prints
# how many inputs were kept.
merge() {
  local corpus=$1 new=$2 t=$3 before="$work/$3/before" log="$work/$3/merge.log"
  find "$corpus" -type f -printf '%f\n' | LC_ALL=C sort >"$before"
  if [ -n "$(ls -A "$new")" ]; then
    if ! cargo fuzz run "$t" "$corpus" "$new" -- -merge=1 -use_counters=0 -timeout=10 \
        -artifact_prefix="$work/$t/artifacts/" >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      echo "fuzz: merging $t's new inputs failed" >&2
      return 1
    fi
  fi
  local name kept=0 size
  size=$(bytes "$corpus")
  # The inputs the merge added, largest first.
  find "$corpus" -type f -printf '%f\n' | LC_ALL=C sort | LC_ALL=C comm -13 "$before" - |
    while read -r name; do echo "$(stat -c %s "$corpus/$name") $name"; done |
    sort -rn >"$work/$t/added"
  while read -r len name; do
    if [ "$size" -gt "$FUZZ_CORPUS_MAX_BYTES" ]; then
      rm -f "$corpus/$name"
      size=$((size - len))
    else
      kept=$((kept + 1))
    fi
  done <"$work/$t/added"
  echo "$kept"
}

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
  # The first corpus directory receives new inputs (temporary); the committed one is only read
  # here and grows by the merge below.
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
  kept=0
  if [ "$FUZZ_MERGE" = 1 ]; then
    kept=$(merge corpus/"$t" "$work/$t/new" "$t")
  fi
  inputs=$(find corpus/"$t" -type f | wc -l)
  echo "fuzz: $t: ${runs:?no libFuzzer summary} executions in ${secs}s from $seeds seeds, no crash (${cov:-cov: ?}, $new new inputs, $kept kept: corpus $inputs inputs, $(bytes corpus/"$t") bytes)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$commit" "$t" \
    "$secs" "$runs" "$kept" "$inputs" "$(bytes corpus/"$t")" | tee -a "$FUZZ_RECORD" >>"$summary"
  total=$((total + runs))
  count=$((count + 1))
done
done
echo "fuzz: $count target(s), $total executions in all; recorded in $FUZZ_RECORD:"
column -t -s $'\t' <(head -n 1 "$FUZZ_RECORD") "$summary" 2>/dev/null || cat "$summary"
