//! The generated deploy artifacts: the chart's CRD copies and the plain manifests are up to
//! date, and the manifests (with the README's TLS steps) install on a real API server.

#[path = "deploy_support.rs"]
mod support;

use std::collections::BTreeMap;

use support::{Cluster, NS, Scratch, find, helm_template, kinds_and_names, root};

/// The chart's CRD templates are byte-for-byte copies of the generated CRDs.
#[test]
fn chart_crds_are_copies_of_the_generated_crds() {
    let read_dir = |dir: &std::path::Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .map(|p| {
                (
                    p.file_name().expect("name").to_string_lossy().into_owned(),
                    std::fs::read(&p).expect("read"),
                )
            })
            .collect()
    };
    let generated = read_dir(&root().join("deploy/crds"));
    let copies = read_dir(&root().join("deploy/helm/halo/charts/crds/templates"));
    assert!(!generated.is_empty(), "no CRDs in deploy/crds");
    let fix = "cp deploy/crds/*.yaml deploy/helm/halo/charts/crds/templates/ (and regenerate \
               deploy/manifests/halo.yaml, see deploy/README.md)";
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        copies.keys().collect::<Vec<_>>(),
        "the chart's CRD templates are not the files of deploy/crds: {fix}"
    );
    for (name, bytes) in &generated {
        assert!(
            copies[name] == *bytes,
            "deploy/helm/halo/charts/crds/templates/{name} differs from deploy/crds/{name}: {fix}"
        );
        // A template delimiter would make Helm render the copy differently from the file.
        assert!(
            !String::from_utf8_lossy(bytes).contains("{{"),
            "deploy/crds/{name} holds `{{{{`: it cannot be used as a Helm template as it is"
        );
    }
}

/// deploy/manifests/halo.yaml is exactly what the documented `helm template` prints.
#[test]
fn plain_manifests_are_rendered_from_the_chart() {
    let scratch = Scratch::new("render").expect("scratch");
    let values = root().join("deploy/manifests/values.yaml");
    let rendered = helm_template(
        &scratch.dir,
        &root().join("deploy/helm/halo"),
        &["--include-crds", "-f", &values.to_string_lossy()],
    )
    .expect("helm template");
    let committed =
        std::fs::read_to_string(root().join("deploy/manifests/halo.yaml")).expect("manifests");
    if rendered != committed {
        let line = rendered
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| rendered.lines().count().min(committed.lines().count()));
        panic!(
            "deploy/manifests/halo.yaml is stale (first difference at line {}: rendered {:?}, \
             file {:?}). Regenerate it:\n  target/helm/{}/helm template halo deploy/helm/halo \
             --namespace halo-system --include-crds -f deploy/manifests/values.yaml > \
             deploy/manifests/halo.yaml",
            line + 1,
            rendered.lines().nth(line).unwrap_or("<end>"),
            committed.lines().nth(line).unwrap_or("<end>"),
            support::helm_version().unwrap_or("<version>")
        );
    }
}

#[test]
fn plain_manifests_install_on_a_real_api_server() {
    let cluster = Cluster::start("manifests").expect("control plane");
    let manifests = root().join("deploy/manifests/halo.yaml");
    let manifests = manifests.to_string_lossy();
    let yaml = std::fs::read_to_string(&*manifests).expect("manifests");

    // What the file holds, parsed as kubectl parses it.
    let objects = cluster.parse(&yaml).expect("the manifests parse");
    let names = kinds_and_names(&objects);
    for expected in [
        "Namespace/halo-system",
        "CustomResourceDefinition/virtualips.halo.dev",
        "CustomResourceDefinition/loadbalancers.halo.dev",
        "CustomResourceDefinition/virtualippools.halo.dev",
        "ServiceAccount/halo-controller",
        "ServiceAccount/halo-dataplane",
        "ClusterRole/halo-controller",
        "ClusterRoleBinding/halo-controller",
        "Role/halo-controller",
        "RoleBinding/halo-controller",
        "Service/halo-controller",
        "Deployment/halo-controller",
        "PodDisruptionBudget/halo-controller",
        "DaemonSet/halo-dataplane",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    // No key pair in a published file: the controller makes its own at first start.
    assert!(
        !names.iter().any(|n| n.starts_with("Secret/")),
        "the plain manifests carry a Secret: {names:?}"
    );
    for o in &objects {
        let kind = o["kind"].as_str().unwrap_or("");
        let cluster_scoped = matches!(
            kind,
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        assert_eq!(
            o["metadata"]["namespace"].as_str(),
            (!cluster_scoped).then_some(NS),
            "{kind}/{}",
            o["metadata"]["name"]
        );
    }

    // One step on a fresh cluster: no namespace, no Secret made by hand first (the controller
    // creates its serving certificate's Secret; tests/tests/deploy_controller.rs runs it).
    let applied = cluster
        .kubectl_ok(&["apply", "-f", &manifests])
        .expect("kubectl apply -f deploy/manifests/halo.yaml");
    eprintln!("apply:\n{applied}");
    // A server-side dry run of the same file now passes too (before the namespace existed it
    // could not, as a dry run creates nothing for the objects after it).
    let dry = cluster
        .kubectl_ok(&["apply", "--dry-run=server", "-f", &manifests])
        .expect("server-side dry run of deploy/manifests/halo.yaml");
    eprintln!("dry run:\n{dry}");
    cluster.wait_crds_established().expect("CRDs established");
    let listed = cluster
        .kubectl_ok(&["get", "-f", &manifests, "-o", "name"])
        .expect("every object exists");
    assert_eq!(listed.lines().count(), objects.len(), "{listed}");
    // Applying again changes nothing.
    let diff = cluster
        .cp
        .kubectl(["diff", "-f", &*manifests])
        .expect("diff");
    assert_eq!(
        diff.status.code(),
        Some(0),
        "the API server holds something else than the manifests:\n{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );

    // The pods as their controllers would create them pass admission (priority class, Pod
    // Security "privileged" on the namespace, volumes, capabilities).
    cluster.node("node-a", "192.0.2.1").expect("node");
    cluster
        .pod_from_template("daemonset", "halo-dataplane", "dp-check", "node-a", true)
        .expect("a data plane pod is admitted");
    cluster
        .pod_from_template("deployment", "halo-controller", "ctl-check", "node-a", true)
        .expect("a controller pod is admitted");

    // The data plane pod's shape, as the API server stores the DaemonSet.
    let ds = cluster
        .get_json(&["daemonset", "halo-dataplane", "-n", NS])
        .expect("daemonset");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let token = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "token")
        .expect("token volume");
    let source = &token["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(source["audience"], "halo-controller");
    assert_eq!(source["expirationSeconds"], 3600);
    let caps = &pod["containers"][0]["securityContext"]["capabilities"];
    assert_eq!(
        caps["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"])
    );
    assert_eq!(caps["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let dp = find(&objects, "DaemonSet", "halo-dataplane").expect("ds");
    assert!(
        dp["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .is_some_and(|a| a
                .iter()
                .any(|x| x == "--controller=https://halo-controller.halo-system.svc:9443")),
        "{dp}"
    );

    // The examples are valid objects for the CRDs' schemas and CEL rules (pools.yaml has a
    // Service in the namespace `shop`).
    cluster
        .kubectl_ok(&["create", "namespace", "shop"])
        .expect("namespace shop");
    // The Gateway API example needs the Gateway API's CRDs.
    for args in halo_tests::cluster::gateway_api_steps().expect("Gateway API CRDs") {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster
            .kubectl_ok(&args)
            .expect("install the Gateway API CRDs");
    }
    for example in [
        "deploy/examples/standalone.yaml",
        "deploy/examples/three-tier.yaml",
        "deploy/examples/vm-standalone.yaml",
        "deploy/examples/vrrp-track-checks.yaml",
        "deploy/examples/kubernetes/service-loadbalancer.yaml",
        "deploy/examples/kubernetes/three-node-lab.yaml",
        "deploy/examples/kubernetes/pools.yaml",
        "deploy/examples/kubernetes/gateway.yaml",
        // The L7 examples, one per capability (kubectl takes the whole folder).
        "deploy/examples/l7",
    ] {
        let path = root().join(example);
        cluster
            .kubectl_ok(&["apply", "--dry-run=server", "-f", &path.to_string_lossy()])
            .unwrap_or_else(|e| panic!("{example}: {e:#}"));
    }
}
