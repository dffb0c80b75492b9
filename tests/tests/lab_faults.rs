//! The failure table on the three-node fault lab: each test injects one fault while a
//! client probes the VIP, asserts what must hold, and prints its row (fault, outage,
//! failed requests, detection time).

use std::time::{Duration, Instant};

use halo_tests::fault_lab::{FaultLab, NODES, Row, table};
use halo_tests::lab::{self, Share, Tool};
use halo_tests::probe::Summary;
use halo_tests::site::VIP;
use halo_tests::vrrp_forge::Defect;

/// Before a fault, so the probe has answers on both sides of it.
const LEAD_IN: Duration = Duration::from_millis(700);

/// Prints the rows and adds them to the table the suite prints at the end.
fn print_rows(rows: &[Row]) {
    eprintln!("\n{}", table(rows));
    for row in rows {
        if let Err(e) = halo_tests::fault_lab::record(row) {
            eprintln!("the row is not in the collected table: {e:#}");
        }
    }
}

fn print_row(row: &Row) {
    print_rows(std::slice::from_ref(row));
}

/// The client is answered again within a second of the fault, and still at the end.
fn assert_answered_again(row: &Row, probe: &Summary) {
    assert!(
        row.outage_ms < 1000 && probe.runs.last().is_some_and(|r| r.who != "-"),
        "{probe:?}"
    );
}

#[test]
fn sigkill_of_the_master_data_plane() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let mut lab = FaultLab::start("fkill").expect("lab");
    let old = lab.wait_master(Duration::from_secs(5)).expect("master");
    let prober = lab.probe("4s", "100ms").expect("probe");
    std::thread::sleep(LEAD_IN);
    let killed = Instant::now();
    lab.stop_dataplane(old, "KILL").expect("kill");
    let (new, at) = lab
        .wait_new_master(old, Duration::from_secs(3))
        .expect("new master");
    let detection = at - killed;
    // Waited for longer than required, so a failure says how late it was.
    let status_after = lab
        .wait_status_master(new, Duration::from_secs(10))
        .map(|_| killed.elapsed());
    let probe = prober.join().expect("probe");
    let row = Row::new("SIGKILL the master data plane", &probe, Some(detection));
    print_row(&row);
    let status_after = status_after.expect("status names the new master");
    eprintln!("status.master followed {status_after:?} after the kill");
    assert!(
        status_after < Duration::from_secs(2),
        "VirtualIP status names {} only {status_after:?} after the kill:\n{}",
        NODES[new],
        lab.debug()
    );
    assert!(
        probe.runs.last().is_some_and(|r| r.who != "-"),
        "the VIP stopped answering: {probe:?}\n{}",
        lab.debug()
    );
    assert!(
        row.outage_ms < 1000,
        "another node answers only after {} ms: {probe:?}",
        row.outage_ms
    );

    // The killed node comes back: it drops the address it was killed with and stays
    // Backup (preempt: false), so exactly one node holds the VIP.
    lab.start_dataplane(old).expect("restart");
    lab.wait_dataplane(old, Duration::from_secs(20))
        .expect("restarted");
    assert_eq!(lab.vrrp_state(old).as_deref(), Some("Backup"));
    assert!(
        lab.site.stays(VIP, &[new], Duration::from_secs(1)),
        "stale VIP after the restart:\n{}",
        lab.debug()
    );
}

#[test]
fn rolling_restart_of_all_data_planes() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let mut lab = FaultLab::start("froll").expect("lab");
    let versions = lab.versions();
    // A client with an ordinary timeout: a connection attempt that falls into a
    // handover is retried by TCP (after 1 s) and still answered; the row's outage column
    // shows that wait.
    let prober = lab.probe("24s", "2s").expect("probe");
    // And a database client on the TCP listener (a connection, a greeting, an echo).
    let db = lab.probe_db("24s", "2s").expect("db probe");
    let started = Instant::now();
    std::thread::sleep(LEAD_IN);
    // Like a DaemonSet rollout: one node at a time, the next once it is ready again.
    for i in 0..NODES.len() {
        lab.stop_dataplane(i, "TERM").expect("stop");
        lab.start_dataplane(i).expect("start");
        lab.wait_dataplane(i, Duration::from_secs(6))
            .expect("ready again");
        std::thread::sleep(Duration::from_millis(500));
    }
    let rolled = started.elapsed();
    let probe = prober.join().expect("probe");
    let db = db.join().expect("db probe");
    let rows = [
        Row::new(
            "rolling restart of all data planes (SIGTERM, one by one)",
            &probe,
            None,
        ),
        Row::new("  the same, TCP echo clients on the DB stand-in", &db, None),
    ];
    print_rows(&rows);
    assert_eq!(db.failed, 0, "{:?}\n{}", db.failures, lab.debug());
    let answered: std::collections::BTreeSet<&str> = db.answered().into_iter().collect();
    assert_eq!(answered, ["pod-1", "pod-2"].into(), "{db:?}");
    assert!(
        rolled < Duration::from_secs(23),
        "the rollout outlasted the probe"
    );
    assert_eq!(probe.failed, 0, "{:?}\n{}", probe.failures, lab.debug());
    lab.wait_master(Duration::from_secs(2)).expect("one master");
    assert_eq!(lab.versions(), versions, "config churned");
}

#[test]
fn controllers_killed() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let mut lab = FaultLab::start("fctl").expect("lab");
    let versions = lab.versions();
    let mut rows = Vec::new();

    // The leader dies: the standby takes over; traffic does not notice.
    let prober = lab.probe("3s", "100ms").expect("probe");
    std::thread::sleep(LEAD_IN);
    let leader = lab.wait_leader(Duration::from_secs(5)).expect("leader");
    let killed = Instant::now();
    lab.kill_controller(leader).expect("kill leader");
    let standby = lab
        .wait_leader(Duration::from_secs(15))
        .expect("new leader");
    let detection = killed.elapsed();
    assert_ne!(standby, leader);
    let probe = prober.join().expect("probe");
    rows.push(Row::new(
        "controller leader killed",
        &probe,
        Some(detection),
    ));
    assert_eq!(probe.failed, 0, "{probe:?}");

    // Both are gone: traffic continues and VRRP fails over on its own.
    lab.kill_controller(standby).expect("kill standby");
    let old = lab.wait_master(Duration::from_secs(2)).expect("master");
    let prober = lab.probe("3s", "100ms").expect("probe");
    std::thread::sleep(LEAD_IN);
    let killed = Instant::now();
    lab.stop_dataplane(old, "KILL").expect("kill master");
    let (new, at) = lab
        .wait_new_master(old, Duration::from_secs(3))
        .expect("failover without controllers");
    let probe = prober.join().expect("probe");
    let row = Row::new(
        "both controllers down, then SIGKILL the master",
        &probe,
        Some(at - killed),
    );
    rows.push(row.clone());
    print_rows(&rows);
    assert_answered_again(&row, &probe);
    // The killed node restarts from its last good config, with no controller to ask.
    lab.start_dataplane(old).expect("restart");
    lab.wait_dataplane(old, Duration::from_secs(20))
        .expect("restarts without a controller");

    // The controllers return: the data planes reconnect and get the same versions back.
    lab.start_controller(0).expect("controller");
    lab.start_controller(1).expect("controller");
    let m = lab.wait_settled(Duration::from_secs(30)).expect("settled");
    assert_eq!(m, new, "the VIP moved when the controllers came back");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.versions(), versions, "config churned:\n{}", lab.debug());
}

#[test]
fn api_server_and_etcd_stopped_for_60_s() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let mut lab = FaultLab::start("fapi").expect("lab");
    let versions = lab.versions();
    let old = lab.wait_master(Duration::from_secs(2)).expect("master");
    // A minute: far beyond the controllers' lease (3 s) and the data planes' stream
    // silence limit (20 s), so the leader steps down and every stream is given up.
    const OUTAGE: Duration = Duration::from_secs(60);
    let prober = lab.probe("62s", "100ms").expect("probe");
    std::thread::sleep(LEAD_IN);
    let stopped = Instant::now();
    lab.stop_api().expect("stop the API server");
    assert!(
        lab.cluster
            .kubectl_ok(&["get", "--raw", "/readyz"])
            .is_err(),
        "the API server still answers"
    );
    std::thread::sleep(Duration::from_secs(5));
    let killed = Instant::now();
    lab.stop_dataplane(old, "KILL").expect("kill master");
    let (new, at) = lab
        .wait_new_master(old, Duration::from_secs(3))
        .expect("failover during the outage");
    let detection = at - killed;
    lab.start_dataplane(old).expect("restart");
    lab.wait_dataplane(old, Duration::from_secs(10))
        .expect("restarts without the API");
    std::thread::sleep(OUTAGE.saturating_sub(stopped.elapsed()));
    let outage = stopped.elapsed();
    lab.start_api().expect("start the API server");
    let probe = prober.join().expect("probe");
    let row = Row::new(
        &format!(
            "API server + etcd down {} s, SIGKILL the master meanwhile",
            outage.as_secs()
        ),
        &probe,
        Some(detection),
    );
    print_row(&row);
    assert_answered_again(&row, &probe);
    // Back: a leader, every data plane streaming, the status naming the new master.
    let m = lab
        .wait_settled(Duration::from_secs(30))
        .expect("reconciled");
    assert_eq!(m, new);
    assert_eq!(lab.versions(), versions, "config churned:\n{}", lab.debug());
}

/// Strangers on the bridge: adverts for the VIP's VRID with one defect each, then
/// well-formed ones at priority 1 (the control: the same sender is heard). Every node
/// drops each defect under its reason; nobody changes state; the client sees nothing.
#[test]
fn hostile_vrrp_packets_on_the_bridge() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let lab = FaultLab::start("fvrrp").expect("lab");
    let master = lab.wait_master(Duration::from_secs(5)).expect("master");
    const EACH: u16 = 5;
    let transitions = |lab: &FaultLab| -> Vec<f64> {
        (0..NODES.len())
            .map(|i| {
                ["Master", "Backup", "Fault"]
                    .iter()
                    .map(|to| lab.vrrp_metric(i, "halo_vrrp_transitions_total", &[("to", to)]))
                    .sum()
            })
            .collect()
    };
    let before = transitions(&lab);
    let prober = lab.probe("6s", "100ms").expect("probe");
    std::thread::sleep(LEAD_IN);
    for defect in Defect::HOSTILE {
        let reason = defect.reason().unwrap_or_default();
        let counted =
            |i| lab.vrrp_metric(i, "halo_vrrp_dropped_packets_total", &[("reason", reason)]);
        let was: Vec<f64> = (0..NODES.len()).map(counted).collect();
        lab.forge_adverts(defect, EACH).expect("forge");
        let all_counted =
            halo_tests::site::wait_until(Duration::from_secs(2), Duration::from_millis(50), || {
                (0..NODES.len()).all(|i| counted(i) - was[i] >= f64::from(EACH))
            });
        assert!(
            all_counted,
            "{defect:?}: not every node dropped {EACH} adverts as {reason}: {:?} -> {:?}",
            was,
            (0..NODES.len()).map(counted).collect::<Vec<_>>()
        );
    }
    let probe = prober.join().expect("probe");
    let row = Row::new(
        "malformed VRRP (6 kinds x 5) from a stranger on the bridge",
        &probe,
        None,
    );
    print_row(&row);
    assert_eq!(transitions(&lab), before, "a forged advert changed a state");
    assert_eq!(lab.master(), Some(master), "{}", lab.debug());
    assert_eq!(probe.failed, 0, "{probe:?}");

    // The control: the same sender's well-formed adverts are heard (a backup takes them
    // for a master's), so the drops above were the defects'.
    let backup = (master + 1) % NODES.len();
    let heard = |lab: &FaultLab| lab.vrrp_metric(backup, "halo_vrrp_adverts_received_total", &[]);
    let was = heard(&lab);
    lab.forge_adverts(Defect::Valid, EACH).expect("forge");
    assert!(
        halo_tests::site::wait_until(Duration::from_secs(2), Duration::from_millis(50), || {
            heard(&lab) - was >= f64::from(EACH)
        }),
        "the well-formed forged adverts were not received: {was} -> {}",
        heard(&lab)
    );
}

/// The master's cable is pulled: it sees its link go down and gives up the VIP
/// (`interfaceDown: fault`, the default); a backup stops hearing adverts and takes over.
/// The cable back, the old master rejoins as Backup (`preempt: false`): one move, not two.
#[test]
fn link_down_on_the_master() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let lab = FaultLab::start("flink").expect("lab");
    let old = lab.wait_master(Duration::from_secs(5)).expect("master");
    let prober = lab.probe("4s", "100ms").expect("probe");
    std::thread::sleep(LEAD_IN);
    let pulled = Instant::now();
    let host = &lab.site.nodes[old];
    lab.site.lab.set_link(host, false).expect("link down");
    let (new, at) = lab
        .wait_new_master(old, Duration::from_secs(3))
        .expect("new master");
    let detection = at - pulled;
    let status_after = lab
        .wait_status_master(new, Duration::from_secs(10))
        .map(|_| pulled.elapsed());
    let faulted =
        halo_tests::site::wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
            lab.vrrp_state(old).as_deref() == Some("Fault") && !lab.site.holds_vip(old)
        });
    let probe = prober.join().expect("probe");
    let row = Row::new("link down on the master", &probe, Some(detection));
    print_row(&row);
    assert!(
        faulted,
        "the node without a link should be in Fault without the VIP: {:?}\n{}",
        lab.vrrp_state(old),
        lab.debug()
    );
    let status_after = status_after.expect("status names the new master");
    assert!(
        status_after < Duration::from_secs(2),
        "status followed only after {status_after:?}"
    );
    assert_answered_again(&row, &probe);

    lab.site.lab.set_link(host, true).expect("link up");
    assert!(
        halo_tests::site::wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            lab.vrrp_state(old).as_deref() == Some("Backup")
        }),
        "back from Fault the old master should be Backup: {:?}\n{}",
        lab.vrrp_state(old),
        lab.debug()
    );
    assert!(
        lab.site.stays(VIP, &[new], Duration::from_secs(1)),
        "the VIP moved back or is held twice:\n{}",
        lab.debug()
    );
}

/// The master is cut off from the others' VRRP while everything else flows (both sides
/// alive): a backup stops hearing it and becomes a second master. The controller, which
/// hears both, reports the split (condition, Event, metric); healed, the lower master
/// yields and the split is cleared.
#[test]
fn master_cut_off_from_vrrp_splits_then_heals() {
    let Some(_lab) = lab::enter(&[Tool::Nft], Share::Alone) else {
        return;
    };
    let lab = FaultLab::start("fsplit").expect("lab");
    let old = lab.wait_master(Duration::from_secs(5)).expect("master");
    let leader = lab.wait_leader(Duration::from_secs(5)).expect("leader");
    let split_metric = || {
        lab.controller_metric_with(
            leader,
            "halo_controller_split_brain",
            &[("virtual_ip", "web")],
        )
    };
    let prober = lab.probe("6s", "100ms").expect("probe");
    std::thread::sleep(LEAD_IN);
    lab.site.isolate_vrrp(old, true).expect("cut");
    let step = Duration::from_millis(10);
    let split =
        halo_tests::site::wait_until(Duration::from_secs(3), step, || lab.masters().len() > 1);
    let split_at = Instant::now();
    assert!(
        split,
        "no second master: {:?}\n{}",
        lab.masters(),
        lab.debug()
    );
    let detected =
        halo_tests::site::wait_until(Duration::from_secs(5), step, || split_metric() >= 2.0);
    let detection = split_at.elapsed();
    assert!(
        detected,
        "the controller did not count the split:\n{}",
        lab.debug()
    );
    assert!(
        halo_tests::site::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            lab.vip_condition("SplitBrain") == "True"
        }),
        "no SplitBrain condition:\n{}",
        lab.debug()
    );
    let message = lab
        .cluster
        .jsonpath(
            "vip",
            "web",
            "default",
            "{.status.conditions[?(@.type==\"SplitBrain\")].message}",
        )
        .unwrap_or_default();
    let masters = lab.masters();
    for &m in &masters {
        assert!(message.contains(NODES[m]), "{message:?} names {}", NODES[m]);
    }
    let events = lab
        .cluster
        .kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=SplitBrain,involvedObject.name=web",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .unwrap_or_default();
    assert!(events.contains("Master"), "no SplitBrain Event: {events:?}");
    std::thread::sleep(Duration::from_millis(500));

    lab.site.isolate_vrrp(old, false).expect("heal");
    let healed = Instant::now();
    assert!(
        halo_tests::site::wait_until(Duration::from_secs(3), step, || lab.masters().len() == 1),
        "still {:?} masters after healing:\n{}",
        lab.masters(),
        lab.debug()
    );
    let one_master = healed.elapsed();
    assert!(
        halo_tests::site::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            lab.vip_condition("SplitBrain") == "False" && split_metric() == 0.0
        }),
        "the split stays reported:\n{}",
        lab.debug()
    );
    let probe = prober.join().expect("probe");
    let row = Row::new(
        "master cut off from VRRP (both alive): split, then healed",
        &probe,
        Some(detection),
    );
    print_row(&row);
    eprintln!(
        "split seen by the controller {detection:?} after the second master; one master {one_master:?} after healing"
    );
    // Two adverts of the lab's VirtualIP (100 ms each).
    assert!(
        detection <= Duration::from_millis(200),
        "split reported {detection:?} after it began"
    );
    let master = lab.master().expect("one master");
    assert!(
        lab.site.stays(VIP, &[master], Duration::from_millis(500)),
        "{}",
        lab.debug()
    );
    assert_answered_again(&row, &probe);
}

/// A pod crashes under load: requests not yet sent to it must not fail (a refused
/// connection is retried on the other pod), health checks mark it down before its
/// EndpointSlice says anything, and the EndpointSlice update then removes it.
#[test]
fn backend_pod_killed_under_load() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let lab = FaultLab::start("fpod").expect("lab");
    let master = lab.wait_master(Duration::from_secs(5)).expect("master");
    let step = Duration::from_millis(20);
    assert!(
        halo_tests::site::wait_until(Duration::from_secs(5), step, || {
            lab.pod_up(master, 0) == Some(true) && lab.pod_up(master, 1) == Some(true)
        }),
        "both pods should be up first:\n{}",
        lab.debug()
    );
    let prober = lab.probe("4s", "100ms").expect("probe");
    std::thread::sleep(LEAD_IN);
    let killed = Instant::now();
    lab.kill_pod(0).expect("kill pod-1");
    let down = halo_tests::site::wait_until(Duration::from_secs(3), step, || {
        lab.pod_up(master, 0) == Some(false)
    });
    let detection = killed.elapsed();
    assert!(down, "pod-1 never marked down:\n{}", lab.debug());
    lab.set_ready(&[false, true]).expect("EndpointSlice");
    let removed = halo_tests::site::wait_until(Duration::from_secs(5), step, || {
        (0..NODES.len()).all(|i| lab.pod_up(i, 0).is_none())
    });
    let removed_after = killed.elapsed();
    assert!(
        removed,
        "the EndpointSlice update did not remove pod-1:\n{}",
        lab.debug()
    );
    let probe = prober.join().expect("probe");
    let row = Row::new(
        "a backend pod SIGKILLed under load",
        &probe,
        Some(detection),
    );
    print_row(&row);
    eprintln!(
        "pod-1 marked down {detection:?} after the kill, gone from every node's config {removed_after:?} after"
    );
    assert_eq!(probe.failed, 0, "{probe:?}");
    assert_eq!(
        probe.runs.last().map(|r| r.who.as_str()),
        Some("pod-2"),
        "{probe:?}"
    );
}

/// 100 EndpointSlice changes under load (pod-2 scaled out and back in, as a rollout or
/// an autoscaler does): every change is pushed while the client keeps being answered.
#[test]
fn endpoint_changes_under_load() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let lab = FaultLab::start("feps").expect("lab");
    let master = lab.wait_master(Duration::from_secs(5)).expect("master");
    let before = lab.version(master).unwrap_or(0);
    let probe = lab
        .site
        .probe_step(VIP, "/", "90s", "100ms")
        .expect("probe");
    std::thread::sleep(LEAD_IN);
    let started = Instant::now();
    const CHANGES: usize = 100;
    for k in 0..CHANGES {
        lab.set_ready(&[true, k % 2 == 1]).expect("EndpointSlice");
    }
    let applied = started.elapsed();
    let settled =
        halo_tests::site::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            (0..NODES.len()).all(|i| lab.pod_up(i, 1).is_some())
        });
    std::thread::sleep(LEAD_IN);
    let summary = probe.finish().expect("probe");
    let pushed = lab.version(master).unwrap_or(0).saturating_sub(before);
    let row = Row::new(
        &format!("{CHANGES} EndpointSlice changes under load"),
        &summary,
        None,
    );
    print_row(&row);
    eprintln!(
        "{CHANGES} changes applied in {applied:?}; the master's config moved {pushed} versions"
    );
    assert!(settled, "pod-2 is not back on every node:\n{}", lab.debug());
    assert!(pushed > 0, "no change reached the master");
    assert_eq!(summary.failed, 0, "{summary:?}");
    let answered: std::collections::BTreeSet<&str> = summary.answered().into_iter().collect();
    assert_eq!(answered, ["pod-1", "pod-2"].into(), "{summary:?}");
}

/// Strangers on the config stream while traffic flows: no token → 401; another
/// account's token, a node's token used for another node, an unbound token → 403. Every
/// refusal is counted, the log holds them back, nothing reaches the data planes.
#[test]
fn unauthenticated_and_wrong_node_stream_clients() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let lab = FaultLab::start("fauth").expect("lab");
    let versions = lab.versions();
    let leader = lab.wait_leader(Duration::from_secs(5)).expect("leader");
    let intruder = lab.cluster.token("intruder", None).expect("token");
    let unbound = lab.cluster.token("halo-dataplane", None).expect("token");
    let refused = |status: &str| {
        lab.controller_metric_with(
            leader,
            "halo_controller_auth_refused_total",
            &[("status", status)],
        )
    };
    let (was_401, was_403) = (refused("401"), refused("403"));
    let prober = lab.probe("4s", "100ms").expect("probe");
    std::thread::sleep(LEAD_IN);
    const ROUNDS: usize = 5;
    for _ in 0..ROUNDS {
        for (token, node, want) in [
            (None, NODES[0], 401),
            (Some(intruder.as_path()), NODES[0], 403),
            (Some(lab.node_token(1)), NODES[0], 403),
            (Some(unbound.as_path()), NODES[0], 403),
        ] {
            assert_eq!(
                lab.stream_attempt(leader, node, token),
                want,
                "{token:?} as {node}"
            );
        }
    }
    // The control: a node's own token is let in.
    assert_eq!(
        lab.stream_attempt(leader, NODES[1], Some(lab.node_token(1))),
        204
    );
    let probe = prober.join().expect("probe");
    let row = Row::new(
        &format!("{} refused config-stream requests (401/403)", ROUNDS * 4),
        &probe,
        None,
    );
    print_row(&row);
    let counted = (refused("401") - was_401, refused("403") - was_403);
    let rounds = ROUNDS as f64;
    assert_eq!(
        counted,
        (rounds, rounds * 3.0),
        "refusals counted by status"
    );
    let log = lab.controller_log(leader);
    let lines = log.lines().filter(|l| l.contains("refused")).count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} log lines for {} refusals: one, and the rest held back\n{log}",
        ROUNDS * 4
    );
    assert_eq!(probe.failed, 0, "{probe:?}");
    assert_eq!(lab.versions(), versions, "config churned");
}

/// A second address in the example's sync group "front". Its priorities are the other
/// way round, so it is elected elsewhere first and has to join the group's leader
/// ("web", first by name) on its node.
const GROUPED: &str = "192.0.2.101";
const GROUPED_VIP: &str = r#"apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: web-extra}
spec:
  addresses: ["192.0.2.101/24"]
  interface: eth0
  priorities:
    - {node: node-a, priority: 50}
    - {node: node-b, priority: 100}
    - {node: node-c, priority: 150}
  vrrp: {version: 3, advertisementInterval: 100ms, preempt: false, syncGroup: front}
"#;

fn kubectl(lab: &FaultLab, args: &[&str]) {
    if let Err(e) = lab.cluster.kubectl_ok(args) {
        panic!("{e}\n{}", lab.debug());
    }
}

/// `spec.preferredNode` moves the whole sync group to that node with a planned takeover
/// (like `pcs resource relocate`): no request fails, and after the node restarts the
/// group comes back to it.
#[test]
fn planned_move_to_the_preferred_node() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let mut lab = FaultLab::start("fmove").expect("lab");
    lab.cluster.apply(GROUPED_VIP).expect("second VIP");
    let master = lab.wait_master(Duration::from_secs(5)).expect("master");
    let joining = Instant::now();
    assert!(
        lab.site
            .wait_holders(GROUPED, &[master], Duration::from_secs(10)),
        "the group's second address did not join the master:\n{}",
        lab.debug()
    );
    eprintln!(
        "the second address joined the group's master {:?} after it was applied",
        joining.elapsed()
    );
    assert!(
        lab.site
            .log(master)
            .contains("joined its sync group's master"),
        "joined without the group's alignment:\n{}",
        lab.debug()
    );
    let target = (master + 2) % NODES.len();
    let versions = lab.versions();
    let prober = lab.probe("6s", "2s").expect("probe");
    std::thread::sleep(LEAD_IN);
    let asked = Instant::now();
    let patch = format!(r#"{{"spec":{{"preferredNode":"{}"}}}}"#, NODES[target]);
    kubectl(
        &lab,
        &["patch", "vip", "web", "--type", "merge", "-p", &patch],
    );
    let moved = lab
        .site
        .wait_holders(VIP, &[target], Duration::from_secs(5))
        && lab
            .site
            .wait_holders(GROUPED, &[target], Duration::from_secs(2));
    let detection = asked.elapsed();
    let probe = prober.join().expect("probe");
    let row = Row::new(
        "planned move: spec.preferredNode (sync group of two)",
        &probe,
        Some(detection),
    );
    print_row(&row);
    assert!(moved, "the group did not move:\n{}", lab.debug());
    assert_eq!(probe.failed, 0, "{probe:?}");
    lab.wait_status_master(target, Duration::from_secs(5))
        .expect("status follows");
    // Only the preferred node's config changed; the others kept their version.
    let now = lab.versions();
    for i in (0..NODES.len()).filter(|&i| i != target) {
        assert_eq!(now[i], versions[i], "{} churned", NODES[i]);
    }

    // The preferred node restarts: the group leaves with it and comes back.
    lab.stop_dataplane(target, "TERM").expect("stop");
    lab.wait_new_master(target, Duration::from_secs(3))
        .expect("someone else holds it meanwhile");
    lab.start_dataplane(target).expect("start");
    assert!(
        lab.site
            .wait_holders(VIP, &[target], Duration::from_secs(15))
            && lab
                .site
                .wait_holders(GROUPED, &[target], Duration::from_secs(2)),
        "the group did not come back to its preferred node:\n{}",
        lab.debug()
    );
}

/// `kubectl cordon` of the master, then the exclude-from-external-load-balancers label on
/// the next one: each hands the VIP over before it goes, no request fails, and an
/// uncordoned node does not take it back (preempt: false).
#[test]
fn cordoned_and_excluded_nodes_hand_the_vip_over() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let lab = FaultLab::start("fdrain").expect("lab");
    let first = lab.wait_master(Duration::from_secs(5)).expect("master");
    let prober = lab.probe("8s", "2s").expect("probe");
    std::thread::sleep(LEAD_IN);
    let drained = Instant::now();
    // What `kubectl drain` does first; its evictions are the kubelet's business.
    kubectl(&lab, &["cordon", NODES[first]]);
    let (second, at) = lab
        .wait_new_master(first, Duration::from_secs(5))
        .expect("handed over");
    let detection = at - drained;
    assert!(
        lab.site
            .wait_holders(VIP, &[second], Duration::from_secs(2)),
        "{} kept the VIP:\n{}",
        NODES[first],
        lab.debug()
    );
    std::thread::sleep(Duration::from_secs(1));
    let label = format!("{}=", halo_controller::world::EXCLUDE_FROM_LOAD_BALANCERS);
    kubectl(&lab, &["label", "node", NODES[second], &label]);
    let (third, _) = lab
        .wait_new_master(second, Duration::from_secs(5))
        .expect("handed over again");
    let probe = prober.join().expect("probe");
    let row = Row::new(
        "cordon the master, then exclude-from-external-LBs the next",
        &probe,
        Some(detection),
    );
    print_row(&row);
    assert_ne!(third, first, "went back to the drained node");
    assert_eq!(probe.failed, 0, "{probe:?}");
    lab.wait_status_master(third, Duration::from_secs(5))
        .expect("status follows");
    kubectl(&lab, &["uncordon", NODES[first]]);
    assert!(
        lab.site.stays(VIP, &[third], Duration::from_secs(2)),
        "an uncordoned node took the VIP back:\n{}",
        lab.debug()
    );
}

/// A master whose data plane dies and never comes back, and whose Node is then deleted:
/// its last report stops counting (no stale Master, no split brain in status) and it
/// does not hold up the VirtualIP's finalizer.
#[test]
fn node_deleted_and_its_data_plane_never_back() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let mut lab = FaultLab::start("fgone").expect("lab");
    let old = lab.wait_master(Duration::from_secs(5)).expect("master");
    let prober = lab.probe("3s", "100ms").expect("probe");
    std::thread::sleep(LEAD_IN);
    let killed = Instant::now();
    lab.stop_dataplane(old, "KILL").expect("kill");
    let (new, at) = lab
        .wait_new_master(old, Duration::from_secs(3))
        .expect("new master");
    kubectl(&lab, &["delete", "node", NODES[old], "--wait=false"]);
    let listed = |lab: &FaultLab| {
        lab.cluster
            .jsonpath("vip", "web", "default", "{.status.nodes[*].node}")
            .unwrap_or_default()
    };
    let gone =
        halo_tests::site::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            !listed(&lab).contains(NODES[old]) && lab.status_master() == NODES[new]
        });
    let left_after = killed.elapsed();
    let probe = prober.join().expect("probe");
    let row = Row::new(
        "master's data plane gone for good, its Node deleted",
        &probe,
        Some(at - killed),
    );
    print_row(&row);
    eprintln!("its report left the status {left_after:?} after the kill");
    assert!(gone, "status still lists {}: {}", NODES[old], listed(&lab));
    assert_ne!(lab.vip_condition("SplitBrain"), "True");
    assert_answered_again(&row, &probe);

    let deleting = Instant::now();
    kubectl(&lab, &["delete", "vip", "web", "--timeout=25s"]);
    let took = deleting.elapsed();
    eprintln!("VirtualIP deleted in {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "the dead node held up the finalizer for {took:?}"
    );
}

/// How a bad object must be answered.
enum Verdict {
    /// The API server refuses it and names this field.
    Rejected(&'static str),
    /// Accepted, then `Ready=False` with this reason and an Event of it.
    NotReady(&'static str),
}

/// `kubectl apply` of ten kinds of bad spec while traffic flows: each is refused with its
/// field or reported Ready=False with a reason and an Event; nothing crashes and the
/// lab's own objects keep serving with the same config.
#[test]
fn invalid_objects_are_refused_or_reported() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let lab = FaultLab::start("fbad").expect("lab");
    let versions = lab.versions();
    let vip = |name: &str, spec: &str| {
        format!(
            "apiVersion: halo.dev/v1alpha1\nkind: VirtualIP\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        )
    };
    let lb = |name: &str, spec: &str| {
        format!(
            "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"
        )
    };
    let http =
        "{name: http, port: 8081, protocol: HTTP, backends: [{service: {name: web, port: 80}}]}";
    let cases: Vec<(&str, String, Verdict)> = vec![
        (
            "bad-address",
            vip("bad-address", "{addresses: [not-an-ip]}"),
            Verdict::Rejected("addresses"),
        ),
        (
            "bad-version",
            vip(
                "bad-version",
                "{addresses: [192.0.2.120/24], vrrp: {version: 4}}",
            ),
            Verdict::Rejected("version"),
        ),
        (
            "bad-interval",
            vip(
                "bad-interval",
                "{addresses: [192.0.2.121/24], vrrp: {version: 2, advertisementInterval: 150ms}}",
            ),
            Verdict::Rejected("advertisementInterval"),
        ),
        (
            "bad-auth",
            vip(
                "bad-auth",
                "{addresses: [192.0.2.122/24], vrrp: {version: 3, authentication: {type: PASS, password: secret}}}",
            ),
            Verdict::Rejected("authentication"),
        ),
        (
            "mixed-families",
            vip(
                "mixed-families",
                "{addresses: [192.0.2.123/24, \"2001:db8::7/64\"]}",
            ),
            Verdict::NotReady("InvalidSpec"),
        ),
        (
            "v2-ipv6",
            vip(
                "v2-ipv6",
                "{addresses: [\"2001:db8::8/64\"], vrrp: {version: 2, advertisementInterval: 1s}}",
            ),
            Verdict::NotReady("InvalidSpec"),
        ),
        (
            "bad-port",
            lb(
                "bad-port",
                "{virtualIP: web, listeners: [{name: http, port: 70000, protocol: HTTP, backends: []}]}",
            ),
            Verdict::Rejected("port"),
        ),
        (
            "bad-protocol",
            lb(
                "bad-protocol",
                "{virtualIP: web, listeners: [{name: x, port: 8082, protocol: SCTP, backends: []}]}",
            ),
            Verdict::Rejected("protocol"),
        ),
        (
            "no-such-vip",
            lb(
                "no-such-vip",
                &format!("{{virtualIP: nowhere, listeners: [{http}]}}"),
            ),
            Verdict::NotReady("InvalidSpec"),
        ),
        (
            "port-taken",
            lb(
                "port-taken",
                "{virtualIP: web, listeners: [{name: http, port: 80, protocol: HTTP, backends: [{service: {name: web, port: 80}}]}]}",
            ),
            Verdict::NotReady("InvalidSpec"),
        ),
        (
            "no-secret",
            lb(
                "no-secret",
                "{virtualIP: web, listeners: [{name: https, port: 8443, protocol: HTTPS, tls: {certificates: [{secretName: missing}]}, backends: [{service: {name: web, port: 80}}]}]}",
            ),
            Verdict::NotReady("SecretNotFound"),
        ),
    ];
    let prober = lab.probe("15s", "2s").expect("probe");
    let mut seen = Vec::new();
    for (name, yaml, verdict) in &cases {
        let kind = if yaml.contains("kind: VirtualIP") {
            "VirtualIP"
        } else {
            "LoadBalancer"
        };
        let applied = lab.cluster.apply(yaml);
        match verdict {
            Verdict::Rejected(field) => {
                let e = applied.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    e.contains(field),
                    "{name}: not refused naming {field}: {e:?}"
                );
                seen.push(format!("{name}: refused ({field})"));
            }
            Verdict::NotReady(reason) => {
                applied.unwrap_or_else(|e| panic!("{name}: {e}"));
                let ns = "default";
                let path = "{.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].reason}";
                let want = format!("False {reason}");
                let kind_arg = if kind == "VirtualIP" { "vip" } else { "hlb" };
                let got = || {
                    lab.cluster
                        .jsonpath(kind_arg, name, ns, path)
                        .unwrap_or_default()
                };
                let ready = halo_tests::site::wait_until(
                    Duration::from_secs(10),
                    Duration::from_millis(100),
                    || got() == want,
                );
                assert!(ready, "{name}: Ready is {:?}, not {want:?}", got());
                let evented = halo_tests::site::wait_until(
                    Duration::from_secs(10),
                    Duration::from_millis(100),
                    || {
                        lab.cluster
                            .event_reasons(kind, name, ns)
                            .is_ok_and(|r| r.iter().any(|x| x == reason))
                    },
                );
                assert!(
                    evented,
                    "{name}: no Event {reason}: {:?}",
                    lab.cluster.event_reasons(kind, name, ns)
                );
                seen.push(format!("{name}: Ready=False {reason}"));
            }
        }
    }
    let probe = prober.join().expect("probe");
    let row = Row::new(
        &format!("{} bad objects applied", cases.len()),
        &probe,
        None,
    );
    print_row(&row);
    eprintln!("{}", seen.join("\n"));
    assert_eq!(probe.failed, 0, "{probe:?}");
    assert_eq!(lab.versions(), versions, "the lab's config churned");
    for (i, node) in NODES.iter().enumerate() {
        assert!(lab.site.status(i).is_ok(), "{node} does not answer");
    }
}
