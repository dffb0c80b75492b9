#!/usr/bin/env bash
# Builds Helm from its Go module (helm.sh/helm/v3/cmd/helm, pinned below) into
# target/helm/<version>/helm, for the deploy tests (tests/tests/deploy_*.rs) and for
# rendering deploy/manifests/halo.yaml (see deploy/README.md). Idempotent: a cached build is
# reused. Needs Go (the version Helm's go.mod asks for, or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

# The deploy tests read this line to find the binary: keep it `helm_version=vX.Y.Z`.
helm_version=v3.22.0
out="$root/target/helm/$helm_version"

if [ -x "$out/helm" ]; then
  echo "helm $helm_version: cached in $out"
  exit 0
fi
command -v go >/dev/null || { echo "go not found: install Go (https://go.dev/dl/)" >&2; exit 1; }

echo "building helm $helm_version (first run only: about a minute or two)"
start=$SECONDS
# Stamp the versions as Helm's own Makefile does: `helm version` reports the release, and
# `helm template` / `helm lint` assume the Kubernetes minor of the client-go Helm is built
# with (instead of the v1.20 fallback compiled into the source).
gomod="$(GOFLAGS=-mod=mod go mod download -json "helm.sh/helm/v3@$helm_version" |
  awk -F'"' '$2 == "GoMod" { print $4 }')"
[ -n "$gomod" ] && [ -f "$gomod" ] || { echo "cannot download helm.sh/helm/v3@$helm_version" >&2; exit 1; }
client_go="$(awk '$1 == "k8s.io/client-go" { print $2 }' "$gomod")"
k8s_minor="$(echo "$client_go" | cut -d. -f2)"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
if [ -n "$k8s_minor" ]; then
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
fi

# Build into a scratch directory and move into place, so an interrupted build is not cached.
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags="$ldflags" \
  "helm.sh/helm/v3/cmd/helm@$helm_version"
mkdir -p "$out"
mv -f "$tmp/helm" "$out/helm"
echo "helm $helm_version: built in $out in $((SECONDS - start))s ($("$out/helm" version --short))"
