#!/usr/bin/env bash
# Fetches the Gateway API CRDs (standard channel) the tests install, from the
# sigs.k8s.io/gateway-api Go module (which ships them), into target/gateway-api/<version>/.
# Idempotent: a fetched copy is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

version="v1.5.1"
out="$PWD/target/gateway-api/$version"
if [ -s "$out/gateway.networking.k8s.io_httproutes.yaml" ]; then
  echo "Gateway API $version CRDs: cached in $out"
  exit 0
fi
command -v go >/dev/null || { echo "go not found: install Go" >&2; exit 1; }
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# `go mod download` needs a module to run in; the scratch one is thrown away.
(cd "$scratch" && GOTOOLCHAIN=local go mod init fetch.invalid >/dev/null 2>&1)
dir="$(cd "$scratch" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$version" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
mkdir -p "$out.tmp"
cp "$dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml "$out.tmp/"
# The admission policy guarding upgrades is not a CRD; the tests apply CRDs only.
rm -f "$out.tmp"/gateway.networking.k8s.io_vap_*.yaml
chmod -R u+w "$out.tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "Gateway API $version CRDs: fetched into $out"
