//! Migration interop (root only, needs the `keepalived` package): keepalived on node-a
//! runs `tests/import/keepalived/pair/node-a.conf` as written (unicast, VRRPv2 with a
//! password, nopreempt, track scripts from an include) and Halo on node-b runs what
//! `halo-dataplane import` made of the pair. They agree that node-a is master, and when
//! keepalived crashes Halo takes the VIP.
//!
//! node-a also runs a proxy-only Halo data plane on the VIP (as in lab_keepalived.rs), so
//! the probe names the node holding the VIP.

use std::time::Duration;

use halo_tests::import::{import_keepalived, keepalived_fixture};
use halo_tests::lab::{self, Share, Tool};
use halo_tests::process::binary;
use halo_tests::site::{LbDoc, Site, VIP, manifest, proxy_only_yaml};

const A: usize = 0;
const B: usize = 1;
/// VRRPv2 at 1 s: Master_Down_Interval is about 3.6 s, plus start-up.
const TAKEOVER: Duration = Duration::from_secs(7);

/// The imported manifest, with a LoadBalancer on the imported VirtualIP `web`.
fn imported_yaml(site: &Site) -> String {
    let out = site.dir.join("imported.yaml");
    let files = [
        keepalived_fixture("pair/node-a.conf"),
        keepalived_fixture("pair/node-b.conf"),
    ];
    let bin = binary("halo-dataplane").expect("halo-dataplane");
    let run =
        import_keepalived(&bin, &files, &["-o", out.to_str().expect("utf-8")]).expect("import");
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let vip = std::fs::read_to_string(&out).expect("imported manifest");
    manifest(&[vip, LbDoc::on_vip("web", "web").yaml()])
}

#[test]
fn imported_pair_agrees_with_keepalived_and_takes_over_when_it_crashes() {
    let Some(_lab) = lab::enter(&[Tool::Keepalived], Share::Shared) else {
        return;
    };
    let mut site = Site::new("kaimp", &["node-a", "node-b"]).expect("lab");
    let halo = imported_yaml(&site);
    site.start_healthy(A, &proxy_only_yaml(&[VIP]))
        .expect("proxy on a");
    site.start_keepalived_file(A, &keepalived_fixture("pair/node-a.conf"))
        .expect("keepalived on a");
    assert!(
        site.wait_master(A, TAKEOVER),
        "keepalived alone should become master:\n{}",
        site.debug()
    );
    site.start_healthy(B, &halo).expect("halo on b");

    // Both running: keepalived (150) keeps the VIP, Halo (100 + 2) stays backup and
    // accepts keepalived's unicast, password-protected adverts.
    assert!(
        site.stays(VIP, &[A], Duration::from_secs(4)),
        "keepalived must keep the VIP next to the imported Halo backup:\n{}",
        site.debug()
    );
    assert_eq!(
        site.vrrp_state(B, "web").as_deref(),
        Some("Backup"),
        "{}",
        site.debug()
    );
    assert_eq!(site.vrrp_priority(B, "web"), Some(102), "{}", site.debug());
    assert!(
        site.metric(B, "halo_vrrp_adverts_received_total", &[("vip", "web")]) > 0.0,
        "Halo accepted no advert from keepalived:\n{}",
        site.debug()
    );
    assert_eq!(
        site.metric(
            B,
            "halo_vrrp_transitions_total",
            &[("vip", "web"), ("to", "Master")]
        ),
        0.0,
        "{}",
        site.debug()
    );
    assert_eq!(site.keepalived(A).expect("keepalived").count("MASTER"), 1);
    let before = site.probe("300ms").expect("probe");
    assert_eq!(before.answered(), ["node-a"], "{before:?}");

    // keepalived crashes (its VIP stays behind, as on a dead node): Halo takes over.
    site.crash_keepalived(A).expect("crash keepalived");
    assert!(
        halo_tests::site::wait_until(TAKEOVER, Duration::from_millis(50), || {
            site.vrrp_state(B, "web").as_deref() == Some("Master")
        }),
        "Halo should take over from the crashed keepalived:\n{}",
        site.debug()
    );
    assert!(site.holds(B, VIP), "{}", site.debug());
    // Its gratuitous ARP moves the client off the stale address on node-a.
    std::thread::sleep(Duration::from_millis(600));
    let after = site.probe("300ms").expect("probe");
    assert_eq!(after.answered(), ["node-b"], "{after:?}\n{}", site.debug());
}
