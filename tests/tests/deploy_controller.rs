//! halo-controller as the plain manifests deploy it: the arguments and environment of the
//! rendered Deployment (deploy/manifests/halo.yaml) and the token of its own ServiceAccount,
//! against a real kube-apiserver. Applied in one step, two replicas starting together make
//! one serving certificate Secret; a Secret from the README's openssl steps is used as it is.
//! It must reconcile everything without a single permission error.

#[path = "deploy_support.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use halo_tests::backends::free_port;
use halo_tests::process::{binary, http_get_blocking};
use serde_json::Value;
use support::{Cluster, NS, find, root, wait_for};

/// Stops the controller (our child, by its PID) when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines that mean the controller was refused something or failed to keep up.
const TROUBLE: &[&str] = &[
    "forbidden",
    "Forbidden",
    "watch error",
    "lease update failed",
    "cannot publish Event",
    "status reconcile failed",
    "cannot write Service status",
    "TokenReview failed",
    "ERROR",
];

/// The controller's command line from the rendered Deployment, with the listeners moved to
/// loopback ports and the Secret's files taken from `tls_dir`.
fn command_from_deployment(
    deployment: &Value,
    tls_dir: &Path,
    stream: u16,
    metrics: u16,
    kubeconfig: &Path,
    identity: &str,
) -> Command {
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "halo-controller");
    let container = &pod["containers"][0];
    assert_eq!(
        container["command"],
        serde_json::json!(["/usr/local/bin/halo-controller"])
    );
    // Where the TLS Secret's keys appear in the container: mountPath/path -> key.
    let mut secret_files: Vec<(String, String)> = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"])
            .expect("volume of a mount");
        if volume["secret"]["secretName"] == "halo-controller-tls" {
            for item in volume["secret"]["items"].as_array().into_iter().flatten() {
                secret_files.push((
                    format!(
                        "{}/{}",
                        mount["mountPath"].as_str().unwrap_or(""),
                        item["path"].as_str().unwrap_or("")
                    ),
                    item["key"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    let local = |path: &str| -> PathBuf {
        let key = secret_files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, k)| k.clone())
            .unwrap_or_else(|| panic!("{path} is not a file of the TLS Secret's volume"));
        tls_dir.join(key)
    };

    let mut cmd = Command::new(binary("halo-controller").expect("cargo build --workspace --bins"));
    for arg in container["args"].as_array().expect("args") {
        let arg = arg.as_str().expect("string arg");
        let (flag, value) = arg.split_once('=').unwrap_or((arg, ""));
        let arg = match flag {
            "--listen" => format!("--listen=127.0.0.1:{stream}"),
            "--metrics" => format!("--metrics=127.0.0.1:{metrics}"),
            "--tls-cert" | "--tls-key" => format!("{flag}={}", local(value).display()),
            _ => {
                assert!(!arg.contains("0.0.0.0"), "unexpected listener {arg}");
                arg.to_string()
            }
        };
        cmd.arg(arg);
    }
    cmd.arg("--kubeconfig").arg(kubeconfig);
    cmd.env("NO_COLOR", "1")
        .env_remove("KUBECONFIG")
        .env_remove("POD_NAMESPACE")
        .env_remove("POD_NAME")
        .env_remove("RUST_LOG");
    for env in container["env"].as_array().into_iter().flatten() {
        let name = env["name"].as_str().expect("env name");
        let value = match (&env["value"], &env["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(field)) if field == "metadata.namespace" => {
                deployment["metadata"]["namespace"]
                    .as_str()
                    .expect("namespace")
                    .to_string()
            }
            (_, Value::String(field)) if field == "metadata.name" => identity.to_string(),
            _ => panic!("cannot stand in for env {env}"),
        };
        cmd.env(name, value);
    }
    cmd
}

/// What the controller watches: VirtualIPs and LoadBalancers (one broken), a pool, and a
/// Service of type LoadBalancer.
const WORLD: &str = "apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: web}
spec:
  addresses: [\"192.0.2.10/24\"]
---
apiVersion: halo.dev/v1alpha1
kind: LoadBalancer
metadata: {name: web, namespace: shop}
spec:
  virtualIP: web
  listeners:
    - {name: http, port: 80, protocol: HTTP, backends: [{address: 192.0.2.20, port: 8080}]}
---
apiVersion: halo.dev/v1alpha1
kind: LoadBalancer
metadata: {name: broken, namespace: default}
spec:
  virtualIP: nowhere
  listeners: [{name: http, port: 81, protocol: HTTP, backends: []}]
---
apiVersion: halo.dev/v1alpha1
kind: VirtualIPPool
metadata: {name: pool}
spec:
  cidrs: [192.0.2.240/28]
---
apiVersion: v1
kind: Service
metadata: {name: shop-front, namespace: shop}
spec:
  type: LoadBalancer
  loadBalancerClass: halo.dev/vrrp
  selector: {app: shop}
  ports: [{name: http, port: 80, targetPort: 8080}]
";

/// Gateway API objects: what the controller reads and writes status on under its role.
const GATEWAY_WORLD: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: halo}
spec: {controllerName: halo.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: front, namespace: shop}
spec:
  gatewayClassName: halo
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {gateway: front}}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: shop}
spec:
  parentRefs: [{name: front}]
  rules: [{backendRefs: [{name: shop-front, port: 80}]}]
";

/// One controller replica started from the rendered Deployment, stopped when dropped.
struct Replica {
    proc: Proc,
    stream: u16,
    metrics: SocketAddr,
    log_path: PathBuf,
}

impl Replica {
    fn start(cluster: &Cluster, deployment: &Value, tls_dir: &Path, identity: &str) -> Self {
        let kubeconfig = cluster
            .service_account_kubeconfig("halo-controller")
            .expect("kubeconfig of the controller's ServiceAccount");
        let (stream, metrics) = (free_port().expect("port"), free_port().expect("port"));
        let mut cmd =
            command_from_deployment(deployment, tls_dir, stream, metrics, &kubeconfig, identity);
        let log_path = cluster.dir().join(format!("{identity}.log"));
        eprintln!("controller: {cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log"))
            .spawn()
            .expect("spawn halo-controller");
        Self {
            proc: Proc(child),
            stream,
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics)),
            log_path,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.proc.0.try_wait(), Ok(None))
    }

    /// Its metrics port opens after the first list of everything it watches.
    fn wait_up(&mut self) {
        let up = wait_for(Duration::from_secs(60), || {
            !self.running()
                || http_get_blocking(self.metrics, "/healthz").is_ok_and(|(c, _)| c == 200)
        });
        assert!(
            up && self.running(),
            "the controller did not come up:\n{}",
            self.log()
        );
    }

    fn leading(&self) -> bool {
        http_get_blocking(self.metrics, "/metrics")
            .is_ok_and(|(_, body)| body.lines().any(|l| l == "halo_controller_leader 1"))
    }
}

fn curl_status(ca: &Path, port: u16, node: &str, token: Option<&str>) -> u16 {
    // The name the data planes dial, resolved to the loopback listener: the certificate from
    // the README's steps must be valid for it.
    let host = "halo-controller.halo-system.svc";
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
    ])
    .args(["--resolve", &format!("{host}:{port}:127.0.0.1"), "--cacert"])
    .arg(ca);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    cmd.arg(format!("https://{host}:{port}/v1/nodes/{node}/status"))
        .args(["-X", "POST", "-d", "{}"]);
    let out = cmd.output().expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The plain manifests, applied as they are, and the rendered Deployment and DaemonSet.
fn apply_manifests(cluster: &Cluster) -> (Vec<Value>, String) {
    let manifests = root().join("deploy/manifests/halo.yaml");
    cluster
        .kubectl_ok(&["apply", "-f", &manifests.to_string_lossy()])
        .expect("apply the plain manifests");
    cluster.wait_crds_established().expect("CRDs");
    let objects = cluster
        .parse(&std::fs::read_to_string(&manifests).expect("manifests"))
        .expect("parse");
    let daemonset = find(&objects, "DaemonSet", "halo-dataplane").expect("DaemonSet");
    let audience = daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| v["projected"]["sources"][0]["serviceAccountToken"]["audience"].as_str())
        .expect("projected token audience")
        .to_string();
    (objects, audience)
}

#[test]
fn controller_reconciles_with_its_own_service_account_and_the_rendered_flags() {
    let cluster = Cluster::start("controller").expect("control plane");
    let tls_dir = cluster.dir().join("tls");
    std::fs::create_dir_all(&tls_dir).expect("tls dir");
    let (objects, audience) = apply_manifests(&cluster);
    let deployment = find(&objects, "Deployment", "halo-controller").expect("Deployment");

    // The world the controller watches: a node with a data plane pod on it, VirtualIPs and
    // LoadBalancers (one broken), and a Service of type LoadBalancer with a pool.
    cluster.node("node-a", "192.0.2.1").expect("node");
    cluster
        .pod_from_template("daemonset", "halo-dataplane", "dp-node-a", "node-a", false)
        .expect("data plane pod");
    cluster
        .kubectl_ok(&["create", "namespace", "shop"])
        .expect("namespace");
    cluster.apply(WORLD).expect("objects");
    for args in halo_tests::cluster::gateway_api_steps().expect("Gateway API CRDs") {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster
            .kubectl_ok(&args)
            .expect("install the Gateway API CRDs");
    }
    cluster.apply(GATEWAY_WORLD).expect("gateway objects");

    // Two replicas, as the Deployment runs them, starting together with no Secret yet: they
    // race to create it, and both serve the one that won.
    let identities = ["halo-controller-test-0", "halo-controller-test-1"];
    let mut replicas: Vec<Replica> = identities
        .iter()
        .map(|id| Replica::start(&cluster, deployment, &tls_dir, id))
        .collect();
    for r in &mut replicas {
        r.wait_up();
    }
    assert!(
        wait_for(Duration::from_secs(30), || replicas
            .iter()
            .any(Replica::leading)),
        "nobody leads:\n{}\n{}",
        replicas[0].log(),
        replicas[1].log()
    );
    let lead = replicas
        .iter()
        .position(Replica::leading)
        .expect("a leader");
    let holder = cluster
        .kubectl_ok(&[
            "get",
            "lease",
            "halo-controller",
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .expect("lease");
    assert_eq!(holder, identities[lead]);
    let log_path = replicas[lead].log_path.clone();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let stream = replicas[lead].stream;

    // The Secret it made: the data planes' ca.crt and the serving pair, labelled as its own.
    let secret = cluster
        .get_json(&["secret", "halo-controller-tls", "-n", NS])
        .expect("the controller created its Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "halo-controller"
    );
    let ca = tls_dir.join("ca.crt");
    std::fs::write(
        &ca,
        cluster
            .secret_text("halo-controller-tls", "ca.crt")
            .expect("ca.crt"),
    )
    .expect("write ca.crt");
    // Both replicas present a certificate that CA signed for the name the data planes dial
    // (curl reports 000 when verification fails).
    for r in &replicas {
        assert_ne!(curl_status(&ca, r.stream, "node-a", None), 0, "{}", r.log());
    }
    // The permission that made it possible, and no more: no update, patch or delete.
    let ctl = "halo-controller";
    for (verb, allowed) in [
        ("create", true),
        ("update", false),
        ("patch", false),
        ("delete", false),
    ] {
        assert_eq!(
            cluster.can_i(ctl, verb, "secrets", &["-n", NS]),
            allowed,
            "{verb} secrets"
        );
    }

    let get = |args: &[&str]| cluster.kubectl_ok(args).unwrap_or_default();
    // A VRID in the VirtualIP's status, and the release finalizer on it.
    assert!(
        wait_for(Duration::from_secs(30), || get(&[
            "get",
            "vip",
            "web",
            "-o",
            "jsonpath={.status.vrid}"
        ])
        .parse::<u8>()
        .is_ok_and(|v| v >= 1)),
        "no VRID:\n{}\n{}",
        get(&["get", "vip", "web", "-o", "yaml"]),
        log()
    );
    assert!(
        get(&["get", "vip", "web", "-o", "jsonpath={.metadata.finalizers}"])
            .contains("halo.dev/release"),
        "{}",
        get(&["get", "vip", "web", "-o", "yaml"])
    );
    // LoadBalancer status, in two namespaces, and Events (events.k8s.io) for them and for the
    // cluster-scoped VirtualIP (those go to "default").
    assert!(
        wait_for(Duration::from_secs(30), || get(&[
            "get",
            "hlb",
            "broken",
            "-n",
            "default",
            "-o",
            "jsonpath={.status.conditions[0].reason}",
        ]) == "InvalidSpec"),
        "{}\n{}",
        get(&["get", "hlb", "broken", "-n", "default", "-o", "yaml"]),
        log()
    );
    assert!(
        wait_for(Duration::from_secs(30), || !get(&[
            "get",
            "hlb",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.conditions[0].type}",
        ])
        .is_empty()),
        "{}",
        get(&["get", "hlb", "web", "-n", "shop", "-o", "yaml"])
    );
    let regarding = |ns: &str| -> Vec<String> {
        let events: Value = serde_json::from_str(&get(&[
            "get",
            "events.events.k8s.io",
            "-n",
            ns,
            "-o",
            "json",
        ]))
        .unwrap_or_default();
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["regarding"]["kind"].as_str().unwrap_or(""),
                    e["regarding"]["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    for (ns, object) in [
        ("default", "LoadBalancer/broken"),
        ("default", "VirtualIP/web"),
        ("shop", "LoadBalancer/web"),
    ] {
        assert!(
            wait_for(Duration::from_secs(30), || regarding(ns)
                .iter()
                .any(|r| r == object)),
            "no Event for {object} in {ns}: {:?}\n{}",
            regarding(ns),
            log()
        );
    }
    // Gateway API under the chart's role: the class accepted, the Gateway given an address
    // from the pool, and the route's parent status; the listener's namespace selector
    // reads the Namespace's labels.
    let jsonpath = |args: &[&str], path: &str| {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        let path = format!("jsonpath={path}");
        all.extend(["-o", path.as_str()]);
        get(&all)
    };
    assert!(
        wait_for(Duration::from_secs(30), || jsonpath(
            &["gatewayclass", "halo"],
            "{.status.conditions[?(@.type==\"Accepted\")].status}"
        ) == "True"),
        "{}",
        log()
    );
    assert!(
        wait_for(Duration::from_secs(30), || jsonpath(
            &["gateway", "front", "-n", "shop"],
            "{.status.addresses[0].value}"
        )
        .starts_with("192.0.2.24")),
        "{}\n{}",
        get(&["get", "gateway", "front", "-n", "shop", "-o", "yaml"]),
        log()
    );
    let route_accepted = || {
        jsonpath(
            &["httproute", "shop", "-n", "shop"],
            "{.status.parents[0].conditions[?(@.type==\"Accepted\")].reason}",
        )
    };
    assert!(
        wait_for(Duration::from_secs(30), || route_accepted()
            == "NotAllowedByListeners"),
        "{}",
        get(&["get", "httproute", "shop", "-n", "shop", "-o", "yaml"])
    );
    cluster
        .kubectl_ok(&["label", "namespace", "shop", "gateway=front"])
        .expect("label");
    assert!(
        wait_for(Duration::from_secs(30), || route_accepted() == "Accepted"),
        "{}",
        get(&["get", "httproute", "shop", "-n", "shop", "-o", "yaml"])
    );

    // The Service of type LoadBalancer gets its address from the pool.
    assert!(
        wait_for(Duration::from_secs(30), || get(&[
            "get",
            "service",
            "shop-front",
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]) == "192.0.2.241"),
        "{}\n{}",
        get(&["get", "service", "shop-front", "-n", "shop", "-o", "yaml"]),
        log()
    );

    // TokenReviews: a data plane token (the DaemonSet's audience, bound to the pod on node-a)
    // is let in for node-a only; the stream is served over the certificate it made.
    let token = cluster
        .kubectl_ok(&[
            "create",
            "token",
            "halo-dataplane",
            "-n",
            NS,
            "--audience",
            &audience,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "dp-node-a",
            "--duration",
            "1h",
        ])
        .expect("token");
    let token = token.trim();
    assert_eq!(
        curl_status(&ca, stream, "node-a", Some(token)),
        204,
        "{}",
        log()
    );
    assert_eq!(curl_status(&ca, stream, "node-b", Some(token)), 403);
    assert_eq!(curl_status(&ca, stream, "node-a", None), 401);

    // Nothing went wrong so far.
    let trouble = |text: &str, patterns: &[&str]| -> Vec<String> {
        text.lines()
            .filter(|l| patterns.iter().any(|t| l.contains(t)))
            // The refusals asked for above.
            .filter(|l| !l.contains("refused"))
            .map(str::to_string)
            .collect()
    };
    let text = log();
    let found = trouble(&text, TROUBLE);
    assert!(
        found.is_empty(),
        "the controller ran into trouble:\n{}\n--- full log ---\n{text}",
        found.join("\n")
    );
    let standby = replicas[1 - lead].log();
    let found = trouble(&standby, &["forbidden", "Forbidden", "ERROR"]);
    assert!(
        found.is_empty(),
        "the standby ran into trouble:\n{}\n--- full log ---\n{standby}",
        found.join("\n")
    );

    // Deleting the VirtualIP: nothing holds it, so the finalizer goes at once. (A reconcile of
    // the object just deleted may still fail with NotFound: only permissions count here.)
    cluster
        .kubectl_ok(&["delete", "vip", "web", "--wait=false"])
        .expect("delete");
    assert!(
        wait_for(Duration::from_secs(40), || cluster
            .kubectl_ok(&["get", "vip", "-o", "name"])
            .is_ok_and(|s| !s.contains("virtualip.halo.dev/web"))),
        "the finalizer stayed:\n{}\n{}",
        get(&["get", "vip", "web", "-o", "yaml"]),
        log()
    );
    assert!(
        replicas[lead].running(),
        "the controller exited:\n{}",
        log()
    );
    let text = log();
    let found = trouble(&text, &["forbidden", "Forbidden"]);
    assert!(
        found.is_empty(),
        "permission errors:\n{}\n--- full log ---\n{text}",
        found.join("\n")
    );
    eprintln!("controller log:\n{text}");
}

/// `tls.mode: external` as the README describes it for the plain manifests: the openssl steps
/// first, then the same manifests. The controller serves that Secret and changes nothing.
#[test]
fn controller_serves_a_secret_made_by_the_readme_steps_as_it_is() {
    let cluster = Cluster::start("controller-own-tls").expect("control plane");
    let tls_dir = cluster.dir().join("tls");
    support::run_readme_tls_steps(&cluster, &tls_dir).expect("README TLS steps");
    let (objects, _) = apply_manifests(&cluster);
    let deployment = find(&objects, "Deployment", "halo-controller").expect("Deployment");
    let mut replica = Replica::start(&cluster, deployment, &tls_dir, "halo-controller-test-0");
    replica.wait_up();
    assert!(
        replica
            .log()
            .contains("serving certificate from the existing Secret"),
        "{}",
        replica.log()
    );
    let own = std::fs::read_to_string(tls_dir.join("tls.crt")).expect("tls.crt");
    assert_eq!(
        cluster
            .secret_text("halo-controller-tls", "tls.crt")
            .expect("tls.crt")
            .trim(),
        own.trim(),
        "the Secret was replaced"
    );
    assert_eq!(
        curl_status(&tls_dir.join("ca.crt"), replica.stream, "node-a", None),
        401,
        "{}",
        replica.log()
    );
}
