//! Interop with keepalived (root only, needs the `keepalived` package): a Halo data
//! plane and keepalived elect one master for the same VRID, fail over both ways and take
//! the VIP back; VRRPv3 at 100 ms and VRRPv2 with a password, plus a password mismatch.
//!
//! The keepalived node also runs a proxy-only Halo data plane listening on the VIP
//! without owning it (LoadBalancer `spec.addresses`), so the client always reaches the
//! holder's local backend and the probe names the node that holds the VIP.

use std::time::Duration;

use halo_tests::keepalived::Conf;
use halo_tests::lab::{self, Share, Tool};
use halo_tests::site::{LbDoc, Site, VIP, VipDoc, manifest, proxy_only_yaml};

const A: usize = 0;
const B: usize = 1;
const PASSWORD: &str = "secret1";

#[derive(Clone, Copy, Debug)]
enum Flavor {
    /// VRRPv3, 100 ms adverts.
    V3Fast,
    /// VRRPv2, 1 s adverts, `auth_type PASS`.
    V2Pass,
}

impl Flavor {
    fn halo_yaml(self, node: &str, priority: u8, password: &str) -> String {
        let mut vip = VipDoc::new("web", VIP, 42).priority(node, priority);
        if let Flavor::V2Pass = self {
            vip = vip.v2_password(password);
        }
        manifest(&[vip.yaml(), LbDoc::on_vip("web", "web").yaml()])
    }

    fn keepalived(self, priority: u8, password: &str) -> Conf {
        let vip = format!("{VIP}/24");
        match self {
            Flavor::V3Fast => Conf::v3(42, priority, "0.1", &vip),
            Flavor::V2Pass => Conf::v2_pass(42, priority, password, &vip),
        }
    }

    /// Longer than Master_Down_Interval for any priority, with room for start-up.
    fn takeover(self) -> Duration {
        match self {
            Flavor::V3Fast => Duration::from_secs(3),
            Flavor::V2Pass => Duration::from_secs(7),
        }
    }

    /// How long the probe runs around a crash.
    fn probe_for(self) -> &'static str {
        match self {
            Flavor::V3Fast => "3s",
            Flavor::V2Pass => "6s",
        }
    }
}

const SETTLE: Duration = Duration::from_millis(600);

fn halo_transitions(site: &Site, i: usize, to: &str) -> f64 {
    site.metric(
        i,
        "halo_vrrp_transitions_total",
        &[("vip", "web"), ("to", to)],
    )
}

fn halo_drops(site: &Site, i: usize) -> String {
    site.metrics(i)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("halo_vrrp_dropped_packets_total") && !l.ends_with(" 0"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Halo on node-a (150) is master, keepalived on node-b (100) backup: they agree for a
/// while, keepalived takes over when Halo crashes, and Halo takes the VIP back.
fn halo_master_keepalived_backup(flavor: Flavor, label: &str) {
    let mut site = Site::new(label, &["node-a", "node-b"]).expect("lab");
    let halo = flavor.halo_yaml("node-a", 150, PASSWORD);
    site.start_healthy(B, &proxy_only_yaml(&[VIP]))
        .expect("proxy on b");
    site.start_healthy(A, &halo).expect("halo on a");
    assert!(
        site.wait_master(A, flavor.takeover()),
        "Halo alone should become master:\n{}",
        site.debug()
    );
    site.start_keepalived(B, &flavor.keepalived(100, PASSWORD))
        .expect("keepalived on b");
    let ka = site.keepalived(B).expect("keepalived");
    assert!(
        ka.wait_state("BACKUP", Duration::from_secs(2)),
        "{}",
        site.debug()
    );

    // Both running: nobody flaps.
    assert!(
        site.stays(VIP, &[A], Duration::from_secs(3)),
        "Halo must keep the VIP next to a keepalived backup:\n{}",
        site.debug()
    );
    let ka = site.keepalived(B).expect("keepalived");
    assert_eq!(
        ka.count("MASTER"),
        0,
        "keepalived became master next to Halo:\n{}",
        site.debug()
    );
    assert_eq!(ka.state().as_deref(), Some("BACKUP"));
    assert_eq!(
        halo_transitions(&site, A, "Master"),
        1.0,
        "{}",
        site.debug()
    );
    assert_eq!(
        site.metric(A, "halo_vrrp_split_brain_total", &[("vip", "web")]),
        0.0
    );
    let before = site.probe("300ms").expect("probe");
    assert_eq!(before.answered(), ["node-a"], "{before:?}");

    // Halo crashes: keepalived takes over.
    let prober = site
        .probe_background(VIP, flavor.probe_for(), "100ms")
        .expect("probe");
    std::thread::sleep(Duration::from_millis(500));
    site.stop(A, "KILL").expect("kill halo");
    let during = prober.join().expect("probe");
    eprintln!("{flavor:?} Halo crash → keepalived: {during:?}");
    assert_eq!(
        site.keepalived(B).expect("keepalived").state().as_deref(),
        Some("MASTER"),
        "{}",
        site.debug()
    );
    assert!(site.holds(B, VIP), "{}", site.debug());
    assert_eq!(
        during.answered(),
        ["node-a", "node-b"],
        "{during:?}\n{}",
        site.debug()
    );

    // Halo comes back and preempts.
    site.start_healthy(A, &halo).expect("restart halo");
    assert!(
        site.wait_master(A, flavor.takeover()),
        "Halo (150) should take the VIP back from keepalived (100):\n{}",
        site.debug()
    );
    assert!(
        site.keepalived(B)
            .expect("keepalived")
            .wait_state("BACKUP", Duration::from_secs(2)),
        "{}",
        site.debug()
    );
    std::thread::sleep(SETTLE);
    let after = site.probe("300ms").expect("probe");
    assert_eq!(after.answered(), ["node-a"], "{after:?}\n{}", site.debug());
    let drops = halo_drops(&site, A);
    assert!(
        drops.is_empty(),
        "Halo dropped keepalived's adverts:\n{drops}"
    );
}

/// keepalived on node-a (150) is master, Halo on node-b (100) backup: they agree, Halo
/// takes over when keepalived crashes, and keepalived takes the VIP back.
fn keepalived_master_halo_backup(flavor: Flavor, label: &str) {
    let mut site = Site::new(label, &["node-a", "node-b"]).expect("lab");
    let halo = flavor.halo_yaml("node-b", 100, PASSWORD);
    let conf = flavor.keepalived(150, PASSWORD);
    site.start_healthy(A, &proxy_only_yaml(&[VIP]))
        .expect("proxy on a");
    site.start_keepalived(A, &conf).expect("keepalived on a");
    assert!(
        site.wait_master(A, flavor.takeover()),
        "keepalived alone should become master:\n{}",
        site.debug()
    );
    site.start_healthy(B, &halo).expect("halo on b");
    std::thread::sleep(SETTLE);

    assert!(
        site.stays(VIP, &[A], Duration::from_secs(3)),
        "keepalived must keep the VIP next to a Halo backup:\n{}",
        site.debug()
    );
    assert_eq!(
        site.vrrp_state(B, "web").as_deref(),
        Some("Backup"),
        "{}",
        site.debug()
    );
    assert_eq!(
        halo_transitions(&site, B, "Master"),
        0.0,
        "Halo became master next to keepalived:\n{}",
        site.debug()
    );
    assert!(
        site.metric(B, "halo_vrrp_adverts_received_total", &[("vip", "web")]) > 0.0,
        "Halo accepted no advert from keepalived; drops:\n{}",
        halo_drops(&site, B)
    );
    assert_eq!(site.keepalived(A).expect("keepalived").count("MASTER"), 1);
    let before = site.probe("300ms").expect("probe");
    assert_eq!(before.answered(), ["node-a"], "{before:?}");

    // keepalived crashes (its VIP stays behind, as on a crashed node): Halo takes over
    // and its gratuitous ARP moves the client.
    let prober = site
        .probe_background(VIP, flavor.probe_for(), "100ms")
        .expect("probe");
    std::thread::sleep(Duration::from_millis(500));
    site.crash_keepalived(A).expect("crash keepalived");
    let during = prober.join().expect("probe");
    eprintln!("{flavor:?} keepalived crash → Halo: {during:?}");
    assert_eq!(
        site.vrrp_state(B, "web").as_deref(),
        Some("Master"),
        "{}",
        site.debug()
    );
    assert_eq!(
        during.answered(),
        ["node-a", "node-b"],
        "{during:?}\n{}",
        site.debug()
    );

    // keepalived comes back (removing its stale VIP first) and preempts.
    site.start_keepalived(A, &conf).expect("restart keepalived");
    assert!(
        site.wait_master(A, flavor.takeover()),
        "keepalived (150) should take the VIP back from Halo (100):\n{}",
        site.debug()
    );
    assert!(
        site.keepalived(A)
            .expect("keepalived")
            .wait_state("MASTER", Duration::from_secs(1)),
        "{}",
        site.debug()
    );
    assert_eq!(
        site.vrrp_state(B, "web").as_deref(),
        Some("Backup"),
        "{}",
        site.debug()
    );
    std::thread::sleep(SETTLE);
    let after = site.probe("300ms").expect("probe");
    assert_eq!(after.answered(), ["node-a"], "{after:?}\n{}", site.debug());
    let drops = halo_drops(&site, B);
    assert!(
        drops.is_empty(),
        "Halo dropped keepalived's adverts:\n{drops}"
    );
}

#[test]
fn v3_100ms_halo_master_keepalived_backup() {
    let Some(_lab) = lab::enter(&[Tool::Keepalived], Share::Shared) else {
        return;
    };
    halo_master_keepalived_backup(Flavor::V3Fast, "ka3hm");
}

#[test]
fn v3_100ms_keepalived_master_halo_backup() {
    let Some(_lab) = lab::enter(&[Tool::Keepalived], Share::Shared) else {
        return;
    };
    keepalived_master_halo_backup(Flavor::V3Fast, "ka3km");
}

#[test]
fn v2_password_halo_master_keepalived_backup() {
    let Some(_lab) = lab::enter(&[Tool::Keepalived], Share::Shared) else {
        return;
    };
    halo_master_keepalived_backup(Flavor::V2Pass, "ka2hm");
}

#[test]
fn v2_password_keepalived_master_halo_backup() {
    let Some(_lab) = lab::enter(&[Tool::Keepalived], Share::Shared) else {
        return;
    };
    keepalived_master_halo_backup(Flavor::V2Pass, "ka2km");
}

/// Different passwords: neither accepts the other's adverts, so both become master,
/// and Halo counts the rejected adverts as `bad_auth`.
#[test]
fn v2_wrong_password_does_not_elect_together() {
    let Some(_lab) = lab::enter(&[Tool::Keepalived], Share::Shared) else {
        return;
    };
    let mut site = Site::new("ka2pw", &["node-a", "node-b"]).expect("lab");
    site.start_healthy(B, &proxy_only_yaml(&[VIP]))
        .expect("proxy on b");
    site.start_healthy(A, &Flavor::V2Pass.halo_yaml("node-a", 150, PASSWORD))
        .expect("halo on a");
    site.start_keepalived(B, &Flavor::V2Pass.keepalived(100, "secret2"))
        .expect("keepalived on b");
    assert!(
        site.wait_holders(VIP, &[A, B], Duration::from_secs(8)),
        "with different passwords both should be master:\n{}",
        site.debug()
    );
    assert!(
        site.stays(VIP, &[A, B], Duration::from_millis(1500)),
        "{}",
        site.debug()
    );
    assert_eq!(site.vrrp_state(A, "web").as_deref(), Some("Master"));
    assert_eq!(
        site.keepalived(B).expect("keepalived").state().as_deref(),
        Some("MASTER")
    );
    let bad_auth = site.metric(
        A,
        "halo_vrrp_dropped_packets_total",
        &[("vip", "web"), ("reason", "bad_auth")],
    );
    assert!(
        bad_auth >= 1.0,
        "Halo should count keepalived's adverts as bad_auth; drops:\n{}",
        halo_drops(&site, A)
    );
    assert_eq!(
        site.metric(A, "halo_vrrp_adverts_received_total", &[("vip", "web")]),
        0.0
    );
}
