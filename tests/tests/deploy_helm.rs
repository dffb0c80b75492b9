//! The Helm chart (deploy/helm/halo): lint, template, schema, install and upgrade against a
//! real kube-apiserver, and the RBAC its ServiceAccounts end up with.

#[path = "deploy_support.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{
    Cluster, NS, Scratch, chart_dir, find, helm_command, helm_template, kinds_and_names,
};

/// Values that switch on or change everything the defaults leave out.
const OTHER_VALUES: &[&str] = &[
    "--set",
    "crds.enabled=false",
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.serviceMonitor.labels.release=prometheus",
    "--set",
    "namespace.create=true",
    "--set",
    "tls.mode=external",
    "--set",
    "tls.secretName=my-cert",
    "--set",
    "controller.replicas=3",
    "--set",
    "controller.vridRange=100-199",
    "--set",
    "controller.podDisruptionBudget.enabled=false",
    "--set",
    "controller.priorityClassName=system-cluster-critical",
    "--set",
    "controller.extraArgs={--heartbeat=2s}",
    "--set",
    "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "--set",
    "dataplane.adminAddress=0.0.0.0:9200",
    "--set",
    "dataplane.priorityClassName=",
    "--set-string",
    "dataplane.nodeSelector.halo\\.dev/lb=true",
    "--set",
    "commonLabels.team=network",
    "--set",
    "tokenAudience=halo-test",
];

/// A ServiceMonitor CRD that accepts any spec: enough for the API server to know the kind.
const SERVICE_MONITOR_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
";

fn helm_lint(home: &Path, extra: &[&str]) -> (bool, String) {
    let mut cmd = helm_command(home).expect("helm");
    cmd.args(["lint", "--strict"]).arg(chart_dir()).args(extra);
    let out = support::run_bounded(cmd, "", support::HELM_LIMIT).expect("helm lint");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

fn args_of(workload: &Value) -> Vec<String> {
    container(workload)["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

#[test]
fn chart_lints_and_renders_with_default_and_other_values() {
    let scratch = Scratch::new("lint").expect("scratch");
    let home = &scratch.dir;
    for extra in [&[][..], OTHER_VALUES] {
        let (ok, out) = helm_lint(home, extra);
        assert!(ok, "helm lint --strict {extra:?}:\n{out}");
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }

    // The schema refuses what would otherwise render a broken release.
    for (bad, complaint) in [
        ("nope=1", "nope"),
        ("controller.replicas=0", "/controller/replicas"),
        ("controller.vridRange=0-300", "/controller/vridRange"),
        ("controller.leaseDuration=15", "/controller/leaseDuration"),
        ("dataplane.adminAddress=9100", "/dataplane/adminAddress"),
        (
            "dataplane.tokenExpirationSeconds=60",
            "/dataplane/tokenExpirationSeconds",
        ),
        (
            "dataplane.updateStrategy.rollingUpdate.maxSurge=1",
            "maxSurge",
        ),
        ("tls.secretName=Not_A_Name", "/tls/secretName"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ] {
        let err = helm_template(home, &chart_dir(), &["--set", bad])
            .expect_err(&format!("--set {bad} was accepted"));
        let msg = format!("{err:#}");
        assert!(msg.contains(complaint), "--set {bad}: {msg}");
    }

    // Both renderings parse into the objects expected (kubectl parses them, so it needs an
    // API server that knows the kinds, ServiceMonitor included).
    let cluster = Cluster::start("template").expect("control plane");
    cluster
        .apply(SERVICE_MONITOR_CRD)
        .expect("ServiceMonitor CRD");
    cluster
        .kubectl_ok(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
        ])
        .expect("established");

    let default = cluster
        .parse(&helm_template(home, &chart_dir(), &[]).expect("template"))
        .expect("default rendering parses");
    let names = kinds_and_names(&default);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "ClusterRole/halo-controller",
            "ClusterRoleBinding/halo-controller",
            "CustomResourceDefinition/loadbalancers.halo.dev",
            "CustomResourceDefinition/virtualippools.halo.dev",
            "CustomResourceDefinition/virtualips.halo.dev",
            "DaemonSet/halo-dataplane",
            "Deployment/halo-controller",
            "PodDisruptionBudget/halo-controller",
            "Role/halo-controller",
            "RoleBinding/halo-controller",
            "Secret/halo-controller-tls",
            "Service/halo-controller",
            "ServiceAccount/halo-controller",
            "ServiceAccount/halo-dataplane",
        ],
        "{names:?}"
    );
    let deployment = find(&default, "Deployment", "halo-controller").expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        container(deployment)["image"],
        "ghcr.io/halo-dev/halo:0.1.0"
    );
    let args = args_of(deployment);
    for expected in [
        "--listen=0.0.0.0:9443",
        "--metrics=0.0.0.0:9090",
        "--dataplane-service-account=halo-dataplane",
        "--token-audience=halo-controller",
        "--vrid-range=1-255",
        "--lease-name=halo-controller",
        "--lease-duration=15s",
        "--heartbeat=5s",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected}: {args:?}");
    }
    let sc = &container(deployment)["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        container(deployment)["livenessProbe"]["httpGet"]["path"],
        "/healthz"
    );
    assert_eq!(
        container(deployment)["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );
    let secret = find(&default, "Secret", "halo-controller-tls").expect("secret");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(secret["data"][key].is_string(), "{key} missing: {secret}");
    }

    let other = cluster
        .parse(&helm_template(home, &chart_dir(), OTHER_VALUES).expect("template"))
        .expect("rendering with other values parses");
    let names = kinds_and_names(&other);
    assert!(
        names.contains(&"ServiceMonitor/halo-controller".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"Namespace/halo-system".to_string()),
        "{names:?}"
    );
    for absent in [
        "CustomResourceDefinition/",
        "Secret/",
        "PodDisruptionBudget/",
    ] {
        assert!(
            !names.iter().any(|n| n.starts_with(absent)),
            "{absent}: {names:?}"
        );
    }
    let monitor = find(&other, "ServiceMonitor", "halo-controller").expect("monitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let deployment = find(&other, "Deployment", "halo-controller").expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["metadata"]["labels"]["team"], "network",
        "commonLabels"
    );
    assert_eq!(
        container(deployment)["image"],
        "ghcr.io/halo-dev/halo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    let args = args_of(deployment);
    for expected in [
        "--vrid-range=100-199",
        "--token-audience=halo-test",
        "--heartbeat=2s",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected}: {args:?}");
    }
    let tls_volume = &deployment["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(tls_volume["secret"]["secretName"], "my-cert");
    let ds = find(&other, "DaemonSet", "halo-dataplane").expect("ds");
    let pod = &ds["spec"]["template"]["spec"];
    assert!(pod.get("priorityClassName").is_none(), "{pod}");
    assert_eq!(pod["nodeSelector"]["halo.dev/lb"], "true");
    assert_eq!(
        pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "halo-test"
    );
    let probe = &container(ds)["readinessProbe"]["httpGet"];
    assert_eq!(probe["host"], "127.0.0.1");
    assert_eq!(probe["port"], 9200);
    assert!(args_of(ds).iter().any(|a| a == "--admin=0.0.0.0:9200"));
}

/// Copies the chart to `to` with an extra printer column on the VirtualIP CRD template.
fn chart_with_changed_crd(to: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(chart_dir())
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
    let crd = to.join("charts/crds/templates/virtualips.halo.dev.yaml");
    let text = std::fs::read_to_string(&crd).expect("crd");
    let marker = "  - additionalPrinterColumns:\n";
    assert!(
        text.contains(marker),
        "no printer columns in {}",
        crd.display()
    );
    let changed = text.replacen(
        marker,
        &format!(
            "{marker}    - jsonPath: .spec.interface\n      name: Interface\n      type: string\n"
        ),
        1,
    );
    std::fs::write(&crd, changed).expect("write");
}

fn printer_columns(cluster: &Cluster) -> Vec<String> {
    cluster
        .kubectl_ok(&[
            "get",
            "crd",
            "virtualips.halo.dev",
            "-o",
            "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
        ])
        .expect("crd")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn tls_data(cluster: &Cluster, key: &str) -> String {
    cluster
        .secret_text("halo-controller-tls", key)
        .expect("secret")
}

#[test]
fn chart_installs_and_upgrades_on_a_real_api_server() {
    let cluster = Cluster::start("install").expect("control plane");
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let notes = cluster
        .helm_ok(&[
            "install",
            "halo",
            &chart,
            "--namespace",
            NS,
            "--create-namespace",
        ])
        .expect("helm install");
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(
        notes.contains("kubectl label namespace halo-system"),
        "NOTES:\n{notes}"
    );
    cluster.wait_crds_established().expect("CRDs established");

    // Every object of the release exists.
    let manifest = cluster
        .helm_ok(&["get", "manifest", "halo", "--namespace", NS])
        .expect("manifest");
    let objects = cluster.parse(&manifest).expect("manifest parses");
    assert_eq!(objects.len(), 14, "{:?}", kinds_and_names(&objects));
    let listed = cluster
        .kubectl_stdin_ok(&["get", "-f", "-", "-o", "name"], &manifest)
        .expect("objects exist");
    assert_eq!(listed.lines().count(), objects.len(), "{listed}");

    // The generated certificate: a leaf for the Service's names, signed by the CA in ca.crt.
    let dir = cluster.dir().join("tls");
    std::fs::create_dir_all(&dir).expect("dir");
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::write(dir.join(key), tls_data(&cluster, key)).expect("write");
    }
    let openssl = |args: &[&str]| -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    openssl(&[
        "verify",
        "-CAfile",
        "ca.crt",
        "-purpose",
        "sslserver",
        "tls.crt",
    ]);
    let leaf = openssl(&["x509", "-in", "tls.crt", "-noout", "-text"]);
    for name in [
        "DNS:halo-controller.halo-system.svc",
        "DNS:halo-controller.halo-system.svc.cluster.local",
    ] {
        assert!(
            leaf.contains(name),
            "{name} not in the certificate:\n{leaf}"
        );
    }
    assert!(
        leaf.contains("CA:FALSE"),
        "the serving certificate is a CA:\n{leaf}"
    );
    let ca_before = tls_data(&cluster, "ca.crt");

    // Upgrade: a value change reaches the objects, a changed CRD template reaches the CRD,
    // and the TLS Secret is kept.
    assert!(!printer_columns(&cluster).contains(&"Interface".to_string()));
    let changed = cluster.dir().join("chart-changed");
    chart_with_changed_crd(&changed);
    cluster
        .helm_ok(&[
            "upgrade",
            "halo",
            &changed.to_string_lossy(),
            "--namespace",
            NS,
            "--set",
            "controller.replicas=3",
            "--set",
            "controller.vridRange=10-20",
        ])
        .expect("helm upgrade");
    let deployment = cluster
        .get_json(&["deployment", "halo-controller", "-n", NS])
        .expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(
        args_of(&deployment)
            .iter()
            .any(|a| a == "--vrid-range=10-20"),
        "{:?}",
        args_of(&deployment)
    );
    let columns = printer_columns(&cluster);
    assert!(
        columns.contains(&"Interface".to_string()),
        "the CRD was not upgraded: {columns:?}"
    );
    assert_eq!(
        tls_data(&cluster, "ca.crt"),
        ca_before,
        "the upgrade rotated the CA"
    );
    let status: Value = serde_json::from_str(
        &cluster
            .helm_ok(&["status", "halo", "--namespace", NS, "-o", "json"])
            .expect("status"),
    )
    .expect("json");
    assert_eq!(status["version"], 2);
    assert_eq!(status["info"]["status"], "deployed");

    // And back: the column goes again, the CRD still serves.
    cluster
        .helm_ok(&["upgrade", "halo", &chart, "--namespace", NS])
        .expect("helm upgrade back");
    assert!(!printer_columns(&cluster).contains(&"Interface".to_string()));
    cluster.wait_crds_established().expect("CRDs established");

    // Uninstall removes the release's objects, the CRDs included (README's warning).
    cluster
        .helm_ok(&[
            "uninstall",
            "halo",
            "--namespace",
            NS,
            "--wait",
            "--timeout",
            "60s",
        ])
        .expect("helm uninstall");
    assert!(support::wait_for(
        std::time::Duration::from_secs(60),
        || cluster
            .kubectl_ok(&["get", "crd", "-o", "name"])
            .is_ok_and(|s| !s.contains("halo.dev"))
    ));
    let left = cluster
        .kubectl_ok(&[
            "get",
            "deployment,daemonset,serviceaccount,role,secret",
            "-n",
            NS,
            "-l",
            "app.kubernetes.io/name=halo",
            "-o",
            "name",
        ])
        .expect("get");
    assert_eq!(left.trim(), "", "left after uninstall");
}

#[test]
fn service_accounts_get_least_privilege() {
    let cluster = Cluster::start("rbac").expect("control plane");
    cluster
        .helm_ok(&[
            "install",
            "halo",
            &chart_dir().to_string_lossy(),
            "--namespace",
            NS,
            "--create-namespace",
        ])
        .expect("helm install");
    cluster.wait_crds_established().expect("CRDs");
    cluster
        .kubectl_ok(&["create", "namespace", "shop"])
        .expect("namespace");

    let ctl = "halo-controller";
    let dp = "halo-dataplane";
    let all = ["--all-namespaces"];
    let in_ns = ["-n", NS];
    let shop = ["-n", "shop"];
    let status = ["--subresource=status"];
    let shop_status = ["-n", "shop", "--subresource=status"];
    let token = ["-n", NS, "--subresource=token"];
    // (account, verb, resource, scope, expected)
    let checks: Vec<(&str, &str, &str, &[&str], bool)> = vec![
        // The controller's inputs, everywhere.
        (ctl, "list", "virtualips.halo.dev", &[], true),
        (ctl, "watch", "virtualips.halo.dev", &[], true),
        (ctl, "list", "loadbalancers.halo.dev", &all, true),
        (ctl, "watch", "loadbalancers.halo.dev", &all, true),
        (ctl, "list", "virtualippools.halo.dev", &[], true),
        (ctl, "watch", "virtualippools.halo.dev", &[], true),
        (ctl, "list", "services", &all, true),
        (ctl, "watch", "services", &all, true),
        (ctl, "list", "endpointslices.discovery.k8s.io", &all, true),
        (ctl, "watch", "endpointslices.discovery.k8s.io", &all, true),
        (ctl, "list", "nodes", &[], true),
        (ctl, "watch", "nodes", &[], true),
        // What it writes.
        (ctl, "patch", "virtualips.halo.dev", &status, true),
        (ctl, "patch", "virtualips.halo.dev", &[], true),
        (ctl, "patch", "loadbalancers.halo.dev", &shop_status, true),
        (ctl, "patch", "virtualippools.halo.dev", &status, true),
        (ctl, "patch", "virtualippools.halo.dev", &[], false),
        (ctl, "patch", "services", &shop_status, true),
        (ctl, "create", "events.events.k8s.io", &shop, true),
        (
            ctl,
            "patch",
            "events.events.k8s.io",
            &["-n", "default"],
            true,
        ),
        (
            ctl,
            "create",
            "tokenreviews.authentication.k8s.io",
            &[],
            true,
        ),
        (ctl, "create", "leases.coordination.k8s.io", &in_ns, true),
        (
            ctl,
            "get",
            "leases.coordination.k8s.io/halo-controller",
            &in_ns,
            true,
        ),
        (
            ctl,
            "update",
            "leases.coordination.k8s.io/halo-controller",
            &in_ns,
            true,
        ),
        (ctl, "list", "secrets", &in_ns, true),
        (ctl, "watch", "secrets", &in_ns, true),
        // TLS material referenced by LoadBalancers in any namespace: RBAC cannot narrow by
        // Secret type or label, so reading is cluster-wide; writing is nowhere.
        (ctl, "list", "secrets", &all, true),
        (ctl, "watch", "secrets", &all, true),
        (ctl, "get", "secrets", &shop, true),
        // ... and nothing more.
        (
            ctl,
            "get",
            "leases.coordination.k8s.io/someone-else",
            &in_ns,
            false,
        ),
        (ctl, "create", "leases.coordination.k8s.io", &shop, false),
        (ctl, "create", "secrets", &shop, false),
        (ctl, "update", "secrets", &shop, false),
        (ctl, "patch", "secrets", &shop, false),
        (ctl, "delete", "secrets", &in_ns, false),
        (ctl, "delete", "nodes", &[], false),
        (ctl, "patch", "nodes", &[], false),
        (ctl, "create", "pods", &in_ns, false),
        (ctl, "list", "pods", &all, false),
        (ctl, "create", "virtualips.halo.dev", &[], false),
        (ctl, "update", "virtualips.halo.dev", &[], false),
        (ctl, "delete", "virtualips.halo.dev", &[], false),
        (ctl, "patch", "loadbalancers.halo.dev", &shop, false),
        (ctl, "update", "services", &shop, false),
        (ctl, "patch", "services", &shop, false),
        (ctl, "create", "events", &shop, false),
        (ctl, "delete", "events.events.k8s.io", &shop, false),
        (
            ctl,
            "create",
            "clusterrolebindings.rbac.authorization.k8s.io",
            &[],
            false,
        ),
        (ctl, "impersonate", "serviceaccounts", &all, false),
        (ctl, "create", "serviceaccounts", &token, false),
        (
            ctl,
            "delete",
            "customresourcedefinitions.apiextensions.k8s.io",
            &[],
            false,
        ),
        // The data plane talks only to the controller.
        (dp, "list", "pods", &all, false),
        (dp, "get", "pods", &in_ns, false),
        (dp, "list", "nodes", &[], false),
        (dp, "list", "secrets", &in_ns, false),
        (dp, "get", "secrets/halo-controller-tls", &in_ns, false),
        (dp, "list", "virtualips.halo.dev", &[], false),
        (dp, "list", "loadbalancers.halo.dev", &all, false),
        (dp, "list", "endpointslices.discovery.k8s.io", &all, false),
        (
            dp,
            "create",
            "tokenreviews.authentication.k8s.io",
            &[],
            false,
        ),
        (dp, "get", "leases.coordination.k8s.io", &in_ns, false),
        (dp, "create", "events.events.k8s.io", &in_ns, false),
        (dp, "create", "serviceaccounts", &token, false),
        (dp, "patch", "virtualips.halo.dev", &status, false),
    ];
    let mut table = String::from(
        "| account | verb | resource | scope | can-i | expected |\n|---|---|---|---|---|---|\n",
    );
    let mut wrong = Vec::new();
    for (account, verb, resource, scope, expected) in &checks {
        let got = cluster.can_i(account, verb, resource, scope);
        let scope_text = if scope.is_empty() {
            "cluster".to_string()
        } else {
            scope.join(" ")
        };
        table.push_str(&format!(
            "| {account} | {verb} | {resource} | {scope_text} | {} | {} |\n",
            if got { "yes" } else { "no" },
            if *expected { "yes" } else { "no" }
        ));
        if got != *expected {
            wrong.push(format!(
                "{account} {verb} {resource} {scope_text}: got {got}"
            ));
        }
    }
    println!("{table}");
    assert!(
        wrong.is_empty(),
        "unexpected permissions:\n{}\n{table}",
        wrong.join("\n")
    );

    // The data plane's account has only what every authenticated user has.
    let user = format!("system:serviceaccount:{NS}:{dp}");
    let list = cluster
        .kubectl_ok(&[
            "auth",
            "can-i",
            "--list",
            "-n",
            NS,
            "--as",
            &user,
            "--as-group",
            "system:serviceaccounts",
            "--as-group",
            &format!("system:serviceaccounts:{NS}"),
            "--as-group",
            "system:authenticated",
        ])
        .expect("can-i --list");
    println!("{dp} can-i --list -n {NS}:\n{list}");
    for line in list.lines().skip(1) {
        // Non-resource URLs (/api, /healthz, ...) have an empty first column.
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let resource = line.split_whitespace().next().unwrap_or("");
        assert!(
            matches!(
                resource,
                "selfsubjectreviews.authentication.k8s.io"
                    | "selfsubjectaccessreviews.authorization.k8s.io"
                    | "selfsubjectrulesreviews.authorization.k8s.io"
                    | ""
            ),
            "{dp} may use {line}"
        );
    }
    let sa = cluster
        .get_json(&["serviceaccount", dp, "-n", NS])
        .expect("sa");
    assert_eq!(sa["automountServiceAccountToken"], false);
}
