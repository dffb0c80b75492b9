//! The translation against the spec's cases: objects in, LoadBalancer and facts out.

use halo_crds::load_balancer::Protocol;
use halo_crds::net::IpPrefix;
use serde_json::json;

use super::api::{Gateway, GatewayClass, HTTPRoute, ReferenceGrant, TLSRoute};
use super::*;

fn class() -> GatewayClass {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "halo", "generation": 1},
        "spec": {"controllerName": CONTROLLER_NAME}
    }))
    .unwrap()
}

fn gateway(listeners: serde_json::Value) -> Gateway {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "web", "namespace": "infra", "generation": 2},
        "spec": {"gatewayClassName": "halo", "listeners": listeners}
    }))
    .unwrap()
}

fn http(name: &str, port: u16, hostname: Option<&str>, from: &str) -> serde_json::Value {
    let mut l = json!({"name": name, "port": port, "protocol": "HTTP",
        "allowedRoutes": {"namespaces": {"from": from}}});
    if let Some(h) = hostname {
        l["hostname"] = json!(h);
    }
    l
}

fn route(ns: &str, name: &str, spec: serde_json::Value) -> HTTPRoute {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns, "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec
    }))
    .unwrap()
}

fn service(ns: &str, name: &str, port: i32) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"port": port}]}
    }))
    .unwrap()
}

struct Case {
    gateway: Gateway,
    routes: Vec<HTTPRoute>,
    services: Vec<Service>,
    grants: Vec<ReferenceGrant>,
    tls_routes: Vec<TLSRoute>,
}

impl Case {
    fn run(&self) -> Translation {
        let classes = [class()];
        let class_refs: Vec<&GatewayClass> = classes.iter().collect();
        let gateways = [&self.gateway];
        let routes: Vec<&HTTPRoute> = self.routes.iter().collect();
        let services: Vec<&Service> = self.services.iter().collect();
        let grants: Vec<&ReferenceGrant> = self.grants.iter().collect();
        let tls_routes: Vec<&TLSRoute> = self.tls_routes.iter().collect();
        let mut allocations = Allocations::new();
        allocations.insert(
            claim_id(&self.gateway),
            Ok("192.0.2.10/24".parse::<IpPrefix>().unwrap()),
        );
        translate(&Input {
            classes: &class_refs,
            gateways: &gateways,
            routes: &routes,
            tls_routes: &tls_routes,
            grants: &grants,
            services: &services,
            namespaces: &[],
            allocations: &allocations,
        })
    }
}

fn parent_facts(t: &Translation, ns: &str, name: &str) -> Vec<(&'static str, bool, &'static str)> {
    t.reports.routes[&(RouteKind::Http, ns.to_string(), name.to_string())].1[0]
        .conditions
        .iter()
        .map(|f| (f.type_, f.status, f.reason))
        .collect()
}

fn web_route(ns: &str, hostnames: &[&str], backend_ns: Option<&str>) -> HTTPRoute {
    let mut backend = json!({"name": "app", "port": 8080, "weight": 3});
    if let Some(b) = backend_ns {
        backend["namespace"] = json!(b);
    }
    route(
        ns,
        "site",
        json!({
            "parentRefs": [{"name": "web", "namespace": "infra"}],
            "hostnames": hostnames,
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                 "backendRefs": [backend, {"name": "api2", "port": 8080, "weight": 1}]},
                {"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}
            ]
        }),
    )
}

#[test]
fn a_gateway_and_route_become_one_load_balancer_with_weighted_groups() {
    let case = Case {
        gateway: gateway(json!([http("http", 80, Some("*.example.com"), "Same")])),
        routes: vec![web_route("infra", &["shop.example.com", "other.org"], None)],
        services: vec![
            service("infra", "app", 8080),
            service("infra", "api2", 8080),
        ],
        grants: vec![],
        tls_routes: vec![],
    };
    let t = case.run();
    assert_eq!(t.virtual_ips.len(), 1);
    assert_eq!(t.virtual_ips[0].spec.addresses, vec!["192.0.2.10/24"]);
    let lb = &t.load_balancers[0];
    assert_eq!(lb.spec.virtual_ip.as_deref(), Some("gateway-infra-web"));
    let l = &lb.spec.listeners[0];
    assert_eq!((l.port, l.protocol), (80, Protocol::Http));
    assert_eq!(l.routes.len(), 2);
    assert_eq!(l.routes[0].hostnames, vec!["shop.example.com"]);
    let weights: Vec<Option<u32>> = l.routes[0].backend_refs.iter().map(|b| b.weight).collect();
    assert_eq!(weights, vec![Some(3), Some(1)]);
    assert!(l.routes[1].backend_refs.is_empty() && l.routes[1].fixed_response.is_none());
    assert_eq!(lb.spec.backend_groups.len(), 2);
    assert_eq!(
        parent_facts(&t, "infra", "site"),
        vec![
            ("Accepted", true, "Accepted"),
            ("ResolvedRefs", true, "ResolvedRefs")
        ]
    );
    let g = &t.reports.gateways[&("infra".to_string(), "web".to_string())];
    assert_eq!(g.listeners[0].attached, 1);
    assert!(g.accepted.status);
}

#[test]
fn route_parent_reasons_follow_the_spec() {
    let services = vec![
        service("infra", "app", 8080),
        service("infra", "api2", 8080),
        service("team", "app", 8080),
    ];
    type Want = Vec<(&'static str, bool, &'static str)>;
    let cases: Vec<(&str, Gateway, HTTPRoute, Vec<ReferenceGrant>, Want)> =
        vec![
            (
                "hostname",
                gateway(json!([http("http", 80, Some("*.example.com"), "Same")])),
                web_route("infra", &["other.org"], None),
                vec![],
                vec![
                    ("Accepted", false, "NoMatchingListenerHostname"),
                    ("ResolvedRefs", true, "ResolvedRefs"),
                ],
            ),
            (
                "namespace",
                gateway(json!([http("http", 80, None, "Same")])),
                web_route("team", &[], Some("team")),
                vec![],
                vec![
                    ("Accepted", false, "NotAllowedByListeners"),
                    ("ResolvedRefs", false, "BackendNotFound"),
                ],
            ),
            (
                "cross-namespace backend without a grant",
                gateway(json!([http("http", 80, None, "All")])),
                web_route("infra", &[], Some("team")),
                vec![],
                vec![
                    ("Accepted", true, "Accepted"),
                    ("ResolvedRefs", false, "RefNotPermitted"),
                ],
            ),
            (
                "cross-namespace backend with a grant",
                gateway(json!([http("http", 80, None, "All")])),
                web_route("infra", &[], Some("team")),
                vec![serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                "metadata": {"name": "g", "namespace": "team"},
                "spec": {"from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "infra"}],
                         "to": [{"group": "", "kind": "Service"}]}
            })).unwrap()],
                vec![
                    ("Accepted", true, "Accepted"),
                    ("ResolvedRefs", true, "ResolvedRefs"),
                ],
            ),
        ];
    for (what, gw, r, grants, want) in cases {
        let t = Case {
            gateway: gw,
            routes: vec![r.clone()],
            services: services.clone(),
            grants,
            tls_routes: vec![],
        }
        .run();
        let ns = r.namespace().unwrap();
        assert_eq!(parent_facts(&t, &ns, "site"), want, "{what}");
    }
}

#[test]
fn a_backend_in_another_namespace_is_named_with_it() {
    let grant: ReferenceGrant = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "g", "namespace": "team"},
        "spec": {"from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "infra"}],
                 "to": [{"group": "", "kind": "Service", "name": "app"}]}
    }))
    .unwrap();
    let t = Case {
        gateway: gateway(json!([http("http", 80, None, "Same")])),
        routes: vec![web_route("infra", &[], Some("team"))],
        services: vec![service("team", "app", 8080), service("infra", "api2", 8080)],
        grants: vec![grant],
        tls_routes: vec![],
    }
    .run();
    let namespaces: Vec<Option<String>> = t.load_balancers[0]
        .spec
        .backend_groups
        .iter()
        .map(|g| {
            g.upstream.backends[0]
                .service
                .as_ref()
                .unwrap()
                .namespace
                .clone()
        })
        .collect();
    assert!(namespaces.contains(&Some("team".into())) && namespaces.contains(&None));
}

#[test]
fn invalid_backends_answer_500_and_unsupported_filters_refuse_the_route() {
    let missing = route(
        "infra",
        "site",
        json!({
            "parentRefs": [{"name": "web"}],
            "rules": [{"backendRefs": [{"name": "nowhere", "port": 80}]}, {}]
        }),
    );
    let mirror = route(
        "infra",
        "mirror",
        json!({
            "parentRefs": [{"name": "web"}],
            "rules": [{"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "app", "port": 80}}}]}]
        }),
    );
    let t = Case {
        gateway: gateway(json!([http("http", 80, None, "Same")])),
        routes: vec![missing, mirror],
        services: vec![],
        grants: vec![],
        tls_routes: vec![],
    }
    .run();
    let routes = &t.load_balancers[0].spec.listeners[0].routes;
    let codes: Vec<Option<u16>> = routes
        .iter()
        .map(|r| r.fixed_response.as_ref().map(|f| f.status_code))
        .collect();
    assert_eq!(codes, vec![Some(500), Some(503)]);
    assert_eq!(
        parent_facts(&t, "infra", "mirror")[0],
        ("Accepted", false, "UnsupportedValue")
    );
}

#[test]
fn listener_conflicts_and_unsupported_protocols_are_reported() {
    let t = Case {
        gateway: gateway(json!([
            http("a", 80, Some("a.example.com"), "Same"),
            http("b", 80, Some("a.example.com"), "Same"),
            {"name": "tls", "port": 443, "protocol": "TLS"},
            {"name": "raw", "port": 443, "protocol": "TCP"},
            http("c", 8080, None, "Same"),
        ])),
        routes: vec![],
        services: vec![],
        grants: vec![],
        tls_routes: vec![],
    }
    .run();
    let g = &t.reports.gateways[&("infra".to_string(), "web".to_string())];
    let reason = |i: usize, type_: &str| {
        let f = g.listeners[i]
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap();
        (f.status, f.reason)
    };
    assert_eq!(reason(0, "Conflicted"), (true, "HostnameConflict"));
    assert_eq!(reason(2, "Accepted"), (false, "UnsupportedProtocol"));
    assert_eq!(reason(2, "Conflicted"), (true, "ProtocolConflict"));
    assert_eq!(reason(4, "Programmed"), (true, "Programmed"));
    assert_eq!(
        (g.accepted.status, g.accepted.reason),
        (true, "ListenersNotValid")
    );
    let ports: Vec<u16> = t.load_balancers[0]
        .spec
        .listeners
        .iter()
        .map(|l| l.port)
        .collect();
    assert_eq!(ports, vec![8080]);
}

#[test]
fn supported_features_are_sorted_as_the_status_requires() {
    let mut sorted = SUPPORTED_FEATURES.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, SUPPORTED_FEATURES);
}

#[test]
fn tls_passthrough_listeners_take_tls_routes_by_sni() {
    let tls: TLSRoute = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "TLSRoute",
        "metadata": {"name": "pass", "namespace": "infra"},
        "spec": {"parentRefs": [{"name": "web"}], "hostnames": ["db.example.com"],
                 "rules": [{"backendRefs": [{"name": "app", "port": 8080}]}]}
    }))
    .unwrap();
    let t = Case {
        gateway: gateway(json!([
            {"name": "pass", "port": 443, "protocol": "TLS", "tls": {"mode": "Passthrough"}},
            {"name": "end", "port": 8443, "protocol": "TLS", "tls": {"mode": "Terminate"}},
        ])),
        routes: vec![web_route("infra", &[], None)],
        services: vec![
            service("infra", "app", 8080),
            service("infra", "api2", 8080),
        ],
        grants: vec![],
        tls_routes: vec![tls],
    }
    .run();
    let l = &t.load_balancers[0].spec.listeners[0];
    assert_eq!((l.port, l.protocol), (443, Protocol::Tls));
    assert_eq!(l.routes.len(), 1);
    assert_eq!(l.routes[0].hostnames, vec!["db.example.com"]);
    let tls_parent =
        &t.reports.routes[&(RouteKind::Tls, "infra".to_string(), "pass".to_string())].1[0];
    assert!(tls_parent.conditions[0].status, "{tls_parent:?}");
    assert_eq!(
        parent_facts(&t, "infra", "site")[0],
        ("Accepted", false, "NotAllowedByListeners")
    );
    let g = &t.reports.gateways[&("infra".to_string(), "web".to_string())];
    assert_eq!(g.listeners[0].kinds[0].kind, "TLSRoute");
    let end = &g.listeners[1].conditions[0];
    assert_eq!((end.status, end.reason), (false, "UnsupportedProtocol"));
}
