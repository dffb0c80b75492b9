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
#   https-c64        HTTPS keep-alive, 64 connections (wrk over TLS; wrk offers no ALPN,
#                    so HTTP/1.1), ECDSA P-256 certificate
#   tls-hs-ecdsa     TLS handshakes per second: a new connection, a full handshake and
#   tls-hs-rsa       one `Connection: close` request each (HS_PROCS sequential clients,
#                    proxy_tool.py handshakes), ECDSA P-256 / RSA 2048 certificate.
#                    Resumption is off the same way for every proxy: the client never
#                    offers a session (wrk and h2load would resume), the servers keep
#                    their defaults. TLS 1.3 with each side's default groups and ciphers.
#   h2-c64           HTTP/2 over TLS (ALPN h2, ECDSA certificate), h2load with 64
#                    connections of H2_STREAMS concurrent streams, bounded by -D
#   routes-20        HTTP keep-alive, 64 connections, through a listener with 20 routes
#   routes-1000      (host rN.bench + path prefix /pN each) to ROUTE_GROUPS backend
#                    groups with cookie persistence (insert, indirect, nocache); wrk's
#                    Lua script spreads requests evenly over the routes, a third with
#                    each backend's cookie and a third without. Either adds routes-1
#                    (the same with one route), and the table gives the N-route /
#                    1-route throughput ratio. HAProxy: one use_backend rule per route
#                    (HAPROXY_ROUTES=acl) or one map_beg lookup (HAPROXY_ROUTES=map).
#                    nginx has no cookie-insert persistence: it skips these rows.
# The certificates are made with openssl in the results directory. A proxy that
# refuses a row's listener or fails its check (TLS, h2, routing, cookie) skips that row;
# the report lists what did not run and why.
#
# Per run it reads the proxy's utime+stime from /proc/PID/stat (every thread of the
# process) for CPU µs per request, the CPU of the backends (/proc) and of wrk (its
# rusage), both CPUs' busy time from /proc/stat, and the connections the backends
# accepted (nginx stub_status), so the table can say which side ran out of CPU: a row
# where the load side was saturated while the proxy was not is marked LOAD-BOUND and
# its ratio means little. The memory rows run first, on proxies that have served only
# the start-up checks. A full run of the first six rows takes about 12 minutes, each
# other row about 1 minute per rep.
#
# Environment:
#   REPS (3), DURATION (seconds per run, 10), WARMUP (seconds before each run, 2),
#   WRK_THREADS (1), MEM_CONNS (10000), L4_SESSIONS (8000), BULK_MB (1024),
#   PROXY_CPU (1), LOAD_CPU (0), SAT_PCT (90: "saturated" threshold, percent of a CPU),
#   HS_PROCS (32 handshake clients), H2_STREAMS (4), ROUTE_GROUPS (1: every route to
#   one group, so the routes rows differ in route count only), HAPROXY_ROUTES (acl),
#   PROXIES ("haproxy nginx halo"), SKIP_BUILD=1 (use the existing release binary),
#   HALO_BIN (default $CARGO_TARGET_DIR/release/halo-dataplane),
#   HALO_EXTRA_ENV ("VAR=value ..." for Halo), HALO_HTTP_YAML / HALO_TCP_YAML (extra
#   keys for Halo's HTTP / TCP listener, one "key: value" per line),
#   HALO_B_BIN, HALO_B_ENV, HALO_B_HTTP_YAML, HALO_B_TCP_YAML, HALO_B_LABEL: any of
#   them adds a second Halo ("Halo-B": another binary, environment or listener
#   settings, e.g. a splice mode) measured on every row beside the first,
#   PERF=1 (after the reps, one extra run per row under `perf record` for each Halo, call
#   graphs from frame pointers or PERF_CALLGRAPH=dwarf for a binary built without them;
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
ROWS=${ROWS:-"mem l7-c64 l7-c256 l7-close l4-c64 bulk https-c64 tls-hs-ecdsa tls-hs-rsa h2-c64 routes-20 routes-1000"}
# The route rows are read against one route: add it.
if [[ " $ROWS " == *" routes-20 "* || " $ROWS " == *" routes-1000 "* ]] && [[ " $ROWS " != *" routes-1 "* ]]; then
  ROWS="$ROWS routes-1"
fi
HS_PROCS=${HS_PROCS:-32}
H2_STREAMS=${H2_STREAMS:-4}
ROUTE_GROUPS=${ROUTE_GROUPS:-1}
HAPROXY_ROUTES=${HAPROXY_ROUTES:-acl}
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
# The other listeners: this offset from the proxy's HTTP port.
declare -A LISTENER_OFFSET=([https]=2 [https-rsa]=3 [routes-1]=4 [routes-20]=5 [routes-1000]=6)
ROUTES_COOKIE=srv   # the persistence cookie's name, the same everywhere
START_TIMEOUT=15   # seconds a process gets to answer after it starts

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { echo "== $*" >&2; }
warn() { echo "WARNING: $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

has_row() { [[ " $ROWS " == *" $1 "* ]]; }

listener_of() { # ROW: the listener a row runs through beyond http/tcp (empty: those)
  case $1 in
    https-c64 | h2-c64 | tls-hs-ecdsa) echo https ;;
    tls-hs-rsa) echo https-rsa ;;
    routes-*) echo "$1" ;;
  esac
}

extra_listeners() { # the extra listeners the selected rows need, once each
  local row l seen=" "
  for row in $ROWS; do
    l=$(listener_of "$row")
    [ -n "$l" ] && [[ "$seen" != *" $l "* ]] && seen+="$l "
  done
  echo $seen
}

port_of() { # LISTENER PROXY
  echo $((HTTP_PORT[$2] + LISTENER_OFFSET[$1]))
}

route_count() { echo "${1#routes-}"; } # LISTENER routes-N: N

# Rows a proxy cannot run (it refused the listener or failed its check), with why.
declare -A SKIP
skip_rows() { # LISTENER PROXY REASON: every selected row on LISTENER is skipped for PROXY
  local l=$1 p=$2 reason=$3 row
  for row in $ROWS; do
    [ "$(listener_of "$row")" = "$l" ] || continue
    [ -z "${SKIP[$row/$p]:-}" ] || continue
    SKIP[$row/$p]=$reason
    printf '%s\t%s\t%s\n' "$row" "$p" "$reason" >>"$WORK/skipped.tsv"
    warn "$p skips $row: $reason"
  done
}
skip_row() { # ROW PROXY REASON
  [ -z "${SKIP[$1/$2]:-}" ] || return 0
  SKIP[$1/$2]=$3
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$WORK/skipped.tsv"
  warn "$2 skips $1: $3"
}
runs_row() { [ -z "${SKIP[$1/$2]:-}" ]; } # ROW PROXY

# --- 1. tools ---------------------------------------------------------------------------
install_tools() {
  local need=()
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v nginx >/dev/null || need+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
  command -v wrk >/dev/null || need+=(wrk)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  command -v openssl >/dev/null || need+=(openssl)
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

wait_http() { # URL PID [CURL_ARG...]: until URL answers 200 (bounded by START_TIMEOUT); PID must stay up
  local url=$1 pid=$2 deadline=$((SECONDS + START_TIMEOUT))
  shift 2
  while ((SECONDS < deadline)); do
    curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null && return 0
    alive "$pid" || { echo "process $pid exited" >&2; return 1; }
    sleep 0.1
  done
  echo "$url did not answer within ${START_TIMEOUT}s" >&2
  return 1
}

port_in_use() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

check_ports_free() {
  local p port l
  for port in "${BACKEND_PORTS[@]}" "${STATUS_PORTS[@]}"; do ! port_in_use "$port" || die "127.0.0.1:$port is already in use"; done
  for p in $PROXIES; do
    for port in "${HTTP_PORT[$p]}" "${TCP_PORT[$p]}" ${ADMIN_PORT[$p]:-}; do
      ! port_in_use "$port" || die "127.0.0.1:$port is already in use"
    done
    for l in $(extra_listeners); do
      port=$(port_of "$l" "$p")
      ! port_in_use "$port" || die "127.0.0.1:$port is already in use"
    done
  done
}

# Self-signed server certificates (name `bench`): ECDSA P-256 and RSA 2048, as PEM
# certificate and key files, and the two joined for HAProxy's `crt`.
make_certs() {
  local dir=$WORK/tls kind
  mkdir -p "$dir"
  for kind in ecdsa rsa; do
    local alg=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
    [ "$kind" = rsa ] && alg=(-newkey rsa:2048)
    openssl req -x509 "${alg[@]}" -nodes -days 7 -subj /CN=bench -addext subjectAltName=DNS:bench \
      -keyout "$dir/$kind.key" -out "$dir/$kind.crt" 2>/dev/null || die "openssl could not make the $kind certificate"
    cat "$dir/$kind.crt" "$dir/$kind.key" >"$dir/$kind.pem"
  done
}

cert_of() { # LISTENER: ecdsa or rsa
  [ "$1" = https-rsa ] && echo rsa || echo ecdsa
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
groups_of() { # LISTENER routes-N: the backend groups its routes spread over
  local n
  n=$(route_count "$1")
  echo $((ROUTE_GROUPS < n ? ROUTE_GROUPS : n))
}

# HAProxy's side of the extra listeners. TLS: the same crt for h2 and http/1.1 by ALPN,
# session cache and tickets at their defaults. Routes: one rule per route, first match
# wins, as in Halo's route list (or one prefix-map lookup with HAPROXY_ROUTES=map); the
# backends shared by every route listener, like Halo's backendGroups.
haproxy_extra() {
  local l n i g groups=0
  for l in $(extra_listeners); do
    case $l in
      https | https-rsa)
        cat <<EOF

frontend $l
    mode http
    bind 127.0.0.1:$(port_of "$l" haproxy) ssl crt $WORK/tls/$(cert_of "$l").pem alpn h2,http/1.1
    option http-keep-alive
    option forwardfor
    default_backend http_servers
EOF
        ;;
      routes-*)
        runs_row "$l" haproxy || continue
        n=$(route_count "$l")
        g=$(groups_of "$l")
        ((g > groups)) && groups=$g
        printf '\nfrontend %s\n    mode http\n    bind 127.0.0.1:%s\n    option http-keep-alive\n    option forwardfor\n' \
          "$l" "$(port_of "$l" haproxy)"
        if [ "$HAPROXY_ROUTES" = map ]; then
          for ((i = 0; i < n; i++)); do echo "r$i.bench/p$i/ g$((i % g))"; done >"$WORK/haproxy-$l.map"
          echo "    use_backend %[base,lower,map_beg($WORK/haproxy-$l.map)]"
        else
          for ((i = 0; i < n; i++)); do
            echo "    use_backend g$((i % g)) if { req.hdr(host) -i r$i.bench } { path_beg /p$i/ }"
          done
        fi
        ;;
    esac
  done
  for ((g = 0; g < groups; g++)); do
    cat <<EOF

backend g$g
    mode http
    balance roundrobin
    http-reuse always
    cookie $ROUTES_COOKIE insert indirect nocache
    server b1 127.0.0.1:${BACKEND_PORTS[0]} cookie b1
    server b2 127.0.0.1:${BACKEND_PORTS[1]} cookie b2
EOF
  done
}

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
$(haproxy_extra)
EOF
  haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejected $WORK/haproxy.cfg"
  # -db: foreground, no master process: the PID is the proxy itself.
  spawn haproxy "$PROXY_CPU" "$WORK/haproxy.log" haproxy -db -f "$WORK/haproxy.cfg"
}

# nginx's side of the TLS listeners (TLS 1.3 is not in nginx 1.22's default protocols;
# session cache and tickets at their defaults). The route rows are skipped.
nginx_extra() {
  local l c
  for l in $(extra_listeners); do
    case $l in
      https | https-rsa)
        c=$WORK/tls/$(cert_of "$l")
        cat <<EOF
  server {
    listen 127.0.0.1:$(port_of "$l" nginx) ssl http2 backlog=4096;
    ssl_certificate $c.crt;
    ssl_certificate_key $c.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://http_servers;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
EOF
        ;;
    esac
  done
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
$(nginx_extra)
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

# One extra listener of Halo's manifest: the same certificates, backends, timeouts and
# persistence as HAProxy's; a route listener has no servers of its own, so a request no
# route takes gets no backend (as HAProxy without a default_backend).
halo_listener() { # LISTENER PROXY
  local l=$1 p=$2 n g i c protocol=HTTP
  [[ $l == https* ]] && protocol=HTTPS
  cat <<EOF
    - name: $l
      port: $(port_of "$l" "$p")
      protocol: $protocol
      algorithm: RoundRobin
      maxConnections: 1000000
      timeouts: {connect: 5s, client: 600s, server: 600s, httpRequest: 10s, idle: 600s}
EOF
  case $l in
    https | https-rsa)
      c=$WORK/tls/$(cert_of "$l")
      cat <<EOF
      tls:
        certificates: [{certFile: $c.crt, keyFile: $c.key}]
      backends:
        - {name: b1, address: 127.0.0.1, port: ${BACKEND_PORTS[0]}}
        - {name: b2, address: 127.0.0.1, port: ${BACKEND_PORTS[1]}}
EOF
      ;;
    routes-*)
      n=$(route_count "$l")
      g=$(groups_of "$l")
      echo "      routes:"
      for ((i = 0; i < n; i++)); do
        echo "        - {name: r$i, hostnames: [r$i.bench], matches: [{path: {type: PathPrefix, value: /p$i}}], backendRefs: [{name: g$((i % g))}]}"
      done
      ;;
  esac
}

halo_groups() { # LISTENER...: spec.backendGroups for the route listeners among them
  local l g groups=0
  for l in "$@"; do
    [[ $l == routes-* ]] || continue
    g=$(groups_of "$l")
    ((g > groups)) && groups=$g
  done
  ((groups > 0)) || return 0
  echo "  backendGroups:"
  for ((g = 0; g < groups; g++)); do
    cat <<EOF
    - name: g$g
      algorithm: RoundRobin
      sessionPersistence: {type: Cookie, cookie: {name: $ROUTES_COOKIE}}
      backends:
        - {name: b1, address: 127.0.0.1, port: ${BACKEND_PORTS[0]}}
        - {name: b2, address: 127.0.0.1, port: ${BACKEND_PORTS[1]}}
EOF
  done
}

halo_manifest() { # NAME HTTP_YAML TCP_YAML LISTENER...: the whole manifest on stdout
  local name=$1 http_yaml=$2 tcp_yaml=$3 l
  shift 3
  cat <<EOF
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
  for l in "$@"; do halo_listener "$l" "$name"; done
  halo_groups "$@"
}

# The extra listeners this Halo accepts: each one the full manifest is refused over is
# tried alone, and the rows on those it refuses are skipped with its message.
halo_accepted() { # NAME BIN HTTP_YAML TCP_YAML: sets HALO_LISTENERS to the accepted ones
  local name=$1 bin=$2 http_yaml=$3 tcp_yaml=$4 l try=$WORK/$name.try.yaml msg
  local all
  read -r -a all <<<"$(extra_listeners)"
  HALO_LISTENERS=()
  halo_manifest "$name" "$http_yaml" "$tcp_yaml" "${all[@]+"${all[@]}"}" >"$try"
  if "$bin" check --config "$try" --node bench >/dev/null 2>&1; then
    HALO_LISTENERS=("${all[@]+"${all[@]}"}")
    return 0
  fi
  for l in "${all[@]+"${all[@]}"}"; do
    halo_manifest "$name" "$http_yaml" "$tcp_yaml" "$l" >"$try"
    if msg=$("$bin" check --config "$try" --node bench 2>&1 >/dev/null); then
      HALO_LISTENERS+=("$l")
    else
      skip_rows "$l" "$name" "refused the listener: $(printf '%s' "$msg" | tr '\n' ' ' | cut -c1-200)"
    fi
  done
}

start_halo() { # NAME BIN "ENV..." HTTP_YAML TCP_YAML
  local name=$1 bin=$2 env_words=$3 http_yaml=$4 tcp_yaml=$5 extra=()
  local cfg=$WORK/$name.yaml
  read -r -a extra <<<"$env_words"
  halo_accepted "$name" "$bin" "$http_yaml" "$tcp_yaml"
  halo_manifest "$name" "$http_yaml" "$tcp_yaml" "${HALO_LISTENERS[@]+"${HALO_LISTENERS[@]}"}" >"$cfg"
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

# Rows the proxy does not have the feature for: known before it starts.
skip_unsupported() {
  local l
  if [[ " $PROXIES " == *" nginx "* ]]; then
    for l in $(extra_listeners); do
      [[ $l == routes-* ]] && skip_rows "$l" nginx "nginx (open source) has no cookie-insert persistence"
    done
  fi
  return 0
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
  for kind in $(extra_listeners); do
    has_listener_rows "$kind" "$p" && check_listener "$kind" "$p"
  done
  return 0
}

has_listener_rows() { # LISTENER PROXY: some selected row on LISTENER still runs on PROXY
  local row
  for row in $ROWS; do
    [ "$(listener_of "$row")" = "$1" ] && runs_row "$row" "$2" && return 0
  done
  return 1
}

# An extra listener does what its rows measure; if not, they are skipped for the proxy.
check_listener() { # LISTENER PROXY
  local l=$1 p=$2 port url answers=() i v
  port=$(port_of "$l" "$p")
  case $l in
    https | https-rsa)
      url=https://127.0.0.1:$port/
      wait_http "$url" "${PID_OF[$p]}" -k 2>/dev/null || { skip_rows "$l" "$p" "no HTTPS answer on :$port"; return 0; }
      for i in 1 2 3 4; do
        answers+=("$(curl -fsSk --max-time 2 "$url" | cut -d' ' -f1 || echo ERROR)")
      done
      v=$(openssl s_client -connect "127.0.0.1:$port" -servername bench -brief </dev/null 2>&1 \
        | awk -F': ' '/^Protocol version|^Ciphersuite|^Server Temp Key/ { printf "%s ", $2 }')
      log "$p $l answers: ${answers[*]}; TLS: $v"
      if [ "$l" = https ] && has_row h2-c64 && runs_row h2-c64 "$p"; then
        v=$(curl -sSk --http2 --max-time 2 -o /dev/null -w '%{http_version}' "$url" || true)
        [ "$v" = 2 ] || skip_row h2-c64 "$p" "ALPN h2 not negotiated (curl got HTTP/${v:-?})"
      fi
      ;;
    routes-*) check_routes "$l" "$p" ;;
  esac
  return 0
}

# A route listener: routes apply (host and path), both backends hand out the cookie, and
# a request with a backend's cookie stays on it, on the last route as on the first.
# Sets ROUTE_COOKIES[LISTENER/PROXY] to the cookie values of b1 and b2.
declare -A ROUTE_COOKIES
check_routes() { # LISTENER PROXY
  local l=$1 p=$2 port last i who cookie c1="" c2="" code want c bad=""
  port=$(port_of "$l" "$p")
  last=$(($(route_count "$l") - 1))
  local url=http://127.0.0.1:$port head=$WORK/route.head body=$WORK/route.body
  wait_http "$url/p0/item" "${PID_OF[$p]}" -H "Host: r0.bench" 2>/dev/null \
    || { skip_rows "$l" "$p" "route r0 does not answer 200"; return 0; }
  for i in 1 2 3 4 5 6; do
    curl -sS --max-time 2 -D "$head" -o "$body" -H "Host: r0.bench" "$url/p0/item" || continue
    who=$(cut -d' ' -f1 "$body")
    cookie=$(tr -d '\r' <"$head" | sed -n "s/^[Ss]et-[Cc]ookie: *$ROUTES_COOKIE=\([^;]*\).*/\1/p" | head -n1)
    [ "$who" = b1 ] && [ -n "$cookie" ] && c1=$cookie
    [ "$who" = b2 ] && [ -n "$cookie" ] && c2=$cookie
  done
  [ -n "$c1" ] && [ -n "$c2" ] || { skip_rows "$l" "$p" "no $ROUTES_COOKIE cookie set for both backends"; return 0; }
  code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' -H "Host: nowhere.bench" "$url/p0/item" || true)
  [ "$code" != 200 ] || bad="a host no route names was answered 200"
  if ((last > 0)); then
    code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' -H "Host: r0.bench" "$url/p$last/item" || true)
    [ "$code" != 200 ] || bad="route r0 took a path of route r$last"
  fi
  for want in b1 b2; do
    [ "$want" = b1 ] && c=$c1 || c=$c2
    for i in 1 2 3; do
      who=$(curl -sS --max-time 2 -H "Host: r$last.bench" -H "Cookie: $ROUTES_COOKIE=$c" "$url/p$last/item" | cut -d' ' -f1 || true)
      [ "$who" = "$want" ] || bad="the $want cookie went to ${who:-nothing} on route r$last"
    done
  done
  [ -z "$bad" ] || { skip_rows "$l" "$p" "$bad"; return 0; }
  ROUTE_COOKIES[$l/$p]="$c1 $c2"
  log "$p $l: $((last + 1)) routes apply; cookies $ROUTES_COOKIE=$c1 (b1), $ROUTES_COOKIE=$c2 (b2)"
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

wrk_target() { # ROW PROXY: "URL CONNS EXTRA" for a wrk row
  local h=http://127.0.0.1
  case $1 in
    l7-c64) echo "$h:${HTTP_PORT[$2]}/ 64" ;;
    l7-c256) echo "$h:${HTTP_PORT[$2]}/ 256" ;;
    l7-close) echo "$h:${HTTP_PORT[$2]}/ 64 close" ;;
    l4-c64) echo "$h:${TCP_PORT[$2]}/ 64" ;;
    https-c64) echo "https://127.0.0.1:$(port_of https "$2")/ 64" ;;
    routes-*) echo "$h:$(port_of "$1" "$2")/ 64 routes" ;;
  esac
}

# The route rows' requests: every route in turn, first all with b1's cookie, then all
# with b2's, then all without (the proxy picks a backend and sets the cookie). Built
# once per thread, so the load side's cost does not grow with the route count.
write_routes_lua() {
  cat >"$WORK/routes.lua" <<'EOF'
local requests, i = {}, 0
function init(args)
  local n, name = tonumber(args[1]), args[2]
  for v = 1, 3 do
    for r = 0, n - 1 do
      local headers = { Host = "r" .. r .. ".bench" }
      if v < 3 then headers["Cookie"] = name .. "=" .. args[2 + v] end
      requests[#requests + 1] = wrk.format("GET", "/p" .. r .. "/item", headers)
    end
  end
end
function request()
  i = i % #requests + 1
  return requests[i]
end
EOF
}

wrk_args() { # ROW PROXY EXTRA: sets ARGS to wrk's options for the row (before the URL)
  local cookies
  ARGS=()
  case ${3:-} in
    close) ARGS=(-H 'Connection: close') ;;
    routes)
      read -r -a cookies <<<"${ROUTE_COOKIES[$1/$2]}"
      ARGS=(-s "$WORK/routes.lua") ;;
  esac
  ARGS_AFTER=()
  [ "${3:-}" = routes ] && ARGS_AFTER=(-- "$(route_count "$1")" "$ROUTES_COOKIE" "${cookies[@]}")
  return 0
}

run_wrk() { # ROW PROXY REP
  local row=$1 p=$2 rep=$3 url conns extra out req rps p50 p99 errs
  read -r url conns extra < <(wrk_target "$row" "$p")
  wrk_args "$row" "$p" "${extra:-}"
  # Warm-up, not measured: backend pools grow to the connection count, caches warm.
  timeout -k 5 $((WARMUP + 30)) taskset -c "$LOAD_CPU" \
    wrk -t"$WRK_THREADS" -c"$conns" -d"${WARMUP}s" "${ARGS[@]+"${ARGS[@]}"}" "$url" "${ARGS_AFTER[@]+"${ARGS_AFTER[@]}"}" \
    >/dev/null 2>&1 || warn "warm-up against $p failed"
  out=$WORK/wrk/$row-$p-$rep.txt
  measure "${PID_OF[$p]}" "$out" timeout -k 5 $((DURATION + 30)) taskset -c "$LOAD_CPU" \
    wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --timeout 5s --latency "${ARGS[@]+"${ARGS[@]}"}" "$url" \
    "${ARGS_AFTER[@]+"${ARGS_AFTER[@]}"}"
  read -r req rps p50 p99 errs < <(python3 "$TOOL" wrk "$out") || die "cannot parse $out"
  run_done "$row" "$p" "$rep" "$out" "$req" "$rps" "$p50" "$p99" "$errs"
}

run_done() { # ROW PROXY REP OUT requests rps p50 p99 errors: records and prints one run
  local row=$1 p=$2 rep=$3 out=$4 req=$5 rps=$6 p50=$7 p99=$8 errs=$9
  record "$row" "$p" "$rep" "$M" "$req" "$rps" "$p50" "$p99" "$errs" 0 0
  awk -v r="$row" -v p="$p" -v rep="$rep" -v rps="$rps" -v p99="$p99" -v req="$req" -v m="$M" 'BEGIN {
    split(m, x, " ")
    printf "   %-12s %-7s rep %d: %8.0f req/s  p99 %6.2f ms  %6.1f us/req  proxy CPU %3.0f%%  CPU%s busy %3.0f%%\n",
      r, p, rep, rps, p99, x[2] * 1e6 / (req ? req : 1), x[2] / x[1] * 100, "'"$LOAD_CPU"'", x[4] * 100 }' >&2
  [ "$errs" = 0 ] || warn "$row $p rep $rep: $errs errors (see $out)"
}

# A new TLS connection per request, HS_PROCS clients at once.
run_hs() { # ROW PROXY REP
  local row=$1 p=$2 rep=$3 port out req rps p50 p99 errs tls
  port=$(port_of "$(listener_of "$row")" "$p")
  timeout -k 5 $((WARMUP + 30)) taskset -c "$LOAD_CPU" \
    python3 "$TOOL" handshakes --port "$port" --procs "$HS_PROCS" --duration "$WARMUP" >/dev/null 2>&1 \
    || warn "warm-up against $p failed"
  out=$WORK/hs/$row-$p-$rep.txt
  measure "${PID_OF[$p]}" "$out" timeout -k 5 $((DURATION + 30)) taskset -c "$LOAD_CPU" \
    python3 "$TOOL" handshakes --port "$port" --procs "$HS_PROCS" --duration "$DURATION"
  read -r req rps p50 p99 errs <"$out" || die "cannot parse $out"
  tls=$(sed -n 's/^tls //p' "$out")
  printf '%s\t%s\t%s\n' "$row" "$p" "$tls" >>"$WORK/tls.tsv"
  run_done "$row" "$p" "$rep" "$out" "$req" "$rps" "$p50" "$p99" "$errs"
}

# HTTP/2 over TLS: 64 connections of H2_STREAMS streams, for DURATION seconds.
run_h2() { # ROW PROXY REP
  local row=$1 p=$2 rep=$3 url out req rps p50 p99 errs
  url=https://127.0.0.1:$(port_of https "$p")/
  timeout -k 5 $((WARMUP + 30)) taskset -c "$LOAD_CPU" \
    h2load -t1 -c64 -m"$H2_STREAMS" -D "$WARMUP" "$url" >/dev/null 2>&1 || warn "warm-up against $p failed"
  out=$WORK/h2/$row-$p-$rep.txt
  measure "${PID_OF[$p]}" "$out" timeout -k 5 $((DURATION + 30)) taskset -c "$LOAD_CPU" \
    h2load -t1 -c64 -m"$H2_STREAMS" -D "$DURATION" --log-file "$out.log" "$url"
  read -r req rps p50 p99 errs < <(python3 "$TOOL" h2load "$out" "$out.log") || die "cannot parse $out"
  rm -f "$out.log"
  run_done "$row" "$p" "$rep" "$out" "$req" "$rps" "$p50" "$p99" "$errs"
}

run_row() { # ROW PROXY REP
  case $1 in
    tls-hs-*) run_hs "$@" ;;
    h2-c64) run_h2 "$@" ;;
    *) run_wrk "$@" ;;
  esac
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

THROUGHPUT_ROWS="l7-c64 l7-c256 l7-close l4-c64 https-c64 tls-hs-ecdsa tls-hs-rsa h2-c64 routes-1 routes-20 routes-1000"

throughput_rows() {
  local rep row p
  mkdir -p "$WORK/wrk" "$WORK/bulk" "$WORK/hs" "$WORK/h2"
  for ((rep = 1; rep <= REPS; rep++)); do
    for row in $THROUGHPUT_ROWS; do
      has_row "$row" || continue
      log "rep $rep/$REPS: $row"
      for p in $(proxies_in_order "$rep"); do
        runs_row "$row" "$p" && run_row "$row" "$p" "$rep"
      done
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
  local row p url conns extra perf_pid
  for p in $PROXIES; do
    [[ $p == halo* ]] || continue
    for row in l7-c64 l7-c256 l7-close l4-c64 https-c64 h2-c64 routes-1 routes-20 routes-1000; do
      has_row "$row" && runs_row "$row" "$p" || continue
      log "perf record -g: $p $row"
      timeout -k 5 $((DURATION + 30)) perf record -q --call-graph "${PERF_CALLGRAPH:-fp}" -p "${PID_OF[$p]}" -o "$WORK/perf-$row-$p.data" \
        -- sleep "$DURATION" >/dev/null 2>&1 &
      perf_pid=$!
      PIDS+=("$perf_pid")
      if [ "$row" = h2-c64 ]; then
        url=https://127.0.0.1:$(port_of https "$p")/
        timeout -k 5 $((DURATION + 30)) taskset -c "$LOAD_CPU" \
          h2load -t1 -c64 -m"$H2_STREAMS" -D "$DURATION" "$url" >/dev/null 2>&1 || true
      else
        read -r url conns extra < <(wrk_target "$row" "$p")
        wrk_args "$row" "$p" "${extra:-}"
        timeout -k 5 $((DURATION + 30)) taskset -c "$LOAD_CPU" \
          wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" "${ARGS[@]+"${ARGS[@]}"}" "$url" \
          "${ARGS_AFTER[@]+"${ARGS_AFTER[@]}"}" >/dev/null 2>&1 || true
      fi
      wait "$perf_pid" 2>/dev/null || true
      stop_pid "$perf_pid"
      timeout 120 perf report -i "$WORK/perf-$row-$p.data" --stdio --no-children --percent-limit 1 \
        >"$WORK/perf-$row-$p.txt" 2>/dev/null || warn "perf report failed for $p $row"
      # Inclusive time per function: where the time goes below each caller.
      timeout 120 perf report -i "$WORK/perf-$row-$p.data" --stdio --children -g none --sort symbol \
        --percent-limit 2 >"$WORK/perf-$row-$p.children.txt" 2>/dev/null || true
    done
  done
}

# --- 7. report ---------------------------------------------------------------------------------
write_meta() {
  local versions labels p
  versions="HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'), $(nginx -v 2>&1 | sed 's|.*/||;s|^|nginx |'), "
  versions+="wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'), $(h2load --version 2>&1 | awk 'NR == 1 { print $2 }'), "
  versions+="$(openssl version | awk '{ print $1, $2 }'), Halo $(git -C "$ROOT" log -1 --format=%h -- dataplane 2>/dev/null || echo '?')"
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
  "hs_procs": $HS_PROCS, "h2_streams": $H2_STREAMS, "route_groups": $ROUTE_GROUPS,
  "haproxy_routes": "$HAPROXY_ROUTES",
  "versions": """$versions""",
}, open(sys.argv[1], "w"))
EOF
}

report() {
  write_meta
  local args=(--runs "$RUNS_TSV" --meta "$WORK/meta.json" --details "$WORK/runs.md")
  [ -s "$WORK/mem.tsv" ] && args+=(--mem "$WORK/mem.tsv")
  [ -s "$WORK/skipped.tsv" ] && args+=(--skipped "$WORK/skipped.tsv")
  [ -s "$WORK/tls.tsv" ] && args+=(--tls "$WORK/tls.tsv")
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

  : >"$WORK/skipped.tsv"
  : >"$WORK/tls.tsv"
  make_certs
  write_routes_lua
  skip_unsupported
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
