//! The controller against a real kube-apiserver + etcd, with a real data plane process
//! following it over the authenticated stream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use halo_tests::backends::{self, free_port};
use halo_tests::client;
use halo_tests::cluster::{Cluster, dp_status, wait_for};
use halo_tests::netns::{self, Lab};
use halo_tests::process::{binary, http_get_blocking};

fn backend_names(status: &serde_json::Value, listener: &str) -> Vec<String> {
    status["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["name"] == listener)
        .flat_map(|l| l["backends"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["name"].as_str().map(str::to_string))
        .collect()
}

fn slice_yaml(port: u16, endpoints: &[(&str, &str, bool)]) -> String {
    let mut eps = String::new();
    for (name, ip, ready) in endpoints {
        eps.push_str(&format!(
            "  - addresses: [\"{ip}\"]\n    conditions: {{ready: {ready}}}\n    targetRef: {{kind: Pod, name: {name}, namespace: default}}\n"
        ));
    }
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n{eps}"
    )
}

/// Runs a command in the lab namespace and returns its standard output.
fn in_ns(lab: &Lab, ns: &str, args: &[&str]) -> String {
    lab.exec_in(ns, args)
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_render_push_serve_and_report() {
    // EndpointSlices refuse loopback addresses, so the node (data plane and pods) lives
    // in a lab namespace; the data plane reaches the controller through a relay.
    if !netns::available() {
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    let cluster = Cluster::start("flow").expect("cluster");
    let mut lab = Lab::new("ctl").expect("lab");
    let node = lab.add_host("node-a", 1).expect("host");
    for ip in ["192.0.2.21/24", "192.0.2.22/24"] {
        lab.exec_in(&node.ns, &["ip", "addr", "add", ip, "dev", "eth0"])
            .expect("pod address");
    }
    let backend_port = 8080;
    for (name, ip) in [("pod-1", "192.0.2.21"), ("pod-2", "192.0.2.22")] {
        lab.spawn(
            &node,
            &binary("halo-lab").expect("bin"),
            &[
                "backend",
                "--listen",
                &format!("{ip}:{backend_port}"),
                "--name",
                name,
            ],
            &cluster.dir.join(format!("{name}.log")),
        )
        .expect("pod");
    }
    let front_port = 80;
    let (stream_port, metrics_port) = (free_port().expect("port"), free_port().expect("port"));

    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: {backend_port}}}]\n---\n{}",
            slice_yaml(backend_port, &[("pod-1", "192.0.2.21", true), ("pod-2", "192.0.2.22", true)])
        ))
        .expect("service");
    // One VIP held without election on node-a, one with VRRP for node-b only (nobody
    // runs there: it only gets a VRID).
    cluster
        .apply(&format!(
            "apiVersion: halo.dev/v1alpha1\nkind: VirtualIP\nmetadata: {{name: local}}\nspec:\n  addresses: [\"192.0.2.60/24\"]\n  interface: eth0\n  nodeSelector: {{kubernetes.io/hostname: node-a}}\n  vrrp: {{enabled: false}}\n---\napiVersion: halo.dev/v1alpha1\nkind: VirtualIP\nmetadata: {{name: elected}}\nspec:\n  addresses: [\"192.0.2.100/24\"]\n  nodeSelector: {{kubernetes.io/hostname: node-b}}\n---\napiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: web, namespace: default}}\nspec:\n  virtualIP: local\n  listeners:\n    - name: http\n      port: {front_port}\n      protocol: HTTP\n      backends: [{{service: {{name: web, port: 80}}}}]\n---\napiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: broken, namespace: default}}\nspec:\n  virtualIP: nowhere\n  listeners: [{{name: http, port: 81, protocol: HTTP, backends: []}}]\n"
        ))
        .expect("halo objects");

    let _controller = cluster
        .controller("ctl-1", stream_port, metrics_port)
        .expect("controller");
    let relay_port = 9443;
    let _relay = netns::relay_into(
        &node.ns,
        SocketAddr::from(([127, 0, 0, 1], relay_port)),
        SocketAddr::from(([127, 0, 0, 1], stream_port)),
    )
    .expect("relay");
    let token_a = cluster
        .token("halo-dataplane", Some("dp-node-a"))
        .expect("token");
    let args: Vec<String> = vec![
        "run".into(),
        "--controller".into(),
        format!("https://127.0.0.1:{relay_port}"),
        "--node".into(),
        "node-a".into(),
        "--token-file".into(),
        token_a.to_string_lossy().into(),
        "--ca-file".into(),
        cluster.dir.join("ca.crt").to_string_lossy().into(),
        "--state-dir".into(),
        cluster.dir.join("state-a").to_string_lossy().into(),
        "--admin".into(),
        "127.0.0.1:9100".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn(
        &node,
        &binary("halo-dataplane").expect("bin"),
        &args,
        &cluster.dir.join("dp-node-a.log"),
    )
    .expect("data plane");
    let status = || -> serde_json::Value {
        serde_json::from_str(&in_ns(
            &lab,
            &node.ns,
            &[
                "curl",
                "-s",
                "--max-time",
                "2",
                "http://127.0.0.1:9100/status",
            ],
        ))
        .unwrap_or_default()
    };
    let get = || {
        in_ns(
            &lab,
            &node.ns,
            &[
                "curl",
                "-s",
                "--max-time",
                "2",
                &format!("http://192.0.2.60:{front_port}/"),
            ],
        )
        .trim()
        .to_string()
    };

    // The data plane gets node-a's config: the Service resolved through its EndpointSlice.
    assert!(
        wait_for(Duration::from_secs(30), || backend_names(
            &status(),
            "default/web/http"
        )
        .len()
            == 2),
        "no config arrived:\n{}\n{}",
        cluster.log("ctl-1"),
        cluster.log("dp-node-a")
    );
    let mut seen: Vec<String> = (0..4).map(|_| get()).collect();
    seen.sort();
    assert_eq!(
        seen,
        ["pod-1", "pod-1", "pod-2", "pod-2"],
        "{}",
        cluster.log("dp-node-a")
    );
    let version_before = status()["version"].as_u64().unwrap_or(0);

    // An endpoint that stops being ready leaves; a new snapshot version arrives.
    cluster
        .apply(&slice_yaml(
            backend_port,
            &[
                ("pod-1", "192.0.2.21", true),
                ("pod-2", "192.0.2.22", false),
            ],
        ))
        .expect("slice");
    assert!(
        wait_for(Duration::from_secs(10), || backend_names(
            &status(),
            "default/web/http"
        ) == ["web/pod-1"]),
        "{:?}",
        status()
    );
    assert!(status()["version"].as_u64().unwrap_or(0) > version_before);
    for _ in 0..4 {
        assert_eq!(get(), "pod-1");
    }

    // Status comes back from the data plane's reports and the assignment.
    assert!(
        wait_for(Duration::from_secs(20), || {
            cluster
                .kubectl_ok(&[
                    "get",
                    "vip",
                    "local",
                    "-o",
                    "jsonpath={.status.master} {.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .is_ok_and(|s| s == "node-a True")
        }),
        "VirtualIP status:\n{}\n{}",
        cluster
            .kubectl_ok(&["get", "vip", "local", "-o", "yaml"])
            .unwrap_or_default(),
        cluster.log("ctl-1")
    );
    let vrid = cluster
        .kubectl_ok(&["get", "vip", "elected", "-o", "jsonpath={.status.vrid}"])
        .expect("vrid");
    assert!(
        vrid.parse::<u8>().is_ok_and(|v| v >= 1),
        "elected has no VRID: {vrid:?}"
    );
    assert!(
        wait_for(Duration::from_secs(20), || {
            cluster
                .kubectl_ok(&["get", "hlb", "web", "-o", "jsonpath={.status.listeners[0].readyBackends}/{.status.listeners[0].totalBackends} {.status.addresses[0]}"])
                .is_ok_and(|s| s == "1/1 192.0.2.60")
        }),
        "{}",
        cluster
            .kubectl_ok(&["get", "hlb", "web", "-o", "yaml"])
            .unwrap_or_default()
    );
    // What the schema cannot catch: Ready=False with a reason, and an Event.
    assert!(wait_for(Duration::from_secs(20), || {
        cluster
            .kubectl_ok(&[
                "get",
                "hlb",
                "broken",
                "-o",
                "jsonpath={.status.conditions[0].reason}: {.status.conditions[0].message}",
            ])
            .is_ok_and(|s| s == "InvalidSpec: spec.virtualIP: VirtualIP nowhere not found")
    }));
    assert!(wait_for(Duration::from_secs(20), || {
        cluster
            .kubectl_ok(&[
                "get",
                "events",
                "-n",
                "default",
                "--field-selector",
                "involvedObject.name=broken",
                "-o",
                "jsonpath={.items[*].reason}",
            ])
            .is_ok_and(|s| s.contains("InvalidSpec"))
    }));

    // A Service of type LoadBalancer: an address from the pool, VRRP on the node,
    // traffic through a TCP listener to the Service's endpoints, status written back.
    cluster
        .apply(&format!(
            "apiVersion: halo.dev/v1alpha1\nkind: VirtualIPPool\nmetadata: {{name: lab}}\nspec:\n  cidrs: [\"192.0.2.64/28\"]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: default}}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: halo.dev/vrrp\n  ports: [{{name: mysql, port: 3306, targetPort: {backend_port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: db-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: db}}\naddressType: IPv4\nports: [{{name: mysql, port: {backend_port}, protocol: TCP}}]\nendpoints:\n  - addresses: [\"192.0.2.21\"]\n    conditions: {{ready: true}}\n"
        ))
        .expect("service type LoadBalancer");
    assert!(
        wait_for(Duration::from_secs(20), || {
            cluster
                .kubectl_ok(&[
                    "get",
                    "service",
                    "db",
                    "-o",
                    "jsonpath={.status.loadBalancer.ingress[0].ip}",
                ])
                .is_ok_and(|s| s == "192.0.2.65")
        }),
        "{}",
        cluster.log("ctl-1")
    );
    assert!(
        wait_for(Duration::from_secs(20), || in_ns(
            &lab,
            &node.ns,
            &["curl", "-s", "--max-time", "2", "http://192.0.2.65:3306/"]
        )
        .trim()
            == "pod-1"),
        "{:?}\n{}",
        status(),
        cluster.log("dp-node-a")
    );

    // The pool tells what it holds; full, it is Ready=False Exhausted with an Event, and
    // a Service it cannot serve gets an Event too.
    let pool = |path: &str| {
        cluster
            .jsonpath("vippool", "lab", "default", path)
            .unwrap_or_default()
    };
    let ready_path =
        "{.status.allocated}/{.status.free} {.status.conditions[?(@.type==\"Ready\")].reason}";
    assert!(
        wait_for(Duration::from_secs(10), || pool(ready_path)
            == "1/13 AddressesFree"),
        "pool status: {:?}",
        pool(ready_path)
    );
    cluster
        .apply("apiVersion: halo.dev/v1alpha1\nkind: VirtualIPPool\nmetadata: {name: lab}\nspec:\n  cidrs: [\"192.0.2.64/31\"]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db2, namespace: default}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: halo.dev/vrrp\n  ports: [{name: mysql, port: 3306}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db3, namespace: default}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: halo.dev/vrrp\n  ports: [{name: mysql, port: 3306}]\n")
        .expect("a smaller pool");
    assert!(
        wait_for(Duration::from_secs(10), || pool(ready_path)
            == "2/0 Exhausted"),
        "pool status: {:?}",
        pool(ready_path)
    );
    assert!(
        wait_for(Duration::from_secs(10), || {
            cluster
                .event_reasons("VirtualIPPool", "lab", "default")
                .is_ok_and(|r| r.iter().any(|x| x == "Exhausted"))
                && cluster
                    .event_reasons("Service", "db3", "default")
                    .is_ok_and(|r| r.iter().any(|x| x == "AddressUnavailable"))
        }),
        "no Exhausted / AddressUnavailable Events: {:?} {:?}",
        cluster.event_reasons("VirtualIPPool", "lab", "default"),
        cluster.event_reasons("Service", "db3", "default")
    );
    cluster
        .kubectl_ok(&["delete", "service", "db2", "db3"])
        .expect("delete the extra Services");

    // Deleting a VirtualIP: data planes release it first, then the finalizer lets go.
    assert_eq!(
        cluster
            .kubectl_ok(&[
                "get",
                "vip",
                "local",
                "-o",
                "jsonpath={.metadata.finalizers}"
            ])
            .expect("get"),
        "[\"halo.dev/release\"]"
    );
    assert!(
        lab.addresses(&node)
            .expect("addresses")
            .contains(&"192.0.2.60/24".to_string())
    );
    cluster
        .kubectl_ok(&["delete", "vip", "local", "--wait=false"])
        .expect("delete");
    assert!(
        wait_for(Duration::from_secs(20), || cluster
            .kubectl_ok(&["get", "vip", "local", "--ignore-not-found", "-o", "name"])
            .is_ok_and(|s| s.trim().is_empty())),
        "{}",
        cluster.log("ctl-1")
    );
    assert!(
        !lab.addresses(&node)
            .expect("addresses")
            .contains(&"192.0.2.60/24".to_string()),
        "address left behind"
    );

    // Refused: no token, another account's token, a token bound to another node or to none.
    let intruder = cluster.token("intruder", None).expect("token");
    let token_b = cluster
        .token("halo-dataplane", Some("dp-node-b"))
        .expect("token");
    let unbound = cluster.token("halo-dataplane", None).expect("token");
    assert_eq!(
        cluster
            .stream_status(stream_port, "node-a", None)
            .expect("curl"),
        401
    );
    assert_eq!(
        cluster
            .stream_status(stream_port, "node-a", Some(&intruder))
            .expect("curl"),
        403
    );
    assert_eq!(
        cluster
            .stream_status(stream_port, "node-a", Some(&token_b))
            .expect("curl"),
        403
    );
    assert_eq!(
        cluster
            .stream_status(stream_port, "node-a", Some(&unbound))
            .expect("curl"),
        403
    );
    assert_eq!(
        cluster
            .stream_status(stream_port, "node-b", Some(&token_b))
            .expect("curl"),
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_serving_without_churn_and_leadership_moves() {
    let cluster = Cluster::start("ha").expect("cluster");
    let backend = backends::http("pod-1", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let front_port = free_port().expect("port");
    cluster
        .apply(&format!(
            "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: web, namespace: default}}\nspec:\n  addresses: [127.0.0.1]\n  listeners:\n    - name: http\n      port: {front_port}\n      protocol: HTTP\n      backends: [{{address: 127.0.0.1, port: {}}}]\n",
            backend.port()
        ))
        .expect("lb");
    let (p1, m1, p2, m2) = (
        free_port().expect("p"),
        free_port().expect("p"),
        free_port().expect("p"),
        free_port().expect("p"),
    );
    let ctl1 = cluster.controller("ctl-1", p1, m1).expect("controller 1");
    let leader_of = |metrics: u16| -> bool {
        http_get_blocking(SocketAddr::from(([127, 0, 0, 1], metrics)), "/metrics")
            .is_ok_and(|(_, body)| body.lines().any(|l| l == "halo_controller_leader 1"))
    };
    assert!(
        wait_for(Duration::from_secs(30), || leader_of(m1)),
        "{}",
        cluster.log("ctl-1")
    );
    let ctl2 = cluster.controller("ctl-2", p2, m2).expect("controller 2");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !leader_of(m2),
        "two leaders:\n{}\n{}\n{}",
        cluster.log("ctl-1"),
        cluster.log("ctl-2"),
        cluster
            .kubectl_ok(&["get", "lease", "-n", "halo-system", "-o", "yaml"])
            .unwrap_or_default()
    );

    let token = cluster
        .token("halo-dataplane", Some("dp-node-a"))
        .expect("token");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port().expect("port")));
    let _dp = cluster
        .dataplane("node-a", p1, admin, &token)
        .expect("data plane");
    assert!(
        wait_for(Duration::from_secs(30), || dp_status(admin)["version"]
            .as_u64()
            .is_some()),
        "{}",
        cluster.log("dp-node-a")
    );
    let version = dp_status(admin)["version"].as_u64();
    let front = SocketAddr::from(([127, 0, 0, 1], front_port));
    assert_eq!(client::get(front, "/").await.expect("served").status, 200);

    // The leader dies: the data plane keeps serving its config; the standby leads
    // within the lease duration and answers streams.
    drop(ctl1);
    let killed = Instant::now();
    for _ in 0..10 {
        assert_eq!(
            client::get(front, "/").await.expect("still served").status,
            200
        );
    }
    assert!(
        wait_for(Duration::from_secs(15), || leader_of(m2)),
        "{}",
        cluster.log("ctl-2")
    );
    eprintln!("leadership moved after {:?}", killed.elapsed());
    assert_eq!(
        cluster
            .stream_status(p2, "node-a", Some(&token))
            .expect("curl"),
        204
    );

    // A controller restart on the same port: the data plane reconnects and gets the
    // same version back (same content, no churn).
    let ctl1b = cluster
        .controller("ctl-1b", p1, m1)
        .expect("controller 1 again");
    drop(ctl2);
    assert!(
        wait_for(Duration::from_secs(20), || leader_of(m1)),
        "{}",
        cluster.log("ctl-1b")
    );
    assert!(
        wait_for(Duration::from_secs(20), || cluster
            .log("dp-node-a")
            .matches("following the controller")
            .count()
            >= 2),
        "{}",
        cluster.log("dp-node-a")
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        dp_status(admin)["version"].as_u64(),
        version,
        "version churned:\n{}",
        cluster.log("dp-node-a")
    );
    assert_eq!(client::get(front, "/").await.expect("served").status, 200);
    drop(ctl1b);
}

/// An exec track check runs a program on every node its VirtualIP selects, so the
/// controller refuses it (Ready=False with the field named, and an Event) unless it was
/// started with `--allow-track-exec`; one that was accepts the same object.
#[test]
fn exec_track_checks_need_allow_track_exec() {
    let cluster = Cluster::start("exec").expect("cluster");
    cluster
        .apply(
            "apiVersion: halo.dev/v1alpha1\nkind: VirtualIP\nmetadata: {name: scripted}\nspec:\n  addresses: [\"192.0.2.110/24\"]\n  vrrp:\n    track:\n      checks:\n        - {name: ok, exec: {command: /usr/bin/test, args: [-e, /run/halo-ok]}, weight: 10}\n        - {name: web, http: {url: 'http://127.0.0.1:8080/healthz'}, fault: true}\n",
        )
        .expect("virtual ip");
    let ready = || {
        cluster
            .jsonpath(
                "vip",
                "scripted",
                "default",
                "{.status.conditions[?(@.type==\"Ready\")].reason}: {.status.conditions[?(@.type==\"Ready\")].message}",
            )
            .unwrap_or_default()
    };
    let (p1, m1) = (free_port().expect("port"), free_port().expect("port"));
    let ctl1 = cluster.controller("ctl-1", p1, m1).expect("controller");
    let refused = "InvalidSpec: spec.vrrp.track.checks[0].exec: exec checks are not allowed here (the controller runs them only with --allow-track-exec)";
    assert!(
        wait_for(Duration::from_secs(30), || ready() == refused),
        "Ready is {:?}:\n{}",
        ready(),
        cluster.log("ctl-1")
    );
    assert!(
        wait_for(Duration::from_secs(20), || {
            cluster
                .kubectl_ok(&[
                    "get",
                    "events",
                    "-A",
                    "--field-selector",
                    "involvedObject.kind=VirtualIP,involvedObject.name=scripted",
                    "-o",
                    "jsonpath={.items[*].reason}",
                ])
                .is_ok_and(|r| r.contains("InvalidSpec"))
        }),
        "no InvalidSpec Event:\n{}",
        cluster.log("ctl-1")
    );

    drop(ctl1);
    let (p2, m2) = (free_port().expect("port"), free_port().expect("port"));
    let _ctl2 = cluster
        .controller_with("ctl-2", p2, m2, &["--allow-track-exec"])
        .expect("controller");
    assert!(
        wait_for(Duration::from_secs(30), || ready().starts_with("NoMaster:")),
        "with --allow-track-exec the spec is valid (no node runs it yet); Ready is {:?}:\n{}",
        ready(),
        cluster.log("ctl-2")
    );
}
