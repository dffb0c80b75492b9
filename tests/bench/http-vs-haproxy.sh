#!/usr/bin/env bash
# HTTP/1.1 keep-alive throughput of Halo's data plane next to HAProxy, on one machine:
# the same two halo-lab backends, the same wrk load, the proxy alone on CPU 0 and
# the backends plus wrk on CPU 1. All traffic goes to 127.0.0.1.
#
#   tests/bench/http-vs-haproxy.sh
#
# Environment: DURATION (wrk -d, default 10s), CONNS (wrk -c, default 64),
# THREADS (wrk -t, default 2), SKIP_BUILD=1 to use the existing release binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."   # repository root

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
HALO_PORT=18080
HAPROXY_PORT=18081
ADMIN_PORT=18090
BACKEND_PORTS=(19001 19002)
BACKEND_NAMES=(b1 b2)
START_TIMEOUT=10   # seconds a process gets to start answering

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (the proxy on CPU 0, the load on CPU 1)"

# --- 1. tools ----------------------------------------------------------------
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The package's own haproxy service is not part of the benchmark.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now haproxy >/dev/null 2>&1 || true
fi

# --- 2. binaries ---------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building release binaries"
  cargo build --release -p halo-dataplane -p halo-tests --bins
fi
DATAPLANE=target/release/halo-dataplane
LAB=target/release/halo-lab
[ -x "$DATAPLANE" ] && [ -x "$LAB" ] || die "$DATAPLANE or $LAB missing (run without SKIP_BUILD=1)"

# --- process bookkeeping: only the PIDs started here are ever signalled --------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/halo-bench.XXXXXX")
PIDS=()

alive() { # true while PID runs (a zombie counts as gone)
  [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

stop_pid() { # SIGTERM, up to 5 s, then SIGKILL; reaps the child
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  PIDS=("${kept[@]+"${kept[@]}"}")
}

cleanup() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { # something already accepts connections on 127.0.0.1:PORT
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

wait_http() { # URL PID: until URL answers 200 (bounded by START_TIMEOUT), PID must stay up
  local url=$1 pid=$2 deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    alive "$pid" || { echo "process $pid exited" >&2; return 1; }
    sleep 0.1
  done
  echo "$url did not answer within ${START_TIMEOUT}s" >&2
  return 1
}

seconds_of() { # wrk-style duration (10, 10s, 2m, 1h) -> seconds
  case $1 in
    *h) echo $(( ${1%h} * 3600 )) ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}

for port in "$HALO_PORT" "$HAPROXY_PORT" "$ADMIN_PORT" "${BACKEND_PORTS[@]}"; do
  ! port_in_use "$port" || die "127.0.0.1:$port is already in use"
done

# --- 3. backends (CPU 1) -----------------------------------------------------------
for i in 0 1; do
  taskset -c 1 "$LAB" backend --listen "127.0.0.1:${BACKEND_PORTS[i]}" --name "${BACKEND_NAMES[i]}" \
    >"$WORK/${BACKEND_NAMES[i]}.log" 2>&1 &
  PIDS+=("$!")
  wait_http "http://127.0.0.1:${BACKEND_PORTS[i]}/" "$!" \
    || { cat "$WORK/${BACKEND_NAMES[i]}.log" >&2; die "backend ${BACKEND_NAMES[i]} did not start"; }
done

# --- proxy configurations, equivalent on both sides ---------------------------------
cat >"$WORK/halo.yaml" <<EOF
apiVersion: halo.dev/v1alpha1
kind: LoadBalancer
metadata: {name: bench, namespace: default}
spec:
  addresses: [127.0.0.1]
  listeners:
    - name: http
      port: $HALO_PORT
      protocol: HTTP
      algorithm: RoundRobin
      maxConnections: 10000
      timeouts: {connect: 5s, client: 60s, server: 60s}
      backends:
        - {name: ${BACKEND_NAMES[0]}, address: 127.0.0.1, port: ${BACKEND_PORTS[0]}}
        - {name: ${BACKEND_NAMES[1]}, address: 127.0.0.1, port: ${BACKEND_PORTS[1]}}
EOF

# No "log" lines: HAProxy logs nothing. No "check": no health checks.
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 10000
    # maxconn 10000 wants ~20014 fds; where the hard limit is lower, warn instead of failing.
    no strict-limits

defaults
    mode http
    balance roundrobin
    option http-keep-alive
    option forwardfor
    maxconn 10000
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend servers

backend servers
    server ${BACKEND_NAMES[0]} 127.0.0.1:${BACKEND_PORTS[0]}
    server ${BACKEND_NAMES[1]} 127.0.0.1:${BACKEND_PORTS[1]}
EOF
haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejected $WORK/haproxy.cfg"

# --- 4. one run per proxy ---------------------------------------------------------
ROWS=()
declare -A RPS
FAILED=0
WRK_LIMIT=$(( $(seconds_of "$DURATION") + 30 ))

bench() { # NAME PORT PID LOGFILE: checks, loads and stops one running proxy
  local name=$1 port=$2 pid=$3 logfile=$4 url="http://127.0.0.1:$2/"
  wait_http "$url" "$pid" || { tail -n 20 "$logfile" >&2; die "$name did not start"; }

  # Four requests on fresh connections should alternate between the two backends.
  local answers=() i
  for i in 1 2 3 4; do answers+=("$(curl -fsS --max-time 2 "$url" || echo ERROR)"); done
  log "$name answers: ${answers[*]}"
  local alternating=1
  for i in 1 2 3; do [ "${answers[i]}" != "${answers[i - 1]}" ] || alternating=0; done
  [[ " ${answers[*]} " == *" b1 "* && " ${answers[*]} " == *" b2 "* ]] || alternating=0
  if [ "$alternating" = 0 ]; then
    echo "WARNING: $name does not alternate b1/b2: ${answers[*]}" >&2
    FAILED=1
  fi

  log "$name: wrk -t$THREADS -c$CONNS -d$DURATION $url"
  local out="$WORK/wrk-$name.txt"
  timeout -k 5 "$WRK_LIMIT" taskset -c 1 wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" >"$out" \
    || { cat "$out" >&2; die "wrk failed against $name"; }
  sed 's/^/   /' "$out" >&2

  # Peak resident memory of the proxy, read while it still runs.
  local hwm
  hwm=$(awk '/^VmHWM:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status" 2>/dev/null || true)
  alive "$pid" || { echo "WARNING: $name exited during the run" >&2; FAILED=1; }
  stop_pid "$pid"

  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p50=$(awk '$1 == "50%" {print $2}' "$out")
  p99=$(awk '$1 == "99%" {print $2}' "$out")
  # Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
  errors=$(awk '
    /Socket errors:/ { gsub(",", ""); n += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { n += $NF }
    END { print n + 0 }' "$out")
  RPS[$name]=${rps:-0}
  ROWS+=("$(printf '%-8s %12s %10s %10s %8s %12s' "$name" "${rps:-?}" "${p50:-?}" "${p99:-?}" "$errors" "${hwm:-?}")")
}

echo "haproxy: $(haproxy -v | head -n1)" >&2
echo "wrk:     $({ wrk -v 2>&1 || true; } | head -n1)" >&2

# Halo: proxy on CPU 0, warnings only in its log.
RUST_LOG=warn taskset -c 0 "$DATAPLANE" run --config "$WORK/halo.yaml" --node bench \
  --admin "127.0.0.1:$ADMIN_PORT" >"$WORK/halo.log" 2>&1 &
halo_pid=$!
PIDS+=("$halo_pid")
wait_http "http://127.0.0.1:$ADMIN_PORT/healthz" "$halo_pid" || { tail -n 20 "$WORK/halo.log" >&2; die "halo not healthy"; }
bench halo "$HALO_PORT" "$halo_pid" "$WORK/halo.log"

# HAProxy: foreground (-db), proxy on CPU 0.
taskset -c 0 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
haproxy_pid=$!
PIDS+=("$haproxy_pid")
bench haproxy "$HAPROXY_PORT" "$haproxy_pid" "$WORK/haproxy.log"

# --- 5. summary --------------------------------------------------------------------
echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency; proxy on CPU 0, backends + wrk on CPU 1"
printf '%-8s %12s %10s %10s %8s %12s\n' proxy req/s p50 p99 errors VmHWM
printf '%s\n' "${ROWS[@]}"
awk -v h="${RPS[halo]}" -v p="${RPS[haproxy]}" \
  'BEGIN { if (p > 0) printf "ratio halo/haproxy req/s = %.2f\n", h / p; else print "ratio halo/haproxy req/s = n/a" }'
exit "$FAILED"
