//! Live migration of a keepalived + HAProxy pair to Halo, node by node (root only, needs
//! keepalived and haproxy): (a) both nodes legacy, (b) the BACKUP node swapped for Halo,
//! (c) a planned handover to Halo with `halo-dataplane takeover`, (d) the old master
//! swapped for Halo, (e) the Halo master crashes. A client probes through the VIP during
//! every step; planned steps must lose no request, the crash at most one failover time.
//! Halo's manifest is what `halo-dataplane import` makes of the haproxy.cfg and the
//! keepalived.conf files the legacy nodes ran.

use std::time::{Duration, Instant};

use halo_tests::lab::{self, Share, Tool};
use halo_tests::migration::{Flavor, KEEPALIVED_GARP_MASTER_DELAY, Migration, PRIORITIES, table};
use halo_tests::site::{Site, VIP};

const A: usize = 0;
const B: usize = 1;

fn connections(site: &Site, i: usize) -> f64 {
    site.metric(i, "halo_listener_connections_total", &[])
}

fn migrate(flavor: Flavor, label: &str) {
    let mut m = Migration::new(label, flavor).expect("lab");
    // Generous waits use node-b's (longer) failover time; the crash in step e is
    // bounded by node-a's, the backup that takes over there.
    let failover = flavor.failover_time(PRIORITIES[B]);
    let crash_bound = flavor.failover_time(PRIORITIES[A]);
    // The legacy pair: node-a (150) master, node-b (100) backup.
    m.start_legacy(A).expect("legacy node-a");
    assert!(
        m.site.wait_master(A, failover * 2),
        "keepalived on node-a should be master:\n{}",
        m.site.debug()
    );
    let master_since = Instant::now();
    m.start_legacy(B).expect("legacy node-b");
    let ka_b = m.site.keepalived(B).expect("keepalived b");
    assert!(ka_b.wait_state("BACKUP", failover), "{}", m.site.debug());

    // Steady: past keepalived's delayed gratuitous ARPs, as any pair in production is.
    m.step("a. both nodes keepalived + HAProxy", true, |m| {
        let steady = master_since + KEEPALIVED_GARP_MASTER_DELAY + Duration::from_secs(1);
        std::thread::sleep(steady.saturating_duration_since(Instant::now()));
        if !m.site.stays(VIP, &[A], Duration::from_millis(500)) {
            anyhow::bail!("the VIP moved on a steady legacy pair");
        }
        Ok(())
    })
    .expect("step a");

    m.step("b. node-b (backup): legacy out, Halo in", true, |m| {
        m.retire_legacy(B)?;
        m.start_halo(B)?;
        // Longer than Halo's Master_Down_Interval: it must hear keepalived's adverts.
        std::thread::sleep(failover);
        Ok(())
    })
    .expect("step b");
    assert_eq!(
        m.site.vrrp_state(B, "web").as_deref(),
        Some("Backup"),
        "Halo must join keepalived's VRID as backup:\n{}",
        m.site.debug()
    );
    assert_eq!(m.site.holders(VIP), [A], "{}", m.site.debug());
    assert!(
        m.site
            .metric(B, "halo_vrrp_adverts_received_total", &[("vip", "web")])
            > 0.0,
        "Halo accepted none of keepalived's adverts:\n{}",
        m.site.debug()
    );
    assert_eq!(
        m.site
            .metric(B, "halo_vrrp_dropped_packets_total", &[("vip", "web")]),
        0.0,
        "Halo dropped keepalived's adverts (the runbook's check):\n{}",
        m.site.metrics(B).unwrap_or_default()
    );
    assert_eq!(connections(&m.site, B), 0.0, "the backup served traffic");

    m.step(
        "c. planned handover: halo-dataplane takeover on node-b",
        true,
        |m| {
            m.site.takeover(B, "web")?;
            if !m.site.wait_master(B, failover) {
                anyhow::bail!("node-b did not become the only holder of the VIP");
            }
            Ok(())
        },
    )
    .expect("step c");
    assert_eq!(
        m.site.vrrp_state(B, "web").as_deref(),
        Some("Master"),
        "{}",
        m.site.debug()
    );
    let ka_a = m.site.keepalived(A).expect("keepalived a");
    assert_eq!(
        ka_a.state().as_deref(),
        Some("BACKUP"),
        "{}",
        m.site.debug()
    );
    assert!(
        connections(&m.site, B) > 0.0,
        "after the handover the client must be served by Halo on node-b"
    );

    m.step("d. node-a (old master): legacy out, Halo in", true, |m| {
        m.retire_legacy(A)?;
        m.start_halo(A)?;
        std::thread::sleep(failover);
        Ok(())
    })
    .expect("step d");
    assert_eq!(
        m.site.vrrp_state(A, "web").as_deref(),
        Some("Backup"),
        "Halo on node-a (150) must not preempt node-b, raised above it by the takeover:\n{}",
        m.site.debug()
    );
    assert_eq!(m.site.holders(VIP), [B], "{}", m.site.debug());

    m.step("e. forced: SIGKILL the Halo master (node-b)", false, |m| {
        m.site.stop(B, "KILL")?;
        if !halo_tests::site::wait_until(failover * 2, Duration::from_millis(20), || {
            m.site.vrrp_state(A, "web").as_deref() == Some("Master")
        }) {
            anyhow::bail!("node-a did not take over");
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    })
    .expect("step e");

    eprintln!(
        "{flavor:?} migration (one failover time: {} ms)\n{}",
        crash_bound.as_millis(),
        table(&m.results)
    );
    eprintln!(
        "halo-dataplane import of the nodes' haproxy.cfg and keepalived.conf files:\n{}",
        m.import_report
    );
    let both = ["web1", "web2"];
    for r in &m.results {
        assert_eq!(r.backends(), both, "{}: {:?}", r.step, r.summary);
        if r.planned {
            assert_eq!(
                r.summary.failed,
                0,
                "{} lost requests: {:?}\n{}",
                r.step,
                r.summary,
                m.site.debug()
            );
        } else {
            let outage = r.outage_ms().unwrap_or(u64::MAX);
            assert!(
                u128::from(outage) <= crash_bound.as_millis(),
                "{}: outage {outage} ms, more than one failover time ({} ms): {:?}\n{}",
                r.step,
                crash_bound.as_millis(),
                r.summary,
                m.site.debug()
            );
        }
    }
}

#[test]
fn v2_pass_unicast_keepalived_haproxy_to_halo() {
    let Some(_lab) = lab::enter(&[Tool::Keepalived, Tool::Haproxy], Share::Alone) else {
        return;
    };
    migrate(Flavor::V2PassUnicast, "mig2");
}

#[test]
fn v3_multicast_keepalived_haproxy_to_halo() {
    let Some(_lab) = lab::enter(&[Tool::Keepalived, Tool::Haproxy], Share::Alone) else {
        return;
    };
    migrate(Flavor::V3Multicast, "mig3");
}

/// Why the runbook hands over with `halo-dataplane takeover` and retires a node's
/// keepalived before its HAProxy. With Halo on node-b as backup and the legacy master on
/// node-a, the master is moved three ways: stopping HAProxy first leaves the VIP on a node
/// with nothing listening until keepalived stops too; stopping keepalived first still
/// loses the requests of Skew_Time (keepalived drops the VIP at once, the backup waits
/// before taking it); `takeover` loses none (both hold the VIP until the old master yields).
#[test]
fn handover_orders_compared() {
    let Some(_lab) = lab::enter(&[Tool::Keepalived, Tool::Haproxy], Share::Alone) else {
        return;
    };
    let flavor = Flavor::V2PassUnicast;
    let failover = flavor.failover_time(PRIORITIES[B]);
    let mut m = Migration::new("migord", flavor).expect("lab");
    m.start_legacy(A).expect("legacy node-a");
    assert!(m.site.wait_master(A, failover * 2), "{}", m.site.debug());
    m.start_legacy(B).expect("legacy node-b");
    m.retire_legacy(B).expect("retire node-b");
    m.start_halo(B).expect("halo on node-b");
    std::thread::sleep(failover);
    assert_eq!(m.site.holders(VIP), [A], "{}", m.site.debug());

    let back_to_legacy_master = |m: &mut Migration| {
        m.start_legacy(A).expect("legacy node-a again");
        // keepalived (150) preempts Halo (100); then its delayed ARPs pass.
        assert!(m.site.wait_master(A, failover * 2), "{}", m.site.debug());
        std::thread::sleep(KEEPALIVED_GARP_MASTER_DELAY + Duration::from_millis(500));
    };

    let haproxy_first = m
        .step("HAProxy stopped, then keepalived", true, |m| {
            m.site.stop_haproxy(A, "USR1")?;
            std::thread::sleep(Duration::from_secs(1));
            m.site.stop_keepalived(A)?;
            if !m.site.wait_master(B, failover) {
                anyhow::bail!("Halo did not take over");
            }
            Ok(())
        })
        .expect("haproxy first");
    back_to_legacy_master(&mut m);
    let keepalived_first = m
        .step("keepalived stopped, VIP moved, then HAProxy", true, |m| {
            m.retire_legacy(A)?;
            if !m.site.wait_master(B, failover) {
                anyhow::bail!("Halo did not take over");
            }
            Ok(())
        })
        .expect("keepalived first");
    back_to_legacy_master(&mut m);
    let takeover = m
        .step(
            "halo-dataplane takeover, then keepalived, HAProxy",
            true,
            |m| {
                m.site.takeover(B, "web")?;
                if !m.site.wait_master(B, failover) {
                    anyhow::bail!("Halo did not take over");
                }
                m.retire_legacy(A)
            },
        )
        .expect("takeover");
    eprintln!("handover orders\n{}", table(&m.results));
    assert!(
        haproxy_first.summary.failed > keepalived_first.summary.failed
            && keepalived_first.summary.failed > 0,
        "HAProxy first should lose the most, keepalived first some: {haproxy_first:?} {keepalived_first:?}"
    );
    assert_eq!(
        takeover.summary.failed,
        0,
        "{takeover:?}\n{}",
        m.site.debug()
    );
}
