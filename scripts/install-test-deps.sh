#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_packages=(iproute2 keepalived nftables procps curl openssl nghttp2-client haproxy)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# keepalived and haproxy are test peers, never running services here.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now keepalived >/dev/null 2>&1 || true
  $SUDO systemctl disable --now haproxy >/dev/null 2>&1 || true
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust stable (https://rustup.rs)" >&2; exit 1; }
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
scripts/build-k8s-tools.sh
scripts/fetch-gateway-api.sh
scripts/build-helm.sh
