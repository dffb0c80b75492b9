//! Controller benchmark. Run through `tests/bench/controller.sh`, which builds release
//! binaries first.
//!
//! `--scenario propagation`: a real control plane (etcd + kube-apiserver on loopback), the
//! real `halo-controller` and a real `halo-dataplane` following it. Each change is a PATCH
//! through the API (a LoadBalancer's static backends, or an EndpointSlice's readiness);
//! the clock starts right before the PATCH and stops when the data plane's admin
//! `/status` shows a new config hash (polled every millisecond, 5 s limit: a miss).
//!
//! `--scenario render`: the controller's pure `render_world` on synthetic objects in
//! memory (nodes × VirtualIPs × LoadBalancers, each behind a Service whose EndpointSlice
//! has N ready endpoints), timed over several full renders with the process's peak RSS;
//! then (unless `--skip-real-controller`) the same objects in a real API server, read by
//! the real controller: its `halo_controller_render_seconds` histogram and its VmHWM.
//!
//! All traffic stays on 127.0.0.1. Endpoint addresses outside loopback (192.0.2.0/24,
//! 10.0.0.0/8) are only ever written into configs: no listener that uses them is sent a
//! request and no health check is configured, so nothing contacts them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use halo_crds::{LoadBalancer, VirtualIP};
use halo_tests::backends::{self, free_port};
use halo_tests::client;
use halo_tests::cluster::Cluster;
use halo_tests::process::http_get_blocking;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "halo-bench-controller",
    about = "Controller benchmark: API-to-data-plane propagation latency, render time and memory at scale"
)]
struct Args {
    /// propagation, render or all.
    #[arg(long, default_value = "all", value_parser = ["propagation", "render", "all"])]
    scenario: String,
    /// Measured changes per kind of change (LoadBalancer, EndpointSlice).
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Changes made (and not counted) before measuring each kind.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Pause between two changes, in ms (plus 0-49 ms of jitter).
    #[arg(long, default_value_t = 200)]
    gap_ms: u64,
    /// Skip the EndpointSlice-driven changes.
    #[arg(long)]
    skip_slices: bool,
    /// Render scale: nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Render scale: VirtualIPs (the LoadBalancers are spread over them).
    #[arg(long, default_value_t = 10)]
    vips: usize,
    /// Render scale: LoadBalancers, each with one HTTP listener on its own Service.
    #[arg(long, default_value_t = 1000)]
    lbs: usize,
    /// Render scale: ready endpoints in each Service's EndpointSlice.
    #[arg(long, default_value_t = 50)]
    endpoints: usize,
    /// Render scale: namespaces the LoadBalancers and Services are spread over.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Full renders timed in memory.
    #[arg(long, default_value_t = 5)]
    renders: usize,
    /// Only the in-memory render, not the run of the real controller at that scale.
    #[arg(long)]
    skip_real_controller: bool,
    /// Concurrent server-side applies while loading the scale set into the API server.
    #[arg(long, default_value_t = 32)]
    apply_concurrency: usize,
    /// Keep the working directories (control plane data, logs) even on success.
    #[arg(long)]
    keep: bool,
}

/// Per-change limit: a change not seen by then is a miss.
const CHANGE_LIMIT: Duration = Duration::from_secs(5);
const POLL_EVERY: Duration = Duration::from_millis(1);
const FIELD_MANAGER: &str = "halo-bench";
/// How long the propagation scenario watches an idle controller for renders.
const IDLE_SECS: u64 = 10;
/// Single changes made once the real controller has settled at scale.
const SCALE_CHANGES: usize = 20;

// ---------------------------------------------------------------------------------------
// The cluster is halo_tests::cluster's, shared with the end-to-end tests.

/// A kube client for the cluster's control plane.
async fn kube_client(cluster: &Cluster) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(cluster.cp.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

fn wait_for(limit: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(every);
    }
    false
}

fn dp_status(admin: SocketAddr) -> Value {
    http_get_blocking(admin, "/status")
        .ok()
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or_default()
}

fn metrics_text(addr: SocketAddr) -> Option<String> {
    http_get_blocking(addr, "/metrics")
        .ok()
        .filter(|(code, _)| *code == 200)
        .map(|(_, body)| body)
}

/// The value of one exact series (`name` or `name{labels}`) in a Prometheus text page.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Sum of every series of `name` (any labels).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// Cumulative buckets of a histogram: (upper bound, count).
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The bucket bound at or below which a fraction `q` of the observations fall.
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total && *c > 0.0)
        .map_or(f64::NAN, |b| b.0)
}

/// Difference of two cumulative bucket lists (same bounds).
fn bucket_delta(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, c)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, c - b)
        })
        .collect()
}

fn proc_kb(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// User + system CPU seconds a process has used (0 if it is gone).
fn proc_cpu(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b);
    // SAFETY: sysconf reads a constant of the C library.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we hand it.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Waits until the controller's renders and status reconciles stop moving for `still`.
fn wait_quiet(metrics: SocketAddr, still: Duration, limit: Duration) -> bool {
    let start = Instant::now();
    let mut last = (f64::NAN, f64::NAN);
    let mut since = Instant::now();
    while start.elapsed() < limit {
        if let Some(text) = metrics_text(metrics) {
            let s = snapshot(&text, Duration::ZERO);
            let now = (s.renders, s.lb_reconciles + s.vip_reconciles);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= still {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Resets this process's VmHWM to its current RSS (Linux `clear_refs` value 5).
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A pseudo-random number below `n` from the clock (for jitter only).
fn jitter_ms(n: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut x = u64::from(nanos) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x % n.max(1)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    pct(&v, 50.0)
}

// ---------------------------------------------------------------------------------------
// Propagation.

struct Series {
    kind: &'static str,
    /// PATCH sent → new hash on the data plane.
    latencies: Vec<f64>,
    /// PATCH sent → PATCH answered.
    api: Vec<f64>,
    misses: usize,
    /// The new config did not hold what the change asked for.
    wrong_content: usize,
    /// The version moved by more than one for one change.
    version_jumps: usize,
}

impl Series {
    fn print(&self) {
        let mut v = self.latencies.clone();
        v.sort_by(f64::total_cmp);
        let mut a = self.api.clone();
        a.sort_by(f64::total_cmp);
        println!(
            "  {:<14} {:>5} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>6} {:>10.1} {:>6} {:>6}",
            self.kind,
            v.len(),
            pct(&v, 50.0),
            pct(&v, 90.0),
            pct(&v, 99.0),
            v.last().copied().unwrap_or(f64::NAN),
            v.first().copied().unwrap_or(f64::NAN),
            self.misses,
            pct(&a, 50.0),
            self.wrong_content,
            self.version_jumps,
        );
    }
}

/// (version, hash, the listener named `listener` as (backend name, weight) pairs).
fn parse_status(status: &Value, listener: &str) -> (u64, String, Vec<(String, u64)>) {
    let backends = status["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["name"] == listener)
        .flat_map(|l| l["backends"].as_array().cloned().unwrap_or_default())
        .map(|b| {
            (
                b["name"].as_str().unwrap_or_default().to_string(),
                b["weight"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    (
        status["version"].as_u64().unwrap_or(0),
        status["hash"].as_str().unwrap_or_default().to_string(),
        backends,
    )
}

/// Polls `/status` on one keep-alive connection (reopened on error).
struct StatusPoller {
    admin: SocketAddr,
    conn: Option<client::Connection>,
}

impl StatusPoller {
    async fn get(&mut self) -> Option<Value> {
        if self.conn.is_none() {
            self.conn = client::Connection::open(self.admin).await.ok();
        }
        let reply = self.conn.as_mut()?.get("/status").await;
        match reply {
            Ok(r) if r.status == 200 => serde_json::from_str(&r.body).ok(),
            _ => {
                self.conn = None;
                None
            }
        }
    }
}

/// What one change asks for: the patch, the object it goes to, and the expected content
/// of the listener afterwards.
struct Change {
    api: Api<DynamicObject>,
    name: String,
    patch: Value,
    listener: String,
    expect: Vec<(String, u64)>,
}

async fn measure(
    kind: &'static str,
    args: &Args,
    poller: &mut StatusPoller,
    mut next: impl FnMut(usize) -> Change,
) -> Result<Series> {
    let mut series = Series {
        kind,
        latencies: Vec::new(),
        api: Vec::new(),
        misses: 0,
        wrong_content: 0,
        version_jumps: 0,
    };
    for i in 0..args.warmup + args.changes {
        let counted = i >= args.warmup;
        tokio::time::sleep(Duration::from_millis(args.gap_ms + jitter_ms(50))).await;
        let before = poller.get().await.context("data plane /status")?;
        let (v0, h0, _) = parse_status(&before, "");
        let change = next(i);
        let t0 = Instant::now();
        change
            .api
            .patch(
                &change.name,
                &PatchParams::default(),
                &Patch::Merge(&change.patch),
            )
            .await
            .with_context(|| format!("patch {kind} {}", change.name))?;
        let api = t0.elapsed();
        let mut seen = None;
        while t0.elapsed() < CHANGE_LIMIT {
            if let Some(s) = poller.get().await
                && s["hash"].as_str().is_some_and(|h| h != h0)
            {
                seen = Some((t0.elapsed(), s));
                break;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        let Some((latency, status)) = seen else {
            eprintln!("   {kind} change {i}: no new hash within {CHANGE_LIMIT:?} (a miss)");
            if counted {
                series.misses += 1;
            }
            continue;
        };
        if !counted {
            continue;
        }
        let (v1, _, content) = parse_status(&status, &change.listener);
        let mut got = content;
        got.sort();
        let mut want = change.expect;
        want.sort();
        if got != want {
            series.wrong_content += 1;
            eprintln!("   {kind} change {i}: the data plane has {got:?}, wanted {want:?}");
        }
        if v1 != v0 + 1 {
            series.version_jumps += 1;
            eprintln!("   {kind} change {i}: version {v0} -> {v1}");
        }
        series.latencies.push(ms(latency));
        series.api.push(ms(api));
    }
    Ok(series)
}

fn propagation(rt: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    println!(
        "== propagation: API PATCH -> data plane /status serves the new config hash (load average {})",
        loadavg()
    );
    let nodes = [
        ("node-a".to_string(), "192.0.2.1".to_string()),
        ("node-b".to_string(), "192.0.2.2".to_string()),
    ];
    let started = Instant::now();
    let mut cluster = Cluster::start_with("bench-prop", &nodes, true)?;
    cluster.keep(true);
    eprintln!(
        "   control plane up in {:.1}s ({})",
        started.elapsed().as_secs_f64(),
        cluster.dir.display()
    );
    let b1 = rt.block_on(backends::http("b1", "127.0.0.1:0".parse()?))?;
    let b2 = rt.block_on(backends::http("b2", "127.0.0.1:0".parse()?))?;
    let (front_web, front_pods) = (free_port()?, free_port()?);
    // The Service's endpoints are documentation addresses that never get traffic: only the
    // `web` listener is requested.
    let slice_endpoints = |third_ready: bool| -> Value {
        json!([
            {"addresses": ["192.0.2.10"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "pod-0", "namespace": "default"}},
            {"addresses": ["192.0.2.11"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "pod-1", "namespace": "default"}},
            {"addresses": ["192.0.2.12"], "conditions": {"ready": third_ready}, "targetRef": {"kind": "Pod", "name": "pod-2", "namespace": "default"}},
        ])
    };
    let web_listeners = |weight: u64, with_b2: bool| -> Value {
        let mut backends = vec![
            json!({"name": "b1", "address": "127.0.0.1", "port": b1.port(), "weight": weight}),
        ];
        if with_b2 {
            backends.push(json!({"name": "b2", "address": "127.0.0.1", "port": b2.port()}));
        }
        json!([{"name": "http", "port": front_web, "protocol": "HTTP", "backends": backends}])
    };
    let manifest = [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "default"},
               "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "echo-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "echo"}},
               "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": slice_endpoints(true)}),
        json!({"apiVersion": "halo.dev/v1alpha1", "kind": "LoadBalancer", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"addresses": ["127.0.0.1"], "listeners": web_listeners(1, false)}}),
        json!({"apiVersion": "halo.dev/v1alpha1", "kind": "LoadBalancer", "metadata": {"name": "pods", "namespace": "default"},
               "spec": {"addresses": ["127.0.0.1"], "listeners": [{"name": "http", "port": front_pods, "protocol": "HTTP",
                        "backends": [{"service": {"name": "echo", "port": 80}}]}]}}),
    ];
    let yaml: Vec<String> = manifest.iter().map(Value::to_string).collect();
    cluster.apply(&yaml.join("\n---\n"))?;

    let (stream_port, metrics_port) = (free_port()?, free_port()?);
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let mut controller = cluster.controller("ctl-1", stream_port, metrics_port)?;
    if !wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        metrics_text(metrics_addr)
            .is_some_and(|t| t.lines().any(|l| l == "halo_controller_leader 1"))
    }) {
        bail!(
            "the controller did not lead within 30s:\n{}",
            cluster.log("ctl-1")
        );
    }
    let token = cluster.token("halo-dataplane", Some("dp-node-a"))?;
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut dp = cluster.dataplane("node-a", stream_port, admin, &token)?;
    if !wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        dp_status(admin)["listeners"]
            .as_array()
            .is_some_and(|l| l.len() == 2)
    }) {
        bail!(
            "the data plane got no config within 30s:\n{}\n{}",
            cluster.log("ctl-1"),
            cluster.log("dp-node-a")
        );
    }
    let front = SocketAddr::from(([127, 0, 0, 1], front_web));
    let first = rt.block_on(client::get(front, "/"))?;
    if first.status != 200 || first.backend.as_deref() != Some("b1") {
        bail!(
            "the data plane does not serve b1: {} {:?}",
            first.status,
            first.backend
        );
    }
    eprintln!("   controller, data plane and backends up; measuring");

    let client = rt.block_on(kube_client(&cluster))?;
    let lb_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::erase::<LoadBalancer>(&()),
    );
    let slice_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::erase::<EndpointSlice>(&()),
    );
    let mut poller = StatusPoller { admin, conn: None };
    let mut results = Vec::new();
    let m0 = metrics_text(metrics_addr).unwrap_or_default();

    // LoadBalancer: even changes flip b1's weight (1 <-> 2), odd ones add or remove b2.
    let (mut weight, mut with_b2) = (1u64, false);
    results.push(rt.block_on(measure("LoadBalancer", args, &mut poller, |i| {
        if i % 2 == 0 {
            weight = 3 - weight;
        } else {
            with_b2 = !with_b2;
        }
        let mut expect = vec![("b1".to_string(), weight)];
        if with_b2 {
            expect.push(("b2".to_string(), 1));
        }
        Change {
            api: lb_api.clone(),
            name: "web".into(),
            patch: json!({"spec": {"listeners": web_listeners(weight, with_b2)}}),
            listener: "default/web/http".into(),
            expect,
        }
    }))?);

    // EndpointSlice: the third endpoint turns not ready, then ready again.
    if !args.skip_slices {
        let mut third_ready = true;
        results.push(
            rt.block_on(measure("EndpointSlice", args, &mut poller, |_| {
                third_ready = !third_ready;
                let mut expect = vec![("echo/pod-0".to_string(), 1), ("echo/pod-1".to_string(), 1)];
                if third_ready {
                    expect.push(("echo/pod-2".to_string(), 1));
                }
                Change {
                    api: slice_api.clone(),
                    name: "echo-1".into(),
                    patch: json!({"endpoints": slice_endpoints(third_ready)}),
                    listener: "default/pods/http".into(),
                    expect,
                }
            }))?,
        );
    }

    let m1 = metrics_text(metrics_addr).unwrap_or_default();
    // Still serving after all that; and nothing moves while nothing changes.
    let last = rt.block_on(client::get(front, "/"))?;
    std::thread::sleep(Duration::from_secs(3));
    let before = metrics_text(metrics_addr).unwrap_or_default();
    let (v_before, _, _) = parse_status(&dp_status(admin), "");
    std::thread::sleep(Duration::from_secs(IDLE_SECS));
    let after = metrics_text(metrics_addr).unwrap_or_default();
    let (v_after, _, _) = parse_status(&dp_status(admin), "");

    println!(
        "  {:<14} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>10} {:>6} {:>6}",
        "change",
        "count",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "min ms",
        "misses",
        "api p50 ms",
        "wrong",
        "jumps"
    );
    for s in &results {
        s.print();
    }
    println!(
        "  ({} warm-up changes per kind not counted; {} ms + 0-49 ms between changes; \
         /status polled every {} ms on a keep-alive connection; 'api' = PATCH round trip; \
         'wrong' = new hash but not the asked-for backends; 'jumps' = version moved by more than 1)",
        args.warmup,
        args.gap_ms,
        POLL_EVERY.as_millis()
    );
    let d = |name: &str| metric_sum(&m1, name) - metric_sum(&m0, name);
    let changes = results
        .iter()
        .map(|s| s.latencies.len() + s.misses)
        .sum::<usize>()
        + results.len() * args.warmup;
    let renders = d("halo_controller_render_seconds_count");
    let pushes = d("halo_controller_push_latency_seconds_count");
    let push_buckets = bucket_delta(
        &buckets(&m1, "halo_controller_push_latency_seconds"),
        &buckets(&m0, "halo_controller_push_latency_seconds"),
    );
    let render_buckets = bucket_delta(
        &buckets(&m1, "halo_controller_render_seconds"),
        &buckets(&m0, "halo_controller_render_seconds"),
    );
    println!(
        "  controller during the {changes} changes (warm-ups included): {renders} renders (mean {:.2} ms, max <= {} ms), \
         {pushes} pushes (render -> written to the stream: mean {:.2} ms, p50 <= {} ms, max <= {} ms), \
         {} LoadBalancer status reconciles, {} reconcile errors",
        d("halo_controller_render_seconds_sum") / renders * 1e3,
        bucket_quantile(&render_buckets, 1.0) * 1e3,
        d("halo_controller_push_latency_seconds_sum") / pushes * 1e3,
        bucket_quantile(&push_buckets, 0.5) * 1e3,
        bucket_quantile(&push_buckets, 1.0) * 1e3,
        d("halo_controller_reconciles_total{kind=\"LoadBalancer\"}"),
        d("halo_controller_reconcile_errors_total"),
    );
    println!(
        "  idle {IDLE_SECS} s afterwards (after 3 s to settle): {} renders, {} LoadBalancer reconciles, {} pushes, \
         data plane version {v_before} -> {v_after}; front still serves: {} from {:?}",
        metric_sum(&after, "halo_controller_renders_total")
            - metric_sum(&before, "halo_controller_renders_total"),
        metric_sum(
            &after,
            "halo_controller_reconciles_total{kind=\"LoadBalancer\"}"
        ) - metric_sum(
            &before,
            "halo_controller_reconciles_total{kind=\"LoadBalancer\"}"
        ),
        metric_sum(&after, "halo_controller_pushes_total")
            - metric_sum(&before, "halo_controller_pushes_total"),
        last.status,
        last.backend,
    );
    let ctl_log = cluster.log("ctl-1");
    let dp_log = cluster.log("dp-node-a");
    summarize_log("controller log", &ctl_log);
    summarize_log("data plane log", &dp_log);
    if let Some(s) = controller.exited() {
        println!("  !! the controller exited: {s}");
    }
    if let Some(s) = dp.exited() {
        println!("  !! the data plane exited: {s}");
    }
    let total_misses: usize = results.iter().map(|s| s.misses).sum();
    drop(dp);
    drop(controller);
    drop(b1);
    drop(b2);
    cluster.keep(args.keep || total_misses > 0);
    Ok(())
}

/// Counts WARN/ERROR lines of a log and shows a few distinct messages.
fn summarize_log(what: &str, log: &str) {
    let strip = |l: &str| -> String {
        // Drop the timestamp (first field) so repeats group together.
        l.split_once(' ').map_or(l, |(_, r)| r).trim().to_string()
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for l in log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
    {
        let msg: String = strip(l).chars().take(200).collect();
        *seen.entry(msg).or_default() += 1;
    }
    let total: usize = seen.values().sum();
    println!(
        "  {what}: {} lines, {total} WARN/ERROR",
        log.lines().count()
    );
    for (msg, n) in seen.iter().take(6) {
        println!("     {n:>4} x {msg}");
    }
}

// ---------------------------------------------------------------------------------------
// Render at scale.

struct ScaleSet {
    namespaces: Vec<Value>,
    nodes: Vec<Value>,
    vips: Vec<Value>,
    services: Vec<Value>,
    slices: Vec<Value>,
    lbs: Vec<Value>,
}

/// The synthetic objects, one at a time.
struct Gen<'a>(&'a Args);

impl Gen<'_> {
    fn ns(&self, i: usize) -> String {
        format!("bench-{:02}", i % self.0.namespaces.max(1))
    }

    fn namespace(&self, i: usize) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns(i)}})
    }

    fn node(&self, i: usize) -> Value {
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": format!("node-{i}"), "labels": {"kubernetes.io/hostname": format!("node-{i}")}},
               "status": {"addresses": [{"type": "InternalIP", "address": format!("192.0.2.{}", 10 + i)}]}})
    }

    fn vip(&self, j: usize) -> Value {
        json!({"apiVersion": "halo.dev/v1alpha1", "kind": "VirtualIP",
               "metadata": {"name": format!("vip-{j:02}")},
               "spec": {"addresses": [format!("198.51.100.{}/24", 10 + j)]}})
    }

    fn service(&self, i: usize) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": format!("svc-{i:04}"), "namespace": self.ns(i)},
               "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
    }

    fn slice(&self, i: usize) -> Value {
        let svc = format!("svc-{i:04}");
        let endpoints: Vec<Value> = (0..self.0.endpoints)
            .map(|k| {
                json!({"addresses": [format!("10.{}.{}.{}", (i / 250) % 250, i % 250, k + 1)],
                       "conditions": {"ready": true, "serving": true, "terminating": false},
                       "nodeName": format!("node-{}", k % self.0.nodes.max(1)),
                       "targetRef": {"kind": "Pod", "name": format!("{svc}-pod-{k}"), "namespace": self.ns(i)}})
            })
            .collect();
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": format!("{svc}-1"), "namespace": self.ns(i), "labels": {"kubernetes.io/service-name": svc}},
               "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": endpoints})
    }

    /// Listener ports are unique per VirtualIP: LoadBalancer i is on VirtualIP i % vips.
    fn lb(&self, i: usize) -> Value {
        let vips = self.0.vips.max(1);
        json!({"apiVersion": "halo.dev/v1alpha1", "kind": "LoadBalancer",
               "metadata": {"name": format!("lb-{i:04}"), "namespace": self.ns(i)},
               "spec": {"virtualIP": format!("vip-{:02}", i % vips),
                        "listeners": [{"name": "http", "port": 10000 + i / vips, "protocol": "HTTP",
                                       "backends": [{"service": {"name": format!("svc-{i:04}"), "port": 80}}]}]}})
    }
}

fn scale_set(args: &Args) -> ScaleSet {
    let g = Gen(args);
    ScaleSet {
        namespaces: (0..args.namespaces.max(1))
            .map(|i| g.namespace(i))
            .collect(),
        nodes: (0..args.nodes).map(|i| g.node(i)).collect(),
        vips: (0..args.vips).map(|j| g.vip(j)).collect(),
        services: (0..args.lbs).map(|i| g.service(i)).collect(),
        slices: (0..args.lbs).map(|i| g.slice(i)).collect(),
        lbs: (0..args.lbs).map(|i| g.lb(i)).collect(),
    }
}

/// `n` objects made by `make`, each decoded from its JSON as soon as it is made.
fn typed<T: serde::de::DeserializeOwned>(
    n: usize,
    make: impl Fn(usize) -> Value,
) -> Result<Vec<T>> {
    (0..n)
        .map(|i| serde_json::from_value(make(i)).context("synthetic object"))
        .collect()
}

/// Hands freed heap back to the kernel, so RSS shows what is still allocated.
fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own heap; no pointer of ours is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn render_in_memory(args: &Args) -> Result<()> {
    println!(
        "== render in memory: halo_controller::reconcile::render_world, {} nodes, {} VirtualIPs, \
         {} LoadBalancers x 1 HTTP listener x {} ready endpoints ({} namespaces)",
        args.nodes, args.vips, args.lbs, args.endpoints, args.namespaces
    );
    let rss0 = proc_kb("self", "VmRSS");
    let hwm0 = proc_kb("self", "VmHWM");

    let t = Instant::now();
    let g = Gen(args);
    let vips: Vec<Arc<VirtualIP>> = typed(args.vips, |j| g.vip(j))?
        .into_iter()
        .map(Arc::new)
        .collect();
    let lbs: Vec<Arc<LoadBalancer>> = typed(args.lbs, |i| g.lb(i))?
        .into_iter()
        .map(Arc::new)
        .collect();
    let services: Vec<Service> = typed(args.lbs, |i| g.service(i))?;
    let slices: Vec<EndpointSlice> = typed(args.lbs, |i| g.slice(i))?;
    let nodes: Vec<Node> = typed(args.nodes, |i| g.node(i))?;
    let build = t.elapsed();
    trim_heap();
    let rss1 = proc_kb("self", "VmRSS");
    let hwm1 = proc_kb("self", "VmHWM");
    let secrets: Vec<Secret> = Vec::new();
    let service_refs: Vec<&Service> = services.iter().collect();
    let slice_refs: Vec<&EndpointSlice> = slices.iter().collect();
    let node_refs: Vec<&Node> = nodes.iter().collect();
    let secret_refs: Vec<&Secret> = secrets.iter().collect();

    // Endpoint resolution alone (the first step of every render).
    let mut resolve = Vec::new();
    for _ in 0..args.renders {
        let t = Instant::now();
        let eps = halo_controller::world::resolve_endpoints(&service_refs, &slice_refs);
        resolve.push(ms(t.elapsed()));
        drop(eps);
    }

    trim_heap();
    let hwm_reset = reset_hwm();
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut shape = String::new();
    let mut seal = Vec::new();
    for r in 0..args.renders {
        let t = Instant::now();
        let c0 = thread_cpu();
        let outcome = halo_controller::reconcile::render_world(
            &halo_controller::reconcile::World {
                vips: &vips,
                lbs: &lbs,
                services: &service_refs,
                slices: &slice_refs,
                nodes: &node_refs,
                secrets: &secret_refs,
                material: &halo_crds::render::Material::new(),
                options: Default::default(),
            },
            (1, 255),
        );
        times.push(ms(t.elapsed()));
        cpu.push(ms(thread_cpu() - c0));
        if r == 0 {
            let problems: usize = outcome.problems.values().map(Vec::len).sum();
            let mut per_node = Vec::new();
            for (node, c) in &outcome.configs {
                let backends: usize = c
                    .listeners
                    .iter()
                    .map(|l| l.groups.iter().map(|g| g.backends.len()).sum::<usize>())
                    .sum();
                let bytes = serde_json::to_vec(c).map_or(0, |b| b.len());
                per_node.push(format!(
                    "{node}: {} vips, {} listeners, {backends} backends, {:.1} MiB JSON",
                    c.vips.len(),
                    c.listeners.len(),
                    bytes as f64 / (1024.0 * 1024.0)
                ));
            }
            shape = format!(
                "{} node configs [{}]; {problems} problems{}",
                outcome.configs.len(),
                per_node.join("; "),
                outcome
                    .problems
                    .iter()
                    .next()
                    .map(|(o, p)| format!(", e.g. {o}: {p:?}"))
                    .unwrap_or_default()
            );
            // What the stream does per push: clone and seal (hash) one node's config.
            if let Some(c) = outcome.configs.values().next() {
                for _ in 0..args.renders {
                    let t = Instant::now();
                    let sealed = c.clone().sealed(7);
                    seal.push(ms(t.elapsed()));
                    drop(sealed);
                }
            }
        }
        drop(outcome);
    }
    let hwm2 = proc_kb("self", "VmHWM");
    let kept = render_after_one_change(args, &vips, &lbs, &service_refs, slices, &node_refs);
    trim_heap();
    let rss2 = proc_kb("self", "VmRSS");

    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "  objects built (from JSON, as the watch decodes them) in {:.0} ms",
        ms(build)
    );
    println!(
        "  full render_world: {} runs, min {:.1} ms, median {:.1} ms, max {:.1} ms   [goal < 1000 ms]",
        times.len(),
        min,
        median(&times),
        times.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "    CPU time of the rendering thread: min {:.1} ms, median {:.1} ms (load average {})",
        cpu.iter().copied().fold(f64::INFINITY, f64::min),
        median(&cpu),
        loadavg()
    );
    println!(
        "    of which resolve_endpoints: min {:.1} ms, median {:.1} ms; clone+seal of one node's config (per push): median {:.1} ms",
        resolve.iter().copied().fold(f64::INFINITY, f64::min),
        median(&resolve),
        median(&seal)
    );
    println!(
        "  render after one endpoint change, LoadBalancer renders kept between passes (as the controller does): \
         min {:.1} ms, median {:.1} ms, max {:.1} ms; {} renders reused, {} made",
        kept.times.iter().copied().fold(f64::INFINITY, f64::min),
        median(&kept.times),
        kept.times.iter().copied().fold(0.0, f64::max),
        kept.reused,
        kept.made
    );
    println!("  output: {shape}");
    println!(
        "  memory (this process): start RSS {} (VmHWM {}); objects built: RSS {} (VmHWM {} during the build)",
        mib(rss0),
        mib(hwm0),
        mib(rss1),
        mib(hwm1)
    );
    println!(
        "    peak while rendering (VmHWM {}): {}; RSS after the renders (objects still held) {}   [goal < 200 MiB]",
        if hwm_reset {
            "reset after the build"
        } else {
            "not resettable, whole run"
        },
        mib(hwm2),
        mib(rss2)
    );
    Ok(())
}

/// What `render_after_one_change` measured.
struct KeptRenders {
    times: Vec<f64>,
    reused: u64,
    made: u64,
}

/// Renders once to fill a kept memo, then flips one endpoint's readiness per pass (a
/// different Service each time) and times each render after it.
fn render_after_one_change(
    args: &Args,
    vips: &[Arc<VirtualIP>],
    lbs: &[Arc<LoadBalancer>],
    services: &[&Service],
    mut slices: Vec<EndpointSlice>,
    nodes: &[&Node],
) -> KeptRenders {
    let mut memo = halo_controller::reconcile::RenderCache::default();
    let material = halo_crds::render::Material::new();
    // Versioned as the API server versions them, so kept endpoints can be reused.
    let services: Vec<Service> = services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut s = (*s).clone();
            s.metadata.uid = Some(format!("svc-{i}"));
            s.metadata.resource_version = Some("1".into());
            s
        })
        .collect();
    let services: Vec<&Service> = services.iter().collect();
    for (i, s) in slices.iter_mut().enumerate() {
        s.metadata.uid = Some(format!("slice-{i}"));
        s.metadata.resource_version = Some("1".into());
    }
    let mut times = Vec::new();
    for r in 0..=args.renders {
        if r > 0 {
            let i = (r * 7919) % slices.len().max(1);
            if let Some(slice) = slices.get_mut(i) {
                slice.metadata.resource_version = Some(format!("{}", r + 1));
                if let Some(ep) = slice.endpoints.first_mut() {
                    let c = ep.conditions.get_or_insert_with(Default::default);
                    c.ready = Some(!c.ready.unwrap_or(true));
                }
            }
        }
        let slice_refs: Vec<&EndpointSlice> = slices.iter().collect();
        let t = Instant::now();
        let outcome = halo_controller::reconcile::render_world_with(
            &halo_controller::reconcile::World {
                vips,
                lbs,
                services: &services,
                slices: &slice_refs,
                nodes,
                secrets: &[],
                material: &material,
                options: Default::default(),
            },
            (1, 255),
            &mut memo,
        );
        if r > 0 {
            times.push(ms(t.elapsed()));
        }
        drop(outcome);
    }
    let (reused, made) = memo.memo.counts();
    KeptRenders {
        times,
        reused,
        made,
    }
}

/// Server-side applies `objects` (all of one kind) with at most `concurrency` in flight.
async fn apply_bulk(
    client: &Client,
    ar: &ApiResource,
    objects: &[Value],
    concurrency: usize,
) -> Result<Duration> {
    let start = Instant::now();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut set = tokio::task::JoinSet::new();
    for obj in objects {
        while set.len() >= concurrency.max(1) {
            if let Some(r) = set.join_next().await {
                r??;
            }
        }
        let name = obj["metadata"]["name"]
            .as_str()
            .context("object without a name")?
            .to_string();
        let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
            None => Api::all_with(client.clone(), ar),
        };
        let obj = obj.clone();
        let params = params.clone();
        set.spawn(async move {
            api.patch(&name, &params, &Patch::Apply(&obj))
                .await
                .map(|_| ())
                .with_context(|| format!("apply {name}"))
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(start.elapsed())
}

struct Snapshot {
    at: Duration,
    renders: f64,
    lb_reconciles: f64,
    vip_reconciles: f64,
    /// Status patches written (of every kind).
    patches: f64,
    errors: f64,
    render_sum: f64,
    render_count: f64,
    buckets: Vec<(f64, f64)>,
}

fn snapshot(text: &str, at: Duration) -> Snapshot {
    Snapshot {
        at,
        renders: metric(text, "halo_controller_renders_total").unwrap_or(0.0),
        lb_reconciles: metric_sum(
            text,
            "halo_controller_reconciles_total{kind=\"LoadBalancer\"}",
        ),
        vip_reconciles: metric_sum(text, "halo_controller_reconciles_total{kind=\"VirtualIP\"}"),
        patches: metric_sum(text, "halo_controller_status_patches_total"),
        errors: metric_sum(text, "halo_controller_reconcile_errors_total"),
        render_sum: metric(text, "halo_controller_render_seconds_sum").unwrap_or(0.0),
        render_count: metric(text, "halo_controller_render_seconds_count").unwrap_or(0.0),
        buckets: buckets(text, "halo_controller_render_seconds"),
    }
}

fn render_real(rt: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    println!(
        "== render in the real controller: the same objects in a real API server, read by halo-controller"
    );
    let set = scale_set(args);
    let nodes: Vec<(String, String)> = set
        .nodes
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                n["status"]["addresses"][0]["address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let started = Instant::now();
    let mut cluster = Cluster::start_with("bench-scale", &nodes, false)?;
    cluster.keep(true);
    eprintln!(
        "   control plane up in {:.1}s ({})",
        started.elapsed().as_secs_f64(),
        cluster.dir.display()
    );
    let client = rt.block_on(kube_client(&cluster))?;
    let c = args.apply_concurrency;
    let mut load = Vec::new();
    for (what, ar, objects) in [
        (
            "Namespaces",
            ApiResource::erase::<Namespace>(&()),
            &set.namespaces,
        ),
        (
            "VirtualIPs",
            ApiResource::erase::<VirtualIP>(&()),
            &set.vips,
        ),
        (
            "Services",
            ApiResource::erase::<Service>(&()),
            &set.services,
        ),
        (
            "EndpointSlices",
            ApiResource::erase::<EndpointSlice>(&()),
            &set.slices,
        ),
        (
            "LoadBalancers",
            ApiResource::erase::<LoadBalancer>(&()),
            &set.lbs,
        ),
    ] {
        let took = rt.block_on(apply_bulk(&client, &ar, objects, c))?;
        load.push(format!(
            "{} {what} {:.1}s",
            objects.len(),
            took.as_secs_f64()
        ));
    }
    println!(
        "  loaded by server-side apply ({c} in flight): {}",
        load.join(", ")
    );
    drop(set);

    // The controller starts on the full set: list, first full render, then status for all.
    let (stream_port, metrics_port) = (free_port()?, free_port()?);
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let t0 = Instant::now();
    let mut controller = cluster.controller("ctl-scale", stream_port, metrics_port)?;
    let pid = controller.pid().to_string();
    let mut first = None;
    while t0.elapsed() < Duration::from_secs(180) {
        if let Some(text) = metrics_text(metrics_addr) {
            first = Some(snapshot(&text, t0.elapsed()));
            break;
        }
        if let Some(s) = controller.exited() {
            bail!(
                "the controller exited with {s}:\n{}",
                cluster.log("ctl-scale")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = first.with_context(|| {
        format!(
            "the controller did not answer /metrics within 180s:\n{}",
            cluster.log("ctl-scale")
        )
    })?;
    let hwm_first = proc_kb(&pid, "VmHWM");
    println!(
        "  started -> /metrics answers (watches listed, first render done) in {:.2}s; renders so far {}, \
         render_seconds sum {:.3}s over {} (first full render(s) <= {:.3}s per the buckets); VmHWM {}",
        first.at.as_secs_f64(),
        first.renders,
        first.render_sum,
        first.render_count,
        bucket_quantile(&first.buckets, 1.0),
        mib(hwm_first)
    );

    // Then it settles: status for every object, each patch a watch event, each event a
    // render, each render a trigger of every status reconciler. Wait until the renders and
    // reconciles stop for 10 s (at most 300 s).
    let mut last = first;
    let mut still = Duration::ZERO;
    let mut timeline = Vec::new();
    let settle_limit = Duration::from_secs(300);
    while t0.elapsed() < settle_limit && still < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_secs(1));
        let Some(text) = metrics_text(metrics_addr) else {
            if let Some(s) = controller.exited() {
                bail!(
                    "the controller exited with {s}:\n{}",
                    cluster.log("ctl-scale")
                );
            }
            continue;
        };
        let s = snapshot(&text, t0.elapsed());
        if s.renders == last.renders && s.lb_reconciles == last.lb_reconciles {
            still += s.at - last.at;
        } else {
            still = Duration::ZERO;
        }
        if timeline.len() < 400 {
            timeline.push(format!(
                "{:>5.1}s renders {:>5} LB reconciles {:>7} VmRSS {}",
                s.at.as_secs_f64(),
                s.renders,
                s.lb_reconciles,
                mib(proc_kb(&pid, "VmRSS"))
            ));
        }
        last = s;
    }
    let settled = still >= Duration::from_secs(10);
    let hwm_settled = proc_kb(&pid, "VmHWM");
    let rss_settled = proc_kb(&pid, "VmRSS");
    let with_status = rt.block_on(async {
        let api: Api<LoadBalancer> = Api::all(client.clone());
        api.list(&Default::default()).await.map(|l| {
            l.items
                .iter()
                .filter(|lb| lb.status.as_ref().is_some_and(|s| !s.conditions.is_empty()))
                .count()
        })
    })?;
    println!(
        "  {} after {:.1}s: {} renders, render_seconds mean {:.1} ms (sum {:.2}s / {}), p50 <= {:.3}s, max <= {:.3}s (bucket bounds); \
         {} LoadBalancer + {} VirtualIP status reconciles, {} reconcile errors; {with_status}/{} LoadBalancers have status",
        if settled {
            "settled (10 s without a render)"
        } else {
            "NOT settled"
        },
        last.at.as_secs_f64(),
        last.renders,
        last.render_sum / last.render_count * 1e3,
        last.render_sum,
        last.render_count,
        bucket_quantile(&last.buckets, 0.5),
        bucket_quantile(&last.buckets, 1.0),
        last.lb_reconciles,
        last.vip_reconciles,
        last.errors,
        args.lbs,
    );
    println!(
        "  controller memory: VmHWM {} (peak), VmRSS {} now   [goal < 200 MiB]; controller CPU {:.1} s so far; load average {}",
        mib(hwm_settled),
        mib(rss_settled),
        proc_cpu(&pid),
        loadavg()
    );

    // What the watches hand the controller: objects with their managedFields.
    let sizes = rt.block_on(async {
        let mut out = Vec::new();
        for (what, ar, name) in [
            (
                "EndpointSlice",
                ApiResource::erase::<EndpointSlice>(&()),
                "svc-0001-1",
            ),
            (
                "LoadBalancer",
                ApiResource::erase::<LoadBalancer>(&()),
                "lb-0001",
            ),
        ] {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "bench-01", &ar);
            let mut obj = serde_json::to_value(api.get(name).await?)?;
            let full = obj.to_string().len();
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            out.push(format!(
                "{what} {full} bytes of JSON, {} without metadata.managedFields",
                obj.to_string().len()
            ));
        }
        anyhow::Ok(out)
    })?;
    println!("  one object as watched: {}", sizes.join("; "));

    // Single changes at scale, each once the previous one has settled: an endpoint of one
    // Service turns (not) ready. What the render takes, and what follows it.
    let slice_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "bench-00",
        &ApiResource::erase::<EndpointSlice>(&()),
    );
    let apiserver = cluster
        .cp
        .pids()
        .into_iter()
        .find(|(n, _)| *n == "kube-apiserver")
        .map(|(_, p)| p.to_string())
        .unwrap_or_default();
    wait_quiet(
        metrics_addr,
        Duration::from_secs(2),
        Duration::from_secs(120),
    );
    let (c0, a0) = (proc_cpu(&pid), proc_cpu(&apiserver));
    std::thread::sleep(Duration::from_secs(5));
    let (idle_ctl, idle_api) = (proc_cpu(&pid) - c0, proc_cpu(&apiserver) - a0);
    let mut rows = Vec::new();
    for n in 0..SCALE_CHANGES {
        wait_quiet(
            metrics_addr,
            Duration::from_secs(2),
            Duration::from_secs(120),
        );
        let before = snapshot(
            &metrics_text(metrics_addr).unwrap_or_default(),
            t0.elapsed(),
        );
        let (ctl_cpu0, api_cpu0) = (proc_cpu(&pid), proc_cpu(&apiserver));
        let patch = json!({"endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": n % 2 == 1},
                                          "targetRef": {"kind": "Pod", "name": "svc-0000-pod-0", "namespace": "bench-00"}}]});
        let t = Instant::now();
        rt.block_on(slice_api.patch("svc-0000-1", &PatchParams::default(), &Patch::Merge(&patch)))?;
        let rendered = wait_for(Duration::from_secs(30), Duration::from_millis(5), || {
            metrics_text(metrics_addr)
                .is_some_and(|m| snapshot(&m, t0.elapsed()).render_count > before.render_count)
        });
        let to_render = t.elapsed();
        let quiet = wait_quiet(
            metrics_addr,
            Duration::from_secs(2),
            Duration::from_secs(120),
        );
        let window = t.elapsed().as_secs_f64();
        let after = snapshot(
            &metrics_text(metrics_addr).unwrap_or_default(),
            t0.elapsed(),
        );
        let renders = after.render_count - before.render_count;
        rows.push((
            (after.render_sum - before.render_sum) / renders.max(1.0) * 1e3,
            renders,
            ms(to_render),
            after.lb_reconciles - before.lb_reconciles,
            after.patches - before.patches,
            window,
            proc_cpu(&pid) - ctl_cpu0,
            proc_cpu(&apiserver) - api_cpu0,
        ));
        if !rendered || !quiet {
            eprintln!("   change {n} at scale: rendered {rendered}, quiet again {quiet}");
        }
    }
    println!(
        "  {SCALE_CHANGES} single EndpointSlice changes at scale, each after the previous settled:"
    );
    println!(
        "    {:>9} {:>7} {:>14} {:>13} {:>8} {:>11} {:>12} {:>13}",
        "render ms",
        "renders",
        "PATCH->render",
        "LB statuses",
        "patches",
        "window s",
        "ctl CPU s",
        "apiserver CPU s"
    );
    println!(
        "    (window = from the PATCH until renders and reconciles were still for 2 s; CPU over that window; \
         idle baseline over 5 s: controller {:.2} s, apiserver {:.2} s)",
        idle_ctl, idle_api
    );
    for r in &rows {
        println!(
            "    {:>9.1} {:>7} {:>11.0} ms {:>13} {:>8} {:>11.1} {:>12.2} {:>13.2}",
            r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7
        );
    }
    let mut to_render: Vec<f64> = rows.iter().map(|r| r.2).collect();
    to_render.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let i = ((to_render.len() as f64 - 1.0) * q).round() as usize;
        to_render.get(i).copied().unwrap_or(0.0)
    };
    println!(
        "    PATCH->render over {} changes: p50 {:.0} ms, p99 {:.0} ms   [goal < 50 ms]",
        to_render.len(),
        pick(0.5),
        pick(0.99)
    );
    println!(
        "  controller memory at the end: VmHWM {}, VmRSS {}; controller CPU {:.1} s in all",
        mib(proc_kb(&pid, "VmHWM")),
        mib(proc_kb(&pid, "VmRSS")),
        proc_cpu(&pid)
    );
    eprintln!("   settling timeline (every ~1 s):");
    for line in timeline.iter().step_by(5) {
        eprintln!("     {line}");
    }
    summarize_log("controller log", &cluster.log("ctl-scale"));
    if let Some(s) = controller.exited() {
        println!("  !! the controller exited: {s}");
    }
    drop(controller);
    cluster.keep(args.keep || !settled);
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let render = args.scenario == "render" || args.scenario == "all";
    let propagate = args.scenario == "propagation" || args.scenario == "all";
    // In-memory render first: the process is fresh, so its peak RSS is the render's.
    if render {
        render_in_memory(&args)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if propagate {
        propagation(&rt, &args)?;
    }
    if render && !args.skip_real_controller {
        render_real(&rt, &args)?;
    }
    Ok(())
}
