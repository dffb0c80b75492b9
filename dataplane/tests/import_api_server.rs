//! What `import --haproxy --namespace` writes is accepted by a real API server (etcd +
//! kube-apiserver with Halo's CRDs): `kubectl apply --dry-run=server` holds every
//! LoadBalancer and certificate Secret to the CRD schema, its CEL rules and the Secret
//! type's own checks.
//!
//! Needs `scripts/build-k8s-tools.sh` to have run once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use halo_tests::control_plane::ControlPlane;
use halo_tests::process::{describe, succeeds};
use halo_tests::standalone::Lab;

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Imports `tests/import/NAME` for namespace `shop` (with a generated `shop.pem`).
fn imported(lab: &Lab, name: &str) -> String {
    let src = Path::new(ROOT).join("tests/import").join(name);
    std::fs::copy(src, lab.dir.join(name)).expect("copy config");
    let (cert, key) = lab.self_signed("bundle", "shop.example.com");
    let pem =
        std::fs::read_to_string(cert).expect("cert") + &std::fs::read_to_string(key).expect("key");
    std::fs::write(lab.dir.join("shop.pem"), pem).expect("bundle");
    let out = Command::new(BIN)
        .args(["import", "--haproxy", name, "--namespace", "shop"])
        .current_dir(&lab.dir)
        .stdin(Stdio::null())
        .output()
        .expect("run import");
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_api_server_accepts_imported_load_balancers_and_secrets() {
    let lab = Lab::new(BIN, "import-api");
    let cp_dir: PathBuf = lab.dir.join("control-plane");
    let cp = ControlPlane::start(&cp_dir).expect("start the control plane");
    let crds = Path::new(ROOT).join("deploy/crds");
    succeeds(
        "apply the CRDs",
        cp.kubectl(["apply", "-f", &crds.to_string_lossy()])
            .expect("kubectl"),
    );
    succeeds(
        "wait for the CRDs",
        cp.kubectl([
            "wait",
            "--for",
            "condition=established",
            "crd/loadbalancers.halo.dev",
            "--timeout=60s",
        ])
        .expect("kubectl"),
    );
    succeeds(
        "create the namespace",
        cp.kubectl(["create", "namespace", "shop"])
            .expect("kubectl"),
    );
    for name in ["three-tier.cfg", "unsupported.cfg"] {
        let docs = imported(&lab, name);
        let applied = succeeds(
            &format!("server-side dry run of {name}"),
            cp.kubectl_with_stdin(["apply", "--dry-run=server", "-f", "-"], &docs)
                .expect("kubectl"),
        );
        assert!(
            applied.contains("loadbalancer.halo.dev/"),
            "{name}: {applied}"
        );
        if name == "three-tier.cfg" {
            assert!(
                applied.contains("secret/shop created (server dry run)"),
                "{applied}"
            );
        }
    }
    let _ = cp.stop();
}
