//! Failover between two Halo data planes in network namespaces (root only): link loss
//! and failback, graceful stop against crash, preemption and its delay.

use std::time::{Duration, Instant};

use halo_tests::lab::{self, Share};
use halo_tests::site::{LbDoc, Site, VIP, VipDoc, manifest, outage_ms, site_yaml};

const A: usize = 0;
const B: usize = 1;

/// node-a (150) master, node-b (100) backup, both running `yaml`.
fn pair(label: &str, yaml: &str) -> Site {
    let mut site = Site::new(label, &["node-a", "node-b"]).expect("lab");
    site.start_healthy(B, yaml).expect("start b");
    site.start_healthy(A, yaml).expect("start a");
    assert!(
        site.wait_master(A, Duration::from_secs(5)),
        "node-a (150) should be master:\n{}",
        site.debug()
    );
    // node-b often wins the start-up race by a few ms and yields at once; let the
    // gratuitous ARPs of both settle (see `election_loser_stops_announcing_the_vip`).
    std::thread::sleep(SETTLE);
    site
}

/// Longer than a default burst of gratuitous ARPs (3 × 100 ms).
const SETTLE: Duration = Duration::from_millis(600);

/// A node that loses mastership must stop announcing the VIP. node-b becomes master
/// alone with a long burst of gratuitous ARPs (10 × 100 ms), then node-a (150) preempts
/// it after ~0.35 s. From then on only node-a may announce the VIP: if node-b sends the
/// rest of its burst after yielding, the client is pointed at a node without the VIP and
/// its requests are lost (for good once node-a's own, shorter burst is over).
#[test]
fn election_loser_stops_announcing_the_vip() {
    let Some(_lab) = lab::enter(&[], Share::Shared) else {
        return;
    };
    let long_burst = manifest(&[
        VipDoc::new("web", VIP, 42)
            .priority("node-a", 150)
            .priority("node-b", 100)
            .vrrp("garp: {count: 10, interval: 100ms}")
            .yaml(),
        LbDoc::on_vip("web", "web").yaml(),
    ]);
    let yaml = site_yaml(&[("node-a", 150), ("node-b", 100)], "");
    let mut site = Site::new("garprace", &["node-a", "node-b"]).expect("lab");
    site.start_healthy(B, &long_burst).expect("start b");
    assert!(
        site.wait_master(B, Duration::from_secs(3)),
        "{}",
        site.debug()
    );
    site.start(A, &yaml).expect("start a");
    assert!(
        site.wait_master(A, Duration::from_secs(3)),
        "node-a (150) should preempt:\n{}",
        site.debug()
    );
    let right_after = site.probe("1500ms").expect("probe");
    eprintln!("after node-a preempted: {right_after:?}");
    assert_eq!(
        (right_after.answered(), right_after.failed),
        (vec!["node-a"], 0),
        "after the election only node-a may answer: {right_after:?}\n{}",
        site.debug()
    );
}

#[test]
fn link_down_on_master_fails_over_and_link_up_fails_back() {
    let Some(_lab) = lab::enter(&[], Share::Shared) else {
        return;
    };
    let yaml = site_yaml(&[("node-a", 150), ("node-b", 100)], "");
    let site = pair("linkdn", &yaml);
    let prober = site
        .probe_background(VIP, "7s", "100ms")
        .expect("start probe");
    std::thread::sleep(Duration::from_millis(700));
    site.lab.set_link(&site.nodes[A], false).expect("cable out");
    assert!(
        site.wait_holders(VIP, &[B], Duration::from_secs(3))
            || (site.holds(B, VIP) && site.holds(A, VIP)),
        "node-b should take the VIP when node-a's link goes down:\n{}",
        site.debug()
    );
    std::thread::sleep(Duration::from_millis(1500));
    site.lab.set_link(&site.nodes[A], true).expect("cable in");
    let back = site.wait_master(A, Duration::from_secs(5));
    let summary = prober.join().expect("probe");
    eprintln!("link down/up: {summary:?}");
    assert!(back, "node-a should take the VIP back:\n{}", site.debug());
    assert_eq!(
        summary.answered(),
        ["node-a", "node-b", "node-a"],
        "client should see a → b → a: {summary:?}\n{}",
        site.debug()
    );
    assert!(
        outage_ms(&summary).is_some(),
        "client must be answered again by the end (failback left it without service): {summary:?}\n{}",
        site.debug()
    );
}

#[test]
fn graceful_stop_hands_over_faster_than_a_crash() {
    let Some(_lab) = lab::enter(&[], Share::Shared) else {
        return;
    };
    let yaml = site_yaml(&[("node-a", 150), ("node-b", 100)], "");
    let mut site = pair("grace", &yaml);

    // A crash first: the backup waits out Master_Down_Interval.
    let prober = site.probe_background(VIP, "3s", "100ms").expect("probe");
    std::thread::sleep(Duration::from_millis(700));
    site.stop(A, "KILL").expect("kill a");
    let crash = prober.join().expect("probe");
    assert_eq!(crash.answered(), ["node-a", "node-b"], "{crash:?}");
    let crash_ms = outage_ms(&crash).expect("crash: service came back");

    // Back to node-a (preempt), and the client follows it.
    site.start_healthy(A, &yaml).expect("restart a");
    assert!(
        site.wait_master(A, Duration::from_secs(5)),
        "{}",
        site.debug()
    );
    std::thread::sleep(SETTLE);
    let settled = site.probe("500ms").expect("probe");
    assert_eq!(settled.answered(), ["node-a"], "{settled:?}");

    // A graceful stop: priority 0, the backup takes over after Skew_Time.
    let prober = site.probe_background(VIP, "3s", "100ms").expect("probe");
    std::thread::sleep(Duration::from_millis(700));
    site.stop(A, "TERM").expect("stop a");
    let graceful = prober.join().expect("probe");
    assert_eq!(
        graceful.answered(),
        ["node-a", "node-b"],
        "{graceful:?}\n{}",
        site.debug()
    );
    let graceful_ms = outage_ms(&graceful).expect("graceful: service came back");
    eprintln!(
        "crash outage {crash_ms} ms ({} failed), graceful outage {graceful_ms} ms ({} failed)",
        crash.failed, graceful.failed
    );
    assert!(
        !site.holds(A, VIP),
        "a stopped node must release the VIP:\n{}",
        site.debug()
    );
    assert!(
        graceful_ms < crash_ms && graceful_ms < 300,
        "graceful stop ({graceful_ms} ms) should beat the crash ({crash_ms} ms) and 3 adverts (300 ms)\n{}",
        site.debug()
    );
}

#[test]
fn higher_priority_node_joining_later_preempts() {
    let Some(_lab) = lab::enter(&[], Share::Shared) else {
        return;
    };
    let yaml = site_yaml(&[("node-a", 150), ("node-b", 100)], "");
    let mut site = Site::new("preempt", &["node-a", "node-b"]).expect("lab");
    site.start_healthy(B, &yaml).expect("start b");
    assert!(
        site.wait_master(B, Duration::from_secs(5)),
        "{}",
        site.debug()
    );
    let started = Instant::now();
    site.start(A, &yaml).expect("start a");
    assert!(
        site.wait_master(A, Duration::from_secs(3)),
        "node-a (150, preempt) should take over:\n{}",
        site.debug()
    );
    eprintln!("preempted after {:?}", started.elapsed());
    let after = site.probe("500ms").expect("probe");
    assert_eq!(after.answered(), ["node-a"], "{after:?}");
    assert_eq!(site.vrrp_state(B, "web").as_deref(), Some("Backup"));
}

#[test]
fn preempt_false_keeps_the_current_master() {
    let Some(_lab) = lab::enter(&[], Share::Shared) else {
        return;
    };
    let yaml = site_yaml(&[("node-a", 150), ("node-b", 100)], "");
    let nopreempt = site_yaml(&[("node-a", 150), ("node-b", 100)], "    preempt: false\n");
    let mut site = Site::new("nopreempt", &["node-a", "node-b"]).expect("lab");
    site.start_healthy(B, &yaml).expect("start b");
    assert!(
        site.wait_master(B, Duration::from_secs(5)),
        "{}",
        site.debug()
    );
    site.start_healthy(A, &nopreempt).expect("start a");
    assert!(
        site.stays(VIP, &[B], Duration::from_secs(2)),
        "node-a (150, preempt: false) must not take over:\n{}",
        site.debug()
    );
    assert_eq!(
        site.vrrp_state(A, "web").as_deref(),
        Some("Backup"),
        "{}",
        site.debug()
    );
    let during = site.probe("300ms").expect("probe");
    assert_eq!(during.answered(), ["node-b"], "{during:?}");
    // It still is a backup: it takes over when node-b goes away.
    site.stop(B, "KILL").expect("kill b");
    assert!(
        site.wait_holders(VIP, &[A], Duration::from_secs(3)) || site.holds(A, VIP),
        "node-a should take over from a crashed node-b:\n{}",
        site.debug()
    );
}

#[test]
fn preempt_delay_defers_the_takeover() {
    let Some(_lab) = lab::enter(&[], Share::Shared) else {
        return;
    };
    let yaml = site_yaml(&[("node-a", 150), ("node-b", 100)], "");
    let delayed = site_yaml(
        &[("node-a", 150), ("node-b", 100)],
        "    preemptDelay: 2s\n",
    );
    let mut site = Site::new("pdelay", &["node-a", "node-b"]).expect("lab");
    site.start_healthy(B, &yaml).expect("start b");
    assert!(
        site.wait_master(B, Duration::from_secs(5)),
        "{}",
        site.debug()
    );
    let started = Instant::now();
    site.start(A, &delayed).expect("start a");
    assert!(
        site.stays(VIP, &[B], Duration::from_millis(1900)),
        "node-a took over before its 2s preempt delay ({:?}):\n{}",
        started.elapsed(),
        site.debug()
    );
    assert!(
        site.wait_master(A, Duration::from_secs(4)),
        "node-a should preempt after its delay:\n{}",
        site.debug()
    );
    let took = started.elapsed();
    eprintln!("preempted {took:?} after start");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(4500),
        "{took:?}"
    );
}
