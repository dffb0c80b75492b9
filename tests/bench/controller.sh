#!/usr/bin/env bash
# Controller benchmark: propagation latency from an API change to the data plane serving
# it (a real etcd + kube-apiserver on loopback, the real controller and data plane), and
# the controller's full render time and memory at scale (in memory, then the real
# controller on the same objects). All traffic goes to 127.0.0.1.
#
#   tests/bench/controller.sh                          # everything
#   tests/bench/controller.sh --scenario propagation --changes 100
#   tests/bench/controller.sh --scenario render --lbs 1000 --endpoints 50 --skip-real-controller
#
# Arguments go to halo-bench-controller (see --help). SKIP_BUILD=1 uses the existing
# release binaries. Needs kube-apiserver and kubectl from scripts/build-k8s-tools.sh,
# etcd on PATH, and openssl.
set -euo pipefail
cd "$(dirname "$0")/../.."   # repository root

die() { echo "error: $*" >&2; exit 1; }

command -v openssl >/dev/null || die "openssl missing"
command -v etcd >/dev/null || die "etcd missing (scripts/build-k8s-tools.sh)"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "== building release binaries" >&2
  cargo build --release -p halo-tests -p halo-controller -p halo-dataplane --bins
fi
BENCH=target/release/halo-bench-controller
for b in "$BENCH" target/release/halo-controller target/release/halo-dataplane; do
  [ -x "$b" ] || die "$b missing (run without SKIP_BUILD=1)"
done
exec "$BENCH" "$@"
