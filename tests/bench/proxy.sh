#!/usr/bin/env bash
# Proxy benchmark: Halo's data plane next to HAProxy and nginx on one machine, with the
# rows and goals of issue 8. The same two nginx backends serve every proxy; the proxy
# under test runs alone on one CPU, wrk and the backends on the other; the proxies take
# turns (order alternating by rep) and the table shows medians over the reps. All
# traffic stays on 127.0.0.1.
#
#   tests/bench/proxy.sh                 # full run: 3 reps of 10 s per row and proxy
#   QUICK=1 tests/bench/proxy.sh         # smoke test: 1 rep of 3 s, 1,000 connections
#   SKIP_BUILD=1 ROWS="l7-c64 bulk" tests/bench/proxy.sh
#   ROWS=bulk HALO_B_ENV="SOME_SETTING=1" tests/bench/proxy.sh   # Halo twice, two settings
#
# Rows (ROWS, space-separated; default all):
#   l7-c64 l7-c256   HTTP keep-alive through the HTTP listener, 64 / 256 connections
#   l7-close         a new client connection per request (wrk -H 'Connection: close')
#   l4-c64           keep-alive HTTP through the TCP listener, 64 connections
#   bulk             one BULK_MB download through the TCP listener (GB/s)
#   mem              RSS per idle keep-alive client connection (MEM_CONNS), per
#                    established L4 session (L4_SESSIONS), and RSS after they close
#
# Per run it reads the proxy's utime+stime from /proc/PID/stat (every thread of the
# process) for CPU µs per request, the CPU of the backends (/proc) and of wrk (its
# rusage), both CPUs' busy time from /proc/stat, and the connections the backends
# accepted (nginx stub_status), so the table can say which side ran out of CPU: a row
# where the load side was saturated while the proxy was not is marked LOAD-BOUND and
# its ratio means little. The memory rows run first, on proxies that have served only
# the start-up checks. A full run takes about 12 minutes.
#
# Environment:
#   REPS (3), DURATION (seconds per run, 10), WARMUP (seconds before each run, 2),
#   WRK_THREADS (1), MEM_CONNS (10000), L4_SESSIONS (8000), BULK_MB (1024),
#   PROXY_CPU (1), LOAD_CPU (0), SAT_PCT (90: "saturated" threshold, percent of a CPU),
#   PROXIES ("haproxy nginx halo"), SKIP_BUILD=1 (use the existing release binary),
#   HALO_BIN (default $CARGO_TARGET_DIR/release/halo-dataplane),
#   HALO_EXTRA_ENV ("VAR=value ..." for Halo), HALO_HTTP_YAML / HALO_TCP_YAML (extra
#   keys for Halo's HTTP / TCP listener, one "key: value" per line),
#   HALO_B_BIN, HALO_B_ENV, HALO_B_HTTP_YAML, HALO_B_TCP_YAML, HALO_B_LABEL: any of
#   them adds a second Halo ("Halo-B": another binary, environment or listener
#   settings, e.g. a splice mode) measured on every row beside the first,
#   PERF=1 (after the reps, one extra run per row under `perf record -g` for each Halo;
#   reports in the results directory).
#
# Output: the markdown table on stdout, also written with a per-run table to a results
# directory under $TMPDIR (its path is printed last). Nothing is written to the
# repository. Needs root for apt-get (or the tools already installed) and 2+ CPUs.
set -euo pipefail
cd "$(dirname "$0")/../.."   # repository root
ROOT=$PWD
TOOL=$ROOT/tests/bench/proxy_tool.py

# --- settings -------------------------------------------------------------------------
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  defaults=(1 3 1 1000 1000)
else
  defaults=(3 10 2 10000 8000)
fi
REPS=${REPS:-${defaults[0]}}
DURATION=${DURATION:-${defaults[1]}}; DURATION=${DURATION%s}
WARMUP=${WARMUP:-${defaults[2]}}; WARMUP=${WARMUP%s}
MEM_CONNS=${MEM_CONNS:-${defaults[3]}}
L4_SESSIONS=${L4_SESSIONS:-${defaults[4]}}
BULK_MB=${BULK_MB:-1024}
WRK_THREADS=${WRK_THREADS:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
SAT_PCT=${SAT_PCT:-90}
ROWS=${ROWS:-"mem l7-c64 l7-c256 l7-close l4-c64 bulk"}
PROXIES=${PROXIES:-"haproxy nginx halo"}
HALO_EXTRA_ENV=${HALO_EXTRA_ENV:-}
HALO_HTTP_YAML=${HALO_HTTP_YAML:-}
HALO_TCP_YAML=${HALO_TCP_YAML:-}
HALO_BIN=${HALO_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/halo-dataplane}
HALO_B_BIN=${HALO_B_BIN:-}
HALO_B_ENV=${HALO_B_ENV:-}
HALO_B_HTTP_YAML=${HALO_B_HTTP_YAML:-}
HALO_B_TCP_YAML=${HALO_B_TCP_YAML:-}
HALO_B_LABEL=${HALO_B_LABEL:-Halo-B}
if [ -n "$HALO_B_BIN$HALO_B_ENV$HALO_B_HTTP_YAML$HALO_B_TCP_YAML" ]; then
  PROXIES="$PROXIES halo-b"
  HALO_B_BIN=${HALO_B_BIN:-$HALO_BIN}
fi
PERF=${PERF:-0}

BODY_BYTES=100
BACKEND_PORTS=(19001 19002)
STATUS_PORTS=(19101 19102)    # the backends' stub_status, for connections accepted
declare -A HTTP_PORT=([halo]=18080 [haproxy]=18180 [nginx]=18280 [halo-b]=18380)
declare -A TCP_PORT=([halo]=18081 [haproxy]=18181 [nginx]=18281 [halo-b]=18381)
declare -A ADMIN_PORT=([halo]=18090 [halo-b]=18390)
START_TIMEOUT=15   # seconds a process gets to answer after it starts

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { echo "== $*" >&2; }
warn() { echo "WARNING: $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

has_row() { [[ " $ROWS " == *" $1 "* ]]; }

# --- 1. tools ---------------------------------------------------------------------------
install_tools() {
  local need=()
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v nginx >/dev/null || need+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
  command -v wrk >/dev/null || need+=(wrk)
  command -v curl >/dev/null || need+=(curl)
  command -v python3 >/dev/null || need+=(python3)
  command -v taskset >/dev/null || need+=(util-linux)
  if [ "$PERF" = 1 ]; then command -v perf >/dev/null || need+=(linux-perf); fi
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

# The packages start their own haproxy and nginx services; those are not part of the
# benchmark (and would take CPU), so stop and disable them.
disable_services() {
  local svc
  for svc in haproxy nginx; do
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
      $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
  done
}

build_halo() {
  [[ " $PROXIES " == *" halo"* ]] || return 0
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building the release data plane"
    cargo build --release -p halo-dataplane
  fi
  [ -x "$HALO_BIN" ] || die "$HALO_BIN missing (run without SKIP_BUILD=1)"
  if [ -n "$HALO_B_BIN" ]; then [ -x "$HALO_B_BIN" ] || die "$HALO_B_BIN missing"; fi
}

# Every idle connection costs an fd in the client and the proxy, every L4 session two in
# the proxy: raise the limit as far as allowed, and shrink the memory rows to fit.
raise_nofile() {
  ulimit -n 262144 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  NOFILE=$(ulimit -n)
  local spare=$((NOFILE - 1000))
  if [ "$MEM_CONNS" -gt "$spare" ]; then
    warn "open-file limit $NOFILE: MEM_CONNS $MEM_CONNS -> $spare"
    MEM_CONNS=$spare
  fi
  if [ $((2 * L4_SESSIONS)) -gt "$spare" ]; then
    warn "open-file limit $NOFILE: L4_SESSIONS $L4_SESSIONS -> $((spare / 2))"
    L4_SESSIONS=$((spare / 2))
  fi
  # nginx preallocates (and touches) its connection table: size it to what the rows
  # need rather than to the fd limit.
  NGINX_CONNS=$((MEM_CONNS > 2 * L4_SESSIONS ? MEM_CONNS : 2 * L4_SESSIONS))
  NGINX_CONNS=$((NGINX_CONNS + 2048))
}

# --- process bookkeeping: only the PIDs started here are ever signalled ------------------
PIDS=()
declare -A PID_OF

alive() { # true while PID runs (a zombie counts as gone)
  [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

stop_pid() { # SIGTERM, up to 5 s, then SIGKILL; reaps the child
  local pid=$1 i kept=() p
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  PIDS=("${kept[@]+"${kept[@]}"}")
}

spawn() { # NAME CPU LOG CMD...: CMD in the background pinned to CPU, tracked by PID
  local name=$1 cpu=$2 logfile=$3
  shift 3
  taskset -c "$cpu" "$@" >"$logfile" 2>&1 &
  PID_OF[$name]=$!
  PIDS+=("$!")
}

cleanup() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
  # Keep the results, logs and configs; drop what is large.
  if [ -n "${WORK:-}" ]; then
    rm -rf "$WORK/www" "$WORK"/perf-*.data
    echo "results directory: $WORK" >&9
  fi
}

wait_http() { # URL PID: until URL answers 200 (bounded by START_TIMEOUT); PID must stay up
  local url=$1 pid=$2 deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    alive "$pid" || { echo "process $pid exited" >&2; return 1; }
    sleep 0.1
  done
  echo "$url did not answer within ${START_TIMEOUT}s" >&2
  return 1
}

port_in_use() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

check_ports_free() {
  local p port
  for port in "${BACKEND_PORTS[@]}" "${STATUS_PORTS[@]}"; do ! port_in_use "$port" || die "127.0.0.1:$port is already in use"; done
  for p in $PROXIES; do
    for port in "${HTTP_PORT[$p]}" "${TCP_PORT[$p]}" ${ADMIN_PORT[$p]:-}; do
      ! port_in_use "$port" || die "127.0.0.1:$port is already in use"
    done
  done
}

# --- 2. backends: nginx, one worker each, on the load CPU ---------------------------------
# nginx runs with `master_process off`: one process does all the work, so its PID is
# the one to read CPU time from and to stop. Temp paths point into the temp dir so
# nothing outside it is touched.
nginx_common() { # DIR: the top of an nginx config rooted in DIR
  cat <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $NGINX_CONNS; }
EOF
}

nginx_http_common() { # DIR
  cat <<EOF
  access_log off;
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
  keepalive_timeout 600s;
  keepalive_requests 1000000000;
EOF
}

body_of() { # NAME: a fixed BODY_BYTES body that starts with the backend's name
  local text="$1 " 
  while [ ${#text} -lt $BODY_BYTES ]; do text+=x; done
  printf '%s' "$text"
}

start_backends() {
  local i dir
  mkdir -p "$WORK/www"
  # The bulk body: a sparse file, so nothing is read from disk (served with sendfile).
  truncate -s "${BULK_MB}M" "$WORK/www/bulk"
  BACKEND_PIDS=()
  for i in 0 1; do
    dir=$WORK/b$((i + 1))
    mkdir -p "$dir/tmp"
    {
      nginx_common "$dir"
      echo "http {"
      nginx_http_common "$dir"
      cat <<EOF
  sendfile on;
  server {
    listen 127.0.0.1:${BACKEND_PORTS[i]} backlog=4096;
    location = /bulk { root $WORK/www; default_type application/octet-stream; }
    location / { default_type text/plain; return 200 "$(body_of "b$((i + 1))")"; }
  }
  server {
    listen 127.0.0.1:${STATUS_PORTS[i]};
    location / { stub_status; }
  }
}
EOF
    } >"$dir/nginx.conf"
    spawn "b$((i + 1))" "$LOAD_CPU" "$dir/stderr.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
    BACKEND_PIDS+=("${PID_OF[b$((i + 1))]}")
    wait_http "http://127.0.0.1:${BACKEND_PORTS[i]}/" "${PID_OF[b$((i + 1))]}" \
      || { cat "$dir/stderr.log" "$dir/error.log" >&2 2>/dev/null; die "backend b$((i + 1)) did not start"; }
  done
}

# --- 3. proxies ------------------------------------------------------------------------------
# Equivalent settings everywhere: round robin over the two backends, no health checks,
# no logs, keep-alive to clients and pooled keep-alive connections to the backends,
# X-Forwarded-For added, connection limits and timeouts well above what a row needs.
start_haproxy() {
  local maxconn=$((MEM_CONNS > L4_SESSIONS ? MEM_CONNS : L4_SESSIONS))
  maxconn=$((maxconn + 1000))
  cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $maxconn
    # Where the fd hard limit is below what maxconn implies, warn instead of failing.
    no strict-limits

defaults
    maxconn $maxconn
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout http-request 10s
    timeout http-keep-alive 600s

frontend http
    mode http
    bind 127.0.0.1:${HTTP_PORT[haproxy]}
    option http-keep-alive
    option forwardfor
    default_backend http_servers

backend http_servers
    mode http
    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:${BACKEND_PORTS[0]}
    server b2 127.0.0.1:${BACKEND_PORTS[1]}

frontend tcp
    mode tcp
    bind 127.0.0.1:${TCP_PORT[haproxy]}
    default_backend tcp_servers

backend tcp_servers
    mode tcp
    balance roundrobin
    server b1 127.0.0.1:${BACKEND_PORTS[0]}
    server b2 127.0.0.1:${BACKEND_PORTS[1]}
EOF
  haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejected $WORK/haproxy.cfg"
  # -db: foreground, no master process: the PID is the proxy itself.
  spawn haproxy "$PROXY_CPU" "$WORK/haproxy.log" haproxy -db -f "$WORK/haproxy.cfg"
}

start_nginx_proxy() {
  local dir=$WORK/nginx-proxy
  mkdir -p "$dir/tmp"
  {
    echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
    nginx_common "$dir"
    echo "http {"
    nginx_http_common "$dir"
    cat <<EOF
  upstream http_servers {
    server 127.0.0.1:${BACKEND_PORTS[0]};
    server 127.0.0.1:${BACKEND_PORTS[1]};
    keepalive 1024;             # idle pooled connections kept per worker
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
  }
  server {
    listen 127.0.0.1:${HTTP_PORT[nginx]} backlog=4096;
    location / {
      proxy_pass http://http_servers;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
stream {
  upstream tcp_servers {
    server 127.0.0.1:${BACKEND_PORTS[0]};
    server 127.0.0.1:${BACKEND_PORTS[1]};
  }
  server {
    listen 127.0.0.1:${TCP_PORT[nginx]} backlog=4096;
    proxy_pass tcp_servers;
    proxy_timeout 600s;
  }
}
EOF
  } >"$dir/nginx.conf"
  spawn nginx "$PROXY_CPU" "$dir/stderr.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
}

indent_yaml() { # TEXT: extra listener keys, indented into the listener
  [ -n "$1" ] && printf '%s\n' "$1" | sed 's/^/      /'
  return 0
}

start_halo() { # NAME BIN "ENV..." HTTP_YAML TCP_YAML
  local name=$1 bin=$2 env_words=$3 http_yaml=$4 tcp_yaml=$5 extra=()
  local cfg=$WORK/$name.yaml
  read -r -a extra <<<"$env_words"
  cat >"$cfg" <<EOF
apiVersion: halo.dev/v1alpha1
kind: LoadBalancer
metadata: {name: bench, namespace: default}
spec:
  addresses: [127.0.0.1]
  listeners:
    - name: http
      port: ${HTTP_PORT[$name]}
      protocol: HTTP
      algorithm: RoundRobin
      maxConnections: 1000000
      timeouts: {connect: 5s, client: 600s, server: 600s, httpRequest: 10s, idle: 600s}
      backends:
        - {name: b1, address: 127.0.0.1, port: ${BACKEND_PORTS[0]}}
        - {name: b2, address: 127.0.0.1, port: ${BACKEND_PORTS[1]}}
$(indent_yaml "$http_yaml")
    - name: tcp
      port: ${TCP_PORT[$name]}
      protocol: TCP
      algorithm: RoundRobin
      maxConnections: 1000000
      timeouts: {connect: 5s, client: 600s, server: 600s}
      backends:
        - {name: b1, address: 127.0.0.1, port: ${BACKEND_PORTS[0]}}
        - {name: b2, address: 127.0.0.1, port: ${BACKEND_PORTS[1]}}
$(indent_yaml "$tcp_yaml")
EOF
  "$bin" check --config "$cfg" --node bench >/dev/null || die "$name rejected $cfg"
  spawn "$name" "$PROXY_CPU" "$WORK/$name.log" env RUST_LOG=warn "${extra[@]+"${extra[@]}"}" \
    "$bin" run --config "$cfg" --admin "127.0.0.1:${ADMIN_PORT[$name]}" --node bench
  wait_http "http://127.0.0.1:${ADMIN_PORT[$name]}/healthz" "${PID_OF[$name]}" \
    || { tail -n 20 "$WORK/$name.log" >&2; die "$name not healthy"; }
}

start_proxies() {
  local p
  for p in $PROXIES; do
    case $p in
      haproxy) start_haproxy ;;
      nginx) start_nginx_proxy ;;
      halo) start_halo halo "$HALO_BIN" "$HALO_EXTRA_ENV" "$HALO_HTTP_YAML" "$HALO_TCP_YAML" ;;
      halo-b) start_halo halo-b "$HALO_B_BIN" "$HALO_B_ENV" "$HALO_B_HTTP_YAML" "$HALO_B_TCP_YAML" ;;
      *) die "unknown proxy $p (haproxy, nginx, halo)" ;;
    esac
  done
  for p in $PROXIES; do check_proxy "$p"; done
}

# Both listeners answer, from both backends in turn (four fresh connections each).
check_proxy() { # NAME
  local p=$1 kind port answers i
  for kind in http tcp; do
    [ "$kind" = http ] && port=${HTTP_PORT[$p]} || port=${TCP_PORT[$p]}
    wait_http "http://127.0.0.1:$port/" "${PID_OF[$p]}" || die "$p $kind listener does not answer (logs: $WORK)"
    answers=()
    for i in 1 2 3 4; do
      answers+=("$(curl -fsS --max-time 2 "http://127.0.0.1:$port/" | cut -d' ' -f1 || echo ERROR)")
    done
    log "$p $kind answers: ${answers[*]}"
    [[ " ${answers[*]} " == *" b1 "* && " ${answers[*]} " == *" b2 "* ]] \
      || warn "$p $kind does not spread requests over b1 and b2: ${answers[*]}"
  done
}

# --- 4. measurement ------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

proc_ticks() { # PID...: utime+stime summed over the processes (each over all its threads)
  local pid stat sum=0 f
  for pid in "$@"; do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    read -r -a f <<<"${stat##*) }"   # fields from 3 on; the name may contain spaces
    sum=$((sum + f[11] + f[12]))
  done
  echo "$sum"
}

cpu_ticks() { # CPU: "busy total" ticks of one CPU from /proc/stat (idle and iowait are not busy)
  awk -v c="cpu$1" '$1 == c { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6 }' /proc/stat
}

# Connections the backends have accepted so far (nginx stub_status). Each read is itself
# one accepted connection per backend, counted in the figure it returns.
backend_accepts() {
  local port sum=0 n
  for port in "${STATUS_PORTS[@]}"; do
    n=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/" | awk 'NR == 3 { print $1 }') || n=0
    sum=$((sum + ${n:-0}))
  done
  echo "$sum"
}

# measure PROXY OUT CMD...: runs the load command CMD (stdout to OUT) and sets M to
# "wall_s proxy_cpu_s load_cpu_s load_busy proxy_busy backend_conns": the proxy's CPU
# seconds, the CPU seconds of the load command plus the backends, how busy each CPU
# was, and how many connections the proxy opened to the backends meanwhile.
measure() {
  local pid=$1 out=$2
  shift 2
  local p0 p1 b0 b1 t0 t1 l0 lt0 l1 lt1 x0 xt0 x1 xt1 a0 a1 rc=0 TIMEFORMAT='%3U %3S'
  a0=$(backend_accepts)
  p0=$(proc_ticks "$pid"); b0=$(proc_ticks "${BACKEND_PIDS[@]}")
  read -r l0 lt0 < <(cpu_ticks "$LOAD_CPU"); read -r x0 xt0 < <(cpu_ticks "$PROXY_CPU")
  t0=$(date +%s%N)
  # The `time` keyword reports user and system CPU of the command and its children.
  { time "$@" >"$out" 2>>"$WORK/load.err"; } 2>"$WORK/time.txt" || rc=$?
  t1=$(date +%s%N)
  p1=$(proc_ticks "$pid"); b1=$(proc_ticks "${BACKEND_PIDS[@]}")
  read -r l1 lt1 < <(cpu_ticks "$LOAD_CPU"); read -r x1 xt1 < <(cpu_ticks "$PROXY_CPU")
  a1=$(backend_accepts)
  alive "$pid" || die "the proxy (PID $pid) exited during a run; logs in $WORK"
  [ "$rc" = 0 ] || { tail -n 5 "$WORK/load.err" >&2; die "load command failed ($rc): $*"; }
  M=$(awk -v t0="$t0" -v t1="$t1" -v pd=$((p1 - p0)) -v bd=$((b1 - b0)) -v hz="$CLK_TCK" \
    -v ld=$((l1 - l0)) -v lt=$((lt1 - lt0)) -v xd=$((x1 - x0)) -v xt=$((xt1 - xt0)) \
    -v tm="$(cat "$WORK/time.txt")" -v ad=$((a1 - a0 - ${#STATUS_PORTS[@]})) 'BEGIN {
      split(tm, u, " ")
      printf "%.4f %.4f %.4f %.4f %.4f %d", (t1 - t0) / 1e9, pd / hz, bd / hz + u[1] + u[2],
        lt ? ld / lt : 0, xt ? xd / xt : 0, ad }')
}

RUNS_TSV=""   # set in main
record() { # ROW PROXY REP MEASURE(6 fields) requests rps p50 p99 errors bytes seconds
  local IFS=$'\t'
  echo "$*" | tr ' ' '\t' >>"$RUNS_TSV"
}

wrk_target() { # ROW PROXY: "PORT CONNS EXTRA" for a wrk row
  case $1 in
    l7-c64) echo "${HTTP_PORT[$2]} 64" ;;
    l7-c256) echo "${HTTP_PORT[$2]} 256" ;;
    l7-close) echo "${HTTP_PORT[$2]} 64 close" ;;
    l4-c64) echo "${TCP_PORT[$2]} 64" ;;
  esac
}

run_wrk() { # ROW PROXY REP
  local row=$1 p=$2 rep=$3 port conns extra args=() out req rps p50 p99 errs
  read -r port conns extra < <(wrk_target "$row" "$p")
  [ "${extra:-}" = close ] && args=(-H 'Connection: close')
  local url=http://127.0.0.1:$port/
  # Warm-up, not measured: backend pools grow to the connection count, caches warm.
  timeout -k 5 $((WARMUP + 30)) taskset -c "$LOAD_CPU" \
    wrk -t"$WRK_THREADS" -c"$conns" -d"${WARMUP}s" "${args[@]+"${args[@]}"}" "$url" >/dev/null 2>&1 \
    || warn "warm-up against $p failed"
  out=$WORK/wrk/$row-$p-$rep.txt
  measure "${PID_OF[$p]}" "$out" timeout -k 5 $((DURATION + 30)) taskset -c "$LOAD_CPU" \
    wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --timeout 5s --latency "${args[@]+"${args[@]}"}" "$url"
  read -r req rps p50 p99 errs < <(python3 "$TOOL" wrk "$out") || die "cannot parse $out"
  record "$row" "$p" "$rep" "$M" "$req" "$rps" "$p50" "$p99" "$errs" 0 0
  awk -v r="$row" -v p="$p" -v rep="$rep" -v rps="$rps" -v p99="$p99" -v req="$req" -v m="$M" 'BEGIN {
    split(m, x, " ")
    printf "   %-8s %-7s rep %d: %8.0f req/s  p99 %6.2f ms  %5.1f us/req  proxy CPU %3.0f%%  CPU%s busy %3.0f%%\n",
      r, p, rep, rps, p99, x[2] * 1e6 / (req ? req : 1), x[2] / x[1] * 100, "'"$LOAD_CPU"'", x[4] * 100 }' >&2
  [ "$errs" = 0 ] || warn "$row $p rep $rep: $errs errors (see $out)"
}

run_bulk() { # PROXY REP
  local p=$1 rep=$2 out bytes secs
  out=$WORK/bulk/$p-$rep.txt
  measure "${PID_OF[$p]}" "$out" timeout -k 5 180 taskset -c "$LOAD_CPU" \
    python3 "$TOOL" bulk --port "${TCP_PORT[$p]}" --limit 170
  read -r bytes secs <"$out"
  record bulk "$p" "$rep" "$M" 0 0 0 0 0 "$bytes" "$secs"
  awk -v p="$p" -v rep="$rep" -v b="$bytes" -v s="$secs" -v m="$M" 'BEGIN {
    split(m, x, " ")
    printf "   bulk     %-7s rep %d: %.2f GB/s  proxy CPU %3.0f%%  CPU%s busy %3.0f%%\n",
      p, rep, b / s / 1e9, x[2] / x[1] * 100, "'"$LOAD_CPU"'", x[4] * 100 }' >&2
}

proxies_in_order() { # REP: the proxies, reversed on every other rep
  local rep=$1 list i
  read -r -a list <<<"$PROXIES"
  if ((rep % 2 == 1)); then
    echo "${list[@]}"
  else
    for ((i = ${#list[@]} - 1; i >= 0; i--)); do printf '%s ' "${list[i]}"; done
    echo
  fi
}

throughput_rows() {
  local rep row p
  mkdir -p "$WORK/wrk" "$WORK/bulk"
  for ((rep = 1; rep <= REPS; rep++)); do
    for row in l7-c64 l7-c256 l7-close l4-c64; do
      has_row "$row" || continue
      log "rep $rep/$REPS: $row"
      for p in $(proxies_in_order "$rep"); do run_wrk "$row" "$p" "$rep"; done
    done
  done
  if has_row bulk; then
    # Fill the page cache with the bulk body first (through one backend, directly).
    timeout 120 curl -fsS -o /dev/null "http://127.0.0.1:${BACKEND_PORTS[0]}/bulk" || die "bulk body not served"
    for ((rep = 1; rep <= REPS; rep++)); do
      log "rep $rep/$REPS: bulk ${BULK_MB} MiB"
      for p in $(proxies_in_order "$rep"); do run_bulk "$p" "$rep"; done
    done
  fi
}

# --- 5. memory -----------------------------------------------------------------------------
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fd_count() { local entries=("/proc/$1/fd/"*); echo "${#entries[@]}"; }

# hold PORT COUNT: a client on the load CPU opens COUNT connections, does one request on
# each and keeps them idle; sets HOLD_OK to the number held.
hold() {
  local port=$1 count=$2 ready=$WORK/hold.ready deadline
  rm -f "$ready"
  spawn hold "$LOAD_CPU" "$WORK/hold.log" python3 "$TOOL" hold --port "$port" --count "$count" \
    --ready "$ready" --limit 900
  deadline=$((SECONDS + 60 + count / 50))
  while [ ! -s "$ready" ]; do
    alive "${PID_OF[hold]}" || { cat "$WORK/hold.log" >&2; die "the connection holder exited"; }
    ((SECONDS < deadline)) || die "connections to :$port not established in time"
    sleep 0.2
  done
  read -r _ HOLD_OK _ <"$ready"
  [ "$HOLD_OK" = "$count" ] || warn "only $HOLD_OK of $count connections to :$port held ($(tail -n1 "$WORK/hold.log"))"
}

# release PROXY FDS: closes the held connections and waits (bounded) until the proxy is
# back to FDS open files, or its count has not moved for 2 s (pooled backend connections
# may stay open), so the RSS read next is after the proxy freed the connections.
release() {
  local pid=${PID_OF[$1]} fds=$2 deadline=$((SECONDS + 30)) now last=-1 still=0
  stop_pid "${PID_OF[hold]}"
  while now=$(fd_count "$pid"); [ "$now" -gt $((fds + 8)) ] && [ "$still" -lt 10 ]; do
    ((SECONDS < deadline)) || { warn "$1 still has $now fds open (was $fds)"; break; }
    if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; fi
    last=$now
    sleep 0.2
  done
  sleep 1
}

memory_rows() {
  local p pid fds start before with after
  local mem=$WORK/mem.tsv
  printf 'row\tproxy\tcount\tok\tbefore_kb\twith_kb\tafter_kb\n' >"$mem"
  for p in $PROXIES; do
    pid=${PID_OF[$p]}
    fds=$(fd_count "$pid")
    start=$(rss_kb "$pid")
    log "memory: $p, $MEM_CONNS idle keep-alive client connections (RSS $start KB)"
    hold "${HTTP_PORT[$p]}" "$MEM_CONNS"
    sleep 1
    with=$(rss_kb "$pid")
    release "$p" "$fds"
    after=$(rss_kb "$pid")
    printf 'mem-l7\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$MEM_CONNS" "$HOLD_OK" "$start" "$with" "$after" >>"$mem"
    log "   $p: $start -> $with -> $after KB"

    before=$after
    log "memory: $p, $L4_SESSIONS established L4 sessions"
    hold "${TCP_PORT[$p]}" "$L4_SESSIONS"
    sleep 1
    with=$(rss_kb "$pid")
    release "$p" "$fds"
    after=$(rss_kb "$pid")
    printf 'mem-l4\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$L4_SESSIONS" "$HOLD_OK" "$before" "$with" "$after" >>"$mem"
    printf 'mem-all\t%s\t0\t0\t%s\t0\t%s\n' "$p" "$start" "$after" >>"$mem"
    log "   $p: $before -> $with -> $after KB"
  done
}

# --- 6. optional profiles --------------------------------------------------------------------
profile_rows() {
  local row p port conns extra args perf_pid
  for p in $PROXIES; do
    [[ $p == halo* ]] || continue
    for row in l7-c64 l7-c256 l7-close l4-c64; do
      has_row "$row" || continue
      read -r port conns extra < <(wrk_target "$row" "$p")
      args=()
      [ "${extra:-}" = close ] && args=(-H 'Connection: close')
      log "perf record -g: $p $row"
      timeout -k 5 $((DURATION + 30)) perf record -q -g -p "${PID_OF[$p]}" -o "$WORK/perf-$row-$p.data" \
        -- sleep "$DURATION" >/dev/null 2>&1 &
      perf_pid=$!
      PIDS+=("$perf_pid")
      timeout -k 5 $((DURATION + 30)) taskset -c "$LOAD_CPU" \
        wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" "${args[@]+"${args[@]}"}" "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
      wait "$perf_pid" 2>/dev/null || true
      stop_pid "$perf_pid"
      timeout 120 perf report -i "$WORK/perf-$row-$p.data" --stdio --no-children --percent-limit 1 \
        >"$WORK/perf-$row-$p.txt" 2>/dev/null || warn "perf report failed for $p $row"
    done
  done
}

# --- 7. report ---------------------------------------------------------------------------------
write_meta() {
  local versions labels p
  versions="HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'), $(nginx -v 2>&1 | sed 's|.*/||;s|^|nginx |'), "
  versions+="wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'), Halo $(git -C "$ROOT" log -1 --format=%h -- dataplane 2>/dev/null || echo '?')"
  [ -z "$(git -C "$ROOT" status --porcelain -- dataplane 2>/dev/null)" ] || versions+="+changes"
  [[ " $PROXIES " != *" halo-b "* ]] || versions+="; $HALO_B_LABEL: ${HALO_B_BIN##*/} ${HALO_B_ENV} ${HALO_B_HTTP_YAML//$'\n'/, } ${HALO_B_TCP_YAML//$'\n'/, }"
  versions+="; $(nproc) CPUs, $(uname -r)."
  labels=$(printf '"halo-b": "%s"' "$HALO_B_LABEL")
  python3 - "$WORK/meta.json" <<EOF
import json, sys
json.dump({
  "reps": $REPS, "duration": $DURATION, "warmup": $WARMUP, "wrk_threads": $WRK_THREADS,
  "proxy_cpu": $PROXY_CPU, "load_cpu": $LOAD_CPU, "sat_pct": $SAT_PCT, "body_bytes": $BODY_BYTES,
  "bulk_mb": $BULK_MB, "proxies": "$PROXIES".split(), "labels": {$labels},
  "versions": """$versions""",
}, open(sys.argv[1], "w"))
EOF
}

report() {
  write_meta
  local args=(--runs "$RUNS_TSV" --meta "$WORK/meta.json" --details "$WORK/runs.md")
  [ -s "$WORK/mem.tsv" ] && args+=(--mem "$WORK/mem.tsv")
  python3 "$TOOL" report "${args[@]}" >"$WORK/results.md"
  cat "$WORK/runs.md" >>"$WORK/results.md"
  echo
  python3 "$TOOL" report "${args[@]}"
  echo
  echo "results: $WORK/results.md"
}

main() {
  [ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (the proxy on one, the load on another)"
  [[ " $PROXIES " == *" haproxy "* ]] || warn "no haproxy in PROXIES: no ratios"
  install_tools
  disable_services
  build_halo
  raise_nofile
  check_ports_free

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/proxy-bench.XXXXXX")
  # fd 9: the original stderr, for the exit message even when a signal arrives while
  # stderr is redirected (measure sends it to a file around the load command).
  exec 9>&2
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  RUNS_TSV=$WORK/runs.tsv
  printf 'row\tproxy\trep\twall_s\tproxy_cpu_s\tload_cpu_s\tload_busy\tproxy_busy\tbackend_conns\trequests\trps\tp50\tp99\terrors\tbytes\tseconds\n' >"$RUNS_TSV"
  log "proxies: $PROXIES; rows: $ROWS; $REPS reps of ${DURATION}s; proxy on CPU $PROXY_CPU, load on CPU $LOAD_CPU; open files $NOFILE"

  start_backends
  start_proxies
  # Memory first, on processes that have served only the checks: the figures are what
  # the connections cost, not what earlier load left in the allocator.
  if has_row mem; then memory_rows; fi
  throughput_rows
  if [ "$PERF" = 1 ]; then profile_rows; fi
  report
}

main "$@"
