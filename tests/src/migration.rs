//! A keepalived + HAProxy site moved to Halo node by node: two load balancer nodes
//! (node-a .1, node-b .2) each running keepalived for the VIP and HAProxy bound on it,
//! two web backends in their own namespaces (web1 .21, web2 .22), and a client (.9)
//! probing through the VIP during every step, so each step reports its failed requests
//! and longest outage. The files the legacy nodes run are what an operator would feed to
//! `halo-dataplane import`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::keepalived::Conf;
use crate::probe::Summary;
use crate::site::{LbDoc, Site, VIP, VipDoc, manifest, outage_ms, wait_until};

pub const NODES: [&str; 2] = ["node-a", "node-b"];
/// node-a is the keepalived MASTER, node-b the BACKUP.
pub const PRIORITIES: [u8; 2] = [150, 100];
pub const VRID: u8 = 42;
pub const PASSWORD: &str = "secret1";
/// Backend hosts: name and last octet.
pub const BACKENDS: [(&str, u8); 2] = [("web1", 21), ("web2", 22)];
/// What the client asks for: an answer that takes 20 ms at the backend, so that, as on
/// a real site, a request is in flight on the old master at nearly every handover.
pub const PROBE_PATH: &str = "/slow?ms=20";

/// keepalived's `vrrp_garp_master_delay` (default 5 s): a master sends a second burst
/// of gratuitous ARPs this long after it took over. A handover inside that window can
/// have clients pulled back to the old master just before it lets go.
pub const KEEPALIVED_GARP_MASTER_DELAY: Duration = Duration::from_secs(5);

/// How the keepalived pair speaks VRRP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// VRRPv2, 1 s adverts, `auth_type PASS`, unicast peers.
    V2PassUnicast,
    /// VRRPv3, 100 ms adverts, multicast.
    V3Multicast,
}

impl Flavor {
    pub fn advert_interval(self) -> Duration {
        match self {
            Flavor::V2PassUnicast => Duration::from_secs(1),
            Flavor::V3Multicast => Duration::from_millis(100),
        }
    }

    /// Master_Down_Interval of a backup with `priority`: 3 × interval + skew
    /// ((256 − priority) / 256 × interval).
    pub fn master_down(self, priority: u8) -> Duration {
        let i = self.advert_interval();
        i * 3 + i * (256 - u32::from(priority)) / 256
    }

    /// One failover time as a client sees it: the backup's Master_Down_Interval plus
    /// one advert interval for timer granularity and the gratuitous ARP to arrive.
    pub fn failover_time(self, backup_priority: u8) -> Duration {
        self.master_down(backup_priority) + self.advert_interval()
    }

    /// The keepalived.conf `vrrp_instance` of node `i`.
    pub fn keepalived(self, i: usize) -> Conf {
        let vip = format!("{VIP}/24");
        match self {
            Flavor::V2PassUnicast => {
                let mut c = Conf::v2_pass(VRID, PRIORITIES[i], PASSWORD, &vip);
                let peers = (0..NODES.len())
                    .filter(|&j| j != i)
                    .map(node_addr)
                    .collect();
                c.unicast = Some((node_addr(i), peers));
                c
            }
            Flavor::V3Multicast => Conf::v3(VRID, PRIORITIES[i], "0.1", &vip),
        }
    }

    /// The Halo manifest both nodes run: the same VRID, version, interval, priorities,
    /// authentication and peers as the keepalived pair, and a LoadBalancer doing what
    /// the haproxy.cfg does.
    pub fn halo_manifest(self, backends: &[(String, String)]) -> String {
        let backends: Vec<(&str, &str)> = backends
            .iter()
            .map(|(n, a)| (n.as_str(), a.as_str()))
            .collect();
        let lb = LbDoc::on_vip("web", "web")
            .backends(&backends)
            .health_checked();
        manifest(&[self.virtual_ip(), lb.yaml()])
    }

    /// The VirtualIP `web` written by hand from the keepalived.conf files: VRID,
    /// version, interval, each node's priority, authentication and unicast peers.
    pub fn virtual_ip(self) -> String {
        let mut vip = VipDoc::new("web", VIP, VRID);
        for (n, p) in NODES.iter().zip(PRIORITIES) {
            vip = vip.priority(n, p);
        }
        if self == Flavor::V2PassUnicast {
            vip = vip.v2_password(PASSWORD);
            let peers: Vec<(String, String)> = (0..NODES.len())
                .map(|i| (NODES[i].to_string(), node_addr(i)))
                .collect();
            let peers: Vec<(&str, &str)> = peers
                .iter()
                .map(|(n, a)| (n.as_str(), a.as_str()))
                .collect();
            vip = vip.unicast(&peers);
        }
        vip.yaml()
    }
}

fn node_addr(i: usize) -> String {
    crate::netns::subnet_addr(u8::try_from(i + 1).unwrap_or(u8::MAX)).to_string()
}

/// The haproxy.cfg both legacy nodes run: HTTP on VIP:80, round robin over the web
/// backends with an HTTP health check as fast as the Halo manifest's.
pub fn haproxy_cfg(backends: &[(String, String)]) -> String {
    let mut s = format!(
        "frontend www\n    bind {VIP}:80\n    log stdout format raw local0\n    option httplog\n    default_backend web\n\nbackend web\n    balance roundrobin\n    option httpchk GET /\n    default-server inter 200ms fall 2 rise 2\n"
    );
    for (name, addr) in backends {
        let _ = writeln!(s, "    server {name} {addr} check");
    }
    crate::haproxy::config(&s)
}

/// VIP:80, where HAProxy and Halo listen.
pub fn vip_port() -> Result<SocketAddr> {
    Ok(format!("{VIP}:80").parse()?)
}

/// An imported LoadBalancer listening on `addresses: [VIP]` put on VirtualIP `vip`
/// instead, as the runbook says to do by hand while keepalived.conf import is missing.
pub fn on_virtual_ip(imported: &str, vip: &str) -> Result<String> {
    let listens = format!("  addresses:\n  - \"{VIP}\"\n");
    if !imported.contains(&listens) {
        bail!("the imported LoadBalancer does not listen on {VIP} alone:\n{imported}");
    }
    let body = imported.trim_start_matches("---\n");
    Ok(body.replacen(&listens, &format!("  virtualIP: {vip}\n"), 1))
}

/// What the client saw during one step.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub step: String,
    /// A planned step must lose no request; a forced one is bounded by a failover time.
    pub planned: bool,
    pub summary: Summary,
}

impl StepResult {
    /// Longest outage in ms; `None` when the client was not answered again by the end.
    pub fn outage_ms(&self) -> Option<u64> {
        outage_ms(&self.summary)
    }

    /// The backends that answered, each once, sorted.
    pub fn backends(&self) -> Vec<String> {
        let mut b: Vec<String> = self
            .summary
            .answered()
            .into_iter()
            .map(str::to_string)
            .collect();
        b.sort();
        b.dedup();
        b
    }
}

/// The per-step table printed at the end of the test.
pub fn table(results: &[StepResult]) -> String {
    let mut s = format!(
        "{:<58} {:>8} {:>6} {:>7} {:>11}  answered by\n",
        "step", "kind", "ok", "failed", "outage ms"
    );
    for r in results {
        let outage = r
            .outage_ms()
            .map_or_else(|| "no recovery".to_string(), |ms| ms.to_string());
        let _ = writeln!(
            s,
            "{:<58} {:>8} {:>6} {:>7} {:>11}  {}",
            r.step,
            if r.planned { "planned" } else { "forced" },
            r.summary.ok,
            r.summary.failed,
            outage,
            r.backends().join(",")
        );
    }
    s
}

/// The site being migrated.
pub struct Migration {
    pub site: Site,
    pub flavor: Flavor,
    /// (name, address:port) of the web backends.
    pub backends: Vec<(String, String)>,
    pub results: Vec<StepResult>,
    /// The haproxy.cfg the legacy nodes ran, once one has.
    pub legacy_haproxy_cfg: Option<PathBuf>,
    /// `halo-dataplane import`'s report on it.
    pub import_report: String,
}

/// Quiet time before a step's action and after it, so the probe sees the state on both
/// sides of the change.
const LEAD: Duration = Duration::from_millis(300);

impl Migration {
    /// The lab: both nodes allowed to bind the VIP they may not hold (as HAProxy on a
    /// keepalived pair needs), and the web backends started.
    pub fn new(label: &str, flavor: Flavor) -> Result<Self> {
        let mut site = Site::new(label, &NODES)?;
        for i in 0..NODES.len() {
            site.allow_nonlocal_bind(i)?;
        }
        let mut backends = Vec::new();
        for (name, octet) in BACKENDS {
            backends.push((name.to_string(), site.add_backend_host(name, octet)?));
        }
        Ok(Self {
            site,
            flavor,
            backends,
            results: Vec::new(),
            legacy_haproxy_cfg: None,
            import_report: String::new(),
        })
    }

    pub fn haproxy_cfg(&self) -> String {
        haproxy_cfg(&self.backends)
    }

    /// The Halo manifest both nodes run: the LoadBalancer that `halo-dataplane import
    /// --haproxy` makes of the haproxy.cfg the legacy nodes ran, moved onto the VirtualIP
    /// (its `addresses: [VIP]` becomes `virtualIP: web`, so the VIP tracks the listener),
    /// and the hand-written VirtualIP.
    pub fn halo_manifest(&mut self) -> Result<String> {
        let cfg = self
            .legacy_haproxy_cfg
            .clone()
            .context("no legacy node has run HAProxy yet")?;
        let out = self.site.dir.join("imported.yaml");
        let program = crate::process::binary("halo-dataplane")?;
        let run = std::process::Command::new(&program)
            .arg("import")
            .arg("--haproxy")
            .arg(&cfg)
            .arg("-o")
            .arg(&out)
            .output()
            .context("run halo-dataplane import")?;
        self.import_report = String::from_utf8_lossy(&run.stderr).to_string();
        // 0: everything mapped; 3: something approximated or unsupported (reported).
        if !matches!(run.status.code(), Some(0 | 3)) {
            bail!(
                "halo-dataplane import failed ({}):\n{}",
                run.status,
                self.import_report
            );
        }
        let imported = std::fs::read_to_string(&out)?;
        let on_vip = on_virtual_ip(&imported, "web")?;
        Ok(manifest(&[self.flavor.virtual_ip(), on_vip]))
    }

    /// HAProxy first (it listens on the VIP with or without holding it), then keepalived.
    pub fn start_legacy(&mut self, i: usize) -> Result<()> {
        let cfg = self.haproxy_cfg();
        self.site.start_haproxy(i, &cfg, &[vip_port()?])?;
        self.legacy_haproxy_cfg = Some(self.site.haproxy(i)?.config.clone());
        self.site.start_keepalived(i, &self.flavor.keepalived(i))
    }

    /// Takes node `i` out of the legacy pair without dropping a request: keepalived
    /// first (a master sends priority 0, so the peer takes over at once), then — once
    /// the VIP has left the node — HAProxy, soft-stopped so requests in flight finish.
    pub fn retire_legacy(&mut self, i: usize) -> Result<()> {
        self.site.stop_keepalived(i)?;
        if !wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            !self.site.holds_vip(i)
        }) {
            bail!("the VIP stayed on {} after keepalived stopped", NODES[i]);
        }
        self.site.stop_haproxy(i, "USR1")
    }

    /// Halo on node `i` with the site's manifest, waiting until its admin API is healthy.
    pub fn start_halo(&mut self, i: usize) -> Result<()> {
        let yaml = self.halo_manifest()?;
        self.site.start_healthy(i, &yaml)?;
        Ok(())
    }

    /// Runs `action` with the client probing through the VIP around it, and records
    /// what the client saw.
    pub fn step(
        &mut self,
        name: &str,
        planned: bool,
        action: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<StepResult> {
        let probe = self.site.probe_step(VIP, PROBE_PATH, "60s", "200ms")?;
        std::thread::sleep(LEAD);
        let acted = action(self).with_context(|| format!("step {name}"));
        std::thread::sleep(LEAD);
        let summary = probe.finish()?;
        acted?;
        let result = StepResult {
            step: name.to_string(),
            planned,
            summary,
        };
        self.results.push(result.clone());
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_time_follows_the_backup_priority() {
        assert_eq!(
            Flavor::V2PassUnicast.master_down(150),
            Duration::from_secs(3) + Duration::from_secs(106) / 256
        );
        assert!(
            Flavor::V3Multicast.failover_time(150) < Duration::from_millis(450),
            "{:?}",
            Flavor::V3Multicast.failover_time(150)
        );
    }

    #[test]
    fn keepalived_and_halo_agree_on_the_election() {
        let backends = vec![("web1".to_string(), "192.0.2.21:8000".to_string())];
        let conf = Flavor::V2PassUnicast.keepalived(1).render("node-b");
        assert!(conf.contains("unicast_src_ip 192.0.2.2"), "{conf}");
        assert!(conf.contains("    192.0.2.1\n"), "{conf}");
        assert!(conf.contains("priority 100"), "{conf}");
        let halo = Flavor::V2PassUnicast.halo_manifest(&backends);
        for want in [
            "virtualRouterId: 42",
            "version: 2",
            "mode: Unicast",
            "password: secret1",
            "{node: node-a, priority: 150}",
            "{node: node-b, address: 192.0.2.2}",
            "{name: web1, address: 192.0.2.21, port: 8000}",
        ] {
            assert!(halo.contains(want), "{want} missing:\n{halo}");
        }
        let v3 = Flavor::V3Multicast.halo_manifest(&backends);
        assert!(!v3.contains("Unicast") && v3.contains("version: 3"), "{v3}");
        let cfg = haproxy_cfg(&backends);
        assert!(cfg.contains("bind 192.0.2.100:80"), "{cfg}");
        let imported = "---\napiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata:\n  name: www\nspec:\n  addresses:\n  - \"192.0.2.100\"\n  listeners: []\n";
        let moved = on_virtual_ip(imported, "web").expect("moved");
        assert!(
            moved.starts_with("apiVersion")
                && moved.contains("spec:\n  virtualIP: web\n  listeners"),
            "{moved}"
        );
        assert!(on_virtual_ip("spec:\n  addresses: [192.0.2.7]\n", "web").is_err());
        assert!(cfg.contains("server web1 192.0.2.21:8000 check"), "{cfg}");
    }
}
