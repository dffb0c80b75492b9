#!/usr/bin/env bash
# Client-visible failover outage of a Halo pair next to a keepalived pair, in a lab of
# network namespaces: a client probes the VIP every 10 ms while the master crashes
# (SIGKILL), loses its link, or stops gracefully (SIGTERM), at 100 ms and 10 ms
# advertisement intervals; plus a planned handover for Halo. Prints a table of
# min/median/max outage per row and the Halo/keepalived ratio of the medians.
#
#   sudo tests/bench/failover.sh                 # everything, 5 reps per row
#   sudo tests/bench/failover.sh --reps 3 --intervals 100 --scenarios crash,graceful
#
# Arguments go to halo-bench-failover (see --help). SKIP_BUILD=1 uses the existing
# release binaries. Needs root, iproute2 and keepalived (never run as a service here).
set -euo pipefail
cd "$(dirname "$0")/../.."   # repository root

die() { echo "error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, raw sockets)"
command -v ip >/dev/null || die "iproute2 missing"
if ! command -v keepalived >/dev/null; then
  echo "== installing keepalived" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends keepalived >/dev/null
fi
# keepalived is a peer started by the benchmark, never the system service.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now keepalived >/dev/null 2>&1 || true
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "== building release binaries" >&2
  cargo build --release -p halo-dataplane -p halo-tests --bins
fi
BENCH=target/release/halo-bench-failover
[ -x "$BENCH" ] || die "$BENCH missing (run without SKIP_BUILD=1)"
echo "== keepalived: $(keepalived --version 2>&1 | head -1)" >&2
exec "$BENCH" "$@"
