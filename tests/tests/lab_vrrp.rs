//! VRRP between real data plane processes in network namespaces (root only).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use halo_tests::netns::{self, Host, Lab};
use halo_tests::probe::Summary;
use halo_tests::process::binary;

const VIP: &str = "192.0.2.100";

struct Site {
    lab: Lab,
    dir: PathBuf,
    nodes: Vec<Host>,
    client: Host,
    dataplanes: Vec<Option<u32>>,
}

fn site_yaml(node_priorities: &[(&str, u8)], vrrp_extra: &str) -> String {
    let priorities: String = node_priorities
        .iter()
        .map(|(n, p)| format!("    - {{node: {n}, priority: {p}}}\n"))
        .collect();
    format!(
        "apiVersion: halo.dev/v1alpha1\nkind: VirtualIP\nmetadata: {{name: web}}\nspec:\n  addresses: [{VIP}/24]\n  interface: eth0\n  vrrp:\n    virtualRouterId: 42\n    advertisementInterval: 100ms\n{vrrp_extra}  priorities:\n{priorities}---\napiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: web}}\nspec:\n  virtualIP: web\n  listeners:\n    - name: http\n      port: 80\n      protocol: HTTP\n      backends:\n        - {{name: local, address: 127.0.0.1, port: 8000}}\n"
    )
}

impl Site {
    /// Nodes node-a (.1), node-b (.2), ... each with a local backend answering its node
    /// name, and a client (.9).
    fn new(label: &str, nodes: &[&str]) -> Result<Self> {
        let mut lab = Lab::new(label)?;
        let dir =
            std::env::temp_dir().join(halo_tests::backends::unique(&format!("halo-lab-{label}-")));
        std::fs::create_dir_all(&dir)?;
        let mut hosts = Vec::new();
        for (i, name) in nodes.iter().enumerate() {
            let host = lab.add_host(name, u8::try_from(i + 1)?)?;
            let log = dir.join(format!("{name}-backend.log"));
            lab.spawn(
                &host,
                &binary("halo-lab")?,
                &["backend", "--listen", "127.0.0.1:8000", "--name", name],
                &log,
            )?;
            hosts.push(host);
        }
        let client = lab.add_host("client", 9)?;
        Ok(Self {
            lab,
            dir,
            dataplanes: vec![None; hosts.len()],
            nodes: hosts,
            client,
        })
    }

    fn start(&mut self, i: usize, yaml: &str) -> Result<u32> {
        let node = self.nodes[i].clone();
        let config = self.dir.join(format!("{}.yaml", node.name));
        std::fs::write(&config, yaml)?;
        let log = self.dir.join(format!("{}-dataplane.log", node.name));
        let config_arg = config.to_string_lossy().to_string();
        let pid = self.lab.spawn(
            &node,
            &binary("halo-dataplane")?,
            &[
                "run",
                "--config",
                &config_arg,
                "--node",
                &node.name,
                "--admin",
                "127.0.0.1:9100",
            ],
            &log,
        )?;
        self.dataplanes[i] = Some(pid);
        Ok(pid)
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .join(format!("{}-dataplane.log", self.nodes[i].name)),
        )
        .unwrap_or_default()
    }

    fn holds_vip(&self, i: usize) -> bool {
        self.lab
            .addresses(&self.nodes[i])
            .is_ok_and(|a| a.iter().any(|x| x == &format!("{VIP}/24")))
    }

    /// Waits until exactly node `i` holds the VIP.
    fn wait_master(&self, i: usize, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if (0..self.nodes.len()).all(|j| self.holds_vip(j) == (j == i)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Runs the prober in the client namespace for `duration`, every 10 ms.
    fn probe(&self, duration: &str) -> Result<Summary> {
        let out = self.lab.exec_in(
            &self.client.ns,
            &[
                &binary("halo-probe")?.to_string_lossy(),
                &format!("{VIP}:80"),
                "--interval",
                "10ms",
                "--duration",
                duration,
            ],
        )?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn debug(&self) -> String {
        (0..self.nodes.len())
            .map(|i| format!("--- {}\n{}", self.nodes[i].name, self.log(i)))
            .collect()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

macro_rules! require_lab {
    () => {
        if !netns::available() {
            eprintln!("skipped: lab tests need root and iproute2");
            return;
        }
    };
}

#[test]
fn master_by_priority_then_crash_failover_and_no_stale_vip_after_restart() {
    require_lab!();
    let mut site = Site::new("crash", &["node-a", "node-b"]).expect("lab");
    let yaml = site_yaml(&[("node-a", 150), ("node-b", 100)], "");
    site.start(1, &yaml).expect("start b");
    let a = site.start(0, &yaml).expect("start a");
    assert!(
        site.wait_master(0, Duration::from_secs(5)),
        "node-a (150) should be master:\n{}",
        site.debug()
    );
    let before = site.probe("500ms").expect("probe");
    assert_eq!(before.answered(), ["node-a"], "{before:?}");
    assert_eq!(before.failed, 0);

    // Crash the master: no priority 0, no cleanup.
    let prober = {
        let ns = site.client.ns.clone();
        let probe = binary("halo-probe").expect("probe bin");
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(probe)
                .args([
                    &format!("{VIP}:80"),
                    "--interval",
                    "10ms",
                    "--duration",
                    "3s",
                ])
                .output()
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    site.lab.signal(a, "KILL").expect("kill");
    let out = prober.join().expect("join").expect("probe ran");
    let during: Summary = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(
        during.answered(),
        ["node-a", "node-b"],
        "{during:?}\n{}",
        site.debug()
    );
    eprintln!(
        "crash failover outage: {} ms ({} failed probes)",
        during.longest_outage_ms, during.failed
    );

    // Restart without preemption: the stale address from the crash must go, and node-b
    // keeps the VIP.
    let nopreempt = site_yaml(&[("node-a", 150), ("node-b", 100)], "    preempt: false\n");
    site.start(0, &nopreempt).expect("restart a");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        site.wait_master(1, Duration::from_secs(3)),
        "stale VIP left on node-a:\n{}",
        site.debug()
    );
    let after = site.probe("1s").expect("probe");
    assert_eq!(after.answered(), ["node-b"], "{after:?}");
    assert!(
        site.log(0)
            .contains("removing an address left from an earlier run"),
        "{}",
        site.log(0)
    );
}
