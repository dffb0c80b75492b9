//! Failover benchmark (root only): the outage a client sees while probing a VIP every
//! 10 ms, for a pair of Halo data planes next to a pair of keepalived instances, when
//! the master crashes (SIGKILL), loses its link, or stops gracefully (SIGTERM); plus a
//! planned handover (`POST /vrrp/<vip>/takeover`) for Halo. Run through
//! `tests/bench/failover.sh`, which builds release binaries first.
//!
//! Every keepalived node also runs a proxy-only Halo data plane listening on the VIP
//! (IP_FREEBIND), so both pairs serve the same backends through the same proxy. A crash
//! kills everything on the node that serves (Halo; keepalived and its proxy) and leaves
//! the VIP on the interface, as a dead process does. All traffic stays inside the lab's
//! network namespaces.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use halo_tests::keepalived::{self, Conf};
use halo_tests::netns;
use halo_tests::probe::Summary;
use halo_tests::site::{LbDoc, Site, VIP, VipDoc, manifest, outage_ms, proxy_only_yaml};

#[derive(Parser)]
#[command(
    name = "halo-bench-failover",
    about = "Client-visible failover outage: Halo pair vs keepalived pair"
)]
struct Args {
    /// Repetitions per row.
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// Advertisement intervals in ms (10 ms steps, 10-1000).
    #[arg(long, value_delimiter = ',', default_values_t = [100u32, 10])]
    intervals: Vec<u32>,
    /// Scenarios: crash, link-down, graceful, handover (Halo only).
    #[arg(long, value_delimiter = ',', default_values_t = ["crash".to_string(), "link-down".to_string(), "graceful".to_string(), "handover".to_string()])]
    scenarios: Vec<String>,
    /// Implementations: halo, keepalived.
    #[arg(long, value_delimiter = ',', default_values_t = ["halo".to_string(), "keepalived".to_string()])]
    impls: Vec<String>,
    /// Per-probe timeout: the resolution of a failure that is a silent drop.
    #[arg(long, default_value = "25ms")]
    probe_timeout: String,
}

const A: usize = 0;
const B: usize = 1;
const SETTLE: Duration = Duration::from_millis(600);
/// When the fault is injected, after the probe starts (plus a random part of an
/// advertisement interval, so the fault does not always land at the same point of the
/// master's advert cycle).
const TRIGGER: Duration = Duration::from_millis(500);

/// A pseudo-random number below `n` (no rand crate needed for a jitter).
fn jitter_ms(n: u32) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // One xorshift round on the clock's nanoseconds.
    let mut x = u64::from(nanos) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x % u64::from(n.max(1))
}

/// Set by SIGINT/SIGTERM: finish the current repetition, clean up, print what we have.
fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("stopping after this repetition (cleaning up the lab)");
            set.store(true, Ordering::SeqCst);
        });
    });
    flag
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Halo,
    Keepalived,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Halo => "halo",
            Impl::Keepalived => "keepalived",
        }
    }
}

#[derive(Default, Clone, Debug)]
struct Row {
    /// Outage per rep; `None`: the client was still failing when the probe ended.
    outages: Vec<Option<u64>>,
    failed: Vec<u32>,
    notes: Vec<String>,
}

struct Bench {
    site: Site,
    kind: Impl,
    interval_ms: u32,
    halo_yaml: String,
    conf: [Conf; 2],
    timeout: String,
    arp_flushes: u32,
}

impl Bench {
    fn new(kind: Impl, interval_ms: u32, timeout: &str) -> Result<Self> {
        let label = format!(
            "bf{}{interval_ms}",
            if kind == Impl::Halo { "h" } else { "k" }
        );
        let site = Site::new(&label, &["node-a", "node-b"])?;
        let halo_yaml = manifest(&[
            VipDoc::new("web", VIP, 42)
                .interval(&format!("{interval_ms}ms"))
                .priority("node-a", 150)
                .priority("node-b", 100)
                .yaml(),
            LbDoc::on_vip("web", "web").yaml(),
        ]);
        let advert_int = format!("{}", f64::from(interval_ms) / 1000.0);
        let vip = format!("{VIP}/24");
        let conf = [
            Conf::v3(42, 150, &advert_int, &vip),
            Conf::v3(42, 100, &advert_int, &vip),
        ];
        let mut bench = Self {
            site,
            kind,
            interval_ms,
            halo_yaml,
            conf,
            timeout: timeout.to_string(),
            arp_flushes: 0,
        };
        bench.start_node(B)?;
        bench.start_node(A)?;
        Ok(bench)
    }

    fn start_node(&mut self, i: usize) -> Result<()> {
        match self.kind {
            Impl::Halo => {
                self.site.start_healthy(i, &self.halo_yaml)?;
            }
            Impl::Keepalived => {
                if self.site.dataplanes[i].is_none() {
                    self.site.start_healthy(i, &proxy_only_yaml(&[VIP]))?;
                }
                let conf = self.conf[i].clone();
                self.site.start_keepalived(i, &conf)?;
            }
        }
        Ok(())
    }

    /// node-a holds the VIP alone and the client reaches it without failures.
    fn ensure_primary(&mut self) -> Result<()> {
        if !self.site.wait_master(A, Duration::from_secs(10)) {
            bail!(
                "node-a did not become the only master:\n{}",
                self.site.debug()
            );
        }
        std::thread::sleep(SETTLE);
        for attempt in 0..3 {
            let s = self.site.probe_addr(VIP, "300ms", &self.timeout)?;
            if s.answered() == ["node-a"] && s.failed == 0 {
                return Ok(());
            }
            eprintln!(
                "  pre-check {attempt}: client not settled on node-a ({:?}, {} failed); flushing its ARP cache",
                s.answered(),
                s.failed
            );
            self.site.flush_client_arp()?;
            self.arp_flushes += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("client cannot settle on node-a:\n{}", self.site.debug())
    }

    fn probe_duration(&self) -> &'static str {
        if self.interval_ms >= 50 {
            "3s"
        } else {
            "1500ms"
        }
    }

    fn run(&mut self, scenario: &str) -> Result<Summary> {
        self.ensure_primary()?;
        let prober = self
            .site
            .probe_background(VIP, self.probe_duration(), &self.timeout)?;
        std::thread::sleep(TRIGGER + Duration::from_millis(jitter_ms(self.interval_ms)));
        match (scenario, self.kind) {
            ("crash", Impl::Halo) => self.site.stop(A, "KILL")?,
            ("crash", Impl::Keepalived) => {
                // The node dies as a whole: its proxy and keepalived at the same moment
                // (the proxy first, or it would serve on until the backup took over).
                let proxy = self.site.dataplanes[A]
                    .take()
                    .context("proxy not running")?;
                self.site.lab.signal(proxy, "KILL")?;
                self.site.crash_keepalived(A)?;
                self.site.lab.wait_exit(proxy, Duration::from_secs(5))?;
            }
            ("link-down", _) => self.site.lab.set_link(&self.site.nodes[A], false)?,
            ("graceful", Impl::Halo) => self.site.stop(A, "TERM")?,
            ("graceful", Impl::Keepalived) => self.site.stop_keepalived(A)?,
            ("handover", Impl::Halo) => {
                let (code, body) = self.site.admin(B, "POST", "/vrrp/web/takeover")?;
                if !(200..300).contains(&code) {
                    let _ = prober.join();
                    bail!("takeover answered {code}: {body}");
                }
            }
            (s, k) => bail!("no scenario {s} for {k:?}"),
        }
        let summary = prober.join()?;
        // Put node-a back as master.
        match scenario {
            "crash" | "graceful" => self.start_node(A)?,
            "link-down" => self.site.lab.set_link(&self.site.nodes[A], true)?,
            "handover" => {
                std::thread::sleep(Duration::from_millis(300));
                let (code, body) = self.site.admin(A, "POST", "/vrrp/web/takeover")?;
                if !(200..300).contains(&code) {
                    bail!("takeover back answered {code}: {body}");
                }
            }
            _ => {}
        }
        Ok(summary)
    }
}

fn median(v: &mut [u64]) -> Option<u64> {
    v.sort_unstable();
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2),
    }
}

fn fmt_opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |x| x.to_string())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let stop = stop_flag();
    if !netns::available() {
        bail!("the failover benchmark needs root and iproute2");
    }
    let impls: Vec<Impl> = args
        .impls
        .iter()
        .map(|s| match s.as_str() {
            "halo" => Ok(Impl::Halo),
            "keepalived" => Ok(Impl::Keepalived),
            other => bail!("unknown implementation {other}"),
        })
        .collect::<Result<_>>()?;
    if impls.contains(&Impl::Keepalived) && !keepalived::available() {
        bail!("keepalived is not installed");
    }
    // (scenario, interval, impl) → row
    let mut rows: Vec<(String, u32, Impl, Row)> = Vec::new();
    'all: for &interval in &args.intervals {
        for &kind in &impls {
            if stop.load(Ordering::SeqCst) {
                break 'all;
            }
            eprintln!("== {} at {interval} ms", kind.name());
            let mut bench = Bench::new(kind, interval, &args.probe_timeout)
                .with_context(|| format!("set up {} at {interval} ms", kind.name()))?;
            for scenario in &args.scenarios {
                if scenario == "handover" && kind != Impl::Halo {
                    continue;
                }
                let mut row = Row::default();
                for rep in 0..args.reps {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match bench.run(scenario) {
                        Ok(s) => {
                            let o = outage_ms(&s);
                            eprintln!(
                                "  {scenario} #{rep}: outage {} ms, {} failed, answered {:?}",
                                fmt_opt(o),
                                s.failed,
                                s.answered()
                            );
                            if o.is_none() {
                                row.notes
                                    .push(format!("rep {rep}: no recovery {:?}", s.runs));
                            }
                            row.outages.push(o);
                            row.failed.push(s.failed);
                        }
                        Err(e) => {
                            eprintln!("  {scenario} #{rep}: error: {e:#}");
                            row.notes.push(format!("rep {rep}: {e:#}"));
                            // Start over with a fresh pair.
                            bench = Bench::new(kind, interval, &args.probe_timeout)?;
                        }
                    }
                }
                rows.push((scenario.clone(), interval, kind, row));
            }
            if bench.arp_flushes > 0 {
                eprintln!(
                    "  note: the client's ARP cache had to be flushed {} times",
                    bench.arp_flushes
                );
            }
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nClient outage (ms) probing {VIP}:80 every 10 ms (probe timeout {}), {} reps",
        args.probe_timeout, args.reps
    );
    let _ = writeln!(
        out,
        "| scenario  | advert | impl       | min | median | max | failed probes (median) | halo/keepalived median |"
    );
    let _ = writeln!(
        out,
        "|-----------|--------|------------|-----|--------|-----|------------------------|------------------------|"
    );
    let stats = |row: &Row| {
        let mut v: Vec<u64> = row.outages.iter().flatten().copied().collect();
        let min = v.iter().min().copied();
        let max = v.iter().max().copied();
        let med = median(&mut v);
        let mut f: Vec<u64> = row.failed.iter().map(|&x| u64::from(x)).collect();
        (min, med, max, median(&mut f))
    };
    for (scenario, interval, kind, row) in &rows {
        let (min, med, max, failed) = stats(row);
        let ratio = if *kind == Impl::Halo {
            rows.iter()
                .find(|(s, i, k, _)| s == scenario && i == interval && *k == Impl::Keepalived)
                .and_then(|(_, _, _, r)| stats(r).1)
                .zip(med)
                .map_or("-".into(), |(k, h)| {
                    if k == 0 {
                        "-".into()
                    } else {
                        format!("{:.2}", h as f64 / k as f64)
                    }
                })
        } else {
            String::new()
        };
        let unrecovered = row.outages.iter().filter(|o| o.is_none()).count();
        let errors = row.notes.len() - unrecovered;
        let mut max_s = fmt_opt(max);
        if unrecovered > 0 {
            max_s = format!("{max_s} ({unrecovered} never recovered)");
        }
        if errors > 0 {
            max_s = format!("{max_s} ({errors} errors)");
        }
        let _ = writeln!(
            out,
            "| {scenario:<9} | {:>4}ms | {:<10} | {:>3} | {:>6} | {max_s:>3} | {:>22} | {ratio:>22} |",
            interval,
            kind.name(),
            fmt_opt(min),
            fmt_opt(med),
            fmt_opt(failed),
        );
    }
    for (scenario, interval, kind, row) in &rows {
        for n in &row.notes {
            let _ = writeln!(out, "note {scenario} {interval}ms {}: {n}", kind.name());
        }
        let raw: Vec<String> = row.outages.iter().map(|o| fmt_opt(*o)).collect();
        let _ = writeln!(
            out,
            "raw {scenario} {interval}ms {}: outages [{}] failed {:?}",
            kind.name(),
            raw.join(", "),
            row.failed
        );
    }
    print!("{out}");
    Ok(())
}
