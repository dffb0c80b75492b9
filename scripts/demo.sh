#!/usr/bin/env bash
# Builds Halo and runs the standalone data plane on deploy/examples/standalone.yaml in
# front of two small web servers it starts itself. Extra arguments go to `halo-lab demo`
# (e.g. --requests 6 to send six requests and exit).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
cargo build --release --quiet -p halo-dataplane -p halo-tests --bins
exec target/release/halo-lab demo "$@"
