//! Render of the L7 API: routes, backend groups, upstream and listener settings map onto
//! the NodeConfig wire model, and every refusal names its field.

use std::collections::BTreeMap;

use halo_crds::manifest;
use halo_crds::node_config::{ListenerConfig, TlsVersion};
use halo_crds::render::{
    Assignments, Material, MaterialRef, NodeInfo, RenderInput, Rendered, SecretValues,
    ServiceEndpoints, material_refs, render,
};
use serde_json::{Value, json};

const GROUPS: &str = r#"
    - {name: api, backends: [{address: 10.0.0.21, port: 8080}]}
    - {name: canary, backends: [{address: 10.0.0.22, port: 8080}]}
"#;

/// One LoadBalancer in namespace `shop` with backend groups `api` and `canary` and one
/// listener written as a YAML flow mapping's inner text.
fn doc(groups: &str, listener: &str) -> String {
    format!(
        r#"
apiVersion: halo.dev/v1alpha1
kind: LoadBalancer
metadata: {{name: web, namespace: shop}}
spec:
  addresses: ["127.0.0.1"]
  backendGroups:{groups}
  listeners:
    - {{{listener}}}
"#
    )
}

/// An HTTP listener on port 80 with one backend of its own and these extra fields.
fn http(extra: &str) -> String {
    doc(
        GROUPS,
        &format!(
            "name: http, port: 80, protocol: HTTP, backends: [{{address: 10.0.0.11, port: 8080}}], {extra}"
        ),
    )
}

fn render_with(text: &str, material: &Material) -> Rendered {
    // Objects that skipped the schema checks: render's own checks are what is tested.
    let m = manifest::parse_unvalidated(text).expect("parse");
    let node = NodeInfo {
        name: "lb1".into(),
        ..NodeInfo::default()
    };
    render(&RenderInput {
        node: &node,
        virtual_ips: &m.virtual_ips.iter().collect::<Vec<_>>(),
        load_balancers: &m.load_balancers.iter().collect::<Vec<_>>(),
        endpoints: &ServiceEndpoints::new(),
        assignments: &Assignments::new(),
        secrets: &SecretValues::new(),
        material,
        options: Default::default(),
    })
}

/// The only listener of a document that must render without problems.
fn listener(text: &str) -> ListenerConfig {
    let r = render_with(text, &Material::new());
    assert!(r.problems.is_empty(), "{text}\n{:?}", r.problems);
    ListenerConfig::clone(r.config.listeners.first().expect("one listener"))
}

fn problems(text: &str) -> Vec<String> {
    render_with(text, &Material::new())
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serialize")
}

const FORWARD_DEFAULT: &str = r#"{"type": "forward", "groups": [{"group": 0, "weight": 1}]}"#;

fn forward_default() -> Value {
    serde_json::from_str(FORWARD_DEFAULT).expect("json")
}

#[test]
fn table_of_route_mappings() {
    let cases: Vec<(&str, Value)> = vec![
        (
            "{name: r, hostnames: [Shop.Example.COM, '*.example.org']}",
            json!({"name": "r", "hostnames": ["shop.example.com", "*.example.org"], "action": forward_default()}),
        ),
        (
            "{name: r, matches: [{path: {value: /api}}]}",
            json!({"name": "r", "matches": [{"path": {"type": "prefix", "value": "/api"}}], "action": forward_default()}),
        ),
        (
            "{name: r, matches: [{path: {type: Exact, value: /login}}, {path: {type: RegularExpression, value: '/v[0-9]+/.*'}}]}",
            json!({"name": "r", "matches": [
                {"path": {"type": "exact", "value": "/login"}},
                {"path": {"type": "regex", "value": "/v[0-9]+/.*"}}
            ], "action": forward_default()}),
        ),
        (
            "{name: r, matches: [{method: POST, headers: [{name: X-Env, value: prod}, {type: RegularExpression, name: User-Agent, value: '.*curl.*'}], queryParams: [{name: Debug, value: '1'}]}]}",
            json!({"name": "r", "matches": [{
                "method": "POST",
                "headers": [
                    {"name": "x-env", "value": {"type": "exact", "value": "prod"}},
                    {"name": "user-agent", "value": {"type": "regex", "value": ".*curl.*"}}
                ],
                "query": [{"name": "Debug", "value": {"type": "exact", "value": "1"}}]
            }], "action": forward_default()}),
        ),
        (
            "{name: r, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Tier, value: web}], add: [{name: Via, value: halo}], remove: [X-Debug]}}, {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [Server]}}]}",
            json!({"name": "r", "filters": [
                {"type": "requestHeaders", "set": [{"name": "X-Tier", "value": "web"}], "add": [{"name": "Via", "value": "halo"}], "remove": ["x-debug"]},
                {"type": "responseHeaders", "remove": ["server"]}
            ], "action": forward_default()}),
        ),
        (
            "{name: r, matches: [{path: {value: /old}}], filters: [{type: URLRewrite, urlRewrite: {hostname: New.Example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]}",
            json!({"name": "r", "matches": [{"path": {"type": "prefix", "value": "/old"}}], "filters": [
                {"type": "urlRewrite", "hostname": "new.example.com", "path": {"type": "replacePrefix", "value": "/new"}}
            ], "action": forward_default()}),
        ),
        (
            "{name: r, filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /index.html}}}]}",
            json!({"name": "r", "filters": [
                {"type": "urlRewrite", "path": {"type": "replaceFull", "value": "/index.html"}}
            ], "action": forward_default()}),
        ),
        (
            "{name: r, filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]}",
            json!({"name": "r", "action": {"type": "redirect", "scheme": "https", "status": 302}}),
        ),
        (
            "{name: r, filters: [{type: RequestRedirect, requestRedirect: {hostname: WWW.example.com, port: 8443, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /}}}]}",
            json!({"name": "r", "action": {"type": "redirect", "hostname": "www.example.com", "port": 8443, "path": {"type": "replaceFull", "value": "/"}, "status": 301}}),
        ),
        (
            "{name: r, fixedResponse: {statusCode: 503, body: down, contentType: text/html}}",
            json!({"name": "r", "action": {"type": "fixed", "status": 503, "body": "down", "contentType": "text/html"}}),
        ),
        (
            "{name: r, backendRefs: [{name: canary, weight: 1}, {name: api, weight: 9}]}",
            json!({"name": "r", "action": {"type": "forward", "groups": [{"group": 1, "weight": 1}, {"group": 2, "weight": 9}]}}),
        ),
        (
            "{name: r, backendRefs: [{name: api}], timeouts: {request: 30s}}",
            json!({"name": "r", "action": {"type": "forward", "groups": [{"group": 1, "weight": 1}]}, "timeoutMs": 30000}),
        ),
    ];
    for (route, want) in cases {
        let l = listener(&http(&format!("routes: [{route}]")));
        assert_eq!(l.routes.len(), 2, "{route}");
        assert_eq!(to_json(&l.routes[0]), want, "{route}");
        assert_eq!(l.routes[1].name, "default");
        assert_eq!(to_json(&l.routes[1].action), forward_default(), "{route}");
    }
}

#[test]
fn groups_are_the_own_then_the_referenced_in_first_use_order() {
    let l = listener(&http(
        "routes: [{name: a, backendRefs: [{name: canary}]}, {name: b, backendRefs: [{name: api}, {name: canary}]}]",
    ));
    let names: Vec<&str> = l.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["default", "canary", "api"]);
    assert_eq!(l.groups[2].backends[0].address.to_string(), "10.0.0.21");
    assert_eq!(
        to_json(&l.routes[1].action),
        json!({"type": "forward", "groups": [{"group": 2, "weight": 1}, {"group": 1, "weight": 1}]})
    );
    // Spec order is kept; the listener's own backends close the list.
    let routes: Vec<&str> = l.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(routes, ["a", "b", "default"]);

    // No routes: only the own group, and the default route to it.
    let plain = listener(&http("maxConnections: 10"));
    assert_eq!(plain.groups.len(), 1);
    assert_eq!(plain.routes.len(), 1);
    assert_eq!(to_json(&plain.routes[0].action), forward_default());
}

#[test]
fn routes_without_own_backends_end_in_a_404() {
    let l = listener(&doc(
        GROUPS,
        "name: http, port: 80, protocol: HTTP, routes: [{name: api, backendRefs: [{name: api}]}]",
    ));
    assert_eq!(
        to_json(&l.routes[1]),
        json!({"name": "default", "action": {"type": "fixed", "status": 404, "body": "no route\n"}})
    );
    assert!(l.groups[0].backends.is_empty());
}

#[test]
fn tls_passthrough_routes_by_sni_name() {
    let l = listener(&doc(
        GROUPS,
        "name: tls, port: 443, protocol: TLS, backends: [{address: 10.0.0.11, port: 443}], routes: [{name: api, hostnames: [API.example.com], backendRefs: [{name: api}]}]",
    ));
    assert_eq!(
        to_json(&l.routes[0]),
        json!({"name": "api", "hostnames": ["api.example.com"], "action": {"type": "forward", "groups": [{"group": 1, "weight": 1}]}})
    );
}

#[test]
fn forwarded_modes_and_queue_timeout() {
    let l = listener(&http(
        "forwarded: {mode: Replace, trustedProxies: [10.0.0.0/8, 192.0.2.1]}, timeouts: {queue: 2s}",
    ));
    assert_eq!(
        to_json(&l.forwarded),
        json!({"mode": "Replace", "trusted": ["10.0.0.0/8", "192.0.2.1/32"]})
    );
    assert_eq!(l.timeouts.queue_ms, 2_000);
    let off = listener(&http("forwardedHeaders: false"));
    assert_eq!(to_json(&off.forwarded), json!({"mode": "Off"}));
    let default = listener(&http("forwarded: {}"));
    assert_eq!(to_json(&default.forwarded), json!({"mode": "Append"}));
    assert_eq!(
        listener(&http("algorithm: RoundRobin")).timeouts.queue_ms,
        5_000
    );
}

#[test]
fn upstream_settings_map_the_same_for_own_and_named_groups() {
    let upstream = "sessionPersistence: {type: Cookie}, slowStart: 30s, maxQueue: 50, sendProxyProtocol: V2, backendProtocol: HTTP2";
    let groups = format!(
        "\n    - {{name: api, backends: [{{address: 10.0.0.21, port: 8080}}], {upstream}}}\n"
    );
    let text = doc(
        &groups,
        &format!(
            "name: http, port: 80, protocol: HTTP, backends: [{{address: 10.0.0.11, port: 8080}}], {upstream}, routes: [{{name: a, backendRefs: [{{name: api}}]}}]"
        ),
    );
    let l = listener(&text);
    assert_eq!(l.groups.len(), 2);
    for g in &l.groups {
        let mut v = to_json(g);
        let obj = v.as_object_mut().expect("object");
        obj.remove("name");
        obj.remove("backends");
        assert_eq!(
            v,
            json!({
                "algorithm": "RoundRobin",
                "retries": 3,
                "persistence": {"type": "cookie", "name": "HALO_SERVER", "indirect": true, "nocache": true},
                "slowStartMs": 30000,
                "maxQueue": 50,
                "proxyProtocol": "V2",
                "protocol": "Http2"
            }),
            "{}",
            g.name
        );
    }
}

#[test]
fn persistence_and_upstream_defaults() {
    let cookie = listener(&http(
        "sessionPersistence: {type: Cookie, cookie: {name: SERVERID, indirect: false, nocache: false, maxAge: 1h}}",
    ));
    assert_eq!(
        to_json(&cookie.groups[0].persistence),
        json!({"type": "cookie", "name": "SERVERID", "indirect": false, "nocache": false, "maxAgeS": 3600})
    );
    let source = listener(&http("sessionPersistence: {type: SourceIP}"));
    assert_eq!(
        to_json(&source.groups[0].persistence),
        json!({"type": "sourceIp"})
    );
    let plain = listener(&http("algorithm: RoundRobin"));
    let g = &plain.groups[0];
    assert_eq!(
        (
            g.persistence.is_none(),
            g.slow_start_ms,
            g.max_queue,
            g.proxy_protocol.is_none()
        ),
        (true, 0, halo_crds::node_config::DEFAULT_MAX_QUEUE, true)
    );
    assert_eq!(to_json(&g.protocol), json!("Http1"));
}

#[test]
fn listener_settings_proxy_protocol_access_log_h2c() {
    let l = listener(&http(
        "acceptProxyProtocol: [127.0.0.1, 10.0.0.0/8], accessLog: {target: File, path: /var/log/halo/access.log, samplePercent: 10}, http2PriorKnowledge: true",
    ));
    assert_eq!(
        to_json(&l.proxy_protocol_from),
        json!(["127.0.0.1/32", "10.0.0.0/8"])
    );
    assert_eq!(
        to_json(&l.access_log),
        json!({"target": {"type": "file", "path": "/var/log/halo/access.log"}, "samplePercent": 10})
    );
    assert!(l.h2c);
    let stdout = listener(&http("accessLog: {}"));
    assert_eq!(
        to_json(&stdout.access_log),
        json!({"target": {"type": "stdout"}, "samplePercent": 100})
    );
    let stderr = listener(&http("accessLog: {target: Stderr}"));
    assert_eq!(
        to_json(&stderr.access_log),
        json!({"target": {"type": "stderr"}, "samplePercent": 100})
    );
    let plain = listener(&http("algorithm: RoundRobin"));
    assert!(plain.access_log.is_none() && !plain.h2c && plain.proxy_protocol_from.is_empty());
}

/// Every refusal, by the exact problem text (object, field path, message).
#[test]
fn table_of_refusals_with_field_paths() {
    let route = |r: &str| http(&format!("routes: [{r}]"));
    let p = "LoadBalancer shop/web: spec.listeners[0]";
    let cases: Vec<(String, String)> = vec![
        (
            route("{name: r, hostnames: ['*']}"),
            format!("{p}.routes[0].hostnames[0]: \"*\" is not a DNS name or a wildcard like *.example.com"),
        ),
        (
            route("{name: r, hostnames: [ok.example.com, 10.0.0.1]}"),
            format!("{p}.routes[0].hostnames[1]: \"10.0.0.1\" is not a DNS name or a wildcard like *.example.com"),
        ),
        (
            route("{name: r, matches: [{path: {value: api}}]}"),
            format!("{p}.routes[0].matches[0].path.value: \"api\" must start with /"),
        ),
        (
            route("{name: r, matches: [{path: {type: RegularExpression, value: '/a('}}]}"),
            format!("{p}.routes[0].matches[0].path.value: invalid regular expression:"),
        ),
        (
            route("{name: r, matches: [{method: get}]}"),
            format!("{p}.routes[0].matches[0].method: \"get\" is not an upper-case method token"),
        ),
        (
            route("{name: r, matches: [{headers: [{name: 'X Bad', value: a}]}]}"),
            format!("{p}.routes[0].matches[0].headers[0].name: \"X Bad\" is not a valid header name"),
        ),
        (
            route("{name: r, matches: [{queryParams: [{type: RegularExpression, name: q, value: '[a'}]}]}"),
            format!("{p}.routes[0].matches[0].queryParams[0].value: invalid regular expression:"),
        ),
        (
            route("{name: r, filters: [{type: RequestHeaderModifier}]}"),
            format!("{p}.routes[0].filters[0]: type RequestHeaderModifier needs its own field (requestHeaderModifier) and no other"),
        ),
        (
            route("{name: r, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {}, urlRewrite: {}}]}"),
            format!("{p}.routes[0].filters[0]: type RequestHeaderModifier needs its own field (requestHeaderModifier) and no other"),
        ),
        (
            route("{name: r, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {}}, {type: ResponseHeaderModifier, responseHeaderModifier: {}}]}"),
            format!("{p}.routes[0].filters[1].type: ResponseHeaderModifier may appear once per route"),
        ),
        (
            route("{name: r, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: 'a:b', value: x}]}}]}"),
            format!("{p}.routes[0].filters[0].requestHeaderModifier.set[0].name: \"a:b\" is not a valid header name"),
        ),
        (
            route("{name: r, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: X-A, value: \"a\\r\\nInjected: 1\"}]}}]}"),
            format!("{p}.routes[0].filters[0].responseHeaderModifier.add[0].value: must not contain CR, LF or NUL"),
        ),
        (
            route("{name: r, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: ['bad name']}}]}"),
            format!("{p}.routes[0].filters[0].requestHeaderModifier.remove[0]: \"bad name\" is not a valid header name"),
        ),
        (
            route("{name: r, matches: [{path: {type: Exact, value: /a}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}"),
            format!("{p}.routes[0].filters[0].urlRewrite.path.type: ReplacePrefixMatch needs every match of the route to have a PathPrefix path"),
        ),
        (
            route("{name: r, filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}"),
            format!("{p}.routes[0].filters[0].urlRewrite.path.type: ReplacePrefixMatch needs every match of the route to have a PathPrefix path"),
        ),
        (
            route("{name: r, filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replacePrefixMatch: /b}}}]}"),
            format!("{p}.routes[0].filters[0].urlRewrite.path: set replaceFullPath, and only it, for this type"),
        ),
        (
            route("{name: r, filters: [{type: URLRewrite, urlRewrite: {hostname: '*.x.com'}}]}"),
            format!("{p}.routes[0].filters[0].urlRewrite.hostname: \"*.x.com\" is not a DNS name"),
        ),
        (
            route("{name: r, filters: [{type: RequestRedirect, requestRedirect: {statusCode: 300}}]}"),
            format!("{p}.routes[0].filters[0].requestRedirect.statusCode: 300 must be one of 301, 302, 303, 307, 308"),
        ),
        (
            route("{name: r, filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]}"),
            format!("{p}.routes[0].filters[0].requestRedirect.scheme: \"ftp\" must be http or https"),
        ),
        (
            route("{name: r, filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}], backendRefs: [{name: api}]}"),
            format!("{p}.routes[0].filters[0]: RequestRedirect cannot be combined with backendRefs"),
        ),
        (
            route("{name: r, filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}], fixedResponse: {statusCode: 200}}"),
            format!("{p}.routes[0].filters[0]: RequestRedirect cannot be combined with fixedResponse"),
        ),
        (
            route("{name: r, matches: [{path: {value: /a}}], filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}, {type: URLRewrite, urlRewrite: {hostname: a.com}}]}"),
            format!("{p}.routes[0].filters[1]: URLRewrite cannot be combined with RequestRedirect"),
        ),
        (
            route("{name: r, fixedResponse: {statusCode: 200}, backendRefs: [{name: api}]}"),
            format!("{p}.routes[0].fixedResponse: cannot be combined with backendRefs"),
        ),
        (
            route("{name: r, fixedResponse: {statusCode: 99}}"),
            format!("{p}.routes[0].fixedResponse.statusCode: must be 200-599"),
        ),
        (
            route("{name: r, backendRefs: [{name: api}, {name: nope}]}"),
            format!("{p}.routes[0].backendRefs[1].name: no backend group named \"nope\" in spec.backendGroups"),
        ),
        (
            route("{name: r, timeouts: {request: 0s}}"),
            format!("{p}.routes[0].timeouts.request: must be greater than zero"),
        ),
        (
            route("{name: r, timeouts: {request: soon}}"),
            format!("{p}.routes[0].timeouts.request: invalid duration \"soon\""),
        ),
        (
            route("{name: default}"),
            format!("{p}.routes[0].name: the name default is reserved for the route to the listener's own backends"),
        ),
        (
            route("{name: a}, {name: a}"),
            format!("{p}.routes[1].name: duplicate route name \"a\""),
        ),
        (
            doc(GROUPS, "name: db, port: 3306, protocol: TCP, backends: [{address: 10.0.0.1, port: 3306}], routes: [{name: a}]"),
            format!("{p}.routes: a TCP listener has no routes: it forwards to its own backends"),
        ),
        (
            doc(GROUPS, "name: tls, port: 443, protocol: TLS, routes: [{name: a, matches: [{path: {value: /}}], backendRefs: [{name: api}]}]"),
            format!("{p}.routes[0].matches: a TLS passthrough route has only hostnames and backendRefs"),
        ),
        (
            doc(GROUPS, "name: tls, port: 443, protocol: TLS, routes: [{name: a, fixedResponse: {statusCode: 200}}]"),
            format!("{p}.routes[0].fixedResponse: a TLS passthrough route has only hostnames and backendRefs"),
        ),
        (
            http("forwarded: {mode: 'Off'}, forwardedHeaders: false"),
            format!("{p}.forwarded: set forwarded or forwardedHeaders, not both"),
        ),
        (
            doc(GROUPS, "name: db, port: 3306, protocol: TCP, backends: [{address: 10.0.0.1, port: 3306}], forwarded: {mode: Append}"),
            format!("{p}.forwarded: applies to protocols HTTP and HTTPS"),
        ),
        (
            http("forwarded: {trustedProxies: [10.0.0.0/33]}"),
            format!("{p}.forwarded.trustedProxies[0]: invalid address \"10.0.0.0/33\""),
        ),
        (
            http("timeouts: {queue: 0ms}"),
            format!("{p}.timeouts.queue: must be greater than zero"),
        ),
        (
            http("sessionPersistence: {type: Cookie, cookie: {name: 'a b'}}"),
            format!("{p}.sessionPersistence.cookie.name: \"a b\" is not a valid cookie name"),
        ),
        (
            http("sessionPersistence: {type: SourceIP, cookie: {}}"),
            format!("{p}.sessionPersistence.cookie: applies to type Cookie"),
        ),
        (
            http("sessionPersistence: {type: Cookie, cookie: {maxAge: 10ms}}"),
            format!("{p}.sessionPersistence.cookie.maxAge: must be at least 1s"),
        ),
        (
            http("slowStart: 1 minute"),
            format!("{p}.slowStart: invalid duration \"1 minute\""),
        ),
        (
            http("acceptProxyProtocol: [somewhere]"),
            format!("{p}.acceptProxyProtocol[0]: invalid address \"somewhere\""),
        ),
        (
            http("accessLog: {target: File}"),
            format!("{p}.accessLog.path: required for target File"),
        ),
        (
            http("accessLog: {target: Stderr, path: /tmp/x}"),
            format!("{p}.accessLog.path: applies to target File only"),
        ),
        (
            http("accessLog: {samplePercent: 0}"),
            format!("{p}.accessLog.samplePercent: must be 1-100"),
        ),
        (
            doc(GROUPS, "name: db, port: 3306, protocol: TCP, backends: [{address: 10.0.0.1, port: 3306}], http2PriorKnowledge: true"),
            format!("{p}.http2PriorKnowledge: applies to protocol HTTP (HTTPS negotiates HTTP/2 with ALPN)"),
        ),
        (
            doc(GROUPS, "name: db, port: 3306, protocol: TCP, backends: [{address: 10.0.0.1, port: 3306}], sessionPersistence: {type: Cookie}"),
            format!("{p}.sessionPersistence: cookie persistence needs an HTTP or HTTPS listener"),
        ),
        (
            doc(
                "\n    - {name: api, backends: [{address: 10.0.0.21, port: 443}], backendProtocol: HTTP2}\n",
                "name: tls, port: 443, protocol: TLS, routes: [{name: a, backendRefs: [{name: api}]}]",
            ),
            format!("{p}.routes[0].backendRefs[0].name: backend group api: backendProtocol HTTP2 needs an HTTP or HTTPS listener"),
        ),
        (
            doc(
                "\n    - {name: api, backends: [{address: 10.0.0.21, port: 443}], backendTls: {insecureSkipVerify: true}}\n",
                "name: tls, port: 443, protocol: TLS, routes: [{name: a, backendRefs: [{name: api}]}]",
            ),
            format!("{p}.routes[0].backendRefs[0].name: backend group api: backendTls cannot wrap a TLS passthrough connection"),
        ),
        (
            doc(
                "\n    - {name: default, backends: []}\n",
                "name: http, port: 80, protocol: HTTP",
            ),
            "LoadBalancer shop/web: spec.backendGroups[0].name: the name default is reserved for a listener's own backends".to_string(),
        ),
        (
            doc(
                "\n    - {name: a}\n    - {name: a}\n",
                "name: http, port: 80, protocol: HTTP",
            ),
            "LoadBalancer shop/web: spec.backendGroups[1].name: duplicate backend group name \"a\"".to_string(),
        ),
        (
            doc(
                "\n    - {name: a, backends: [{address: 10.0.0.300, port: 1}]}\n",
                "name: http, port: 80, protocol: HTTP",
            ),
            "LoadBalancer shop/web: spec.backendGroups[0].backends[0].address: \"10.0.0.300\" is not an IP address".to_string(),
        ),
        (
            doc(
                "\n    - {name: a, healthCheck: {type: HTTP, path: health}}\n",
                "name: http, port: 80, protocol: HTTP",
            ),
            "LoadBalancer shop/web: spec.backendGroups[0].healthCheck.path: must start with /".to_string(),
        ),
    ];
    for (text, want) in cases {
        let got = problems(&text);
        assert!(
            got.iter().any(|p| p.starts_with(&want)),
            "expected {want:?}\n in {got:?}\n for {text}"
        );
        let r = render_with(&text, &Material::new());
        assert!(
            r.config.listeners.is_empty(),
            "a refused LoadBalancer serves nothing"
        );
    }
}

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHfake\n-----END PRIVATE KEY-----\n";

fn secret(
    name: &str,
    keys: &[(&str, &str)],
) -> (MaterialRef, Result<BTreeMap<String, String>, String>) {
    (
        MaterialRef::Secret {
            namespace: "shop".into(),
            name: name.into(),
        },
        Ok(keys
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()),
    )
}

fn file(path: &str, text: &str) -> (MaterialRef, Result<BTreeMap<String, String>, String>) {
    (
        MaterialRef::File(path.into()),
        Ok(BTreeMap::from([(String::new(), text.to_string())])),
    )
}

fn material() -> Material {
    Material::from([
        secret("site-tls", &[("tls.crt", CERT), ("tls.key", KEY)]),
        secret("no-key", &[("tls.crt", CERT)]),
        secret("not-pem", &[("tls.crt", "hello"), ("tls.key", KEY)]),
        secret("backend-ca", &[("ca.crt", CERT)]),
        (
            MaterialRef::Secret {
                namespace: "shop".into(),
                name: "forbidden".into(),
            },
            Err("Secret shop/forbidden cannot be read: forbidden".into()),
        ),
        file("certs/api.crt", CERT),
        file("certs/api.key", KEY),
        file("certs/ca.pem", CERT),
    ])
}

/// An HTTPS listener on port 443 with these extra fields.
fn https(extra: &str) -> String {
    doc(
        GROUPS,
        &format!(
            "name: https, port: 443, protocol: HTTPS, backends: [{{address: 10.0.0.11, port: 8080}}], {extra}"
        ),
    )
}

fn tls_listener(text: &str) -> ListenerConfig {
    let r = render_with(text, &material());
    assert!(r.problems.is_empty(), "{text}\n{:?}", r.problems);
    ListenerConfig::clone(r.config.listeners.first().expect("one listener"))
}

#[test]
fn https_certificates_from_secrets_and_files_with_defaults() {
    let l = tls_listener(&https(
        "tls: {certificates: [{secretName: site-tls}, {certFile: certs/api.crt, keyFile: certs/api.key}]}",
    ));
    let tls = l.tls.expect("tls");
    let got: Vec<(&str, &str, &str)> = tls
        .certificates
        .iter()
        .map(|c| (c.source.as_str(), c.cert_pem.as_str(), c.key_pem.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("secret shop/site-tls", CERT, KEY),
            ("certs/api.crt", CERT, KEY)
        ]
    );
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert_eq!(tls.alpn, ["h2", "http/1.1"]);
    assert!(tls.cipher_suites.is_empty());

    let tuned = tls_listener(&https(
        "tls: {certificates: [{secretName: site-tls}], minVersion: '1.3', cipherSuites: [TLS_AES_128_GCM_SHA256, TLS13_CHACHA20_POLY1305_SHA256], alpn: [http/1.1]}",
    ))
    .tls
    .expect("tls");
    assert_eq!(tuned.min_version, TlsVersion::Tls13);
    assert_eq!(
        tuned.cipher_suites,
        ["TLS13_AES_128_GCM_SHA256", "TLS13_CHACHA20_POLY1305_SHA256"]
    );
    assert_eq!(tuned.alpn, ["http/1.1"]);
}

#[test]
fn backend_tls_ca_from_secret_or_file_or_skip_verify() {
    let text = doc(
        "\n    - {name: api, backends: [{address: 10.0.0.21, port: 443}], backendTls: {caFile: certs/ca.pem, serverName: API.internal}}\n",
        "name: http, port: 80, protocol: HTTP, backends: [{address: 10.0.0.11, port: 443}], backendTls: {caSecretName: backend-ca}, routes: [{name: a, backendRefs: [{name: api}]}]",
    );
    let l = tls_listener(&text);
    assert_eq!(to_json(&l.groups[0].tls), json!({"caPem": CERT}));
    assert_eq!(
        to_json(&l.groups[1].tls),
        json!({"caPem": CERT, "serverName": "api.internal"})
    );
    let skip = tls_listener(&http("backendTls: {insecureSkipVerify: true}"));
    assert_eq!(
        to_json(&skip.groups[0].tls),
        json!({"insecureSkipVerify": true})
    );
}

#[test]
fn material_refs_list_every_secret_and_file() {
    let text = doc(
        "\n    - {name: api, backendTls: {caFile: certs/ca.pem}}\n",
        "name: https, port: 443, protocol: HTTPS, tls: {certificates: [{secretName: site-tls}, {certFile: certs/api.crt, keyFile: certs/api.key}]}, backendTls: {caSecretName: backend-ca}",
    );
    let m = manifest::parse_unvalidated(&text).expect("parse");
    let refs: Vec<MaterialRef> = material_refs(&m.load_balancers).into_iter().collect();
    let secret = |n: &str| MaterialRef::Secret {
        namespace: "shop".into(),
        name: n.into(),
    };
    assert_eq!(
        refs,
        [
            secret("backend-ca"),
            secret("site-tls"),
            MaterialRef::File("certs/api.crt".into()),
            MaterialRef::File("certs/api.key".into()),
            MaterialRef::File("certs/ca.pem".into()),
        ]
    );
}

#[test]
fn table_of_tls_refusals_with_field_paths() {
    let p = "LoadBalancer shop/web: spec.listeners[0]";
    let cert = |c: &str| https(&format!("tls: {{certificates: [{c}]}}"));
    let cases: Vec<(String, String)> = vec![
        (
            https("algorithm: RoundRobin"),
            format!("{p}.tls: required for protocol HTTPS"),
        ),
        (
            http("tls: {certificates: [{secretName: site-tls}]}"),
            format!("{p}.tls: applies to protocol HTTPS only"),
        ),
        (
            cert("{secretName: site-tls}, {secretName: missing}"),
            format!("{p}.tls.certificates[1]: Secret shop/missing not found"),
        ),
        (
            cert("{secretName: forbidden}"),
            format!("{p}.tls.certificates[0]: Secret shop/forbidden cannot be read: forbidden"),
        ),
        (
            cert("{secretName: no-key}"),
            format!("{p}.tls.certificates[0]: Secret shop/no-key has no key tls.key"),
        ),
        (
            cert("{secretName: not-pem}"),
            format!("{p}.tls.certificates[0]: Secret shop/not-pem key tls.crt holds no PEM CERTIFICATE block"),
        ),
        (
            cert("{certFile: certs/api.key, keyFile: certs/api.key}"),
            format!("{p}.tls.certificates[0]: file certs/api.key holds no PEM CERTIFICATE block"),
        ),
        (
            cert("{certFile: certs/api.crt, keyFile: certs/gone.key}"),
            format!("{p}.tls.certificates[0]: file certs/gone.key not found"),
        ),
        (
            cert("{certFile: certs/api.crt}"),
            format!("{p}.tls.certificates[0]: set secretName, or certFile and keyFile"),
        ),
        (
            https("tls: {certificates: []}"),
            format!("{p}.tls.certificates: at least one certificate is required"),
        ),
        (
            https("tls: {certificates: [{secretName: site-tls}], cipherSuites: [TLS_RSA_WITH_RC4_128_SHA]}"),
            format!("{p}.tls.cipherSuites[0]: \"TLS_RSA_WITH_RC4_128_SHA\" is not a supported cipher suite"),
        ),
        (
            https("tls: {certificates: [{secretName: site-tls}], minVersion: '1.3', cipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]}"),
            format!("{p}.tls.cipherSuites: minVersion 1.3 needs at least one TLS13_ cipher suite"),
        ),
        (
            https("tls: {certificates: [{secretName: site-tls}], alpn: [h2, h3]}"),
            format!("{p}.tls.alpn[1]: \"h3\" must be h2 or http/1.1"),
        ),
        (
            http("backendTls: {}"),
            format!("{p}.backendTls: set caSecretName or caFile to verify backends, or insecureSkipVerify"),
        ),
        (
            http("backendTls: {caSecretName: nope}"),
            format!("{p}.backendTls.caSecretName: Secret shop/nope not found"),
        ),
        (
            http("backendTls: {caFile: certs/api.key}"),
            format!("{p}.backendTls.caFile: file certs/api.key holds no PEM CERTIFICATE block"),
        ),
        (
            http("backendTls: {caFile: certs/ca.pem, caSecretName: backend-ca}"),
            format!("{p}.backendTls: set caSecretName or caFile, not both"),
        ),
        (
            http("backendTls: {caFile: certs/ca.pem, insecureSkipVerify: true}"),
            format!("{p}.backendTls.insecureSkipVerify: a CA is given"),
        ),
        (
            doc(
                "\n    - {name: api, backendTls: {caSecretName: nope}}\n",
                "name: http, port: 80, protocol: HTTP",
            ),
            "LoadBalancer shop/web: spec.backendGroups[0].backendTls.caSecretName: Secret shop/nope not found".to_string(),
        ),
    ];
    for (text, want) in cases {
        let r = render_with(&text, &material());
        let got: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        assert!(
            got.iter().any(|p| p.starts_with(&want)),
            "expected {want:?}\n in {got:?}\n for {text}"
        );
        assert!(r.config.listeners.is_empty());
    }
}
