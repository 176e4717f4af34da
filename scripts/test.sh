#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need, checks that the
# generated API matches upstream's swagger, then runs the whole workspace's tests.
# Upstream fixtures are read from ../shared/fixtures/upstream (or $KUBEVIRT_FIXTURES).
set -euo pipefail
cd "$(dirname "$0")/.."
# A fresh machine builds once: incremental caches would only take disk (several GB).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# The node tests start dozens of local nodes from the same binaries: their images (pause,
# launcher, importer) are written once per set of inputs and shared.
export KUBEVIRT_LOCAL_SHARED_IMAGES=${KUBEVIRT_LOCAL_SHARED_IMAGES:-${CARGO_TARGET_DIR:-$PWD/target}/tmp/node-images}

scripts/setup.sh
python3 scripts/gen-api.py --check ${KUBEVIRT_FIXTURES:+--fixtures "$KUBEVIRT_FIXTURES"}
# The doc tests, then every test binary of the workspace (what `cargo test --workspace` runs),
# TEST_JOBS at a time (default 3): the suite mostly waits on nodes and controllers, and each node
# test gets a pod network of its own. Beside them, the fuzz targets (their own target directory),
# bounded: FUZZ_SECONDS per target, 20 here (`scripts/fuzz.sh` alone runs 30); merges the inputs
# that add coverage into each target's corpus and prints and records (target/fuzz-runs.tsv) the
# executions per target.
scripts/run-tests.py --beside "FUZZ_SECONDS=${FUZZ_SECONDS:-20} scripts/fuzz.sh"
# kubevirt-api in a crate outside the workspace, with the oldest and newest Kubernetes versions (issue 20).
scripts/downstream-check.sh
# The devices self-test (issue 4): one guest drives every virtio device; exits non-zero on a FAIL.
# The test build above made it with the workspace's features (`cargo run --example`, of the root
# package alone, would build its dependencies a second time with others): this only checks it is
# fresh.
cargo build --workspace --locked --quiet --example vmm_virtio_selftest
"${CARGO_TARGET_DIR:-target}/debug/examples/vmm_virtio_selftest"
