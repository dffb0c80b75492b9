//! A VRRP site in a [`Lab`]: nodes node-a (.1), node-b (.2), ... each with a local
//! `halo-lab backend` on 127.0.0.1:8000 answering its node name, a client (.9), and per
//! node either a Halo data plane (VRRP + proxy) or keepalived (VRRP) next to a Halo data
//! plane that only proxies. Shared by the lab tests and the failover benchmark.
//!
//! Everything runs inside the lab's namespaces; the admin API of each data plane
//! (127.0.0.1:9100 in its node's namespace) is reached with `curl` run in that namespace.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::haproxy;
use crate::keepalived::{self, Keepalived};
use crate::netns::{Host, Lab};
use crate::probe::Summary;
use crate::process::binary;

pub const VIP: &str = "192.0.2.100";
pub const VIP2: &str = "192.0.2.101";
pub const ADMIN: &str = "127.0.0.1:9100";
pub const BACKEND: &str = "127.0.0.1:8000";
/// A health check that notices a dead backend in about half a second.
pub const FAST_HEALTH_CHECK: &str =
    "{type: HTTP, path: /, interval: 200ms, timeout: 150ms, fall: 2, rise: 2}";

/// Polls `f` every `step` until it is true or `limit` has passed.
pub fn wait_until(limit: Duration, step: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(step);
    }
}

// ---------------------------------------------------------------------------------
// Manifests

/// One VirtualIP document.
#[derive(Clone, Debug)]
pub struct VipDoc {
    pub name: String,
    /// Without prefix; /24 is appended.
    pub address: String,
    pub vrid: u8,
    pub version: u8,
    pub interval: String,
    pub priorities: Vec<(String, u8)>,
    /// Extra lines under `spec.vrrp`, e.g. `preempt: false`.
    pub vrrp_lines: Vec<String>,
    /// Unicast peers (node, address); non-empty means `mode: Unicast`.
    pub peers: Vec<(String, String)>,
}

impl VipDoc {
    /// VRRPv3, 100 ms adverts, on eth0.
    pub fn new(name: &str, address: &str, vrid: u8) -> Self {
        Self {
            name: name.into(),
            address: address.into(),
            vrid,
            version: 3,
            interval: "100ms".into(),
            priorities: Vec::new(),
            vrrp_lines: Vec::new(),
            peers: Vec::new(),
        }
    }

    pub fn priority(mut self, node: &str, priority: u8) -> Self {
        self.priorities.push((node.into(), priority));
        self
    }

    pub fn interval(mut self, interval: &str) -> Self {
        self.interval = interval.into();
        self
    }

    /// Adds a line under `spec.vrrp` (YAML flow style for nested values).
    pub fn vrrp(mut self, line: &str) -> Self {
        self.vrrp_lines.push(line.into());
        self
    }

    /// VRRPv2, 1 s adverts, simple password.
    pub fn v2_password(mut self, password: &str) -> Self {
        self.version = 2;
        self.interval = "1s".into();
        self.vrrp_lines.push(format!(
            "authentication: {{type: PASS, password: {password}}}"
        ));
        self
    }

    pub fn unicast(mut self, peers: &[(&str, &str)]) -> Self {
        self.peers = peers
            .iter()
            .map(|(n, a)| ((*n).into(), (*a).into()))
            .collect();
        self
    }

    pub fn yaml(&self) -> String {
        let mut s = format!(
            "apiVersion: halo.dev/v1alpha1\nkind: VirtualIP\nmetadata: {{name: {}}}\nspec:\n  addresses: [{}/24]\n  interface: eth0\n  vrrp:\n    version: {}\n    virtualRouterId: {}\n    advertisementInterval: {}\n",
            self.name, self.address, self.version, self.vrid, self.interval
        );
        if !self.peers.is_empty() {
            s.push_str("    mode: Unicast\n");
        }
        for l in &self.vrrp_lines {
            s.push_str(&format!("    {l}\n"));
        }
        if !self.priorities.is_empty() {
            s.push_str("  priorities:\n");
            for (n, p) in &self.priorities {
                s.push_str(&format!("    - {{node: {n}, priority: {p}}}\n"));
            }
        }
        if !self.peers.is_empty() {
            s.push_str("  peers:\n");
            for (n, a) in &self.peers {
                s.push_str(&format!("    - {{node: {n}, address: {a}}}\n"));
            }
        }
        s
    }
}

/// One LoadBalancer document with one HTTP listener to the node's local backend.
#[derive(Clone, Debug)]
pub struct LbDoc {
    pub name: String,
    /// `Ok(vip name)` rides on a VirtualIP; `Err(addresses)` listens on addresses it
    /// does not own (IP_FREEBIND), e.g. a VIP that keepalived moves.
    pub target: std::result::Result<String, Vec<String>>,
    pub port: u16,
    /// (name, host:port) of each static backend.
    pub backends: Vec<(String, String)>,
    pub health_check: Option<String>,
}

impl LbDoc {
    pub fn on_vip(name: &str, vip: &str) -> Self {
        Self {
            name: name.into(),
            target: Ok(vip.into()),
            port: 80,
            backends: vec![("local".into(), BACKEND.into())],
            health_check: None,
        }
    }

    pub fn on_addresses(name: &str, addresses: &[&str]) -> Self {
        Self {
            target: Err(addresses.iter().map(|a| (*a).to_string()).collect()),
            ..Self::on_vip(name, "")
        }
    }

    /// Static backends `(name, host:port)` instead of the node's local one.
    pub fn backends(mut self, backends: &[(&str, &str)]) -> Self {
        self.backends = backends
            .iter()
            .map(|(n, a)| ((*n).into(), (*a).into()))
            .collect();
        self
    }

    /// With [`FAST_HEALTH_CHECK`].
    pub fn health_checked(mut self) -> Self {
        self.health_check = Some(FAST_HEALTH_CHECK.into());
        self
    }

    pub fn yaml(&self) -> String {
        let target = match &self.target {
            Ok(vip) => format!("  virtualIP: {vip}\n"),
            Err(addrs) => format!("  addresses: [{}]\n", addrs.join(", ")),
        };
        let backends: String = self
            .backends
            .iter()
            .map(|(name, addr)| {
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "80"));
                format!("        - {{name: {name}, address: {host}, port: {port}}}\n")
            })
            .collect();
        let hc = self
            .health_check
            .as_ref()
            .map(|h| format!("      healthCheck: {h}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: {}}}\nspec:\n{target}  listeners:\n    - name: http\n      port: {}\n      protocol: HTTP\n      backends:\n{backends}{hc}",
            self.name, self.port
        )
    }
}

/// Joins documents into one multi-document manifest.
pub fn manifest(docs: &[String]) -> String {
    docs.join("---\n")
}

/// The classic site: VirtualIP `web` (VRID 42, 100 ms) on [`VIP`] with `priorities`,
/// extra `spec.vrrp` lines in `vrrp_extra` (each indented by 4 spaces, newline
/// terminated), and LoadBalancer `web` on it.
pub fn site_yaml(node_priorities: &[(&str, u8)], vrrp_extra: &str) -> String {
    let mut vip = VipDoc::new("web", VIP, 42);
    for (n, p) in node_priorities {
        vip = vip.priority(n, *p);
    }
    for l in vrrp_extra.lines().filter(|l| !l.trim().is_empty()) {
        vip = vip.vrrp(l.trim_start());
    }
    manifest(&[vip.yaml(), LbDoc::on_vip("web", "web").yaml()])
}

/// A proxy-only manifest for a node whose VIP is moved by someone else (keepalived).
pub fn proxy_only_yaml(addresses: &[&str]) -> String {
    LbDoc::on_addresses("web", addresses).yaml()
}

/// Removes ANSI colour sequences (the data plane colours its log even into a file).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Probe summaries

/// The client-visible outage: the longest gap between two answers with failures in
/// between; `None` when the probe ended (or began) failing, i.e. never recovered.
pub fn outage_ms(s: &Summary) -> Option<u64> {
    match (s.runs.first(), s.runs.last()) {
        (Some(f), Some(l)) if f.who != "-" && l.who != "-" => Some(s.longest_outage_ms),
        _ => None,
    }
}

/// A probe running in the client namespace on a thread.
pub struct Prober {
    handle: JoinHandle<Result<Summary>>,
}

impl Prober {
    pub fn join(self) -> Result<Summary> {
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
    }
}

/// A probe that runs until told to stop ([`Site::probe_step`]).
pub struct StepProbe {
    prober: Prober,
    stop: PathBuf,
}

impl StepProbe {
    /// Stops the probe and gives its summary.
    pub fn finish(self) -> Result<Summary> {
        std::fs::write(&self.stop, b"")?;
        self.prober.join()
    }
}

// ---------------------------------------------------------------------------------
// Metrics text

/// Sum of the samples of `name` whose labels include every `(key, value)` of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

// ---------------------------------------------------------------------------------
// The site

pub struct Site {
    pub lab: Lab,
    pub dir: PathBuf,
    pub nodes: Vec<Host>,
    pub client: Host,
    pub dataplanes: Vec<Option<u32>>,
    pub backends: Vec<Option<u32>>,
    pub keepaliveds: Vec<Option<Keepalived>>,
    /// Backends in their own namespaces ([`Site::add_backend_host`]): host and PID.
    pub backend_hosts: Vec<(Host, u32)>,
    pub haproxies: Vec<Option<haproxy::InLab>>,
    haproxy_runs: Vec<u32>,
    dataplane_runs: Vec<u32>,
    backend_runs: Vec<u32>,
    keepalived_runs: Vec<u32>,
}

impl Site {
    /// Nodes (.1, .2, ... in the order given), each with its backend running, and a
    /// client (.9). `label` must be short and unique among concurrently running tests.
    pub fn new(label: &str, nodes: &[&str]) -> Result<Self> {
        let mut site = Self::without_backends(label, nodes)?;
        for i in 0..site.nodes.len() {
            site.start_backend(i)?;
        }
        Ok(site)
    }

    /// Like [`Site::new`], with no backend on the nodes (their traffic goes elsewhere).
    pub fn without_backends(label: &str, nodes: &[&str]) -> Result<Self> {
        let mut lab = Lab::new(label)?;
        let dir = std::env::temp_dir().join(crate::backends::unique(&format!("halo-lab-{label}-")));
        std::fs::create_dir_all(&dir)?;
        let mut hosts = Vec::new();
        for (i, name) in nodes.iter().enumerate() {
            hosts.push(lab.add_host(name, u8::try_from(i + 1)?)?);
        }
        let client = lab.add_host("client", 9)?;
        let n = hosts.len();
        Ok(Self {
            lab,
            dir,
            nodes: hosts,
            client,
            dataplanes: vec![None; n],
            backends: vec![None; n],
            keepaliveds: (0..n).map(|_| None).collect(),
            backend_hosts: Vec::new(),
            haproxies: (0..n).map(|_| None).collect(),
            haproxy_runs: vec![0; n],
            dataplane_runs: vec![0; n],
            backend_runs: vec![0; n],
            keepalived_runs: vec![0; n],
        })
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    // --- backends ---------------------------------------------------------------

    /// Starts node `i`'s backend (answers its node name) and waits until it listens.
    pub fn start_backend(&mut self, i: usize) -> Result<u32> {
        let node = self.nodes[i].clone();
        self.backend_runs[i] += 1;
        let log = self.dir.join(format!(
            "{}-backend-{}.log",
            node.name, self.backend_runs[i]
        ));
        let pid = self.lab.spawn(
            &node,
            &binary("halo-lab")?,
            &["backend", "--listen", BACKEND, "--name", &node.name],
            &log,
        )?;
        self.backends[i] = Some(pid);
        let ok = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening"))
        });
        if !ok {
            bail!("backend on {} did not start", node.name);
        }
        Ok(pid)
    }

    /// Adds a host at 192.0.2.`index` running a backend on port 8000 of its own address
    /// that answers `name`; returns that address:port.
    pub fn add_backend_host(&mut self, name: &str, index: u8) -> Result<String> {
        let host = self.lab.add_host(name, index)?;
        let listen = format!("{}:8000", host.addr);
        let log = self.dir.join(format!("{name}-backend.log"));
        let pid = self.lab.spawn(
            &host,
            &binary("halo-lab")?,
            &["backend", "--listen", &listen, "--name", name],
            &log,
        )?;
        let ok = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening"))
        });
        if !ok {
            bail!("backend {name} did not start");
        }
        self.backend_hosts.push((host, pid));
        Ok(listen)
    }

    /// SIGKILL on node `i`'s backend.
    pub fn kill_backend(&mut self, i: usize) -> Result<()> {
        let pid = self.backends[i].take().context("backend not running")?;
        self.lab.signal(pid, "KILL")?;
        self.lab.wait_exit(pid, Duration::from_secs(5))
    }

    // --- Halo data planes --------------------------------------------------------

    fn dataplane_log_path(&self, i: usize, run: u32) -> PathBuf {
        self.dir
            .join(format!("{}-dataplane-{run}.log", self.nodes[i].name))
    }

    /// Starts `halo-dataplane run` on `yaml` in node `i`'s namespace (no wait).
    pub fn start(&mut self, i: usize, yaml: &str) -> Result<u32> {
        let config = self.dir.join(format!(
            "{}-{}.yaml",
            self.nodes[i].name,
            self.dataplane_runs[i] + 1
        ));
        std::fs::write(&config, yaml)?;
        let config_arg = config.to_string_lossy().to_string();
        self.start_run(i, &["--config", &config_arg])
    }

    /// Starts `halo-dataplane run` with `args` (a config source: `--config FILE` or
    /// `--controller URL ...`) in node `i`'s namespace, with the node's name, admin
    /// address and admin token (no wait).
    pub fn start_run(&mut self, i: usize, args: &[&str]) -> Result<u32> {
        let node = self.nodes[i].clone();
        self.dataplane_runs[i] += 1;
        let log = self.dataplane_log_path(i, self.dataplane_runs[i]);
        let token_arg = self.admin_token_path(i).to_string_lossy().to_string();
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        full.extend([
            "--node",
            &node.name,
            "--admin",
            ADMIN,
            "--admin-token-file",
            &token_arg,
        ]);
        let pid = self
            .lab
            .spawn(&node, &binary("halo-dataplane")?, &full, &log)?;
        self.dataplanes[i] = Some(pid);
        Ok(pid)
    }

    /// Starts a data plane and waits until its admin API answers /healthz.
    pub fn start_healthy(&mut self, i: usize, yaml: &str) -> Result<u32> {
        let pid = self.start(i, yaml)?;
        if !wait_until(Duration::from_secs(10), Duration::from_millis(25), || {
            self.admin(i, "GET", "/healthz")
                .is_ok_and(|(code, _)| code == 200)
        }) {
            bail!(
                "data plane on {} not healthy:\n{}",
                self.name(i),
                self.log(i)
            );
        }
        Ok(pid)
    }

    /// Replaces node `i`'s manifest with `yaml` and sends SIGHUP: the data plane reloads
    /// it (or refuses it, keeping the old one).
    pub fn reload(&self, i: usize, yaml: &str) -> Result<()> {
        let pid = self.dataplanes[i].context("data plane not running")?;
        let config = self.dir.join(format!(
            "{}-{}.yaml",
            self.nodes[i].name, self.dataplane_runs[i]
        ));
        std::fs::write(&config, yaml)?;
        self.lab.signal(pid, "HUP")
    }

    /// Sends `signal` ("KILL", "TERM") to node `i`'s data plane and waits for it to exit.
    pub fn stop(&mut self, i: usize, signal: &str) -> Result<()> {
        let pid = self.dataplanes[i]
            .take()
            .context("data plane not running")?;
        self.lab.signal(pid, signal)?;
        self.lab.wait_exit(pid, Duration::from_secs(10))
    }

    /// The current (latest) data plane log of node `i`, without colours.
    pub fn log(&self, i: usize) -> String {
        strip_ansi(
            &std::fs::read_to_string(self.dataplane_log_path(i, self.dataplane_runs[i]))
                .unwrap_or_default(),
        )
    }

    /// Every data plane log of node `i`, oldest run first.
    pub fn all_logs(&self, i: usize) -> String {
        (1..=self.dataplane_runs[i])
            .map(|r| {
                format!(
                    "[run {r}]\n{}",
                    strip_ansi(
                        &std::fs::read_to_string(self.dataplane_log_path(i, r)).unwrap_or_default()
                    )
                )
            })
            .collect()
    }

    // --- keepalived --------------------------------------------------------------

    /// Starts keepalived with `conf` in node `i`'s namespace and waits until its VRRP
    /// child runs.
    pub fn start_keepalived(&mut self, i: usize, conf: &keepalived::Conf) -> Result<()> {
        let tag = self.next_keepalived_tag(i);
        let node = self.nodes[i].clone();
        let k = Keepalived::start(&mut self.lab, &node, &self.dir, &tag, conf)?;
        self.keepalived_started(i, k)
    }

    /// Starts keepalived on node `i` with a configuration file as it stands.
    pub fn start_keepalived_file(&mut self, i: usize, conf_file: &std::path::Path) -> Result<()> {
        let tag = self.next_keepalived_tag(i);
        let node = self.nodes[i].clone();
        let k = Keepalived::start_file(&mut self.lab, &node, &self.dir, &tag, conf_file)?;
        self.keepalived_started(i, k)
    }

    fn next_keepalived_tag(&mut self, i: usize) -> String {
        if let Some(k) = self.keepaliveds[i].take() {
            k.kill_child();
        }
        self.keepalived_runs[i] += 1;
        format!(
            "{}-keepalived-{}",
            self.nodes[i].name, self.keepalived_runs[i]
        )
    }

    fn keepalived_started(&mut self, i: usize, k: Keepalived) -> Result<()> {
        k.wait_started(Duration::from_secs(10))?;
        self.keepaliveds[i] = Some(k);
        Ok(())
    }

    pub fn keepalived(&self, i: usize) -> Result<&Keepalived> {
        self.keepaliveds[i]
            .as_ref()
            .context("keepalived not running")
    }

    /// SIGKILL on keepalived's VRRP child, then its parent.
    pub fn crash_keepalived(&mut self, i: usize) -> Result<()> {
        let k = self.keepaliveds[i]
            .take()
            .context("keepalived not running")?;
        let r = k.crash(&mut self.lab);
        self.keepaliveds[i] = Some(k);
        r
    }

    /// SIGTERM on keepalived (priority 0, VIPs removed).
    pub fn stop_keepalived(&mut self, i: usize) -> Result<()> {
        let k = self.keepaliveds[i]
            .take()
            .context("keepalived not running")?;
        let r = k.stop(&mut self.lab);
        self.keepaliveds[i] = Some(k);
        r
    }

    pub fn keepalived_log(&self, i: usize) -> String {
        self.keepaliveds[i]
            .as_ref()
            .map(Keepalived::log_text)
            .unwrap_or_default()
    }

    // --- HAProxy --------------------------------------------------------------------

    /// Lets processes on node `i` bind addresses it does not hold, as sites running
    /// HAProxy on both nodes of a keepalived pair do.
    pub fn allow_nonlocal_bind(&self, i: usize) -> Result<()> {
        self.lab
            .sysctl(&self.nodes[i], "net.ipv4.ip_nonlocal_bind=1")
    }

    /// Starts HAProxy on `config` (a complete haproxy.cfg) in node `i`'s namespace and
    /// waits until it listens on every address of `binds`.
    pub fn start_haproxy(
        &mut self,
        i: usize,
        config: &str,
        binds: &[std::net::SocketAddr],
    ) -> Result<()> {
        self.haproxy_runs[i] += 1;
        let name = format!("{}-haproxy-{}", self.nodes[i].name, self.haproxy_runs[i]);
        let h = haproxy::InLab::start(&self.lab, &self.nodes[i], &self.dir, &name, config, binds)?;
        self.haproxies[i] = Some(h);
        Ok(())
    }

    /// Stops node `i`'s HAProxy with `signal` (`USR1` soft stop, `TERM` hard stop).
    pub fn stop_haproxy(&mut self, i: usize, signal: &str) -> Result<()> {
        let h = self.haproxies[i].take().context("haproxy not running")?;
        h.stop(&self.lab, signal)
    }

    pub fn haproxy(&self, i: usize) -> Result<&haproxy::InLab> {
        self.haproxies[i].as_ref().context("haproxy not running")
    }

    // --- addresses -----------------------------------------------------------------

    /// Whether node `i` has `addr` (a /24 VIP) on eth0.
    pub fn holds(&self, i: usize, addr: &str) -> bool {
        let want = format!("{addr}/24");
        self.lab
            .addresses(&self.nodes[i])
            .is_ok_and(|a| a.contains(&want))
    }

    pub fn holds_vip(&self, i: usize) -> bool {
        self.holds(i, VIP)
    }

    /// The nodes holding `addr`.
    pub fn holders(&self, addr: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&j| self.holds(j, addr))
            .collect()
    }

    /// Waits until exactly node `i` holds the VIP.
    pub fn wait_master(&self, i: usize, limit: Duration) -> bool {
        self.wait_holders(VIP, &[i], limit)
    }

    /// Waits until exactly the nodes `want` hold `addr`.
    pub fn wait_holders(&self, addr: &str, want: &[usize], limit: Duration) -> bool {
        wait_until(limit, Duration::from_millis(20), || {
            self.holders(addr) == want
        })
    }

    /// True when exactly `want` hold `addr` during the whole of `period` (sampled).
    pub fn stays(&self, addr: &str, want: &[usize], period: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < period {
            if self.holders(addr) != want {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    // --- client ----------------------------------------------------------------------

    fn probe_args(addr: &str, duration: &str, timeout: &str) -> Result<Vec<String>> {
        Ok(vec![
            binary("halo-probe")?.to_string_lossy().to_string(),
            format!("{addr}:80"),
            "--interval".into(),
            "10ms".into(),
            "--duration".into(),
            duration.into(),
            "--timeout".into(),
            timeout.into(),
        ])
    }

    /// Runs the prober on VIP:80 in the client namespace for `duration`, every 10 ms.
    pub fn probe(&self, duration: &str) -> Result<Summary> {
        self.probe_addr(VIP, duration, "100ms")
    }

    pub fn probe_addr(&self, addr: &str, duration: &str, timeout: &str) -> Result<Summary> {
        let args = Self::probe_args(addr, duration, timeout)?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.lab.exec_in(&self.client.ns, &args)?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Starts the TCP echo prober on `target` (ADDRESS:PORT) on a thread.
    pub fn probe_tcp_background(
        &self,
        target: &str,
        duration: &str,
        timeout: &str,
    ) -> Result<Prober> {
        let mut args = Self::probe_args(VIP, duration, timeout)?;
        args[1] = target.to_string();
        // Each connection stays open 20 ms, like a client logging in before its query:
        // long enough that a VIP moving under a connection would show as a reset.
        args.extend(["--tcp".into(), "--hold".into(), "20ms".into()]);
        Ok(self.spawn_probe(args))
    }

    /// Starts the prober on a thread; `join` gives its summary.
    pub fn probe_background(&self, addr: &str, duration: &str, timeout: &str) -> Result<Prober> {
        let args = Self::probe_args(addr, duration, timeout)?;
        Ok(self.spawn_probe(args))
    }

    /// Runs the prober with `args` in the client namespace on a thread.
    fn spawn_probe(&self, args: Vec<String>) -> Prober {
        let ns = self.client.ns.clone();
        let handle = std::thread::spawn(move || -> Result<Summary> {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(&args)
                .output()?;
            if !out.status.success() {
                bail!("probe failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(serde_json::from_slice(&out.stdout)?)
        });
        Prober { handle }
    }

    /// Starts the prober on `path` on a thread until [`StepProbe::finish`] (or `limit`):
    /// the client's view of one step of a procedure.
    pub fn probe_step(
        &self,
        addr: &str,
        path: &str,
        limit: &str,
        timeout: &str,
    ) -> Result<StepProbe> {
        let stop = self.dir.join(crate::backends::unique("probe-stop-"));
        let mut args = Self::probe_args(addr, limit, timeout)?;
        args.extend([
            "--stop-file".into(),
            stop.to_string_lossy().to_string(),
            "--path".into(),
            path.into(),
        ]);
        Ok(StepProbe {
            prober: self.spawn_probe(args),
            stop,
        })
    }

    /// The lab's switch namespace (derived from a host's: `<tag>-<host>` → `<tag>-sw`).
    fn switch_ns(&self) -> Result<String> {
        let host = &self.client;
        let tag = host
            .ns
            .strip_suffix(&format!("-{}", host.name))
            .context("unexpected namespace name")?;
        Ok(format!("{tag}-sw"))
    }

    /// Cuts node `i` off from VRRP (or heals it): its adverts go nowhere and it hears
    /// none, while every other packet flows, so both sides stay alive and reachable.
    pub fn isolate_vrrp(&self, i: usize, isolated: bool) -> Result<()> {
        let ns = &self.nodes[i].ns;
        if !isolated {
            self.lab
                .exec_in(ns, &["nft", "delete", "table", "inet", "halo_vrrp_cut"])?;
            return Ok(());
        }
        self.lab
            .exec_in(ns, &["nft", "add", "table", "inet", "halo_vrrp_cut"])?;
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            let spec = format!("{{ type filter hook {hook} priority 0; policy accept; }}");
            self.lab.exec_in(
                ns,
                &["nft", "add", "chain", "inet", "halo_vrrp_cut", chain, &spec],
            )?;
            self.lab.exec_in(
                ns,
                &[
                    "nft",
                    "add",
                    "rule",
                    "inet",
                    "halo_vrrp_cut",
                    chain,
                    "meta",
                    "l4proto",
                    "vrrp",
                    "drop",
                ],
            )?;
        }
        Ok(())
    }

    /// Drops VRRP multicast (to 224.0.0.18) on the bridge. Same as
    /// `Lab::block_multicast`, whose chain name `fwd` is an nft keyword (a syntax error
    /// with nftables 1.0.6).
    pub fn block_multicast(&self) -> Result<()> {
        let sw = self.switch_ns()?;
        self.lab
            .exec_in(&sw, &["nft", "add", "table", "bridge", "halo_lab"])?;
        self.lab.exec_in(
            &sw,
            &[
                "nft",
                "add",
                "chain",
                "bridge",
                "halo_lab",
                "vrrp_forward",
                "{ type filter hook forward priority 0; policy accept; }",
            ],
        )?;
        self.lab.exec_in(
            &sw,
            &[
                "nft",
                "add",
                "rule",
                "bridge",
                "halo_lab",
                "vrrp_forward",
                "ip",
                "daddr",
                "224.0.0.18",
                "drop",
            ],
        )?;
        Ok(())
    }

    /// Lets multicast through again (undoes [`Site::block_multicast`]).
    pub fn unblock_multicast(&self) -> Result<()> {
        let sw = self.switch_ns()?;
        self.lab
            .exec_in(&sw, &["nft", "delete", "table", "bridge", "halo_lab"])?;
        Ok(())
    }

    /// Forgets the client's ARP entries (a fresh client).
    pub fn flush_client_arp(&self) -> Result<()> {
        self.lab
            .exec_in(&self.client.ns, &["ip", "neigh", "flush", "dev", "eth0"])?;
        Ok(())
    }

    // --- admin API ---------------------------------------------------------------------

    /// `halo-dataplane takeover <vip>` on node `i` (the command an operator runs for a
    /// planned handover), through its admin listener with its admin token.
    pub fn takeover(&self, i: usize, vip: &str) -> Result<String> {
        let program = binary("halo-dataplane")?.to_string_lossy().to_string();
        let token = self.admin_token_path(i).to_string_lossy().to_string();
        let out = self.lab.exec_in(
            &self.nodes[i].ns,
            &[
                &program,
                "takeover",
                vip,
                "--admin",
                ADMIN,
                "--admin-token-file",
                &token,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Where node `i`'s data plane keeps its admin token.
    fn admin_token_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}-admin-token", self.nodes[i].name))
    }

    /// An admin request to node `i`'s data plane, with its admin token: (status code, body).
    pub fn admin(&self, i: usize, method: &str, path: &str) -> Result<(u16, String)> {
        let url = format!("http://{ADMIN}{path}");
        let token = std::fs::read_to_string(self.admin_token_path(i)).unwrap_or_default();
        let auth = format!("Authorization: Bearer {}", token.trim());
        let out = self.lab.exec_in(
            &self.nodes[i].ns,
            &[
                "curl",
                "-s",
                "-m",
                "5",
                "-X",
                method,
                "-H",
                &auth,
                "-w",
                "\n%{http_code}",
                &url,
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.trim().parse().unwrap_or(0), body.to_string()))
    }

    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        let (code, body) = self.admin(i, "GET", "/status")?;
        if code != 200 {
            bail!("/status answered {code}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// The `/status` entry of VRRP instance `vip` on node `i`.
    pub fn vrrp_status(&self, i: usize, vip: &str) -> Option<serde_json::Value> {
        let status = self.status(i).ok()?;
        status
            .get("vrrp")?
            .as_array()?
            .iter()
            .find(|v| v.get("name").and_then(|n| n.as_str()) == Some(vip))
            .cloned()
    }

    /// "Master", "Backup", "Fault", "Initialize".
    pub fn vrrp_state(&self, i: usize, vip: &str) -> Option<String> {
        self.vrrp_status(i, vip)?
            .get("state")?
            .as_str()
            .map(str::to_string)
    }

    pub fn vrrp_priority(&self, i: usize, vip: &str) -> Option<u64> {
        self.vrrp_status(i, vip)?.get("priority")?.as_u64()
    }

    /// The `/status` entry of track check `check` of VRRP instance `vip` on node `i`.
    pub fn track_check(&self, i: usize, vip: &str, check: &str) -> Option<serde_json::Value> {
        self.vrrp_status(i, vip)?
            .get("checks")?
            .as_array()?
            .iter()
            .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(check))
            .cloned()
    }

    /// The state ("Passing", "Failing", "Unknown") of a track check on node `i`.
    pub fn track_check_state(&self, i: usize, vip: &str, check: &str) -> Option<String> {
        self.track_check(i, vip, check)?
            .get("state")?
            .as_str()
            .map(str::to_string)
    }

    /// What `halo-dataplane status` prints for node `i` (whatever its exit status).
    pub fn status_text(&self, i: usize) -> Result<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.nodes[i].ns])
            .arg(binary("halo-dataplane")?)
            .args(["status", "--admin", ADMIN])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn metrics(&self, i: usize) -> Result<String> {
        let (code, body) = self.admin(i, "GET", "/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(body)
    }

    /// A metric of node `i` (summed over matching series; 0 when absent or unreachable).
    pub fn metric(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics(i)
            .map(|t| metric_value(&t, name, labels))
            .unwrap_or(0.0)
    }

    // --- diagnostics ---------------------------------------------------------------------

    /// Every log of every node, and who holds which address.
    pub fn debug(&self) -> String {
        let mut s = String::new();
        for i in 0..self.nodes.len() {
            s.push_str(&format!(
                "--- {} addresses {:?}\n",
                self.name(i),
                self.lab.addresses(&self.nodes[i]).unwrap_or_default()
            ));
            if self.dataplane_runs[i] > 0 {
                s.push_str(&self.all_logs(i));
            }
            if let Some(h) = &self.haproxies[i] {
                s.push_str(&format!("--- {} haproxy\n{}", self.name(i), h.log_text()));
            }
            if let Some(k) = &self.keepaliveds[i] {
                s.push_str(&format!(
                    "--- {} keepalived\n{}",
                    self.name(i),
                    k.log_text()
                ));
            }
        }
        s
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for k in self.keepaliveds.iter().flatten() {
            k.kill_child();
        }
        if std::env::var_os("HALO_LAB_KEEP").is_some() {
            eprintln!("lab files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_value_matches_labels_in_any_order() {
        let text = "# TYPE halo_vrrp_transitions counter\nhalo_vrrp_transitions_total{vip=\"web\",to=\"Master\"} 2\nhalo_vrrp_transitions_total{to=\"Backup\",vip=\"web\"} 1\nhalo_vrrp_transitions_total{vip=\"other\",to=\"Master\"} 5\n";
        assert_eq!(
            metric_value(
                text,
                "halo_vrrp_transitions_total",
                &[("to", "Master"), ("vip", "web")]
            ),
            2.0
        );
        assert_eq!(
            metric_value(text, "halo_vrrp_transitions_total", &[("vip", "web")]),
            3.0
        );
        assert_eq!(metric_value(text, "missing", &[]), 0.0);
    }

    #[test]
    fn strips_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[2mto\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"Backup\""),
            "to=\"Backup\""
        );
    }

    #[test]
    fn site_yaml_keeps_its_shape() {
        let y = site_yaml(&[("node-a", 150)], "    preempt: false\n");
        assert!(y.contains("    preempt: false\n"), "{y}");
        assert!(y.contains("- {node: node-a, priority: 150}"), "{y}");
        assert!(y.contains("---\napiVersion"), "{y}");
        assert!(y.contains("virtualIP: web"), "{y}");
    }

    #[test]
    fn lb_on_addresses_listens_without_a_vip() {
        let y = proxy_only_yaml(&[VIP]);
        assert!(y.contains("addresses: [192.0.2.100]"), "{y}");
        assert!(!y.contains("virtualIP"), "{y}");
    }
}
