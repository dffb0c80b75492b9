//! Services of type LoadBalancer drawing from VirtualIPPools, against a real kube-apiserver:
//! ranges, reserved addresses, pools that assign only on request, namespace limits, requested
//! addresses (`spec.loadBalancerIP`, `halo.dev/addresses`, `halo.dev/pool`), and what an
//! impossible request gives (an Event, no address, never a silent skip).

use std::time::Duration;

use halo_tests::backends::free_port;
use halo_tests::cluster::{Cluster, wait_for};

const POOLS: &str = "apiVersion: halo.dev/v1alpha1
kind: VirtualIPPool
metadata: {name: pub}
spec:
  cidrs: [192.0.2.64/29]
  reserved: [192.0.2.65]
---
apiVersion: halo.dev/v1alpha1
kind: VirtualIPPool
metadata: {name: manual}
spec:
  ranges: [198.51.100.10-198.51.100.12]
  autoAssign: false
---
apiVersion: halo.dev/v1alpha1
kind: VirtualIPPool
metadata: {name: shop}
spec:
  cidrs: [203.0.113.0/30]
  namespaces: [shop]
";

fn service(namespace: &str, name: &str, annotations: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
  annotations: {{{annotations}}}
spec:
  type: LoadBalancer
  loadBalancerClass: halo.dev/vrrp
  ports: [{{name: http, port: 80}}]
{extra_spec}---
"
    )
}

#[test]
fn pools_hand_out_requested_reserved_aware_and_limited_addresses() {
    let cluster = Cluster::start("pools").expect("cluster");
    cluster.apply(POOLS).expect("pools");
    cluster
        .kubectl_ok(&["create", "namespace", "shop"])
        .expect("namespace");
    let services = [
        service("default", "auto", "", ""),
        service("default", "lb-ip", "", "  loadBalancerIP: 198.51.100.11\n"),
        service("default", "named", "halo.dev/pool: manual", ""),
        service("default", "taken", "halo.dev/addresses: 198.51.100.11", ""),
        service("default", "reserved", "halo.dev/addresses: 192.0.2.65", ""),
        service("shop", "front", "halo.dev/pool: shop", ""),
        service("default", "front", "halo.dev/pool: shop", ""),
    ]
    .concat();
    cluster.apply(&services).expect("services");

    let (port, metrics) = (free_port().expect("port"), free_port().expect("port"));
    let _ctl = cluster
        .controller("ctl", port, metrics)
        .expect("controller");
    let ingress = |ns: &str, name: &str| {
        cluster
            .jsonpath("service", name, ns, "{.status.loadBalancer.ingress[*].ip}")
            .unwrap_or_default()
    };
    for (ns, name, want) in [
        ("default", "auto", "192.0.2.66"),
        ("default", "lb-ip", "198.51.100.11"),
        ("default", "named", "198.51.100.10"),
        ("shop", "front", "203.0.113.1"),
    ] {
        assert!(
            wait_for(Duration::from_secs(30), || ingress(ns, name) == want),
            "{ns}/{name}: {:?}, want {want}\n{}",
            ingress(ns, name),
            cluster.log("ctl")
        );
    }
    let says = |ns: &str, name: &str, text: &str| {
        wait_for(Duration::from_secs(20), || {
            cluster
                .event_messages("Service", name, ns)
                .is_ok_and(|m| m.iter().any(|l| l == text))
        })
    };
    for (ns, name, why) in [
        (
            "default",
            "taken",
            "198.51.100.11 is held by Service default/lb-ip",
        ),
        (
            "default",
            "reserved",
            "192.0.2.65 is reserved in VirtualIPPool pub",
        ),
        (
            "default",
            "front",
            "no VirtualIPPool shop that serves this Service",
        ),
    ] {
        assert!(
            says(ns, name, why),
            "{ns}/{name}: no Event {why:?}: {:?}",
            cluster.event_messages("Service", name, ns)
        );
        assert_eq!(ingress(ns, name), "", "{ns}/{name} got an address");
    }

    let ask_auto = |address: &str| {
        cluster
            .kubectl_ok(&[
                "annotate",
                "service",
                "auto",
                "--overwrite",
                &format!("halo.dev/addresses={address}"),
            ])
            .expect("annotate");
    };
    // A request changed to an address someone holds: the old one is given up (nothing
    // announces it any more) and the Service waits, with an Event; then a free one.
    ask_auto("198.51.100.10");
    assert!(
        says(
            "default",
            "auto",
            "198.51.100.10 is held by Service default/named"
        ),
        "{:?}\n{}",
        cluster.event_messages("Service", "auto", "default"),
        cluster.log("ctl")
    );
    assert!(
        wait_for(Duration::from_secs(20), || ingress("default", "auto")
            .is_empty()),
        "the status still shows {:?}",
        ingress("default", "auto")
    );
    ask_auto("192.0.2.70");
    assert!(
        wait_for(Duration::from_secs(20), || ingress("default", "auto")
            == "192.0.2.70"),
        "{:?}\n{}",
        ingress("default", "auto"),
        cluster.log("ctl")
    );

    // What each pool holds: `pub` has 6 hosts, one reserved.
    let usage = |name: &str| {
        cluster
            .jsonpath(
                "vippool",
                name,
                "default",
                "{.status.allocated}/{.status.free}",
            )
            .unwrap_or_default()
    };
    for (pool, want) in [("pub", "1/4"), ("manual", "2/1"), ("shop", "1/1")] {
        assert!(
            wait_for(Duration::from_secs(20), || usage(pool) == want),
            "pool {pool}: {:?}, want {want}",
            usage(pool)
        );
    }
}

#[test]
fn the_api_server_refuses_malformed_pools() {
    let cluster = Cluster::start("pools-cel").expect("cluster");
    for (spec, message) in [
        (
            "ranges: [192.0.2.1-2001:db8::1]",
            "every range must be FIRST-LAST, two addresses of one family",
        ),
        ("ranges: [192.0.2.1]", "every range must be FIRST-LAST"),
        ("cidrs: []", "a pool needs cidrs or ranges"),
        (
            "cidrs: [192.0.2.0/24]\n  reserved: [nonsense]",
            "every reserved entry must be an address, a CIDR or FIRST-LAST",
        ),
    ] {
        let yaml = format!(
            "apiVersion: halo.dev/v1alpha1\nkind: VirtualIPPool\nmetadata: {{name: bad}}\nspec:\n  {spec}\n"
        );
        let err = cluster
            .apply(&yaml)
            .expect_err(&format!("the API server accepted {spec:?}"));
        assert!(format!("{err:#}").contains(message), "{spec:?}: {err:#}");
    }
    cluster
        .apply("apiVersion: halo.dev/v1alpha1\nkind: VirtualIPPool\nmetadata: {name: good}\nspec:\n  ranges: [\"2001:db8::10-2001:db8::1f\"]\n  reserved: [192.0.2.1, 192.0.2.0/30, 192.0.2.5-192.0.2.9]\n")
        .expect("a valid pool");
}
