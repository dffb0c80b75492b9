#!/usr/bin/env bash
# Installs what the tests need, then runs every check and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh

echo "== format, lints, generated files"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo run --quiet --features halo-crds/crdgen --bin crdgen -- --check

echo "== build"
cargo build --workspace --bins

echo "== tests"
rm -f target/fault-lab-table.md
cargo test --workspace 2>&1 | tee target/test-output.txt
if [ -f target/fault-lab-table.md ]; then
  echo "== the failure table (three-node fault lab)"
  cat target/fault-lab-table.md
fi
# One closing line over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' target/test-output.txt
