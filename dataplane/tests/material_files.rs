//! Standalone mode reads the certificate, key and CA files a manifest names (relative to
//! the manifest) and watches them: replacing them reloads without touching the manifest,
//! and a bad one is refused with its field while the previous config keeps serving.

use std::process::Command;
use std::time::Duration;

use halo_tests::backends::free_port;
use halo_tests::process::DataPlane;
use halo_tests::standalone::{self, Lab, metric_sum, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");

/// An HTTPS listener whose certificate comes from `cert` and `key` as written.
fn https(port: u16, cert: &str, key: &str) -> String {
    standalone::lb(
        port,
        "HTTPS",
        &format!("      tls: {{certificates: [{{certFile: {cert}, keyFile: {key}}}]}}\n"),
        &[("web-1", 9)],
    )
}

/// `halo-dataplane check` on the lab's manifest from another working directory.
fn check(lab: &Lab) -> (bool, String) {
    let out = Command::new(BIN)
        .current_dir("/")
        .args(["check", "--node", "node-a", "--config"])
        .arg(&lab.config)
        .output()
        .expect("run check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn version(dp: &DataPlane) -> Option<u64> {
    let status: serde_json::Value = serde_json::from_str(&dp.status_json().ok()?).ok()?;
    status["version"].as_u64()
}

#[test]
fn files_resolve_from_the_manifest_and_bad_ones_name_the_field() {
    let lab = Lab::new(BIN, "material-check");
    lab.self_signed("site", "site.test");
    let port = free_port().expect("port");

    lab.write(&https(port, "site.crt", "site.key"));
    let (ok, err) = check(&lab);
    assert!(
        ok,
        "relative files were not found beside the manifest: {err}"
    );

    lab.write(&https(port, "site.crt", "gone.key"));
    let (ok, err) = check(&lab);
    assert!(!ok);
    assert!(
        err.contains("spec.listeners[0].tls.certificates[0]: cannot read ")
            && err.contains("gone.key"),
        "{err}"
    );

    lab.write(&standalone::lb(
        port,
        "HTTPS",
        "      tls: {certificates: [{secretName: site-tls}]}\n",
        &[("web-1", 9)],
    ));
    let (ok, err) = check(&lab);
    assert!(!ok);
    assert!(
        err.contains("spec.listeners[0].tls.certificates[0]: Secret test/site-tls: a manifest file has no Secrets, use certFile and keyFile"),
        "{err}"
    );

    lab.write(&https(port, "site.crt", "site.crt"));
    let (ok, err) = check(&lab);
    assert!(!ok);
    assert!(
        err.contains(
            "spec.listeners[0].tls.certificates[0]: file site.crt holds no PEM PRIVATE KEY block"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn replacing_the_certificate_files_reloads_and_a_bad_one_is_refused() {
    let lab = Lab::new(BIN, "material-watch");
    let (cert, _) = lab.self_signed("site", "one.test");
    let port = free_port().expect("port");
    let dp = lab.start_with(&https(port, "site.crt", "site.key"), &["--settle", "200ms"]);
    assert!(
        wait_until(Duration::from_secs(5), || version(&dp) == Some(1)).await,
        "{}",
        dp.log_text()
    );

    // New certificate and key; the manifest is untouched.
    lab.self_signed("site", "two.test");
    assert!(
        wait_until(Duration::from_secs(10), || version(&dp) == Some(2)).await,
        "rotation was not applied:\n{}",
        dp.log_text()
    );

    // A certificate file that is not PEM: refused, version 2 keeps serving.
    let tmp = lab.dir.join("broken.tmp");
    std::fs::write(&tmp, "not a certificate\n").expect("write");
    std::fs::rename(&tmp, &cert).expect("rename");
    let rejected = || {
        dp.metrics().is_ok_and(|m| {
            metric_sum(&m, "halo_config_reloads_total", &[("result", "rejected")]) >= 1.0
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), rejected).await,
        "{}",
        dp.log_text()
    );
    assert_eq!(version(&dp), Some(2));
    assert!(
        dp.log_text().contains(
            "spec.listeners[0].tls.certificates[0]: file site.crt holds no PEM CERTIFICATE block"
        ),
        "{}",
        dp.log_text()
    );
}
