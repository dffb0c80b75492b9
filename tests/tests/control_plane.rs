//! A real control plane (etcd + kube-apiserver, as envtest runs them) accepts the generated
//! CRDs and enforces their schemas and CEL rules, and `stop` ends exactly its processes.
//!
//! Needs `scripts/build-k8s-tools.sh` to have run once.

use std::path::{Path, PathBuf};
use std::time::Instant;

use halo_tests::control_plane::ControlPlane;
use halo_tests::process::{describe, succeeds};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The CRDs under test: deploy/crds, or `HALO_CRDS_DIR` (e.g. a candidate fix).
fn crds_dir() -> PathBuf {
    std::env::var_os("HALO_CRDS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("deploy/crds"))
}

/// `yaml` is refused by the API server's validation with `message`.
#[track_caller]
fn refused(cp: &ControlPlane, what: &str, yaml: &str, message: &str) {
    let out = cp
        .kubectl_with_stdin(["apply", "-f", "-"], yaml)
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what} was accepted: {}",
        describe(&out)
    );
    // "is invalid" is the server's 422 wording, not a client-side error.
    assert!(
        stderr.contains("is invalid") && stderr.contains(message),
        "{what}: expected the API server to refuse it with {message:?}: {}",
        describe(&out)
    );
    println!("refused as expected: {}", stderr.trim());
}

const VALID_VIP: &str = "apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: web}
spec: {addresses: [\"192.0.2.10/24\"], vrrp: {virtualRouterId: 10}}
";

const VALID_LB: &str = "apiVersion: halo.dev/v1alpha1
kind: LoadBalancer
metadata: {name: web, namespace: default}
spec:
  virtualIP: web
  listeners:
  - {name: http, port: 80, protocol: HTTP, backends: [{address: 192.0.2.20, port: 8080}]}
";

/// Removes the control plane's directory; after a failure it keeps the logs (etcd's data,
/// tens of MB, goes either way). Declared before the `ControlPlane`, so dropped after it.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::fs::remove_dir_all(self.0.join("etcd"));
            eprintln!("logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn api_server_accepts_the_crds_and_enforces_their_rules() {
    let scratch =
        Scratch(std::env::temp_dir().join(halo_tests::backends::unique("halo-control-plane-")));
    let dir = &scratch.0;
    let started = Instant::now();
    let cp = ControlPlane::start(dir).expect("start the control plane");
    println!(
        "control plane ready in {:?}: {} (pids {:?}, dir {})",
        started.elapsed(),
        cp.server_url(),
        cp.pids(),
        dir.display()
    );

    let readyz = succeeds(
        "get --raw /readyz",
        cp.kubectl(["get", "--raw", "/readyz"]).expect("kubectl"),
    );
    assert_eq!(readyz.trim(), "ok");

    // The CRDs as generated: a schema the API server refuses (e.g. CEL cost) fails here.
    let crds = crds_dir();
    let crds = crds.to_string_lossy();
    succeeds(
        "apply the CRDs",
        cp.kubectl(["apply", "-f", &crds]).expect("kubectl"),
    );
    succeeds(
        "wait for the CRDs",
        cp.kubectl([
            "wait",
            "--for",
            "condition=established",
            "crd/virtualips.halo.dev",
            "crd/loadbalancers.halo.dev",
            "crd/virtualippools.halo.dev",
            "--timeout=60s",
        ])
        .expect("kubectl"),
    );

    succeeds(
        "apply a valid VirtualIP",
        cp.kubectl_with_stdin(["apply", "-f", "-"], VALID_VIP)
            .expect("kubectl"),
    );
    // The schema's defaults are applied by the server.
    let version = succeeds(
        "read the VirtualIP",
        cp.kubectl(["get", "vip", "web", "-o", "jsonpath={.spec.vrrp.version}"])
            .expect("kubectl"),
    );
    assert_eq!(version, "3");
    succeeds(
        "apply a valid LoadBalancer",
        cp.kubectl_with_stdin(["apply", "-f", "-"], VALID_LB)
            .expect("kubectl"),
    );

    refused(
        &cp,
        "a VirtualIP address that is no IP (CEL)",
        "apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: bad-address}
spec: {addresses: [\"not-an-ip\"], vrrp: {virtualRouterId: 11}}
",
        "every address must be an IP address with an optional /prefix",
    );
    refused(
        &cp,
        "VRRP version 4 (schema maximum)",
        "apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: bad-version}
spec: {addresses: [\"192.0.2.11/24\"], vrrp: {virtualRouterId: 12, version: 4}}
",
        "spec.vrrp.version in body should be less than or equal to 3",
    );
    refused(
        &cp,
        "VRRPv3 with authentication (CEL)",
        "apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: bad-auth}
spec:
  addresses: [\"192.0.2.12/24\"]
  vrrp: {virtualRouterId: 13, version: 3, authentication: {type: PASS, password: secret}}
",
        "vrrp.authentication is only defined for VRRP version 2",
    );
    refused(
        &cp,
        "a LoadBalancer with both virtualIP and addresses (CEL)",
        "apiVersion: halo.dev/v1alpha1
kind: LoadBalancer
metadata: {name: bad-both, namespace: default}
spec:
  virtualIP: web
  addresses: [\"192.0.2.10\"]
  listeners:
  - {name: http, port: 80, protocol: HTTP, backends: [{address: 192.0.2.20, port: 8080}]}
",
        "set exactly one of virtualIP or addresses",
    );
    refused(
        &cp,
        "a VirtualIPPool entry that is no CIDR (CEL)",
        "apiVersion: halo.dev/v1alpha1
kind: VirtualIPPool
metadata: {name: bad-pool}
spec: {cidrs: [\"192.0.2.0/33\"]}
",
        "every entry must be a CIDR",
    );

    // Short names and the printer columns.
    let vips = succeeds("get vip", cp.kubectl(["get", "vip"]).expect("kubectl"));
    assert!(
        vips.lines().any(|l| l.starts_with("web ")),
        "get vip:\n{vips}"
    );
    assert!(!vips.contains("bad-"), "a refused object exists:\n{vips}");
    let hlbs = succeeds(
        "get hlb -A",
        cp.kubectl(["get", "hlb", "-A"]).expect("kubectl"),
    );
    assert!(
        hlbs.lines()
            .any(|l| l.split_whitespace().take(2).eq(["default", "web"])),
        "get hlb -A:\n{hlbs}"
    );
    println!("{vips}{hlbs}");

    let pids = cp.pids();
    cp.stop().expect("stop the control plane");
    for (name, pid) in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{name} (pid {pid}) still exists after stop"
        );
    }
    assert!(!dir.join("pids").exists());
}
