//! VRRP on a network that drops multicast (root only, needs `nft`): unicast adverts
//! elect and fail over; multicast adverts cannot, and both nodes become master.

use std::time::Duration;

use halo_tests::lab::{self, Share, Tool};
use halo_tests::site::{LbDoc, Site, VIP, VipDoc, manifest, outage_ms};

const A: usize = 0;
const B: usize = 1;

fn yaml(unicast: bool) -> String {
    let mut vip = VipDoc::new("web", VIP, 42)
        .priority("node-a", 150)
        .priority("node-b", 100);
    if unicast {
        vip = vip.unicast(&[("node-a", "192.0.2.1"), ("node-b", "192.0.2.2")]);
    }
    manifest(&[vip.yaml(), LbDoc::on_vip("web", "web").yaml()])
}

#[test]
fn unicast_elects_and_fails_over_with_multicast_blocked() {
    let Some(_lab) = lab::enter(&[Tool::Nft], Share::Shared) else {
        return;
    };
    let mut site = Site::new("ucast", &["node-a", "node-b"]).expect("lab");
    site.block_multicast().expect("block multicast");
    let yaml = yaml(true);
    site.start_healthy(B, &yaml).expect("start b");
    site.start_healthy(A, &yaml).expect("start a");
    assert!(
        site.wait_master(A, Duration::from_secs(5)),
        "node-a (150) should be master over unicast:\n{}",
        site.debug()
    );
    assert!(
        site.stays(VIP, &[A], Duration::from_secs(1)),
        "election must hold over unicast:\n{}",
        site.debug()
    );
    assert_eq!(site.vrrp_state(B, "web").as_deref(), Some("Backup"));
    assert!(
        site.metric(B, "halo_vrrp_adverts_received_total", &[("vip", "web")]) > 0.0,
        "node-b received no unicast adverts:\n{}",
        site.debug()
    );
    let before = site.probe("300ms").expect("probe");
    assert_eq!(before.answered(), ["node-a"], "{before:?}");

    let prober = site.probe_background(VIP, "3s", "100ms").expect("probe");
    std::thread::sleep(Duration::from_millis(500));
    site.stop(A, "KILL").expect("kill a");
    let during = prober.join().expect("probe");
    eprintln!("unicast crash failover: {during:?}");
    assert_eq!(
        during.answered(),
        ["node-a", "node-b"],
        "{during:?}\n{}",
        site.debug()
    );
    let outage = outage_ms(&during).expect("service came back");
    assert!(outage < 1000, "outage {outage} ms");
}

/// The control for the test above: the same block with multicast adverts leaves each
/// node alone, so both take the VIP. This shows the block really drops VRRP.
#[test]
fn multicast_blocked_splits_the_brain() {
    let Some(_lab) = lab::enter(&[Tool::Nft], Share::Shared) else {
        return;
    };
    let mut site = Site::new("mcblock", &["node-a", "node-b"]).expect("lab");
    site.block_multicast().expect("block multicast");
    let yaml = yaml(false);
    site.start_healthy(B, &yaml).expect("start b");
    site.start_healthy(A, &yaml).expect("start a");
    assert!(
        site.wait_holders(VIP, &[A, B], Duration::from_secs(3)),
        "with multicast blocked both nodes should be master:\n{}",
        site.debug()
    );
    assert!(
        site.stays(VIP, &[A, B], Duration::from_secs(1)),
        "{}",
        site.debug()
    );
    for i in [A, B] {
        assert_eq!(
            site.vrrp_state(i, "web").as_deref(),
            Some("Master"),
            "{}",
            site.debug()
        );
        assert_eq!(
            site.metric(i, "halo_vrrp_adverts_received_total", &[("vip", "web")]),
            0.0
        );
    }
}

/// Multicast is blocked, so both nodes are master; node-b started last, so its
/// gratuitous ARP is the one the client kept. When the network heals, node-b yields to
/// node-a (150), which stayed master all along. The client must reach node-a again
/// within a moment: the master that keeps the VIP after a split brain has to announce it
/// again (as keepalived does when it hears a lower-priority master), or the client goes
/// on sending to node-b until its ARP entry expires (tens of seconds).
#[test]
fn healed_split_brain_moves_clients_to_the_surviving_master() {
    let Some(_lab) = lab::enter(&[Tool::Nft], Share::Shared) else {
        return;
    };
    let mut site = Site::new("heal", &["node-a", "node-b"]).expect("lab");
    site.block_multicast().expect("block multicast");
    let yaml = yaml(false);
    site.start_healthy(A, &yaml).expect("start a");
    assert!(
        site.wait_master(A, Duration::from_secs(3)),
        "{}",
        site.debug()
    );
    std::thread::sleep(Duration::from_millis(400));
    site.start_healthy(B, &yaml).expect("start b");
    assert!(
        site.wait_holders(VIP, &[A, B], Duration::from_secs(3)),
        "{}",
        site.debug()
    );
    std::thread::sleep(Duration::from_millis(600));
    let split = site.probe("300ms").expect("probe");
    assert_eq!(
        split.answered(),
        ["node-b"],
        "the client should follow node-b's (later) announcement: {split:?}"
    );

    let prober = site.probe_background(VIP, "4s", "100ms").expect("probe");
    std::thread::sleep(Duration::from_millis(500));
    site.unblock_multicast().expect("heal");
    assert!(
        site.wait_master(A, Duration::from_secs(2)),
        "node-b should yield to node-a once adverts flow again:\n{}",
        site.debug()
    );
    let healed = prober.join().expect("probe");
    eprintln!("after healing: {healed:?}");
    assert_eq!(
        healed.runs.last().map(|r| r.who.as_str()),
        Some("node-a"),
        "the client must end up on node-a, the only master: {healed:?}\n{}",
        site.debug()
    );
    let outage = outage_ms(&healed).unwrap_or(u64::MAX);
    assert!(outage < 1000, "outage {outage} ms: {healed:?}");
}
