//! The three-node fault lab: a real etcd + kube-apiserver, two controller replicas with
//! leader election, three nodes (network namespaces on one bridge) each running
//! `halo-dataplane run --controller` with a bound ServiceAccount token of its own, two
//! backend pods in namespaces of their own behind an EndpointSlice, and a client; the
//! Halo objects come from `deploy/examples/kubernetes/three-node-lab.yaml`. One call
//! builds it ([`FaultLab::start`]); dropping it removes everything, also after a failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster::{Cluster, Proc, wait_for};
use crate::probe::Summary;
use crate::process::{binary, http_get_blocking};
use crate::site::{Prober, Site, VIP};
use crate::vrrp_forge::Defect;

/// The nodes, in the lab at .1, .2, .3 (their Node objects carry these InternalIPs).
pub const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The backend pods: (name, lab host index); they answer their name on port 8080.
pub const PODS: [(&str, u8); 2] = [("pod-1", 21), ("pod-2", 22)];
pub const POD_PORT: u16 = 8080;
/// The pods' TCP echo port: the database stand-in behind Service `db`.
pub const DB_PORT: u16 = 3306;
/// The VirtualIP of the example (its VRRP instance carries the same name).
pub const VIP_NAME: &str = "web";
/// The example the lab applies, as a user would.
pub const EXAMPLE: &str = "deploy/examples/kubernetes/three-node-lab.yaml";
/// Where a data plane reaches "the controller Service" inside its node's namespace.
const RELAY: &str = "127.0.0.1:9443";
const READY_LIMIT: Duration = Duration::from_secs(40);

/// One row of the failure table.
#[derive(Debug, Clone)]
pub struct Row {
    pub fault: String,
    /// Longest time the client got no answer (ms).
    pub outage_ms: u64,
    pub failed: u32,
    pub requests: u32,
    /// From the fault until the system noticed (a new master, a new leader), if measured.
    pub detection_ms: Option<u64>,
}

impl Row {
    pub fn new(fault: &str, probe: &Summary, detection: Option<Duration>) -> Self {
        Self {
            fault: fault.into(),
            outage_ms: longest_gap_ms(probe),
            failed: probe.failed,
            requests: probe.ok + probe.failed,
            detection_ms: detection.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// The failure table as text.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "| {:<58} | {:>9} | {:>15} | {:>12} |\n|{}|{}|{}|{}|\n",
        "fault",
        "outage ms",
        "failed/requests",
        "detection ms",
        "-".repeat(60),
        "-".repeat(11),
        "-".repeat(17),
        "-".repeat(14)
    );
    for r in rows {
        let detection = r.detection_ms.map_or("-".to_string(), |d| d.to_string());
        s.push_str(&format!(
            "| {:<58} | {:>9} | {:>15} | {:>12} |\n",
            r.fault,
            r.outage_ms,
            format!("{}/{}", r.failed, r.requests),
            detection
        ));
    }
    s
}

/// Where the suite collects the failure table across tests; `scripts/test.sh` empties it
/// before the tests and prints it after them.
pub fn table_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fault-lab-table.md")
}

/// Adds `row` to [`table_file`] (with the header when the file is new).
pub fn record(row: &Row) -> Result<()> {
    use std::io::Write;
    let path = table_file();
    let text = table(std::slice::from_ref(row));
    let text = if path.exists() {
        text.lines().skip(2).map(|l| format!("{l}\n")).collect()
    } else {
        text
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("{}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// The longest time between two answers (or from the start to the first answer), failed
/// probes or not: what the client waited, even when no request failed.
pub fn longest_gap_ms(s: &Summary) -> u64 {
    let answers: Vec<_> = s.runs.iter().filter(|r| r.who != "-").collect();
    let between = answers
        .windows(2)
        .map(|w| w[1].start_ms.saturating_sub(w[0].end_ms))
        .max()
        .unwrap_or(0);
    between.max(s.longest_outage_ms)
}

/// One controller replica: its ports and, while it runs, its process.
struct Controller {
    stream: u16,
    metrics: u16,
    runs: u32,
    proc: Option<Proc>,
}

/// What a lab has beyond the example.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The Gateway API CRDs, installed before the controllers start (they look once).
    pub gateway_api: bool,
}

pub struct FaultLab {
    /// Nodes, pods and client; dropped first, so the data planes go before the rest.
    pub site: Site,
    controllers: Vec<Controller>,
    pub cluster: Cluster,
    /// The pods' backend processes, in [`PODS`] order.
    pods: Vec<u32>,
    tokens: Vec<PathBuf>,
    relays: Vec<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Runtime,
}

impl FaultLab {
    /// Builds the whole lab and waits until a master serves the VIP and every data plane
    /// runs the controller's config. `label`: short, unique among concurrent tests.
    pub fn start(label: &str) -> Result<Self> {
        Self::start_with(label, Options::default())
    }

    /// [`FaultLab::start`], with what `options` add before the controllers start.
    pub fn start_with(label: &str, options: Options) -> Result<Self> {
        let nodes: Vec<(String, String)> = NODES
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), format!("192.0.2.{}", i + 1)))
            .collect();
        let cluster = Cluster::start_with(&format!("faults-{label}"), &nodes, true)?;
        if options.gateway_api {
            cluster.install_gateway_api()?;
        }
        let mut site = Site::without_backends(label, &NODES)?;
        let pods = start_pods(&mut site)?;
        let example = format!("{}/../{EXAMPLE}", env!("CARGO_MANIFEST_DIR"));
        cluster.kubectl_ok(&["apply", "-f", &example])?;
        // What the EndpointSlice controller would write for the pods.
        cluster.apply(&endpoint_slice(&[true; PODS.len()]))?;
        cluster.apply(&db_slice())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let mut lab = Self {
            site,
            controllers: Vec::new(),
            cluster,
            pods,
            tokens: Vec::new(),
            relays: Vec::new(),
            runtime,
        };
        for _ in 0..2 {
            let (stream, metrics) = (crate::backends::free_port()?, crate::backends::free_port()?);
            lab.controllers.push(Controller {
                stream,
                metrics,
                runs: 0,
                proc: None,
            });
        }
        lab.start_controller(0)?;
        lab.start_controller(1)?;
        lab.wait_leader(READY_LIMIT)?;
        lab.connect_nodes()?;
        for i in 0..NODES.len() {
            lab.start_dataplane(i)?;
        }
        lab.wait_settled(READY_LIMIT)?;
        Ok(lab)
    }

    /// A relay to both controllers in each node, and a token bound to the node's pod.
    fn connect_nodes(&mut self) -> Result<()> {
        let targets: Vec<SocketAddr> = self
            .controllers
            .iter()
            .map(|c| SocketAddr::from(([127, 0, 0, 1], c.stream)))
            .collect();
        let _guard = self.runtime.enter();
        for (i, node) in NODES.iter().enumerate() {
            self.relays.push(crate::netns::relay_to_any(
                &self.site.nodes[i].ns,
                RELAY.parse()?,
                targets.clone(),
            )?);
            self.tokens.push(
                self.cluster
                    .token("halo-dataplane", Some(&format!("dp-{node}")))?,
            );
        }
        Ok(())
    }

    // --- data planes ----------------------------------------------------------------

    /// Starts node `i`'s data plane following the controller (no wait).
    pub fn start_dataplane(&mut self, i: usize) -> Result<u32> {
        let url = format!("https://{RELAY}");
        let token = self.tokens[i].to_string_lossy().to_string();
        let ca = self
            .cluster
            .dir
            .join("ca.crt")
            .to_string_lossy()
            .to_string();
        let state = self
            .cluster
            .state_dir(NODES[i])
            .to_string_lossy()
            .to_string();
        self.site.start_run(
            i,
            &[
                "--controller",
                &url,
                "--token-file",
                &token,
                "--ca-file",
                &ca,
                "--state-dir",
                &state,
            ],
        )
    }

    /// Sends `signal` to node `i`'s data plane and waits until it has exited.
    pub fn stop_dataplane(&mut self, i: usize, signal: &str) -> Result<()> {
        self.site.stop(i, signal)
    }

    /// The config version node `i`'s data plane runs (`None`: none, or not answering).
    pub fn version(&self, i: usize) -> Option<u64> {
        self.site.status(i).ok()?.get("version")?.as_u64()
    }

    pub fn versions(&self) -> Vec<Option<u64>> {
        (0..NODES.len()).map(|i| self.version(i)).collect()
    }

    /// "Master", "Backup", ... of the VIP on node `i`.
    pub fn vrrp_state(&self, i: usize) -> Option<String> {
        self.site.vrrp_state(i, VIP_NAME)
    }

    /// Waits until node `i`'s data plane runs a config and its VRRP instance has settled
    /// into Master or Backup.
    pub fn wait_dataplane(&self, i: usize, limit: Duration) -> Result<()> {
        let ok = wait_for(limit, || {
            self.version(i).is_some()
                && matches!(self.vrrp_state(i).as_deref(), Some("Master" | "Backup"))
        });
        if !ok {
            bail!("{} not ready:\n{}", NODES[i], self.debug());
        }
        Ok(())
    }

    /// The node holding the VIP when exactly one does.
    pub fn master(&self) -> Option<usize> {
        match self.site.holders(VIP)[..] {
            [m] => Some(m),
            _ => None,
        }
    }

    /// Waits until exactly one node holds the VIP and returns it.
    pub fn wait_master(&self, limit: Duration) -> Result<usize> {
        let mut found = None;
        wait_for(limit, || {
            found = self.master();
            found.is_some()
        });
        found.with_context(|| format!("no single master:\n{}", self.debug()))
    }

    /// Waits until a node other than `old` is Master and holds the VIP (the old one may
    /// still hold it: a killed data plane cannot remove it); returns it and when.
    pub fn wait_new_master(&self, old: usize, limit: Duration) -> Result<(usize, Instant)> {
        let mut found = None;
        wait_for(limit, || {
            found = (0..NODES.len()).find(|&j| {
                j != old
                    && self.site.holds(j, VIP)
                    && self.vrrp_state(j).as_deref() == Some("Master")
            });
            found.is_some()
        });
        let new = found.with_context(|| format!("no new master:\n{}", self.debug()))?;
        Ok((new, Instant::now()))
    }

    /// `.status.master` of the VirtualIP.
    pub fn status_master(&self) -> String {
        self.cluster
            .jsonpath("vip", VIP_NAME, "default", "{.status.master}")
            .unwrap_or_default()
    }

    /// Waits until the VirtualIP's status names node `i` as master.
    pub fn wait_status_master(&self, i: usize, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        if !wait_for(limit, || self.status_master() == NODES[i]) {
            bail!(
                "status.master is {:?}, not {} after {limit:?}:\n{}",
                self.status_master(),
                NODES[i],
                self.debug()
            );
        }
        Ok(start.elapsed())
    }

    /// Waits until there is one master, every data plane is ready, the leader streams
    /// to all three and the VirtualIP status names the master; returns the master.
    pub fn wait_settled(&self, limit: Duration) -> Result<usize> {
        let start = Instant::now();
        for i in 0..NODES.len() {
            self.wait_dataplane(i, limit.saturating_sub(start.elapsed()))?;
        }
        let m = self.wait_master(limit.saturating_sub(start.elapsed()))?;
        let ok = wait_for(limit.saturating_sub(start.elapsed()), || {
            self.leader().is_some_and(|l| {
                self.controller_metric(l, "halo_controller_connected_dataplanes") == 3.0
            })
        });
        if !ok {
            bail!("the leader does not stream to all nodes:\n{}", self.debug());
        }
        self.wait_status_master(m, limit.saturating_sub(start.elapsed()))?;
        Ok(m)
    }

    // --- controllers ------------------------------------------------------------------

    /// Starts controller replica `c` (0 or 1) on its ports.
    pub fn start_controller(&mut self, c: usize) -> Result<()> {
        let ctl = &mut self.controllers[c];
        ctl.runs += 1;
        let name = format!("ctl-{}-{}", c + 1, ctl.runs);
        ctl.proc = Some(self.cluster.controller(&name, ctl.stream, ctl.metrics)?);
        Ok(())
    }

    /// SIGKILL on controller replica `c`.
    pub fn kill_controller(&mut self, c: usize) -> Result<()> {
        let proc = self.controllers[c]
            .proc
            .take()
            .context("controller not running")?;
        drop(proc);
        Ok(())
    }

    /// A sample of a replica's metrics (0 when absent or not answering).
    pub fn controller_metric(&self, c: usize, name: &str) -> f64 {
        self.controller_metric_with(c, name, &[])
    }

    /// [`Self::controller_metric`] of the series with `labels`.
    pub fn controller_metric_with(&self, c: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.controllers[c].metrics));
        http_get_blocking(addr, "/metrics")
            .map(|(_, body)| crate::site::metric_value(&body, name, labels))
            .unwrap_or(0.0)
    }

    /// The HTTP status replica `c`'s config stream gives a status report for `node`
    /// with `token` (`None`: no Authorization header).
    pub fn stream_attempt(&self, c: usize, node: &str, token: Option<&std::path::Path>) -> u16 {
        self.cluster
            .stream_status(self.controllers[c].stream, node, token)
            .unwrap_or(0)
    }

    /// The log of replica `c`'s current (last started) run.
    pub fn controller_log(&self, c: usize) -> String {
        self.cluster
            .log(&format!("ctl-{}-{}", c + 1, self.controllers[c].runs))
    }

    /// Node `i`'s own token (bound to its data plane's pod).
    pub fn node_token(&self, i: usize) -> &std::path::Path {
        &self.tokens[i]
    }

    /// The VirtualIP's status condition `type_` as "True"/"False" ("" when absent).
    pub fn vip_condition(&self, type_: &str) -> String {
        self.cluster
            .jsonpath(
                "vip",
                VIP_NAME,
                "default",
                &format!("{{.status.conditions[?(@.type==\"{type_}\")].status}}"),
            )
            .unwrap_or_default()
    }

    /// Nodes whose data plane reports Master.
    pub fn masters(&self) -> Vec<usize> {
        (0..NODES.len())
            .filter(|&i| self.vrrp_state(i).as_deref() == Some("Master"))
            .collect()
    }

    /// The running replica that leads.
    pub fn leader(&self) -> Option<usize> {
        (0..self.controllers.len()).find(|&c| {
            self.controllers[c].proc.is_some()
                && self.controller_metric(c, "halo_controller_leader") == 1.0
        })
    }

    pub fn wait_leader(&self, limit: Duration) -> Result<usize> {
        let mut found = None;
        wait_for(limit, || {
            found = self.leader();
            found.is_some()
        });
        found.with_context(|| format!("no leader:\n{}", self.debug()))
    }

    // --- the API server -------------------------------------------------------------------

    /// Stops kube-apiserver and etcd (their data and ports are kept).
    pub fn stop_api(&mut self) -> Result<()> {
        self.cluster.cp.pause()
    }

    /// Starts them again and waits until the API server is ready.
    pub fn start_api(&mut self) -> Result<()> {
        self.cluster.cp.resume()
    }

    // --- client and diagnostics -------------------------------------------------------------

    /// Sends `count` forged adverts with `defect` for the VIP's VRID from the client host
    /// (a stranger on the nodes' bridge).
    pub fn forge_adverts(&self, defect: Defect, count: u16) -> Result<()> {
        let vrid = self
            .site
            .vrrp_status(0, VIP_NAME)
            .and_then(|v| v.get("vrid")?.as_u64())
            .context("no VRID in node-a's status")?;
        let program = binary("halo-lab")?.to_string_lossy().to_string();
        let (source, vrid, count) = (
            self.site.client.addr.to_string(),
            vrid.to_string(),
            count.to_string(),
        );
        let defect = clap::ValueEnum::to_possible_value(&defect)
            .context("defect name")?
            .get_name()
            .to_string();
        self.site.lab.exec_in(
            &self.site.client.ns,
            &[
                &program,
                "vrrp-forge",
                "--defect",
                &defect,
                "--source",
                &source,
                "--vrid",
                &vrid,
                "--address",
                VIP,
                "--count",
                &count,
            ],
        )?;
        Ok(())
    }

    /// Metric `name` of node `i`'s VRRP instance of the VIP (labels `vip` and `extra`).
    pub fn vrrp_metric(&self, i: usize, name: &str, extra: &[(&str, &str)]) -> f64 {
        let mut labels = vec![("vip", VIP_NAME)];
        labels.extend_from_slice(extra);
        self.site.metric(i, name, &labels)
    }

    // --- pods -------------------------------------------------------------------------

    /// SIGKILLs pod `p`'s backend (the pod crashed; its EndpointSlice does not know yet).
    pub fn kill_pod(&self, p: usize) -> Result<()> {
        self.site.lab.signal(self.pods[p], "KILL")?;
        self.site
            .lab
            .wait_exit(self.pods[p], Duration::from_secs(5))
    }

    /// Writes the EndpointSlice as the EndpointSlice controller would: pod `p` ready or not.
    pub fn set_ready(&self, ready: &[bool; PODS.len()]) -> Result<()> {
        self.cluster.apply(&endpoint_slice(ready))
    }

    /// `address:port` of pod `p`, as the data planes list it.
    pub fn pod_address(p: usize) -> String {
        format!("192.0.2.{}:{POD_PORT}", PODS[p].1)
    }

    /// Node `i`'s view of pod `p`: `Some(up)` while its config lists it, `None` after.
    pub fn pod_up(&self, i: usize, p: usize) -> Option<bool> {
        let want = Self::pod_address(p);
        let status = self.site.status(i).ok()?;
        status
            .get("listeners")?
            .as_array()?
            .iter()
            .flat_map(|l| {
                l.get("backends")
                    .and_then(|b| b.as_array())
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|b| b.get("address").and_then(|a| a.as_str()) == Some(want.as_str()))
            .and_then(|b| b.get("up")?.as_bool())
    }

    /// A client probing VIP:80 every 10 ms for `duration`, each request given `timeout`.
    pub fn probe(&self, duration: &str, timeout: &str) -> Result<Prober> {
        self.site.probe_background(VIP, duration, timeout)
    }

    /// A TCP client of the database stand-in through the VIP (port 3306), every 10 ms.
    pub fn probe_db(&self, duration: &str, timeout: &str) -> Result<Prober> {
        self.site
            .probe_tcp_background(&format!("{VIP}:{DB_PORT}"), duration, timeout)
    }

    /// Logs of every data plane and controller, and who holds the VIP.
    pub fn debug(&self) -> String {
        let mut s = self.site.debug();
        for (c, ctl) in self.controllers.iter().enumerate() {
            for run in 1..=ctl.runs {
                let name = format!("ctl-{}-{run}", c + 1);
                s.push_str(&format!("--- {name}\n{}", self.cluster.log(&name)));
            }
        }
        s
    }
}

impl Drop for FaultLab {
    fn drop(&mut self) {
        for r in &self.relays {
            r.abort();
        }
    }
}

/// The pods: a host each on the bridge, running a backend that answers its name.
fn start_pods(site: &mut Site) -> Result<Vec<u32>> {
    let program = binary("halo-lab")?;
    let mut pids = Vec::new();
    for (name, index) in PODS {
        let host = site.lab.add_host(name, index)?;
        let log = site.dir.join(format!("{name}.log"));
        let listen = format!("{}:{POD_PORT}", host.addr);
        pids.push(site.lab.spawn(
            &host,
            &program,
            &[
                "backend",
                "--listen",
                &listen,
                "--name",
                name,
                "--tcp-listen",
                &format!("{}:{DB_PORT}", host.addr),
            ],
            &log,
        )?);
        let ok = wait_for(Duration::from_secs(5), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening"))
        });
        if !ok {
            bail!("pod {name} did not start");
        }
    }
    Ok(pids)
}

/// The EndpointSlice of Service `db`: both pods' echo port.
fn db_slice() -> String {
    service_slice("db", "mysql", DB_PORT, &[(0, true), (1, true)])
}

/// The EndpointSlice of Service `web` listing the pods, each ready or not.
fn endpoint_slice(ready: &[bool; PODS.len()]) -> String {
    let pods: Vec<(usize, bool)> = ready.iter().copied().enumerate().collect();
    service_slice("web", "http", POD_PORT, &pods)
}

/// The EndpointSlice the EndpointSlice controller would write for Service `service` in
/// namespace default: pods (index in [`PODS`], ready) on port `port_name` = `port`.
pub fn service_slice(service: &str, port_name: &str, port: u16, pods: &[(usize, bool)]) -> String {
    let mut eps = String::new();
    for &(p, ready) in pods {
        let (name, index) = PODS[p];
        eps.push_str(&format!(
            "  - addresses: [\"192.0.2.{index}\"]\n    conditions: {{ready: {ready}}}\n    targetRef: {{kind: Pod, name: {name}, namespace: default}}\n"
        ));
    }
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports: [{{name: {port_name}, port: {port}, protocol: TCP}}]\nendpoints:\n{eps}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Run;

    fn run(who: &str, start_ms: u64, end_ms: u64) -> Run {
        Run {
            who: who.into(),
            count: 1,
            start_ms,
            end_ms,
        }
    }

    #[test]
    fn longest_gap_counts_slow_answers_and_failures() {
        let s = Summary {
            ok: 3,
            failed: 1,
            longest_outage_ms: 0,
            runs: vec![
                run("pod-1", 0, 10),
                run("pod-2", 400, 400),
                run("-", 410, 410),
                run("pod-1", 450, 460),
            ],
            ..Summary::default()
        };
        assert_eq!(longest_gap_ms(&s), 390);
        assert_eq!(longest_gap_ms(&Summary::default()), 0);
    }

    #[test]
    fn table_has_a_line_per_row() {
        let probe = Summary {
            ok: 9,
            failed: 1,
            ..Summary::default()
        };
        let t = table(&[Row::new("kill", &probe, Some(Duration::from_millis(300)))]);
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(t.contains("1/10") && t.contains("300"), "{t}");
    }
}
