#!/usr/bin/env bash
# Builds and runs tests/downstream, a crate outside the workspace that depends on kubevirt-api by
# path, once with the oldest Kubernetes version kubevirt-api supports (k8s-openapi `v1_33`) and
# once with the newest (`latest`): proves kubevirt-api leaves the version to its user (k8s-openapi
# refuses to build with two version features on) and that the README's "Embed it" code works.
# It shares the workspace's target directory, so third-party crates built before are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# The workspace's .cargo/config.toml names 1.37 for kubevirt-api built alone; the downstream
# crate chooses its own version, so the variable is cleared (empty means unset to k8s-openapi).
export K8S_OPENAPI_ENABLED_VERSION=
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
# The README's "Embed it" code is this crate's main.rs (less its module docs), word for word.
if ! diff <(sed -n '/^```rust$/,/^```$/p' README.md | sed '1d;$d') \
        <(grep -v '^//!' tests/downstream/src/main.rs | sed '/./,$!d'); then
    echo "README.md's Rust example differs from tests/downstream/src/main.rs" >&2
    exit 1
fi
# Start from the workspace's lock so the same crate versions are used (and reused from target/).
cp Cargo.lock tests/downstream/Cargo.lock
for version in oldest newest; do
    echo "downstream crate with k8s-openapi feature: $version"
    cargo run --quiet --manifest-path tests/downstream/Cargo.toml --features "$version" >/dev/null
done
echo "downstream crate builds and runs against the oldest and newest Kubernetes versions"
