//! Render: the NodeConfig a node gets from its objects, and the problems it reports.

use std::collections::BTreeMap;
use std::net::IpAddr;

use halo_crds::load_balancer::{Algorithm, Protocol};
use halo_crds::manifest;
use halo_crds::node_config::{ForwardedMode, Probe};
use halo_crds::render::{
    Assignments, Endpoint, Material, NodeInfo, RenderInput, Rendered, SecretValues,
    ServiceEndpoints, ServiceKey, VipAssignment, render,
};

const SITE: &str = r#"
apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: public}
spec:
  addresses: ["192.0.2.10/24"]
  interface: eth0
  vrrp:
    virtualRouterId: 51
    advertisementInterval: 100ms
    preempt: false
    preemptDelay: 5s
  priorities:
    - {node: lb1, priority: 150}
    - {node: lb2, priority: 100}
---
apiVersion: halo.dev/v1alpha1
kind: LoadBalancer
metadata: {name: web, namespace: shop}
spec:
  virtualIP: public
  listeners:
    - name: http
      port: 80
      protocol: HTTP
      backends:
        - {name: ws1, address: 10.0.0.11, port: 8080, weight: 3}
        - {name: ws2, address: 10.0.0.12, port: 8080}
        - {name: sorry, address: 10.0.0.13, port: 8080, backup: true}
      healthCheck: {type: HTTP, path: /health, expectStatus: 200, interval: 2s, downInterval: 5s, rise: 3, fall: 2}
      timeouts: {client: 3h, server: 3h}
    - name: db
      port: 3306
      protocol: TCP
      algorithm: LeastConnections
      backends:
        - {service: {name: mariadb, port: 3306}}
      healthCheck: {type: TCP, port: 9200}
"#;

fn node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: BTreeMap::new(),
    }
}

fn endpoints() -> ServiceEndpoints {
    let ep = |name: &str, ip: &str, ready| Endpoint {
        name: name.into(),
        address: ip.parse().expect("ip"),
        port: 3306,
        ready,
    };
    BTreeMap::from([(
        ServiceKey {
            namespace: "shop".into(),
            name: "mariadb".into(),
            port: 3306,
        },
        vec![ep("db-0", "10.1.0.5", true), ep("db-1", "10.1.0.6", false)],
    )])
}

/// Renders objects that skipped the schema checks, so render's own checks are what is tested.
fn render_text(text: &str, node_name: &str, assignments: &Assignments) -> Rendered {
    let m = manifest::parse_unvalidated(text).expect("parse");
    let node = node(node_name);
    let eps = endpoints();
    render(&RenderInput {
        node: &node,
        virtual_ips: &m.virtual_ips,
        load_balancers: &m.load_balancers,
        endpoints: &eps,
        assignments,
        secrets: &SecretValues::new(),
        material: &Material::new(),
    })
}

#[test]
fn renders_vrrp_per_node_priority() {
    let lb1 = render_text(SITE, "lb1", &Assignments::new());
    assert!(lb1.problems.is_empty(), "{:?}", lb1.problems);
    let vrrp = lb1.config.vips[0].vrrp.clone().expect("vrrp enabled");
    assert_eq!(
        (vrrp.vrid, vrrp.priority, vrrp.advert_interval_ms),
        (51, 150, 100)
    );
    assert!(!vrrp.preempt);
    assert_eq!(vrrp.preempt_delay_ms, 5_000);
    let other = render_text(SITE, "lb9", &Assignments::new());
    assert_eq!(
        other.config.vips[0].vrrp.as_ref().map(|v| v.priority),
        Some(100)
    );
}

#[test]
fn renders_listeners_with_defaults_and_resolved_backends() {
    let r = render_text(SITE, "lb1", &Assignments::new());
    let http = &r.config.listeners[0];
    let web = &http.groups[0];
    assert_eq!(http.name, "shop/web/http");
    assert_eq!(
        http.addresses,
        vec!["192.0.2.10".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(
        (http.protocol, web.algorithm, web.retries),
        (Protocol::Http, Algorithm::RoundRobin, 3)
    );
    assert_eq!(http.forwarded.mode, ForwardedMode::Append);
    assert_eq!(
        web.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        vec![3, 1, 1]
    );
    assert!(web.backends[2].backup);
    assert_eq!(http.timeouts.client_ms, 10_800_000);
    assert_eq!(http.timeouts.connect_ms, 5_000);
    let hc = web.health_check.clone().expect("health check");
    assert_eq!(
        hc.probe,
        Probe::Http {
            path: "/health".into(),
            expect_status: Some(200)
        }
    );
    assert_eq!(
        (
            hc.interval_ms,
            hc.down_interval_ms,
            hc.timeout_ms,
            hc.rise,
            hc.fall
        ),
        (2_000, 5_000, 1_000, 3, 2)
    );

    let db = &r.config.listeners[1].groups[0];
    // Only the ready endpoint is a backend.
    assert_eq!(db.backends.len(), 1);
    assert_eq!(db.backends[0].name, "mariadb/db-0");
    assert_eq!(db.health_check.as_ref().and_then(|h| h.port), Some(9200));
}

#[test]
fn render_is_deterministic_and_hash_tracks_content() {
    let a = render_text(SITE, "lb1", &Assignments::new());
    let b = render_text(SITE, "lb1", &Assignments::new());
    assert_eq!(a, b);
    let c = render_text(
        &SITE.replace("weight: 3", "weight: 4"),
        "lb1",
        &Assignments::new(),
    );
    assert_ne!(a.config.hash, c.config.hash);
    assert_eq!(
        a.config.sealed(7).hash,
        b.config.hash,
        "hash ignores the version"
    );
}

#[test]
fn controller_assignment_overrides_the_spec() {
    let assignments = Assignments::from([(
        "public".to_string(),
        VipAssignment {
            vrid: 9,
            priority: 200,
            peers: vec![],
        },
    )]);
    let r = render_text(SITE, "lb1", &assignments);
    let vrrp = r.config.vips[0].vrrp.clone().expect("vrrp");
    assert_eq!((vrrp.vrid, vrrp.priority), (9, 200));
}

#[test]
fn node_selector_excludes_vip_and_its_listeners() {
    let text = SITE.replace(
        "  interface: eth0",
        "  interface: eth0\n  nodeSelector: {role: edge}",
    );
    let r = render_text(&text, "lb1", &Assignments::new());
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.config.vips.is_empty());
    assert!(r.config.listeners.is_empty());
}

fn problems(text: &str) -> Vec<String> {
    render_text(text, "lb1", &Assignments::new())
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn semantic_errors_name_object_and_field() {
    let cases = [
        (
            "advertisementInterval: 100ms",
            "advertisementInterval: 5ms",
            "VirtualIP public: spec.vrrp.advertisementInterval: VRRP version 3 advertises in centiseconds, 10ms-40950ms",
        ),
        (
            "virtualIP: public",
            "virtualIP: missing",
            "LoadBalancer shop/web: spec.virtualIP: VirtualIP missing not found",
        ),
        (
            "address: 10.0.0.12, port: 8080",
            "address: 10.0.0.300, port: 8080",
            "LoadBalancer shop/web: spec.listeners[0].backends[1].address: \"10.0.0.300\" is not an IP address",
        ),
        (
            "interval: 2s",
            "interval: 2 seconds",
            "LoadBalancer shop/web: spec.listeners[0].healthCheck.interval: invalid duration \"2 seconds\"",
        ),
        (
            "port: 3306\n      protocol: TCP",
            "port: 80\n      protocol: TCP",
            "LoadBalancer shop/web: spec.listeners[1].port: duplicate listener port 80",
        ),
        (
            "{type: TCP, port: 9200}",
            "{type: TCP, port: 9200, path: /x}",
            "LoadBalancer shop/web: spec.listeners[1].healthCheck: path and expectStatus apply to type HTTP",
        ),
    ];
    for (from, to, expected) in cases {
        let text = SITE.replace(from, to);
        assert_ne!(text, SITE, "case {from:?} did not apply");
        let got = problems(&text);
        assert!(
            got.iter().any(|p| p.starts_with(expected)),
            "expected {expected:?} in {got:?}"
        );
    }
}

#[test]
fn invalid_vip_takes_its_load_balancers_out() {
    let r = render_text(
        &SITE.replace("192.0.2.10/24", "192.0.2.300/24"),
        "lb1",
        &Assignments::new(),
    );
    assert!(r.config.vips.is_empty() && r.config.listeners.is_empty());
    let text: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|p| p.contains("spec.virtualIP: VirtualIP public is invalid")),
        "{text:?}"
    );
}

#[test]
fn vrid_conflict_and_bind_conflict_are_reported() {
    let second_vip = r#"
---
apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: zprivate}
spec:
  addresses: ["192.0.2.20/24"]
  vrrp: {virtualRouterId: 51}
---
apiVersion: halo.dev/v1alpha1
kind: LoadBalancer
metadata: {name: web2, namespace: shop}
spec:
  virtualIP: public
  listeners:
    - {name: http, port: 80, protocol: HTTP, backends: [{address: 10.0.0.1, port: 1}]}
"#;
    let got = problems(&format!("{SITE}{second_vip}"));
    assert!(got.iter().any(|p| p == "VirtualIP zprivate: spec.vrrp.virtualRouterId: VRID 51 is already used by VirtualIP public"), "{got:?}");
    assert!(got.iter().any(|p| p == "LoadBalancer shop/web2: spec.listeners[0].port: 192.0.2.10:80 is already used by listener shop/web/http"), "{got:?}");
}

#[test]
fn standalone_vrrp_needs_an_explicit_vrid_and_unicast_needs_peers() {
    let got = problems(&SITE.replace("virtualRouterId: 51", "mode: Unicast"));
    assert!(
        got.iter()
            .any(|p| p.contains("spec.vrrp.virtualRouterId: required")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|p| p.contains("spec.peers: unicast mode needs at least one peer")),
        "{got:?}"
    );
}
