//! Gateway API on the three-node lab: the real API server with the upstream CRDs, a
//! GatewayClass, Gateways and HTTPRoutes as a user writes them, traffic from the lab's
//! client to the Gateway's address, the status the spec asks for, and failover.

use std::time::{Duration, Instant};

use halo_tests::cluster::wait_for;
use halo_tests::curl::{Reply, curl_in};
use halo_tests::fault_lab::{self, FaultLab, NODES, Options, POD_PORT};
use halo_tests::lab::{self, Share};
use halo_tests::pki;

/// The Gateway's requested address (in the lab's subnet, in the pool below).
const ADDRESS: &str = "192.0.2.110";

/// The pool the Gateways' requested addresses come from, and Halo's class.
const POOL_AND_CLASS: &str = r#"
apiVersion: halo.dev/v1alpha1
kind: VirtualIPPool
metadata: {name: gateways}
spec:
  cidrs: ["192.0.2.0/24"]
  autoAssign: false
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: halo}
spec: {controllerName: halo.dev/gateway-controller}
"#;

const OBJECTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: front, namespace: default}
spec:
  gatewayClassName: halo
  addresses: [{type: IPAddress, value: "192.0.2.110"}]
  listeners:
    - {name: http, port: 80, protocol: HTTP}
    - {name: raw, port: 5432, protocol: TCP}
---
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: site, namespace: default}
spec:
  parentRefs: [{name: front, sectionName: http}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /one}}]
      backendRefs: [{name: one, port: 80}]
    - matches: [{path: {type: Exact, value: /two}}]
      backendRefs: [{name: two, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /ghost}}]
      backendRefs: [{name: ghost, port: 80}]
    - backendRefs: [{name: one, port: 80, weight: 1}, {name: two, port: 80, weight: 1}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{name: front}]
  hostnames: [shop.example.com]
  rules:
    - matches: [{headers: [{name: x-canary, value: "yes"}]}]
      backendRefs: [{name: one, port: 80}]
    - filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: x-served-by, value: halo}]}
      backendRefs: [{name: two, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: stranger, namespace: team}
spec:
  parentRefs: [{name: front, namespace: default}]
  rules: [{backendRefs: [{name: one, port: 80}]}]
"#;

fn services() -> String {
    let mut out = String::new();
    for (name, pod) in [("one", 0), ("two", 1)] {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: {POD_PORT}}}]\n---\n{}---\n",
            fault_lab::service_slice(name, "http", POD_PORT, &[(pod, true)])
        ));
    }
    out
}

fn get(lab: &FaultLab, path: &str, headers: &[&str]) -> Reply {
    let url = format!("http://{ADDRESS}{path}");
    let mut args: Vec<&str> = headers.iter().flat_map(|h| ["-H", h]).collect();
    args.push(&url);
    client(lab, &args)
}

/// curl from the lab's client with the response head shown.
fn client(lab: &FaultLab, args: &[&str]) -> Reply {
    try_client(lab, args).expect("curl")
}

/// [`client`], where no answer (a refused handshake) is an error.
fn try_client(lab: &FaultLab, args: &[&str]) -> anyhow::Result<Reply> {
    let mut all = vec!["-i", "--max-time", "3"];
    all.extend_from_slice(args);
    curl_in(&lab.site.client.ns, &all)
}

fn body(reply: &Reply) -> String {
    let text = reply.text();
    text.split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn jsonpath(lab: &FaultLab, kind: &str, name: &str, ns: &str, path: &str) -> String {
    lab.cluster
        .jsonpath(kind, name, ns, path)
        .unwrap_or_default()
}

/// `type=status/reason` of each condition at `path` (a JSONPath to a conditions list).
fn conditions(lab: &FaultLab, kind: &str, name: &str, ns: &str, path: &str) -> Vec<String> {
    let text = jsonpath(
        lab,
        kind,
        name,
        ns,
        &format!("{{range {path}[*]}}{{.type}}={{.status}}/{{.reason}} {{end}}"),
    );
    text.split_whitespace().map(str::to_string).collect()
}

#[test]
fn gateway_and_routes_serve_traffic_report_status_and_fail_over() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let mut lab = FaultLab::start_with("gw", Options { gateway_api: true }).expect("lab");
    lab.cluster.apply(&services()).expect("services");
    lab.cluster.apply(POOL_AND_CLASS).expect("pool and class");
    lab.cluster.apply(OBJECTS).expect("gateway objects");

    // The address answers once a node holds it and runs the routes.
    let served = wait_for(Duration::from_secs(40), || {
        body(&get(&lab, "/one", &[])) == "pod-1"
    });
    assert!(
        served,
        "the Gateway never served /one:\n{}",
        lab.controller_log(0)
    );

    // Routing: path prefix, exact path, header match on a hostname, weights.
    assert_eq!(body(&get(&lab, "/one/deeper", &[])), "pod-1");
    assert_eq!(body(&get(&lab, "/two", &[])), "pod-2");
    assert_eq!(
        get(&lab, "/ghost", &[]).status,
        500,
        "an unresolved backend answers 500"
    );
    let shop = get(&lab, "/", &["Host: shop.example.com"]);
    assert_eq!(body(&shop), "pod-2");
    assert!(
        shop.text()
            .to_ascii_lowercase()
            .contains("x-served-by: halo"),
        "{}",
        shop.text()
    );
    assert_eq!(
        body(&get(
            &lab,
            "/",
            &["Host: shop.example.com", "x-canary: yes"]
        )),
        "pod-1"
    );
    let spread: Vec<String> = (0..20).map(|_| body(&get(&lab, "/", &[]))).collect();
    for pod in ["pod-1", "pod-2"] {
        let n = spread.iter().filter(|b| *b == pod).count();
        assert!(
            (5..=15).contains(&n),
            "weights 1:1 gave {pod} {n} of 20: {spread:?}"
        );
    }

    // Status, as the spec's conformance tests read it.
    let class = conditions(
        &lab,
        "gatewayclass",
        "halo",
        "default",
        ".status.conditions",
    );
    assert!(
        class.contains(&"Accepted=True/Accepted".to_string()),
        "{class:?}"
    );
    let features = jsonpath(
        &lab,
        "gatewayclass",
        "halo",
        "",
        "{.status.supportedFeatures[*].name}",
    );
    assert!(
        features.contains("HTTPRoute") && features.contains("GatewayStaticAddresses"),
        "{features}"
    );
    assert_eq!(
        jsonpath(
            &lab,
            "gateway",
            "front",
            "default",
            "{.status.addresses[0].value}"
        ),
        ADDRESS
    );
    let gw = conditions(&lab, "gateway", "front", "default", ".status.conditions");
    assert!(
        gw.contains(&"Accepted=True/ListenersNotValid".to_string()),
        "{gw:?}"
    );
    assert!(
        gw.contains(&"Programmed=True/Programmed".to_string()),
        "{gw:?}"
    );
    let http = conditions(
        &lab,
        "gateway",
        "front",
        "default",
        ".status.listeners[?(@.name==\"http\")].conditions",
    );
    assert!(
        http.contains(&"Accepted=True/Accepted".to_string())
            && http.contains(&"Programmed=True/Programmed".to_string()),
        "{http:?}"
    );
    let raw = conditions(
        &lab,
        "gateway",
        "front",
        "default",
        ".status.listeners[?(@.name==\"raw\")].conditions",
    );
    assert!(
        raw.contains(&"Accepted=False/UnsupportedProtocol".to_string()),
        "{raw:?}"
    );
    let attached = jsonpath(
        &lab,
        "gateway",
        "front",
        "default",
        "{.status.listeners[?(@.name==\"http\")].attachedRoutes}",
    );
    assert_eq!(
        attached, "2",
        "site and shop attach; the other namespace's route does not"
    );
    let site = conditions(
        &lab,
        "httproute",
        "site",
        "default",
        ".status.parents[0].conditions",
    );
    assert!(
        site.contains(&"Accepted=True/Accepted".to_string()),
        "{site:?}"
    );
    assert!(
        site.contains(&"ResolvedRefs=False/BackendNotFound".to_string()),
        "{site:?}"
    );
    let stranger = conditions(
        &lab,
        "httproute",
        "stranger",
        "team",
        ".status.parents[0].conditions",
    );
    assert!(
        stranger.contains(&"Accepted=False/NotAllowedByListeners".to_string()),
        "{stranger:?}"
    );

    // Allowing the other namespace attaches its route: a spec change re-translates.
    lab.cluster
        .kubectl_ok(&["patch", "gateway", "front", "-n", "default", "--type=json", "-p",
            r#"[{"op":"add","path":"/spec/listeners/0/allowedRoutes","value":{"namespaces":{"from":"All"}}}]"#])
        .expect("patch");
    let attached_all = wait_for(Duration::from_secs(20), || {
        jsonpath(
            &lab,
            "gateway",
            "front",
            "default",
            "{.status.listeners[?(@.name==\"http\")].attachedRoutes}",
        ) == "3"
    });
    assert!(attached_all, "the team route did not attach");

    // A Service of type LoadBalancer whose port says appProtocol http is served by an HTTP
    // listener (the data planes report its protocol), not a TCP one.
    lab.cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web-lb, namespace: default, annotations: {{halo.dev/addresses: 192.0.2.112}}}}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: halo.dev/vrrp\n  ports: [{{name: web, port: 80, targetPort: {POD_PORT}, appProtocol: http}}]\n---\n{}",
            fault_lab::service_slice("web-lb", "web", POD_PORT, &[(0, true)])
        ))
        .expect("service");
    let http_listener =
        wait_for(Duration::from_secs(30), || {
            (0..NODES.len()).any(|i| {
                lab.site.status(i).is_ok_and(|s| {
                    s["listeners"].as_array().into_iter().flatten().any(|l| {
                        l["name"] == "default/service-web-lb/web" && l["protocol"] == "HTTP"
                    })
                })
            })
        });
    assert!(
        http_listener,
        "no HTTP listener for the Service:\n{}",
        lab.controller_log(0)
    );
    let via_service = wait_for(Duration::from_secs(20), || {
        try_client(&lab, &["http://192.0.2.112/"]).is_ok_and(|r| body(&r) == "pod-1")
    });
    assert!(via_service, "the Service's address does not answer");

    // The Gateway's address fails over like any VirtualIP: the master's data plane dies
    // (SIGKILL leaves the address on its interface, as with keepalived), another node
    // takes it and the client is answered through it.
    let holders = lab.site.holders(ADDRESS);
    assert_eq!(holders.len(), 1, "one node holds {ADDRESS}: {holders:?}");
    let old = holders[0];
    let killed = Instant::now();
    lab.stop_dataplane(old, "KILL").expect("kill");
    let moved = wait_for(Duration::from_secs(5), || {
        lab.site.holders(ADDRESS).iter().any(|&n| n != old)
    });
    assert!(moved, "{ADDRESS} did not move from {}", NODES[old]);
    let answered = wait_for(Duration::from_secs(5), || {
        body(&get(&lab, "/two", &[])) == "pod-2"
    });
    assert!(answered, "the new holder does not serve the routes");
    eprintln!(
        "Gateway address moved from {} and answered again in {:?}",
        NODES[old],
        killed.elapsed()
    );
}

/// An HTTPS Gateway whose certificate lives in another namespace: refused until a
/// ReferenceGrant allows it, then served with h2 by SNI; plain HTTP redirects to it; a
/// TLS listener passes connections through by SNI to a TLS server in a pod.
const SECURE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: certs}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: secure, namespace: default}
spec:
  gatewayClassName: halo
  addresses: [{value: "192.0.2.111"}]
  listeners:
    - {name: http, port: 80, protocol: HTTP, hostname: site.example.com}
    - name: https
      port: 443
      protocol: HTTPS
      hostname: site.example.com
      tls: {certificateRefs: [{name: site-tls, namespace: certs}]}
    - {name: pass, port: 8443, protocol: TLS, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: pass, namespace: default}
spec:
  parentRefs: [{name: secure, sectionName: pass}]
  hostnames: [pass.example.com]
  rules: [{backendRefs: [{name: tls-app, port: 9443}]}]
---
apiVersion: v1
kind: Service
metadata: {name: tls-app, namespace: default}
spec:
  ports: [{name: tls, port: 9443}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-https, namespace: default}
spec:
  parentRefs: [{name: secure, sectionName: http}]
  rules: [{filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: default}
spec:
  parentRefs: [{name: secure, sectionName: https}]
  rules: [{backendRefs: [{name: one, port: 80}]}]
"#;

const GRANT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways-read-certs, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
  to: [{group: "", kind: Secret}]
"#;

#[test]
fn https_with_a_granted_certificate_a_redirect_and_tls_passthrough() {
    let Some(_lab) = lab::enter(&[], Share::Alone) else {
        return;
    };
    let lab = FaultLab::start_with("gws", Options { gateway_api: true }).expect("lab");
    let dir = lab.cluster.dir.join("site-pki");
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = pki::ca(&dir, "ca", "site-ca").expect("ca");
    let site = pki::signed(
        &dir,
        &ca,
        "site",
        "site.example.com",
        "DNS:site.example.com",
    )
    .expect("cert");
    lab.cluster.apply(&services()).expect("services");
    lab.cluster.apply(POOL_AND_CLASS).expect("pool and class");
    lab.cluster.apply(SECURE).expect("gateway");
    lab.cluster
        .apply(&pki::tls_secret_yaml(
            "certs",
            "site-tls",
            &site.cert_pem().expect("pem"),
            &site.key_pem().expect("pem"),
        ))
        .expect("secret");

    let https = || {
        conditions(
            &lab,
            "gateway",
            "secure",
            "default",
            ".status.listeners[?(@.name==\"https\")].conditions",
        )
    };
    let refused = wait_for(Duration::from_secs(30), || {
        https().contains(&"ResolvedRefs=False/RefNotPermitted".to_string())
    });
    assert!(refused, "{:?}\n{}", https(), lab.controller_log(0));
    let app = conditions(
        &lab,
        "httproute",
        "app",
        "default",
        ".status.parents[0].conditions",
    );
    assert!(
        app.contains(&"Accepted=False/NotAllowedByListeners".to_string()),
        "{app:?}"
    );

    lab.cluster.apply(GRANT).expect("grant");
    let cacert = ca.cert.to_string_lossy().to_string();
    let fetch = || {
        try_client(
            &lab,
            &[
                "--cacert",
                &cacert,
                "--resolve",
                "site.example.com:443:192.0.2.111",
                "https://site.example.com/page",
            ],
        )
    };
    let served = wait_for(Duration::from_secs(40), || {
        fetch().is_ok_and(|r| body(&r) == "pod-1")
    });
    assert!(served, "{:?}\n{}", https(), lab.controller_log(0));
    assert_eq!(fetch().expect("https").version, "2", "ALPN h2 by default");
    assert!(
        https().contains(&"ResolvedRefs=True/ResolvedRefs".to_string()),
        "{:?}",
        https()
    );

    // Passthrough: the pod's own TLS server answers (its certificate, verified by the
    // client, proves the connection went through untouched).
    let pass = pki::signed(
        &dir,
        &ca,
        "pass",
        "pass.example.com",
        "DNS:pass.example.com",
    )
    .expect("cert");
    let pod = lab.site.lab.host("pod-1").expect("pod-1 host").clone();
    let (cert, key) = (
        pass.cert.to_string_lossy().to_string(),
        pass.key.to_string_lossy().to_string(),
    );
    lab.site
        .lab
        .spawn(
            &pod,
            std::path::Path::new("/usr/bin/openssl"),
            &[
                "s_server",
                "-quiet",
                "-accept",
                "192.0.2.21:9443",
                "-cert",
                &cert,
                "-key",
                &key,
                "-www",
            ],
            &dir.join("s_server.log"),
        )
        .expect("openssl s_server");
    lab.cluster
        .apply(&fault_lab::service_slice(
            "tls-app",
            "tls",
            9443,
            &[(0, true)],
        ))
        .expect("slice");
    let through = || {
        try_client(
            &lab,
            &[
                "--cacert",
                &cacert,
                "--resolve",
                "pass.example.com:8443:192.0.2.111",
                "https://pass.example.com:8443/",
            ],
        )
    };
    let passed = wait_for(Duration::from_secs(30), || {
        through().is_ok_and(|r| r.status == 200 && r.text().contains("s_server"))
    });
    assert!(passed, "{:?}", through().map(|r| r.text()));
    let routed = conditions(
        &lab,
        "tlsroute",
        "pass",
        "default",
        ".status.parents[0].conditions",
    );
    assert!(
        routed.contains(&"Accepted=True/Accepted".to_string()),
        "{routed:?}"
    );
    // Another name reaches no route: the connection is closed, nothing answers.
    let other = try_client(
        &lab,
        &[
            "-k",
            "--resolve",
            "other.example.com:8443:192.0.2.111",
            "https://other.example.com:8443/",
        ],
    );
    assert!(other.is_err(), "{:?}", other.map(|r| r.text()));

    let plain = client(
        &lab,
        &[
            "--resolve",
            "site.example.com:80:192.0.2.111",
            "http://site.example.com/page?q=1",
        ],
    );
    assert_eq!(plain.status, 301, "{}", plain.text());
    assert!(
        plain.text().contains("https://site.example.com/page?q=1"),
        "{}",
        plain.text()
    );
}
