#!/usr/bin/env bash
# Builds the release images of kubevirt-rs's components (virt-operator, virt-api,
# virt-controller, virt-handler, virt-launcher, cdi-importer, local-volume-provisioner) and
# pushes them to REGISTRY as REGISTRY/NAME:TAG. Reproducible: the same binaries give the same
# digests, which are kept on the way (skopeo --preserve-digests) and printed as NAME@DIGEST.
#
#   scripts/images.sh REGISTRY TAG        e.g. scripts/images.sh 127.0.0.1:5000 v0.1.0
#
# KUBEVIRT_BINARIES=DIR takes kubevirt-controller, kubevirt-launcher and kubevirt-local from DIR
# instead of building them (cargo build --release). Registries on loopback are spoken to over
# plain HTTP, others over TLS; credentials come from skopeo's auth file (REGISTRY_AUTH_FILE or
# `skopeo login REGISTRY`).
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: scripts/images.sh REGISTRY TAG"
registry=${1:?$usage}
tag=${2:?$usage}
if ! command -v skopeo >/dev/null; then
  echo "scripts/images.sh: skopeo pushes the images: install it (apt-get install skopeo, or scripts/setup.sh)" >&2
  exit 1
fi
bins=${KUBEVIRT_BINARIES:-}
if [ -z "$bins" ]; then
  cargo build --release --locked -p kubevirt-controller -p kubevirt-launcher -p kubevirt-local
  bins=target/release
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bins/kubevirt-local" images --binaries "$bins" --tag "$tag" --output-dir "$out/layouts" >"$out/digests"

tls=true
case "$registry" in
  127.*|localhost|localhost:*|\[::1\]*) tls=false ;;
esac
while read -r ref digest; do
  name=${ref%%:*}
  skopeo copy --quiet --preserve-digests --dest-tls-verify="$tls" \
    "oci:$out/layouts/$name:$tag" "docker://$registry/$name:$tag"
  echo "$registry/$name:$tag@$digest"
done <"$out/digests"
