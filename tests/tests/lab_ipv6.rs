//! VRRPv3 over IPv6 between two data planes (root only): link-local adverts to
//! ff02::12, the VIP added with NODAD, unsolicited NA, and failover seen by a client.

use std::time::{Duration, Instant};

use halo_tests::lab::{self, Share};
use halo_tests::netns::{Lab, subnet_addr_v6};
use halo_tests::probe::Summary;
use halo_tests::process::binary;

fn yaml(vip: &str) -> String {
    format!(
        "apiVersion: halo.dev/v1alpha1\nkind: VirtualIP\nmetadata: {{name: web6}}\nspec:\n  addresses: [\"{vip}/64\"]\n  interface: eth0\n  vrrp: {{virtualRouterId: 61, advertisementInterval: 100ms}}\n  priorities:\n    - {{node: node-a, priority: 200}}\n    - {{node: node-b, priority: 100}}\n---\napiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: web6}}\nspec:\n  virtualIP: web6\n  listeners:\n    - name: http\n      port: 80\n      protocol: HTTP\n      backends:\n        - {{name: local, address: 127.0.0.1, port: 8000}}\n"
    )
}

#[test]
fn ipv6_vip_elects_serves_and_fails_over() {
    let Some(_lab) = lab::enter(&[], Share::Shared) else {
        return;
    };
    let vip = subnet_addr_v6(100).to_string();
    let dir = std::env::temp_dir().join(halo_tests::backends::unique("halo-lab-v6-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("site.yaml");
    std::fs::write(&config, yaml(&vip)).expect("config");
    let config = config.to_string_lossy().to_string();

    let mut lab = Lab::new("v6").expect("lab");
    let mut pids = Vec::new();
    let mut nodes = Vec::new();
    for (i, name) in ["node-a", "node-b"].into_iter().enumerate() {
        let host = lab
            .add_host(name, u8::try_from(i + 1).expect("index"))
            .expect("host");
        lab.spawn(
            &host,
            &binary("halo-lab").expect("bin"),
            &["backend", "--listen", "127.0.0.1:8000", "--name", name],
            &dir.join(format!("{name}-b.log")),
        )
        .expect("backend");
        let token = dir
            .join(format!("{name}-admin-token"))
            .to_string_lossy()
            .into_owned();
        let pid = lab
            .spawn(
                &host,
                &binary("halo-dataplane").expect("bin"),
                &[
                    "run",
                    "--config",
                    &config,
                    "--node",
                    name,
                    "--admin",
                    "127.0.0.1:9100",
                    "--admin-token-file",
                    &token,
                ],
                &dir.join(format!("{name}.log")),
            )
            .expect("dataplane");
        pids.push(pid);
        nodes.push(host);
    }
    let client = lab.add_host("client", 9).expect("client");
    let logs = || -> String {
        ["node-a", "node-b"]
            .iter()
            .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default())
            .collect()
    };
    let holds = |i: usize| {
        lab.addresses(&nodes[i])
            .is_ok_and(|a| a.contains(&format!("{vip}/64")))
    };
    let wait = |i: usize| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if holds(i) && !holds(1 - i) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    assert!(
        wait(0),
        "node-a should hold {vip}: a={:?} b={:?}\n{}",
        lab.addresses(&nodes[0]),
        lab.addresses(&nodes[1]),
        logs()
    );

    let probe = |duration: &str| -> Summary {
        let out = lab
            .exec_in(
                &client.ns,
                &[
                    &binary("halo-probe").expect("bin").to_string_lossy(),
                    &format!("[{vip}]:80"),
                    "--duration",
                    duration,
                ],
            )
            .expect("probe");
        serde_json::from_slice(&out.stdout).expect("summary")
    };
    assert_eq!(probe("500ms").answered(), ["node-a"]);

    lab.signal(pids[0], "TERM").expect("stop a");
    lab.wait_exit(pids[0], Duration::from_secs(5))
        .expect("a exits");
    assert!(wait(1), "node-b should take over {vip}:\n{}", logs());
    assert_eq!(probe("500ms").answered(), ["node-b"]);
    assert!(logs().contains("VRRP state change"), "{}", logs());
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}
