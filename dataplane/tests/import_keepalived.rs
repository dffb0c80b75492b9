//! `halo-dataplane import --keepalived` on realistic keepalived.conf files (under
//! `tests/import/keepalived/`): exit statuses, report lines, and that `check` accepts the
//! manifest for every node with the right priority, peers and password.

use std::path::PathBuf;

use halo_tests::import::{Run, check, import_keepalived, keepalived_fixture, vrrp_of};

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");

fn bin() -> PathBuf {
    PathBuf::from(BIN)
}

fn out_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(halo_tests::backends::unique(&format!("import-{name}-")))
}

/// Imports `files` into a manifest file; returns the run and the file.
fn import(files: &[&str], extra: &[&str]) -> (Run, PathBuf) {
    let out = out_file("ka");
    let paths: Vec<PathBuf> = files.iter().map(|f| keepalived_fixture(f)).collect();
    let mut args = vec!["-o", out.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let run = import_keepalived(&bin(), &paths, &args).expect("import");
    (run, out)
}

fn assert_line(run: &Run, line: &str) {
    assert!(
        run.stderr
            .lines()
            .any(|l| l.ends_with(line) || l.contains(line)),
        "report has no line with {line:?}:\n{}",
        run.stderr
    );
}

#[test]
fn unicast_pair_with_password_nopreempt_and_track_scripts() {
    let (run, out) = import(&["pair/node-a.conf", "pair/node-b.conf"], &[]);
    // The process check's interval has no Halo counterpart: approximated, so exit 3.
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert_line(
        &run,
        "pair/node-a.conf:17: nopreempt: mapped to VirtualIP web spec.vrrp.preempt",
    );
    assert_line(
        &run,
        "pair/node-a.conf:18: unicast_src_ip 192.0.2.1: mapped to VirtualIP web spec.peers[0]",
    );
    assert_line(
        &run,
        "pair/node-b.conf:18: 192.0.2.1: mapped to VirtualIP web spec.peers[0] (node node-a)",
    );
    assert_line(
        &run,
        "pair/node-a.conf:24: auth_pass ********: mapped to VirtualIP web spec.vrrp.authentication.password",
    );
    // Lines of the included file carry its own name and numbers.
    assert_line(
        &run,
        "pair/common/scripts.conf:4: script \"killall -0 haproxy\": mapped to spec.vrrp.track.bindFailure",
    );
    assert_line(
        &run,
        "pair/common/scripts.conf:10: script \"/usr/bin/curl -sf -o /dev/null http://127.0.0.1:8000/\": mapped to spec.vrrp.track.checks[chk_web].http.url",
    );
    assert_line(
        &run,
        "pair/common/scripts.conf:5: interval 2: approximated as spec.vrrp.track.bindFailure",
    );
    assert_line(
        &run,
        "pair/node-a.conf:15: priority 150: mapped to VirtualIP web spec.priorities[0] (150 + 2 from positive track weights = 152)",
    );
    assert_eq!(
        run.stderr.matches("scripts.conf:4:").count(),
        1,
        "a file both nodes include is reported once:\n{}",
        run.stderr
    );
    assert!(
        run.stderr
            .ends_with("42 mapped, 1 approximated, 0 unsupported\n"),
        "{}",
        run.stderr
    );

    let manifest = std::fs::read_to_string(&out).expect("manifest");
    assert!(
        manifest.contains("url: http://127.0.0.1:8000/"),
        "{manifest}"
    );
    assert!(manifest.contains("weight: 60"), "{manifest}");
    for (node, priority, peer) in [("node-a", 152, "192.0.2.2"), ("node-b", 102, "192.0.2.1")] {
        let config = check(&bin(), &out, node).expect("check");
        let vrrp = vrrp_of(&config, "web").expect("vip web");
        assert_eq!(vrrp["priority"], priority, "{node}: {vrrp}");
        assert_eq!(
            vrrp["unicastPeers"],
            serde_json::json!([peer]),
            "{node}: {vrrp}"
        );
        assert_eq!(vrrp["authPassword"], "halo#42");
        assert_eq!(vrrp["version"], 2);
        assert_eq!(vrrp["vrid"], 42);
        assert_eq!(vrrp["advertIntervalMs"], 1000);
        assert_eq!(vrrp["preempt"], false);
        // keepalived's +2 while haproxy runs: 2 higher, and 2 off when a listener fails.
        assert_eq!(vrrp["track"]["bindFailure"]["weight"], 2, "{vrrp}");
    }
    let _ = std::fs::remove_file(out);
}

#[test]
fn node_names_from_router_id_and_json_report() {
    let (run, out) = import(
        &["pair/node-a.conf", "pair/node-b.conf"],
        &["--node-name-from", "router-id", "--report", "json"],
    );
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stderr).expect("JSON report");
    assert_eq!(report["mapped"], 42);
    assert_eq!(report["approximated"], 1);
    let entries = report["entries"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .any(|e| e["directive"] == "router_id lb-a" && e["field"] == "the node name")
    );
    let config = check(&bin(), &out, "lb-b").expect("check lb-b");
    assert_eq!(vrrp_of(&config, "web").expect("web")["priority"], 102);
    let _ = std::fs::remove_file(out);
}

#[test]
fn vrrp3_multicast_pair_maps_completely() {
    let (run, out) = import(&["v3/lb1.conf", "v3/lb2.conf"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_line(
        &run,
        "v3/lb1.conf:22: advert_int 0.1: mapped to VirtualIP vi-4 spec.vrrp.advertisementInterval",
    );
    assert_line(
        &run,
        "v3/lb1.conf:12: VI_4: mapped to VirtualIP vi-4 spec.vrrp.syncGroup",
    );
    assert_line(
        &run,
        "v3/lb1.conf:27: eth1 weight -50: mapped to VirtualIP vi-4 spec.vrrp.track.interfaces[eth1]",
    );
    assert!(
        run.stderr
            .ends_with(" mapped, 0 approximated, 0 unsupported\n"),
        "{}",
        run.stderr
    );
    for (node, v4, v6) in [("lb1", 200, 100), ("lb2", 100, 50)] {
        let config = check(&bin(), &out, node).expect("check");
        for (vip, priority) in [("vi-4", v4), ("vi-6", v6)] {
            let vrrp = vrrp_of(&config, vip).expect(vip);
            assert_eq!(vrrp["priority"], priority, "{node} {vip}: {vrrp}");
            assert_eq!(vrrp["version"], 3);
            assert_eq!(vrrp["vrid"], 51);
            assert_eq!(vrrp["advertIntervalMs"], 100);
            assert_eq!(vrrp["syncGroup"], "VG_1");
            assert_eq!(vrrp["garp"]["intervalMs"], 50);
            assert!(vrrp.get("unicastPeers").is_none(), "multicast: {vrrp}");
            assert!(vrrp.get("authPassword").is_none());
        }
    }
    let _ = std::fs::remove_file(out);
}

#[test]
fn every_unsupported_kind_is_reported_with_its_line() {
    let (run, out) = import(&["unsupported/lb1.conf"], &[]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    for line in [
        "unsupported/lb1.conf:3: notification_email: unsupported: Halo sends no e-mail",
        "unsupported/lb1.conf:8: vrrp_startup_delay 5: unsupported:",
        "unsupported/lb1.conf:14: script \"pidof haproxy || exit 1\": approximated as spec.vrrp.track.checks[chk_shell].exec",
        "unsupported/lb1.conf:16: timeout 5: approximated",
        "unsupported/lb1.conf:18: init_fail: unsupported:",
        "unsupported/lb1.conf:23: weight -10 reverse: unsupported:",
        "unsupported/lb1.conf:29: use_vmac: unsupported: Halo has no virtual MAC",
        "unsupported/lb1.conf:35: auth_type AH: unsupported:",
        "unsupported/lb1.conf:39: 192.0.2.61/24 dev eth0 label eth0:vip: approximated",
        "unsupported/lb1.conf:43: 192.0.2.63/24: approximated",
        "unsupported/lb1.conf:45: garp_master_delay 10: approximated",
        "unsupported/lb1.conf:49: chk_missing: unsupported: no vrrp_script chk_missing",
        "unsupported/lb1.conf:51: notify_master /etc/keepalived/master.sh: unsupported: Halo runs no hooks",
        "unsupported/lb1.conf:55: virtual_server 192.0.2.61 80: unsupported: LVS",
    ] {
        assert_line(&run, line);
    }
    // What could be mapped still makes a manifest check accepts.
    let config = check(&bin(), &out, "lb1").expect("check");
    let vrrp = vrrp_of(&config, "vi-1").expect("vi-1");
    assert_eq!(vrrp["vrid"], 61);
    assert!(
        vrrp.get("authPassword").is_none(),
        "AH is not carried over: {vrrp}"
    );
    let _ = std::fs::remove_file(out);
}

#[test]
fn a_parse_error_exits_2_with_file_and_line() {
    let (run, out) = import(&["broken/lb1.conf"], &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("broken/lb1.conf:5: block of 'vrrp_instance' is never closed"),
        "{}",
        run.stderr
    );
    assert!(
        !out.exists(),
        "no manifest is written for a file that does not parse"
    );
    let missing =
        import_keepalived(&bin(), &[keepalived_fixture("no-such.conf")], &[]).expect("run");
    assert_eq!(missing.code, Some(2));
    assert!(
        missing.stderr.contains("no-such.conf:0: cannot read"),
        "{}",
        missing.stderr
    );
}
