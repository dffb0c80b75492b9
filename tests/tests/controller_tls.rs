//! TLS Secrets through the real API server: the certificate a LoadBalancer's HTTPS
//! listener names reaches the node's config and follows updates; a Secret that goes bad
//! (malformed certificate or key, a key of another certificate, deleted) turns the
//! LoadBalancer `Ready=False` with the reason and an Event while the node keeps the last
//! valid certificate. Asserted on the config the data plane applied (its state file), not
//! on TLS handshakes.

use std::net::SocketAddr;
use std::time::Duration;

use halo_tests::backends::{self, free_port};
use halo_tests::cluster::{Cluster, dp_status, wait_for};
use halo_tests::pki::{self, Pair};

const NODE: &str = "node-a";
const LISTENER: &str = "default/web/https";
/// Long enough for a watch event, a resolve, a render and a push on a loaded machine.
const FOLLOW: Duration = Duration::from_secs(30);

/// A `kubernetes.io/tls` Secret `default/web-tls` with these keys as they are.
fn secret_yaml(cert: &str, key: &str) -> String {
    halo_tests::pki::tls_secret_yaml("default", "web-tls", cert, key)
}

fn load_balancer_yaml(port: u16, backend: u16) -> String {
    format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: web, namespace: default}}\nspec:\n  addresses: [127.0.0.1]\n  listeners:\n    - name: https\n      port: {port}\n      protocol: HTTPS\n      tls:\n        certificates: [{{secretName: web-tls}}]\n      backends: [{{address: 127.0.0.1, port: {backend}}}]\n"
    )
}

/// The first certificate (PEM) of the HTTPS listener in the config the node applied.
fn node_certificate(cluster: &Cluster) -> Option<String> {
    let config = cluster.node_config(NODE)?;
    let listener = config.listeners.into_iter().find(|l| l.name == LISTENER)?;
    let first = listener.tls.as_ref()?.certificates.first()?;
    Some(first.cert_pem.clone())
}

/// `status reason` of the LoadBalancer's Ready condition, and its message.
fn ready(cluster: &Cluster) -> (String, String) {
    let cond = |field: &str| {
        cluster
            .jsonpath(
                "hlb",
                "web",
                "default",
                &format!("{{.status.conditions[?(@.type==\"Ready\")].{field}}}"),
            )
            .unwrap_or_default()
    };
    (
        format!("{} {}", cond("status"), cond("reason")),
        cond("message"),
    )
}

struct Check<'a> {
    cluster: &'a Cluster,
}

impl Check<'_> {
    /// Waits until the node's config carries `pair`'s certificate.
    fn node_follows(&self, pair: &Pair, what: &str) {
        let want = pair.cert_pem().expect("cert");
        let fp = pki::fingerprint(&self.cluster.dir, &want).expect("fingerprint");
        let ok = wait_for(FOLLOW, || {
            node_certificate(self.cluster).is_some_and(|pem| pem.trim() == want.trim())
        });
        let have = node_certificate(self.cluster)
            .and_then(|pem| pki::fingerprint(&self.cluster.dir, &pem).ok());
        assert!(
            ok,
            "{what}: the node does not carry certificate {fp} (has {have:?})\n{}\n{}",
            self.cluster.log("ctl-1"),
            self.cluster.log(&format!("dp-{NODE}"))
        );
    }

    /// Waits until Ready is `status reason`, with an Event of that reason; then the node
    /// must still carry `kept`.
    fn ready_is(&self, status_reason: &str, kept: &Pair, what: &str) {
        let ok = wait_for(FOLLOW, || ready(self.cluster).0 == status_reason);
        let (now, message) = ready(self.cluster);
        assert!(
            ok,
            "{what}: Ready is {now:?} ({message}), expected {status_reason:?}\n{}",
            self.cluster.log("ctl-1")
        );
        let reason = status_reason.split(' ').nth(1).unwrap_or_default();
        assert!(
            wait_for(FOLLOW, || self
                .cluster
                .event_reasons("LoadBalancer", "web", "default")
                .is_ok_and(|r| r.iter().any(|x| x == reason))),
            "{what}: no Event {reason}: {:?}",
            self.cluster.event_reasons("LoadBalancer", "web", "default")
        );
        // The render that made the condition is pushed with it; give a wrong push time to
        // land before checking that the node kept its certificate.
        std::thread::sleep(Duration::from_secs(1));
        let want = kept.cert_pem().expect("cert");
        let have = node_certificate(self.cluster);
        if have.as_deref().map(str::trim) != Some(want.trim()) {
            let fp = |pem: &str| pki::fingerprint(&self.cluster.dir, pem).ok();
            panic!(
                "{what}: the node lost the last valid certificate {:?}: it has {:?}",
                fp(&want),
                have.as_deref().map(fp)
            );
        }
        if status_reason.starts_with("False") {
            assert!(
                message.contains("spec.listeners[0].tls.certificates[0].secretName")
                    && message.contains("the nodes keep its last valid contents"),
                "{what}: message names no field or says nothing kept: {message}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secret_reaches_the_node_follows_updates_and_bad_ones_are_reported() {
    let cluster = Cluster::start("tls").expect("cluster");
    let dir = cluster.dir.clone();
    let [a, b, c] = ["site-a", "site-b", "site-c"]
        .map(|stem| pki::self_signed(&dir, stem, "web.example.com").expect("certificate"));
    let backend = backends::http("web-1", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let front = free_port().expect("port");
    let pem = |p: &Pair| (p.cert_pem().expect("cert"), p.key_pem().expect("key"));
    let (a_crt, a_key) = pem(&a);
    let (b_crt, b_key) = pem(&b);

    cluster.apply(&secret_yaml(&a_crt, &a_key)).expect("secret");
    cluster
        .apply(&load_balancer_yaml(front, backend.port()))
        .expect("load balancer");
    let (stream, metrics) = (free_port().expect("port"), free_port().expect("port"));
    let _controller = cluster
        .controller("ctl-1", stream, metrics)
        .expect("controller");
    let token = cluster
        .token("halo-dataplane", Some(&format!("dp-{NODE}")))
        .expect("token");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port().expect("port")));
    let _dp = cluster
        .dataplane(NODE, stream, admin, &token)
        .expect("data plane");
    let check = Check { cluster: &cluster };

    // The Secret's certificate is in the node's config; the LoadBalancer is served.
    check.node_follows(&a, "first certificate");
    check.ready_is("True Serving", &a, "valid Secret");
    assert!(dp_status(admin)["version"].as_u64().is_some());

    // A new certificate in the same Secret: the node follows.
    cluster
        .apply(&secret_yaml(&b_crt, &b_key))
        .expect("secret update");
    check.node_follows(&b, "updated certificate");

    // Each kind of bad update is reported with its reason; the node keeps b.
    let garbage =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    let bad_updates = [
        (
            "malformed certificate",
            garbage,
            b_key.as_str(),
            "InvalidCertificate",
        ),
        ("malformed key", b_crt.as_str(), "not a key\n", "InvalidKey"),
        (
            "key of another certificate",
            b_crt.as_str(),
            a_key.as_str(),
            "CertificateKeyMismatch",
        ),
    ];
    for (what, crt, key, reason) in bad_updates {
        cluster.apply(&secret_yaml(crt, key)).expect("bad update");
        check.ready_is(&format!("False {reason}"), &b, what);
    }
    cluster
        .kubectl_ok(&["delete", "secret", "web-tls", "-n", "default"])
        .expect("delete secret");
    check.ready_is("False SecretNotFound", &b, "deleted Secret");

    // A valid Secret again: served and reported Ready.
    let (c_crt, c_key) = pem(&c);
    cluster
        .apply(&secret_yaml(&c_crt, &c_key))
        .expect("secret again");
    check.node_follows(&c, "certificate after recovery");
    check.ready_is("True Serving", &c, "valid again");
}
