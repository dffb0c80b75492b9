//! Render: the NodeConfig a node gets from its objects, and the problems it reports.

use std::collections::BTreeMap;
use std::net::IpAddr;

use halo_crds::load_balancer::{Algorithm, Protocol};
use halo_crds::manifest;
use halo_crds::node_config::{CheckKind, TrackEffect, TrackedInterface};
use halo_crds::node_config::{ForwardedMode, Probe};
use halo_crds::render::{
    Assignments, Endpoint, Material, NodeInfo, RenderInput, RenderOptions, Rendered, SecretValues,
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

fn zoned(name: &str, zone: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: BTreeMap::from([("zone".to_string(), zone.to_string())]),
        ..NodeInfo::default()
    }
}

fn node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        ..NodeInfo::default()
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
        vec![ep("db-0", "10.1.0.5", true), ep("db-1", "10.1.0.6", false)].into(),
    )])
}

/// Renders objects that skipped the schema checks, so render's own checks are what is tested.
fn render_text(text: &str, node_name: &str, assignments: &Assignments) -> Rendered {
    render_options(text, node_name, assignments, RenderOptions::default())
}

fn render_options(
    text: &str,
    node_name: &str,
    assignments: &Assignments,
    options: RenderOptions,
) -> Rendered {
    let m = manifest::parse_unvalidated(text).expect("parse");
    let node = node(node_name);
    let eps = endpoints();
    render(&RenderInput {
        node: &node,
        virtual_ips: &m.virtual_ips.iter().collect::<Vec<_>>(),
        load_balancers: &m.load_balancers.iter().collect::<Vec<_>>(),
        endpoints: &eps,
        assignments,
        secrets: &SecretValues::new(),
        material: &Material::new(),
        options,
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
fn the_older_load_balancer_keeps_a_contested_port() {
    // "web" sorts after "aaa-new" by name, but it was there first.
    let contested = r#"
---
apiVersion: halo.dev/v1alpha1
kind: LoadBalancer
metadata: {name: aaa-new, namespace: shop, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  virtualIP: public
  listeners:
    - {name: http, port: 80, protocol: HTTP, backends: [{address: 10.0.0.1, port: 1}]}
"#;
    let site = SITE.replacen(
        "metadata: {name: web, namespace: shop}",
        "metadata: {name: web, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}",
        1,
    );
    assert_ne!(site, SITE, "the site's LoadBalancer metadata changed");
    let got = problems(&format!("{site}{contested}"));
    assert!(got.iter().any(|p| p == "LoadBalancer shop/aaa-new: spec.listeners[0].port: 192.0.2.10:80 is already used by listener shop/web/http"), "{got:?}");
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

#[test]
fn a_nodes_own_peer_entry_is_its_unicast_source_unless_one_is_given() {
    let unicast = SITE.replace(
        "    preempt: false\n",
        "    preempt: false\n    mode: Unicast\n",
    );
    let unicast = unicast.replace(
        "    - {node: lb2, priority: 100}\n",
        "    - {node: lb2, priority: 100}\n  peers:\n    - {node: lb1, address: 192.0.2.21}\n    - {node: lb2, address: 192.0.2.22}\n",
    );
    let source = |text: &str, node: &str| {
        let r = render_text(text, node, &Assignments::new());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let vrrp = r.config.vips[0].vrrp.clone().expect("vrrp");
        (vrrp.unicast_source, vrrp.unicast_peers)
    };
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert_eq!(
        source(&unicast, "lb1"),
        (Some(ip("192.0.2.21")), vec![ip("192.0.2.22")])
    );
    assert_eq!(
        source(&unicast, "lb2"),
        (Some(ip("192.0.2.22")), vec![ip("192.0.2.21")])
    );
    let given = unicast.replace(
        "mode: Unicast\n",
        "mode: Unicast\n    unicastSource: 192.0.2.99\n",
    );
    assert_eq!(source(&given, "lb1").0, Some(ip("192.0.2.99")));
}

/// SITE with `spec.vrrp.track` set to `track` (flow-style YAML).
fn with_track(track: &str) -> String {
    let text = SITE.replace(
        "    preemptDelay: 5s\n",
        &format!("    preemptDelay: 5s\n    track: {track}\n"),
    );
    assert_ne!(text, SITE);
    text
}

const ALLOW_EXEC: RenderOptions = RenderOptions {
    allow_track_exec: true,
};

#[test]
fn track_interfaces_and_checks_render_typed_with_defaults() {
    let text = with_track(
        "{interfaces: [{name: eth1, weight: 20}, {name: bond0, fault: true}], checks: [\
         {name: app, http: {url: 'http://localhost:8080/healthz?full=1', expectStatus: 204}, weight: 30}, \
         {name: db, tcp: {address: '[::1]:3306'}, interval: 500ms, timeout: 500ms, rise: 3, fall: 2, fault: true}, \
         {name: file, exec: {command: /usr/bin/test, args: [-e, /run/ok]}, weight: 5}, \
         {name: plain, http: {url: 'http://10.0.0.5'}, weight: 1}]}",
    );
    let r = render_options(&text, "lb1", &Assignments::new(), ALLOW_EXEC);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let track = r.config.vips[0].vrrp.clone().expect("vrrp").track;
    assert_eq!(
        track.interface_down,
        Some(TrackEffect::Fault),
        "default kept"
    );
    assert_eq!(
        track.interfaces,
        [
            TrackedInterface {
                name: "eth1".into(),
                effect: TrackEffect::Weight(20)
            },
            TrackedInterface {
                name: "bond0".into(),
                effect: TrackEffect::Fault
            }
        ]
    );
    let c = &track.checks;
    assert_eq!(
        c.iter()
            .map(|c| (
                c.name.as_str(),
                c.interval_ms,
                c.timeout_ms,
                c.rise,
                c.fall,
                c.effect
            ))
            .collect::<Vec<_>>(),
        [
            ("app", 2_000, 1_000, 1, 1, TrackEffect::Weight(30)),
            ("db", 500, 500, 3, 2, TrackEffect::Fault),
            ("file", 2_000, 1_000, 1, 1, TrackEffect::Weight(5)),
            ("plain", 2_000, 1_000, 1, 1, TrackEffect::Weight(1)),
        ]
    );
    assert_eq!(
        c[0].kind,
        CheckKind::Http {
            address: "127.0.0.1:8080".parse().expect("addr"),
            host: "localhost:8080".into(),
            path: "/healthz?full=1".into(),
            expect_status: Some(204),
        }
    );
    assert_eq!(
        c[1].kind,
        CheckKind::Tcp {
            address: "[::1]:3306".parse().expect("addr")
        }
    );
    assert_eq!(
        c[2].kind,
        CheckKind::Exec {
            command: "/usr/bin/test".into(),
            args: vec!["-e".into(), "/run/ok".into()],
        }
    );
    assert_eq!(
        c[3].kind,
        CheckKind::Http {
            address: "10.0.0.5:80".parse().expect("addr"),
            host: "10.0.0.5".into(),
            path: "/".into(),
            expect_status: None,
        }
    );
}

#[test]
fn track_problems_name_the_field() {
    let cases = [
        (
            "{checks: [{name: a, tcp: {address: '127.0.0.1:1'}, weight: 1}, {name: b, tcp: {address: '127.0.0.1:1'}, interval: 1s, timeout: 2s, weight: 1}]}",
            "spec.vrrp.track.checks[1].timeout: 2000ms is longer than the interval (1000ms)",
        ),
        (
            "{checks: [{name: a, tcp: {address: '127.0.0.1:1'}, interval: 500ms, weight: 1}]}",
            "spec.vrrp.track.checks[0].timeout: 1000ms is longer than the interval (500ms)",
        ),
        (
            "{checks: [{name: a, http: {url: 'http://example.com/'}, weight: 1}]}",
            "spec.vrrp.track.checks[0].http.url: \"http://example.com/\": the host must be an IP address or localhost",
        ),
        (
            "{checks: [{name: a, http: {url: 'https://127.0.0.1/'}, weight: 1}]}",
            "spec.vrrp.track.checks[0].http.url: \"https://127.0.0.1/\": must start with http://",
        ),
        (
            "{checks: [{name: a, http: {url: 'http://127.0.0.1:99999/'}, weight: 1}]}",
            "spec.vrrp.track.checks[0].http.url: \"http://127.0.0.1:99999/\": port \"99999\" is not 1-65535",
        ),
        (
            "{checks: [{name: a, http: {url: 'http://[::1/'}, weight: 1}]}",
            "spec.vrrp.track.checks[0].http.url: \"http://[::1/\": unclosed [",
        ),
        (
            "{checks: [{name: a, tcp: {address: 'localhost:80'}, weight: 1}]}",
            "spec.vrrp.track.checks[0].tcp.address: \"localhost:80\" is not ip:port or [ipv6]:port",
        ),
        (
            "{checks: [{name: a, tcp: {address: '127.0.0.1'}, weight: 1}]}",
            "spec.vrrp.track.checks[0].tcp.address:",
        ),
        (
            "{checks: [{name: a, exec: {command: bin/true}, weight: 1}]}",
            "spec.vrrp.track.checks[0].exec.command: must be an absolute path",
        ),
        (
            "{checks: [{name: a, weight: 1}]}",
            "spec.vrrp.track.checks[0]: set exactly one of http, tcp or exec",
        ),
        (
            "{checks: [{name: a, tcp: {address: '127.0.0.1:1'}, http: {url: 'http://127.0.0.1/'}, weight: 1}]}",
            "spec.vrrp.track.checks[0]: set exactly one of http, tcp or exec",
        ),
        (
            "{checks: [{name: a, tcp: {address: '127.0.0.1:1'}, weight: 1, fault: true}]}",
            "spec.vrrp.track.checks[0]: set either weight (1-254) or fault: true",
        ),
        (
            "{checks: [{name: a, tcp: {address: '127.0.0.1:1'}, rise: 0, weight: 1}]}",
            "spec.vrrp.track.checks[0].rise: must be 1-100",
        ),
        (
            "{checks: [{name: a, tcp: {address: '127.0.0.1:1'}, interval: soon, weight: 1}]}",
            "spec.vrrp.track.checks[0].interval: invalid duration",
        ),
        (
            "{checks: [{name: a, tcp: {address: '127.0.0.1:1'}, weight: 1}, {name: a, tcp: {address: '127.0.0.1:2'}, weight: 1}]}",
            "spec.vrrp.track.checks[1].name: \"a\" is used by another check",
        ),
        (
            "{interfaces: [{name: eth1, weight: 10}, {name: eth1, fault: true}]}",
            "spec.vrrp.track.interfaces[1].name: \"eth1\" is listed twice",
        ),
        (
            "{interfaces: [{name: a-very-long-interface-name, weight: 10}]}",
            "spec.vrrp.track.interfaces[0].name: an interface name has 1-15 characters",
        ),
        (
            "{interfaces: [{name: eth1}]}",
            "spec.vrrp.track.interfaces[0]: set either weight (1-254) or fault: true",
        ),
    ];
    for (track, expected) in cases {
        let r = render_options(&with_track(track), "lb1", &Assignments::new(), ALLOW_EXEC);
        let got: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        let expected = format!("VirtualIP public: {expected}");
        assert!(
            got.iter().any(|p| p.starts_with(&expected)),
            "{track}: expected {expected:?} in {got:?}"
        );
        assert!(
            r.config.vips.is_empty(),
            "{track}: the VirtualIP is left out"
        );
    }
}

#[test]
fn exec_checks_need_the_option() {
    let text = with_track("{checks: [{name: file, exec: {command: /usr/bin/true}, weight: 5}]}");
    let refused = problems(&text);
    assert_eq!(
        refused[0],
        "VirtualIP public: spec.vrrp.track.checks[0].exec: exec checks are not allowed here (the controller runs them only with --allow-track-exec)"
    );
    assert_eq!(refused.len(), 2, "and its LoadBalancer: {refused:?}");
    let allowed = render_options(&text, "lb1", &Assignments::new(), ALLOW_EXEC);
    assert!(allowed.problems.is_empty(), "{:?}", allowed.problems);
    assert_eq!(
        allowed.config.vips[0]
            .vrrp
            .as_ref()
            .map(|v| v.track.checks.len()),
        Some(1)
    );
}

const PAIR: &str = r#"
apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: a-web}
spec:
  addresses: [192.0.2.10/24]
  preferredNode: lb2
  vrrp: {virtualRouterId: 10, syncGroup: pair}
---
apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: b-db}
spec:
  addresses: [192.0.2.11/24]
  preferredNode: lb3
  vrrp: {virtualRouterId: 11, syncGroup: pair}
---
apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: c-alone}
spec:
  addresses: [192.0.2.12/24]
  preferredNode: lb3
  vrrp: {virtualRouterId: 12}
"#;

#[test]
fn the_preferred_node_is_settled_per_sync_group_and_draining_follows_the_node() {
    // (node, draining) → preferred flags of a-web, b-db, c-alone
    for (node_name, draining, want) in [
        ("lb1", false, [false, false, false]),
        // The group follows its first member by name (a-web → lb2), b-db's own
        // choice does not split it.
        ("lb2", false, [true, true, false]),
        ("lb3", true, [false, false, true]),
    ] {
        let m = manifest::parse_unvalidated(PAIR).expect("parse");
        let node = NodeInfo {
            name: node_name.into(),
            draining,
            ..NodeInfo::default()
        };
        let r = render(&RenderInput {
            node: &node,
            virtual_ips: &m.virtual_ips.iter().collect::<Vec<_>>(),
            load_balancers: &m.load_balancers.iter().collect::<Vec<_>>(),
            endpoints: &endpoints(),
            assignments: &Assignments::new(),
            secrets: &SecretValues::new(),
            material: &Material::new(),
            options: RenderOptions::default(),
        });
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let vrrp: Vec<_> = r
            .config
            .vips
            .iter()
            .filter_map(|v| v.vrrp.clone())
            .collect();
        let got: Vec<bool> = vrrp.iter().map(|v| v.preferred).collect();
        assert_eq!(got, want, "{node_name}");
        assert!(vrrp.iter().all(|v| v.draining == draining), "{node_name}");
    }
}

/// The hash data planes check: FNV-1a 64 of the config's JSON with version 0, an empty
/// hash and no listeners, then of each listener's own FNV-1a 64 (of its JSON), 8 bytes
/// little-endian; the same whichever way it is computed.
#[test]
fn the_content_hash_is_fnv_of_the_blanked_json_then_of_each_listener() {
    let fnv = |bytes: &[u8]| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    };
    let rendered = render_text(SITE, "lb1", &Assignments::new()).config;
    let config = rendered.clone().sealed(42);
    let mut blank = config.clone();
    blank.version = 0;
    blank.hash.clear();
    blank.listeners.clear();
    let mut bytes = serde_json::to_vec(&blank).expect("json");
    for l in &config.listeners {
        let own = fnv(&serde_json::to_vec(l).expect("json"));
        assert_eq!(l.content_hash(), own);
        bytes.extend_from_slice(&own.to_le_bytes());
    }
    assert_eq!(config.hash, format!("{:016x}", fnv(&bytes)));
    assert_eq!(config.content_hash(), config.hash);
    assert!(config.listeners.len() > 1);
    // From hashes already known, as the render seals it.
    let known: Vec<u64> = config.listeners.iter().map(|l| l.content_hash()).collect();
    assert_eq!(rendered.clone().sealed_with(42, &known).hash, config.hash);
    // A listener's change changes the node's hash.
    let mut changed = rendered;
    std::sync::Arc::make_mut(&mut changed.listeners[0]).port += 1;
    assert_ne!(changed.sealed(42).hash, config.hash);
}

/// Nodes that share a memo get exactly what each would render alone, also a node where
/// the VirtualIP is not (its LoadBalancer is not served there).
#[test]
fn a_shared_memo_changes_no_node_config() {
    let text = SITE.replace(
        "spec:\n  addresses",
        "spec:\n  nodeSelector: {zone: a}\n  addresses",
    );
    assert_ne!(text, SITE);
    let m = manifest::parse_unvalidated(&text).expect("parse");
    let eps = endpoints();
    let mut memo = halo_crds::render::RenderMemo::default();
    for (name, zone) in [("lb1", "a"), ("lb2", "b"), ("lb3", "a")] {
        let node = zoned(name, zone);
        let input = RenderInput {
            node: &node,
            virtual_ips: &m.virtual_ips.iter().collect::<Vec<_>>(),
            load_balancers: &m.load_balancers.iter().collect::<Vec<_>>(),
            endpoints: &eps,
            assignments: &Assignments::new(),
            secrets: &SecretValues::new(),
            material: &Material::new(),
            options: RenderOptions::default(),
        };
        let alone = render(&input);
        let shared = halo_crds::render::render_with(&input, &mut memo);
        assert_eq!(shared, alone, "{name}");
        assert_eq!(alone.config.listeners.is_empty(), zone == "b", "{name}");
    }
}

/// A memo kept from pass to pass (as the controller keeps it) gives at every step what a
/// fresh render gives, whichever input the step changed: endpoints, a spec, the
/// VirtualIP's existence and addresses, TLS material, the node set.
#[test]
fn a_memo_kept_across_passes_renders_what_a_fresh_render_does() {
    use halo_crds::render::{MaterialRef, RenderMemo, render_with};
    const GONE: &str = "the VirtualIP is gone";
    let https = "---\napiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {name: secure, namespace: shop}\nspec:\n  virtualIP: public\n  listeners:\n    - name: https\n      port: 443\n      protocol: HTTPS\n      tls: {certificates: [{secretName: site-tls}]}\n      backends:\n        - {service: {name: mariadb, port: 3306}}\n";
    let base = format!("{SITE}{https}");
    let ready = |mut eps: ServiceEndpoints| {
        for list in eps.values_mut() {
            let mut all: Vec<Endpoint> = list.to_vec();
            for e in &mut all {
                e.ready = true;
            }
            *list = all.into();
        }
        eps
    };
    let secret = MaterialRef::Secret {
        namespace: "shop".into(),
        name: "site-tls".into(),
    };
    let unusable = |why: &str| Material::from([(secret.clone(), Err(why.to_string()))]);
    let steps: Vec<(&str, String, ServiceEndpoints, Material)> = vec![
        ("first", base.clone(), endpoints(), Material::new()),
        ("unchanged", base.clone(), endpoints(), Material::new()),
        (
            "an endpoint turns ready",
            base.clone(),
            ready(endpoints()),
            Material::new(),
        ),
        (
            "the Service has no endpoints",
            base.clone(),
            ServiceEndpoints::new(),
            Material::new(),
        ),
        ("they are back", base.clone(), endpoints(), Material::new()),
        (
            "the Secret is unusable",
            base.clone(),
            endpoints(),
            unusable("no tls.key"),
        ),
        (
            "for another reason",
            base.clone(),
            endpoints(),
            unusable("expired"),
        ),
        (
            "a port changes",
            base.replace(
                "port: 3306\n      protocol: TCP",
                "port: 3307\n      protocol: TCP",
            ),
            endpoints(),
            Material::new(),
        ),
        (GONE, base.clone(), endpoints(), Material::new()),
        ("it is back", base.clone(), endpoints(), Material::new()),
        (
            "its address changes",
            base.replace("192.0.2.10/24", "192.0.2.20/24"),
            endpoints(),
            Material::new(),
        ),
        (
            "it leaves lb2",
            base.replace(
                "spec:\n  addresses",
                "spec:\n  nodeSelector: {zone: a}\n  addresses",
            ),
            endpoints(),
            Material::new(),
        ),
    ];
    let mut memo = RenderMemo::default();
    for (step, text, eps, material) in &steps {
        let mut m = manifest::parse_unvalidated(text).expect("parse");
        if *step == GONE {
            m.virtual_ips.clear();
        }
        for (name, zone) in [("lb1", "a"), ("lb2", "b")] {
            let node = zoned(name, zone);
            let input = RenderInput {
                node: &node,
                virtual_ips: &m.virtual_ips.iter().collect::<Vec<_>>(),
                load_balancers: &m.load_balancers.iter().collect::<Vec<_>>(),
                endpoints: eps,
                assignments: &Assignments::new(),
                secrets: &SecretValues::new(),
                material,
                options: RenderOptions::default(),
            };
            let kept = render_with(&input, &mut memo);
            let fresh = render(&input);
            assert_eq!(kept, fresh, "{step}, {name}");
            // `web` is served where the VirtualIP is, whatever `secure` reports.
            let web = fresh
                .config
                .listeners
                .iter()
                .any(|l| l.name.contains("web"));
            assert_eq!(
                web,
                *step != GONE && (name == "lb1" || !text.contains("zone: a")),
                "{step}, {name}: {:?}",
                fresh.problems
            );
        }
        memo.end_pass();
    }
    let (reused, made) = memo.counts();
    assert!(reused > 0, "nothing was reused");
    assert!(made > 1, "nothing was rendered again");
}
