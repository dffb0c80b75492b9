#!/usr/bin/env python3
"""Load-side helpers for tests/bench/proxy.sh (standard library only, loopback only).

  proxy_tool.py hold --port P --count N [--ready FILE] [--limit S]
      Opens N connections, sends one HTTP/1.1 GET on each, reads the whole response and
      keeps every connection open and idle. Writes "ready OK FAILED" to FILE (or stdout)
      once all are done, then waits for SIGTERM (or --limit seconds) and closes them.
  proxy_tool.py bulk --port P [--path /bulk] [--limit S]
      Downloads one response through a fresh connection into a 1 MiB buffer and prints
      "BYTES SECONDS" (from the request being sent to the last body byte).
  proxy_tool.py handshakes --port P [--procs N] [--duration S] [--name SNI]
      TLS handshake load: N processes, each in a loop opening a connection, doing a full
      TLS handshake (no session is ever offered, so nothing is resumed), one
      `Connection: close` GET and reading to the end. Prints "requests rps p50_ms p99_ms
      errors" (a request: handshake plus response, timed from the connect), then
      "tls VERSION CIPHER resumed=N" as seen by the first connection.
  proxy_tool.py wrk FILE
      Prints "requests rps p50_ms p99_ms errors" from a `wrk --latency` output.
  proxy_tool.py h2load FILE LOG
      The same from an h2load output and its --log-file (per-request times); fails
      unless the connections negotiated h2.
  proxy_tool.py report --runs RUNS.tsv --mem MEM.tsv --meta META.json
      Renders the markdown summary (medians over the reps, ratios, goals, saturation).
"""

import argparse
import asyncio
import csv
import json
import re
import os
import signal
import socket
import ssl
import statistics
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: proxy-bench\r\n\r\n"


# --- hold: many idle keep-alive connections -----------------------------------------


async def read_response(reader):
    """Reads one response with a Content-Length body; returns the status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if m is None:
        raise ValueError("response without Content-Length")
    await reader.readexactly(int(m.group(1)))
    return status


async def open_one(port, sem, timeout, keep):
    async with sem:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout
        )
        try:
            writer.write(REQUEST)
            await writer.drain()
            status = await asyncio.wait_for(read_response(reader), timeout)
            if status != 200:
                raise ValueError(f"status {status}")
        except BaseException:
            writer.close()
            raise
        keep.append((reader, writer))


async def hold(args):
    keep = []
    # A bounded number of handshakes in flight: no SYN backlog overflow, no retransmits.
    sem = asyncio.Semaphore(args.parallel)
    tasks = [open_one(args.port, sem, args.timeout, keep) for _ in range(args.count)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        print(f"hold: {len(failed)} of {args.count} failed, first: {failed[0]!r}", file=sys.stderr)
    line = f"ready {len(keep)} {len(failed)}\n"
    if args.ready:
        with open(args.ready, "w") as f:
            f.write(line)
    else:
        sys.stdout.write(line)
        sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.limit)
    except asyncio.TimeoutError:
        print("hold: time limit reached, closing", file=sys.stderr)
    for _, writer in keep:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in keep), return_exceptions=True)


# --- bulk: one large download ---------------------------------------------------------


def bulk(args):
    deadline = time.monotonic() + args.limit
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    start = time.perf_counter()
    sock.sendall(
        f"GET {args.path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        n = sock.recv_into(view)
        if n == 0:
            sys.exit("bulk: connection closed before the response head")
        head += bytes(view[:n])
    head, body = head.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if not head.startswith(b"HTTP/1.1 200") or m is None:
        sys.exit(f"bulk: unexpected response head {head[:200]!r}")
    want = int(m.group(1))
    got = len(body)
    while got < want:
        if time.monotonic() > deadline:
            sys.exit(f"bulk: time limit after {got} of {want} bytes")
        n = sock.recv_into(view)
        if n == 0:
            sys.exit(f"bulk: connection closed after {got} of {want} bytes")
        got += n
    elapsed = time.perf_counter() - start
    sock.close()
    print(f"{got} {elapsed:.6f}")


# --- handshakes: a new TLS connection per request -----------------------------------------


def handshake_worker(args, fd):
    """One sequential client; writes its counts and latencies (ms) to fd as JSON."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    request = f"GET / HTTP/1.1\r\nHost: {args.name}\r\nConnection: close\r\n\r\n".encode()
    buf = bytearray(16384)
    done, errors, resumed, lat, info = 0, 0, 0, [], None
    first = time.monotonic()
    end = first + args.duration
    while time.monotonic() < end:
        start = time.perf_counter()
        try:
            raw = socket.create_connection(("127.0.0.1", args.port), timeout=5)
            with ctx.wrap_socket(raw, server_hostname=args.name) as tls:
                tls.sendall(request)
                got = bytearray()
                while True:
                    n = tls.recv_into(buf)
                    if n == 0:
                        break
                    got += buf[:n]
                if info is None:
                    info = [tls.version(), tls.cipher()[0]]
                resumed += tls.session_reused
        except (OSError, ssl.SSLError):
            errors += 1
            continue
        if got.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\n" in got:
            done += 1
            lat.append((time.perf_counter() - start) * 1e3)
        else:
            errors += 1
    os.write(fd, json.dumps({"done": done, "errors": errors, "resumed": resumed, "lat": lat,
                             "info": info, "start": first, "end": time.monotonic()}).encode())


def handshakes(args):
    readers = []
    for _ in range(args.procs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            code = 0
            try:
                handshake_worker(args, w)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(w)
        readers.append((pid, r))
    results = []
    for pid, r in readers:
        with os.fdopen(r, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
        if data:
            results.append(json.loads(data))
    # The window in which clients ran: from the first start to the last finish.
    elapsed = (max(r["end"] for r in results) - min(r["start"] for r in results)) if results else 1
    if len(results) < args.procs:
        print(f"handshakes: {args.procs - len(results)} workers failed", file=sys.stderr)
    done = sum(r["done"] for r in results)
    errors = sum(r["errors"] for r in results) + args.procs - len(results)
    lat = sorted(x for r in results for x in r["lat"])
    p50 = lat[len(lat) // 2] if lat else 0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0
    info = next((r["info"] for r in results if r["info"]), ["?", "?"])
    print(f"{done} {done / elapsed:.1f} {p50:.4f} {p99:.4f} {errors}")
    print(f"tls {info[0]} {info[1]} resumed={sum(r['resumed'] for r in results)}")


# --- wrk output -------------------------------------------------------------------------

UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"latency {text!r}")
    return float(m.group(1)) * UNITS_MS[m.group(2)]


def parse_wrk(path):
    text = open(path).read()
    requests = int(re.search(r"^\s*(\d+) requests in", text, re.M).group(1))
    rps = float(re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M).group(1))
    p50 = to_ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1))
    p99 = to_ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    return requests, rps, p50, p99, errors


def wrk(args):
    requests, rps, p50, p99, errors = parse_wrk(args.file)
    print(f"{requests} {rps:.1f} {p50:.4f} {p99:.4f} {errors}")


def h2load(args):
    text = open(args.file).read()
    if not re.search(r"^Application protocol: h2$", text, re.M):
        sys.exit(f"h2load: h2 not negotiated ({args.file})")
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    secs = re.search(r"^finished in ([\d.]+)(ms|s),", text, re.M)
    if not (m and codes and secs):
        sys.exit(f"h2load: cannot parse {args.file}")
    elapsed = float(secs.group(1)) / (1e3 if secs.group(2) == "ms" else 1)
    ok = int(codes.group(1))
    errors = sum(int(x) for x in m.group(5, 6, 7)) + sum(int(x) for x in codes.group(2, 3, 4))
    lat = []
    with open(args.log) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] == "200":
                lat.append(int(parts[2]) / 1e3)
    lat.sort()
    p50 = lat[len(lat) // 2] if lat else 0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0
    print(f"{ok} {ok / elapsed:.1f} {p50:.4f} {p99:.4f} {errors}")


# --- report -----------------------------------------------------------------------------

# What each throughput row measures and the goal for Halo against HAProxy (issue 8).
# A goal is (metric, comparison, ratio); None: reported only.
ROWS = [
    ("l7-c64", "L7 keep-alive, c64", [("rps", ">=", 1.1), ("p99", "<=", 1.0), ("cpu", "<=", 0.9)]),
    ("l7-c256", "L7 keep-alive, c256", [("rps", ">=", 1.1), ("p99", "<=", 1.0), ("cpu", "<=", 0.9)]),
    ("l7-close", "L7 `Connection: close`, c64", [("rps", ">=", 1.0)]),
    ("l4-c64", "L4 keep-alive HTTP, c64", [("cpu", "<=", 0.9)]),
    ("https-c64", "HTTPS keep-alive (HTTP/1.1), c64, ECDSA", []),
    ("tls-hs-ecdsa", "TLS full handshake + 1 request, ECDSA P-256", []),
    ("tls-hs-rsa", "TLS full handshake + 1 request, RSA 2048", []),
    ("h2-c64", "HTTP/2 over TLS (ALPN h2), c64 × {h2_streams} streams", []),
    ("routes-1", "L7 1 route, cookie persistence, c64", []),
    ("routes-20", "L7 20 routes, cookie persistence, c64", []),
    ("routes-1000", "L7 1,000 routes, cookie persistence, c64", []),
]
# Route rows read against routes-1: (row, goal for Halo's throughput ratio or None).
ROUTE_RATIOS = [("routes-20", None), ("routes-1000", 0.9)]
METRICS = [
    # key, label, formatter
    ("rps", "req/s", lambda v: f"{v / 1000:.1f} k"),
    ("p50", "p50 ms", lambda v: f"{v:.2f}"),
    ("p99", "p99 ms", lambda v: f"{v:.2f}"),
    ("cpu", "proxy CPU µs/req", lambda v: f"{v:.1f}"),
    ("conns", "backend conns opened / 1k req", lambda v: f"{v:.2f}"),
]
GROWTH_GOAL = "≈ 0 (≤ max(10% of peak, 1 MB))"
NAMES = {"haproxy": "HAProxy", "nginx": "nginx", "halo": "Halo", "halo-b": "Halo-B"}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def met(value, op, goal):
    if value is None:
        return "n/a"
    ok = value >= goal if op == ">=" else value <= goal
    return "met" if ok else "**missed**"


def saturation(runs, sat):
    """Per-run verdict: which side ran out of CPU. Returns (label, proxy %, load-CPU %)."""
    proxy = runs["proxy_cpu_s"] / runs["wall_s"]
    load_busy = runs["load_busy"]
    if proxy >= sat:
        label = "proxy-bound"
    elif load_busy >= sat:
        label = "LOAD-BOUND"
    elif runs["proxy_busy"] >= sat:
        # The proxy's CPU was full, but not with the proxy: something else ran there.
        label = "CPU-SHARED"
    else:
        label = "neither"
    return label, proxy, load_busy


# Verdicts under which a ratio says little about the proxies.
UNRELIABLE = ("LOAD-BOUND", "CPU-SHARED")


def report(args):
    meta = json.load(open(args.meta))
    NAMES.update(meta.get("labels", {}))
    sat = meta["sat_pct"] / 100
    proxies = meta["proxies"]
    halos = [p for p in proxies if p.startswith("halo")]
    runs = {}
    with open(args.runs) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            for k in r:
                if k not in ("row", "proxy"):
                    r[k] = float(r[k])
            runs.setdefault((r["row"], r["proxy"]), []).append(r)

    out = []
    w = out.append
    w(f"## Proxy benchmark: {', '.join(NAMES.get(p, p) for p in proxies)}")
    w("")
    w(
        f"{meta['reps']} interleaved reps, medians; wrk -t{meta['wrk_threads']} -d{meta['duration']}s "
        f"(after {meta['warmup']}s warm-up); proxy on CPU {meta['proxy_cpu']}, wrk + backends on "
        f"CPU {meta['load_cpu']}; {meta['body_bytes']}-byte bodies; saturation at {meta['sat_pct']}% "
        f"CPU. {meta['versions']}"
    )
    w("")
    head = ["row", "metric"] + [NAMES.get(p, p) for p in proxies]
    head += [f"{NAMES.get(h, h)}/HAProxy" for h in halos] + ["goal", "met", "saturation (proxy CPU / load CPU)"]
    w("| " + " | ".join(head) + " |")
    w("|" + "---|" * len(head))

    def line(row_label, metric_label, cells, ratios, goal, verdict, note):
        w("| " + " | ".join([row_label, metric_label] + cells + ratios + [goal, verdict, note]) + " |")

    def sat_note(row):
        """Per proxy: median CPU figures and how many reps were proxy- or load-bound."""
        parts, load_bound = [], None
        for p in proxies:
            rs = runs.get((row, p), [])
            if not rs:
                continue
            verdicts = [saturation(r, sat) for r in rs]
            labels = [v[0] for v in verdicts]
            top = max(set(labels), key=labels.count)
            # The ratios compare each Halo with HAProxy: if any of them was mostly held
            # back by something other than its own CPU, the ratio is not meaningful.
            for bad in UNRELIABLE:
                if (p == "haproxy" or p in halos) and load_bound is None \
                        and labels.count(bad) and labels.count(bad) * 2 >= len(labels):
                    load_bound = bad
            pp = med([v[1] for v in verdicts]) * 100
            lb = med([v[2] for v in verdicts]) * 100
            noisy = sum(1 for r in rs if r["load_busy"] - r["load_cpu_s"] / r["wall_s"] > 0.15
                        or r["proxy_busy"] - r["proxy_cpu_s"] / r["wall_s"] > 0.15)
            tag = f"{top} {labels.count(top)}/{len(labels)}"
            if noisy:
                tag += f", other load on CPUs {noisy}/{len(rs)}"
            errs = sum(r.get("errors", 0) for r in rs)
            if errs:
                tag += f", {int(errs)} errors"
            parts.append(f"{NAMES.get(p, p)} {pp:.0f}%/{lb:.0f}% {tag}")
        return "; ".join(parts), load_bound

    def fmt_cells(row, key, fmt):
        vals = {p: med([r.get(key) for r in runs.get((row, p), [])]) for p in proxies}
        cells = [fmt(vals[p]) if vals[p] is not None else "–" for p in proxies]
        ratios = []
        for h in halos:
            if vals.get("haproxy") and vals.get(h) is not None:
                ratios.append(vals[h] / vals["haproxy"])
            else:
                ratios.append(None)
        return cells, ratios

    def verdicts(ratios, op, goal, load_bound):
        v = []
        for h, r in zip(halos, ratios):
            s = met(r, op, goal)
            v.append(s if len(halos) == 1 else f"{NAMES.get(h, h)} {s}")
        text = ", ".join(v)
        if load_bound:
            text += f" ({load_bound}: ratio not meaningful)"
        return text

    for row, label, goals in ROWS:
        if not any((row, p) in runs for p in proxies):
            continue
        label = label.format(**meta)
        for r in [r for p in proxies for r in runs.get((row, p), [])]:
            r["cpu"] = r["proxy_cpu_s"] * 1e6 / r["requests"] if r["requests"] else None
            r["conns"] = r["backend_conns"] * 1000 / r["requests"] if r["requests"] else None
        note, load_bound = sat_note(row)
        goal_of = {m: (op, g) for m, op, g in goals}
        first = True
        for key, mlabel, fmt in METRICS:
            cells, ratios = fmt_cells(row, key, fmt)
            rtext = [f"{r:.2f}" if r is not None else "–" for r in ratios]
            if key in goal_of:
                op, g = goal_of[key]
                goal, verdict = f"{'≥' if op == '>=' else '≤'} {g:.1f}×", verdicts(ratios, op, g, load_bound)
            else:
                goal, verdict = "–", ""
            line(label if first else "", mlabel, cells, rtext, goal, verdict, note if first else "")
            first = False

    # Route count: throughput with N routes against one route, per proxy.
    for row, goal in ROUTE_RATIOS:
        base = {p: med([r["rps"] for r in runs.get(("routes-1", p), [])]) for p in proxies}
        vals = {p: med([r["rps"] for r in runs.get((row, p), [])]) for p in proxies}
        ratio = {p: vals[p] / base[p] if vals[p] and base[p] else None for p in proxies}
        if not any(ratio.values()):
            continue
        n = row.split("-")[1]
        cells = [f"{ratio[p]:.3f}" if ratio[p] else "–" for p in proxies]
        if goal is None:
            gtext, verdict = "–", ""
        else:
            gtext = f"≥ {goal:.2f} (cost ≤ {1 - goal:.0%})"
            verdict = ", ".join(
                (met(ratio[h], ">=", goal) if len(halos) == 1 else f"{NAMES.get(h, h)} {met(ratio[h], '>=', goal)}")
                for h in halos)
        line(f"{n} routes / 1 route", "req/s ratio", cells, ["" for _ in halos], gtext, verdict,
             "the saturation notes of both rows apply")

    # Bulk: bytes through the TCP listener.
    if any(("bulk", p) in runs for p in proxies):
        for r in [r for p in proxies for r in runs.get(("bulk", p), [])]:
            r["gbps"] = r["bytes"] / r["seconds"] / 1e9
            r["cpu_gib"] = r["proxy_cpu_s"] / (r["bytes"] / 2**30)
        note, load_bound = sat_note("bulk")
        label = f"L4 bulk {meta['bulk_mb']} MiB"
        cells, ratios = fmt_cells("bulk", "gbps", lambda v: f"{v:.2f}")
        line(label, "GB/s", cells, [f"{r:.2f}" if r else "–" for r in ratios], "≥ 1.2×",
             verdicts(ratios, ">=", 1.2, load_bound), note)
        cells, ratios = fmt_cells("bulk", "cpu_gib", lambda v: f"{v:.2f}")
        line("", "proxy CPU s/GiB", cells, [f"{r:.2f}" if r else "–" for r in ratios], "–", "", "")

    # Memory: RSS deltas over N idle connections.
    peaks = {}

    def growth_verdicts(grown, peak):
        """No growth: what stays after the close is within max(10% of the peak, 1 MB)."""
        v = []
        for h in halos:
            if grown.get(h) is None or peak.get(h) is None:
                s = "n/a"
            else:
                s = "met" if grown[h] <= max(0.1 * peak[h], 1.0) else "**missed**"
            v.append(s if len(halos) == 1 else f"{NAMES.get(h, h)} {s}")
        return ", ".join(v)

    mem = {}
    if args.mem:
        with open(args.mem) as f:
            for r in csv.DictReader(f, delimiter="\t"):
                mem[(r["row"], r["proxy"])] = {k: (v if k in ("row", "proxy") else float(v)) for k, v in r.items()}
    for row, label in (("mem-l7", "idle keep-alive client conn"), ("mem-l4", "established L4 session")):
        ms = {p: mem.get((row, p)) for p in proxies}
        if not any(ms.values()):
            continue
        n = max(int(m["count"]) for m in ms.values() if m)
        per = {p: (m["with_kb"] - m["before_kb"]) / m["ok"] if m and m["ok"] else None for p, m in ms.items()}
        after = {p: (m["after_kb"] - m["before_kb"]) / 1024 if m else None for p, m in ms.items()}
        peak = {p: (m["with_kb"] - m["before_kb"]) / 1024 if m else None for p, m in ms.items()}
        short = [f"{NAMES.get(p, p)} {int(m['ok'])}/{int(m['count'])}" for p, m in ms.items() if m and m["ok"] < m["count"]]
        note = ("connections held: " + ", ".join(short)) if short else ""
        ratios = [per[h] / per["haproxy"] if per.get("haproxy") and per.get(h) is not None else None for h in halos]
        line(f"{label} ({n:,})", "KB each (RSS Δ / N)", [f"{per[p]:.2f}" if per[p] is not None else "–" for p in proxies],
             [f"{r:.2f}" if r is not None else "–" for r in ratios], "≤ 1.0×", verdicts(ratios, "<=", 1.0, False), note)
        # After closing: what is still held, against the peak (goal: no growth).
        for p in proxies:
            if peak[p] is not None:
                peaks[p] = max(peaks.get(p, 0), peak[p])
        line("", "RSS after close − before, MB", [f"{after[p]:+.1f}" if after[p] is not None else "–" for p in proxies],
             ["" for _ in halos], GROWTH_GOAL, growth_verdicts(after, peak), "")
    if any(("mem-all", p) in mem for p in proxies):
        ms = {p: mem.get(("mem-all", p)) for p in proxies}
        grown = {p: (m["after_kb"] - m["before_kb"]) / 1024 if m else None for p, m in ms.items()}
        line("RSS after all connections closed", "MB start → end",
             [f"{m['before_kb'] / 1024:.1f} → {m['after_kb'] / 1024:.1f}" if m else "–" for m in ms.values()],
             ["" for _ in halos], GROWTH_GOAL, growth_verdicts(grown, peaks), "")
    w("")
    rows_run = {row for row, _ in runs}
    notes = []
    if "https-c64" in rows_run:
        notes.append("https-c64: wrk over TLS, keep-alive (wrk offers no ALPN: HTTP/1.1).")
    if rows_run & {"tls-hs-ecdsa", "tls-hs-rsa"}:
        notes.append(f"tls-hs-*: {meta['hs_procs']} sequential clients (proxy_tool.py handshakes), each "
                     "request a new connection, a full TLS handshake (the client never offers a session: "
                     "resumption off for every proxy alike; wrk and h2load would resume) and one "
                     "`Connection: close` GET; req/s = handshakes/s, latency from connect to the last byte.")
    if "h2-c64" in rows_run:
        notes.append(f"h2-c64: h2load -t1 -c64 -m{meta['h2_streams']} -D{meta['duration']} over TLS with "
                     "ALPN h2 (ECDSA certificate); h1 to the backends.")
    if rows_run & {"routes-1", "routes-20", "routes-1000"}:
        how = ("one `use_backend ... if { req.hdr(host) -i rN.bench } { path_beg /pN/ }` rule per route"
               if meta["haproxy_routes"] == "acl" else "one `map_beg` lookup on `base`")
        notes.append(f"routes-N: N routes (host rN.bench, path prefix /pN) to {meta['route_groups']} "
                     "backend group(s) of b1+b2 with cookie persistence (insert, indirect, nocache); wrk's "
                     "Lua script takes every route in turn, a third of requests with b1's cookie, a third "
                     f"with b2's, a third without; HAProxy: {how}.")
    for n in notes:
        w(f"- {n}")
    if args.tls:
        seen = {}
        with open(args.tls) as f:
            for line_ in f:
                parts = line_.rstrip("\n").split("\t")
                if len(parts) == 3:
                    seen.setdefault((parts[0], parts[1]), parts[2])
        if seen:
            w("- TLS as negotiated (first connection of a run): " + "; ".join(
                f"{row} {NAMES.get(p, p)}: {v}" for (row, p), v in sorted(seen.items())))
    if args.skipped:
        with open(args.skipped) as f:
            skipped = [l_.rstrip("\n").split("\t") for l_ in f if l_.strip()]
        if skipped:
            w("- Not run: " + "; ".join(f"{row} on {NAMES.get(p, p)} ({why})" for row, p, why in skipped))
    w("")
    w("Saturation: proxy-bound = the proxy process used ≥ "
      f"{meta['sat_pct']}% of its CPU (the meaningful case); LOAD-BOUND = CPU {meta['load_cpu']} "
      f"(wrk + backends) was ≥ {meta['sat_pct']}% busy while the proxy was not, so the load side "
      "set the pace and the ratio says little; CPU-SHARED = the proxy's CPU was busy, but "
      "mostly not with the proxy (the ratio says little either); 'other load on CPUs' = more than 15% of a CPU "
      "went to processes outside the benchmark (a shared machine).")
    print("\n".join(out))

    if args.details:
        d = ["", "### Every run", "",
             "| row | proxy | rep | req/s | p50 ms | p99 ms | µs/req | backend conns | proxy CPU % | load procs % | CPU load % | CPU proxy % | errors | verdict |",
             "|" + "---|" * 14]
        for (row, p), rs in runs.items():
            for r in rs:
                label, pp, lb = saturation(r, sat)
                if row == "bulk":
                    perf = [f"{r['gbps']:.2f} GB/s", "", "", "", str(int(r["backend_conns"]))]
                else:
                    perf = [f"{r['rps']:.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}",
                            f"{r['cpu']:.1f}" if r.get("cpu") else "–", str(int(r["backend_conns"]))]
                d.append("| " + " | ".join([row, p, str(int(r["rep"]))] + perf + [
                    f"{pp * 100:.0f}", f"{r['load_cpu_s'] / r['wall_s'] * 100:.0f}",
                    f"{r['load_busy'] * 100:.0f}", f"{r['proxy_busy'] * 100:.0f}",
                    str(int(r.get("errors", 0))), label]) + " |")
        if mem:
            d += ["", "| memory row | proxy | N | held | RSS before KB | with KB | after KB |", "|---|---|---|---|---|---|---|"]
            for (row, p), m in mem.items():
                d.append(f"| {row} | {p} | {int(m['count'])} | {int(m['ok'])} | {int(m['before_kb'])} | "
                         f"{int(m['with_kb'])} | {int(m['after_kb'])} |")
        with open(args.details, "w") as f:
            f.write("\n".join(d) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hold")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--count", type=int, required=True)
    h.add_argument("--parallel", type=int, default=100)
    h.add_argument("--timeout", type=float, default=10, help="per connect and per response")
    h.add_argument("--limit", type=float, default=600, help="longest hold before closing anyway")
    h.add_argument("--ready")
    b = sub.add_parser("bulk")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--path", default="/bulk")
    b.add_argument("--limit", type=float, default=120)
    p = sub.add_parser("wrk")
    p.add_argument("file")
    t = sub.add_parser("handshakes")
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--procs", type=int, default=32)
    t.add_argument("--duration", type=float, default=10)
    t.add_argument("--name", default="bench", help="SNI and Host")
    q = sub.add_parser("h2load")
    q.add_argument("file")
    q.add_argument("log")
    r = sub.add_parser("report")
    r.add_argument("--runs", required=True)
    r.add_argument("--mem")
    r.add_argument("--meta", required=True)
    r.add_argument("--details", help="also write a per-run table here")
    r.add_argument("--skipped", help="rows not run: row, proxy, reason (TSV)")
    r.add_argument("--tls", help="negotiated TLS per run: row, proxy, text (TSV)")
    args = ap.parse_args()
    if args.cmd == "hold":
        asyncio.run(hold(args))
    elif args.cmd == "bulk":
        bulk(args)
    elif args.cmd == "wrk":
        wrk(args)
    elif args.cmd == "handshakes":
        handshakes(args)
    elif args.cmd == "h2load":
        h2load(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
