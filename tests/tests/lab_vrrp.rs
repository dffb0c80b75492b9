//! VRRP between real data plane processes in network namespaces (root only).

use std::time::Duration;

use halo_tests::lab::{self, Share};
use halo_tests::probe::Summary;
use halo_tests::process::binary;
use halo_tests::site::{Site, VIP, site_yaml};

#[test]
fn master_by_priority_then_crash_failover_and_no_stale_vip_after_restart() {
    let Some(_lab) = lab::enter(&[], Share::Shared) else {
        return;
    };
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
