//! VRRP tracking, sync groups, gratuitous ARP settings and the planned takeover, between
//! real data planes in network namespaces (root only).
//!
//! These exercise `spec.vrrp.track`, `spec.vrrp.syncGroup`, `spec.vrrp.garp` and
//! `POST /vrrp/<vip>/takeover`, added together with these tests.

use std::time::{Duration, Instant};

use halo_tests::netns;
use halo_tests::site::{LbDoc, Site, VIP, VIP2, VipDoc, manifest, outage_ms, wait_until};

macro_rules! require_lab {
    () => {
        if !netns::available() {
            eprintln!("skipped: lab tests need root and iproute2");
            return;
        }
    };
}

const A: usize = 0;
const B: usize = 1;
const SETTLE: Duration = Duration::from_millis(600);

fn web(vrrp_lines: &[&str]) -> VipDoc {
    let mut vip = VipDoc::new("web", VIP, 42)
        .priority("node-a", 150)
        .priority("node-b", 100);
    for l in vrrp_lines {
        vip = vip.vrrp(l);
    }
    vip
}

/// Starts node-b, then node-a, and waits for node-a to be master and settled.
fn pair(label: &str, yaml: &str) -> Site {
    let mut site = Site::new(label, &["node-a", "node-b"]).expect("lab");
    site.start_healthy(B, yaml).expect("start b");
    site.start_healthy(A, yaml).expect("start a");
    assert!(
        site.wait_master(A, Duration::from_secs(5)),
        "node-a (150) should be master:\n{}",
        site.debug()
    );
    std::thread::sleep(SETTLE);
    site
}

/// node-a's only backend dies: with `backendsDown: {weight: 80}` its priority falls to
/// 70, below node-b's 100, and node-b takes the VIP; when the backend is back node-a
/// preempts again.
#[test]
fn backends_down_weight_moves_the_vip_and_back() {
    require_lab!();
    let yaml = manifest(&[
        web(&["track: {backendsDown: {weight: 80}}"]).yaml(),
        LbDoc::on_vip("web", "web").health_checked().yaml(),
    ]);
    let mut site = pair("trkw", &yaml);
    assert_eq!(site.vrrp_priority(A, "web"), Some(150), "{}", site.debug());

    let prober = site.probe_background(VIP, "6s", "100ms").expect("probe");
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    site.kill_backend(A).expect("kill a's backend");
    let moved = site.wait_master(B, Duration::from_secs(4));
    let took = killed.elapsed();
    assert!(
        moved,
        "node-b should take over from node-a without backends:\n{}",
        site.debug()
    );
    eprintln!("VIP moved {took:?} after the backend died");
    assert_eq!(
        site.vrrp_priority(A, "web"),
        Some(70),
        "150 - 80:\n{}",
        site.debug()
    );
    assert_eq!(site.vrrp_state(A, "web").as_deref(), Some("Backup"));

    std::thread::sleep(Duration::from_millis(1000));
    site.start_backend(A).expect("backend back");
    assert!(
        site.wait_master(A, Duration::from_secs(4)),
        "node-a should preempt once its backend is healthy:\n{}",
        site.debug()
    );
    assert_eq!(site.vrrp_priority(A, "web"), Some(150));
    let summary = prober.join().expect("probe");
    eprintln!("backend down/up: {summary:?}");
    assert_eq!(
        summary.answered(),
        ["node-a", "node-b", "node-a"],
        "{summary:?}\n{}",
        site.debug()
    );
    assert!(outage_ms(&summary).is_some(), "{summary:?}");
}

/// A planned move: the target node is asked to take over while the client probes. No
/// request may fail, and the VIP stays on the new node.
#[test]
fn planned_takeover_loses_no_request() {
    require_lab!();
    let yaml = manifest(&[web(&[]).yaml(), LbDoc::on_vip("web", "web").yaml()]);
    let site = pair("takeover", &yaml);

    let prober = site.probe_background(VIP, "3s", "100ms").expect("probe");
    std::thread::sleep(Duration::from_millis(1000));
    let (code, body) = site.admin(B, "POST", "/vrrp/web/takeover").expect("admin");
    assert!(
        (200..300).contains(&code),
        "takeover answered {code}: {body}\n{}",
        site.debug()
    );
    let summary = prober.join().expect("probe");
    eprintln!("planned takeover: {summary:?}");
    assert!(
        site.stays(VIP, &[B], Duration::from_secs(1)),
        "the VIP should be on node-b after the takeover and stay:\n{}",
        site.debug()
    );
    assert_eq!(
        summary.answered(),
        ["node-a", "node-b"],
        "{summary:?}\n{}",
        site.debug()
    );
    // The VIP itself never goes missing (the new master holds it before the old one
    // lets go). What can still fail is a request whose TCP connection is in flight at
    // the instant the clients' ARP caches switch: its next packet reaches the new node,
    // which answers with a reset. On an idle machine that window is a millisecond and
    // the benchmark sees 0 failures; under a loaded CI run one probe may fall into it.
    assert!(
        summary.failed <= 1,
        "a planned takeover lost more than an in-flight request: {summary:?}\n{}",
        site.debug()
    );
    assert_eq!(site.vrrp_state(A, "web").as_deref(), Some("Backup"));

    // An unknown VIP is a 404, not a silent success.
    let (code, _) = site.admin(B, "POST", "/vrrp/nope/takeover").expect("admin");
    assert_eq!(code, 404);
}

/// `interfaceDown` is documented to default to `{fault: true}`; configuring another
/// tracked condition must not switch it off. Pulling the master's cable puts it in Fault
/// (no VIP), and it comes back and preempts when the cable is back.
#[test]
fn link_down_faults_the_master_also_with_other_tracking() {
    require_lab!();
    let yaml = manifest(&[
        web(&["track: {backendsDown: {weight: 80}}"]).yaml(),
        LbDoc::on_vip("web", "web").health_checked().yaml(),
    ]);
    let site = pair("trkif", &yaml);
    site.lab.set_link(&site.nodes[A], false).expect("cable out");
    let faulted = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        site.vrrp_state(A, "web").as_deref() == Some("Fault")
    });
    let a_state = site.vrrp_state(A, "web");
    let a_holds = site.holds(A, VIP);
    site.lab.set_link(&site.nodes[A], true).expect("cable in");
    assert!(
        faulted && !a_holds,
        "node-a without carrier should be in Fault and hold nothing (state {a_state:?}, holds VIP {a_holds}):\n{}",
        site.debug()
    );
    assert!(
        site.wait_master(A, Duration::from_secs(4)),
        "{}",
        site.debug()
    );
}

/// The same with the default (no `track` at all): explicit check of the Fault state.
#[test]
fn link_down_faults_the_master_by_default() {
    require_lab!();
    let yaml = manifest(&[web(&[]).yaml(), LbDoc::on_vip("web", "web").yaml()]);
    let site = pair("trkifd", &yaml);
    site.lab.set_link(&site.nodes[A], false).expect("cable out");
    let faulted = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        site.vrrp_state(A, "web").as_deref() == Some("Fault") && !site.holds(A, VIP)
    });
    let b_took = site.wait_master(B, Duration::from_secs(2));
    site.lab.set_link(&site.nodes[A], true).expect("cable in");
    assert!(faulted && b_took, "{}", site.debug());
    assert!(
        site.wait_master(A, Duration::from_secs(4)),
        "{}",
        site.debug()
    );
    std::thread::sleep(SETTLE);
    let after = site.probe("300ms").expect("probe");
    assert_eq!(after.answered(), ["node-a"], "{after:?}");
}

/// Two VirtualIPs in one sync group: only `web` tracks its backends (with fault), yet
/// when node-a's backend dies both VIPs move to node-b, and both come back together.
#[test]
fn sync_group_moves_both_vips_together() {
    require_lab!();
    let web2 = VipDoc::new("web2", VIP2, 43)
        .priority("node-a", 150)
        .priority("node-b", 100)
        .vrrp("syncGroup: pair");
    let yaml = manifest(&[
        web(&["syncGroup: pair", "track: {backendsDown: {fault: true}}"]).yaml(),
        web2.yaml(),
        LbDoc::on_vip("web", "web").health_checked().yaml(),
        LbDoc::on_vip("web2", "web2").yaml(),
    ]);
    let mut site = pair("sync", &yaml);
    assert!(
        site.wait_holders(VIP2, &[A], Duration::from_secs(2)),
        "both VIPs start on node-a:\n{}",
        site.debug()
    );

    let prober = site.probe_background(VIP2, "5s", "100ms").expect("probe");
    std::thread::sleep(Duration::from_millis(500));
    site.kill_backend(A).expect("kill a's backend");
    let both_moved = wait_until(Duration::from_secs(4), Duration::from_millis(20), || {
        site.holders(VIP) == [B] && site.holders(VIP2) == [B]
    });
    assert!(
        both_moved,
        "web faulted on node-a: web2 must follow it to node-b (web on {:?}, web2 on {:?}):\n{}",
        site.holders(VIP),
        site.holders(VIP2),
        site.debug()
    );
    assert_eq!(site.vrrp_state(A, "web").as_deref(), Some("Fault"));
    assert_ne!(site.vrrp_state(A, "web2").as_deref(), Some("Master"));

    std::thread::sleep(Duration::from_millis(800));
    site.start_backend(A).expect("backend back");
    let both_back = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        site.holders(VIP) == [A] && site.holders(VIP2) == [A]
    });
    let summary = prober.join().expect("probe");
    eprintln!("sync group, probing web2: {summary:?}");
    assert!(
        both_back,
        "both VIPs should return to node-a (web on {:?}, web2 on {:?}):\n{}",
        site.holders(VIP),
        site.holders(VIP2),
        site.debug()
    );
    assert_eq!(
        summary.answered(),
        ["node-a", "node-b", "node-a"],
        "{summary:?}\n{}",
        site.debug()
    );
}

/// `garp: {count: 5, interval: 50ms, refresh: 500ms}`: five announcements on taking the
/// VIP, then one more round every 500 ms while master.
#[test]
fn garp_count_and_refresh() {
    require_lab!();
    let yaml = manifest(&[
        VipDoc::new("web", VIP, 42)
            .vrrp("garp: {count: 5, interval: 50ms, refresh: 500ms}")
            .yaml(),
        LbDoc::on_vip("web", "web").yaml(),
    ]);
    let mut site = Site::new("garp", &["node-a"]).expect("lab");
    site.start_healthy(A, &yaml).expect("start a");
    assert!(
        site.wait_master(A, Duration::from_secs(3)),
        "{}",
        site.debug()
    );
    let became = Instant::now();
    let garps = || site.metric(A, "halo_vrrp_garp_sent_total", &[("vip", "web")]);
    std::thread::sleep(Duration::from_millis(350));
    let burst = garps();
    // The refresh timer runs from the instance's start, not from the takeover, so one
    // refresh may land inside the burst.
    assert!(
        (5.0..=6.0).contains(&burst),
        "5 announcements after the takeover, got {burst}"
    );
    std::thread::sleep(Duration::from_millis(2000).saturating_sub(became.elapsed()));
    let later = garps();
    eprintln!("gratuitous ARPs: {burst} after the takeover, {later} after 2 s");
    assert!(
        (7.0..=10.0).contains(&later),
        "a refresh every 500 ms should add 3-4 in 2 s, got {later} in total"
    );
}
