//! HTTP request routing through the real data plane: host, path, method, header and
//! query matches with their precedence, weighted groups, redirects, fixed answers,
//! header and path rewrites, route timeouts, forwarding modes and the 404 without a
//! default route. Recording backends (`halo_tests::raw`) answer with their name and
//! keep what they received; every read is bounded.

use std::time::Duration;

use halo_tests::backends::free_port;
use halo_tests::process::DataPlane;
use halo_tests::raw::{self, Client, Recorder, Response, Step};
use halo_tests::standalone::{Lab, front};

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");
const REPLY: Duration = Duration::from_secs(5);

/// A data plane with backend groups `a` and `b` (one recording backend each) and, when
/// `default` is set, the listener's own backend `d`. Field order is drop order.
struct Rig {
    _dp: DataPlane,
    port: u16,
    a: Recorder,
    b: Recorder,
    d: Recorder,
    _lab: Lab,
}

async fn named(name: &'static str) -> Recorder {
    raw::recording(move |r| {
        if r.target().starts_with("/slow") {
            let mut steps = vec![Step::Sleep(Duration::from_millis(1500))];
            steps.extend(raw::ok(name));
            steps
        } else {
            raw::ok(name)
        }
    })
    .await
    .expect("recording backend")
}

impl Rig {
    /// `listener` is inserted into the listener verbatim (six-space indent); `routes`
    /// likewise, under `routes:`.
    async fn start(test: &str, listener: &str, routes: &str, default: bool) -> Rig {
        let (a, b, d) = (named("a").await, named("b").await, named("d").await);
        let port = free_port().expect("port");
        let own = if default {
            format!(
                "      backends:\n        - {{name: d, address: 127.0.0.1, port: {}}}\n",
                d.port()
            )
        } else {
            String::new()
        };
        let routes = if routes.is_empty() {
            String::new()
        } else {
            format!("      routes:\n{routes}")
        };
        let yaml = format!(
            "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n  backendGroups:\n    - name: a\n      backends: [{{name: a, address: 127.0.0.1, port: {}}}]\n    - name: b\n      backends: [{{name: b, address: 127.0.0.1, port: {}}}]\n  listeners:\n    - name: main\n      port: {port}\n      protocol: HTTP\n{listener}{own}{routes}",
            a.port(),
            b.port()
        );
        let lab = Lab::new(BIN, test);
        let dp = lab.start(&yaml);
        Rig {
            _dp: dp,
            port,
            a,
            b,
            d,
            _lab: lab,
        }
    }

    async fn send(&self, request: &str) -> Response {
        // Boxed: a test making many requests would otherwise inline every one's state.
        Box::pin(async {
            let mut c = Client::open(front(self.port)).await.expect("connect");
            c.send(request.as_bytes()).await.expect("send");
            c.response(request.starts_with("HEAD"), REPLY)
                .await
                .expect("response")
        })
        .await
    }

    /// GET `target` with Host `host` and extra header lines; the body (a backend's
    /// name for forwarded requests).
    async fn get(&self, host: &str, target: &str, extra: &str) -> String {
        let r = self
            .send(&format!(
                "GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
            ))
            .await;
        assert_eq!(r.status, 200, "{host}{target}: {}", r.head);
        r.body_text()
    }
}

const MATCHING: &str = "        - name: exact-host
          hostnames: [shop.example.com]
          matches: [{path: {value: /api}}]
          backendRefs: [{name: a}]
        - name: wildcard
          hostnames: [\"*.example.com\"]
          backendRefs: [{name: b}]
        - name: exact-path
          matches: [{path: {type: Exact, value: /login}}]
          backendRefs: [{name: a}]
        - name: regex
          matches: [{path: {type: RegularExpression, value: \"/item/[0-9]+\"}}]
          backendRefs: [{name: b}]
        - name: post-only
          matches: [{path: {value: /form}, method: POST}]
          backendRefs: [{name: a}]
        - name: by-header
          matches: [{path: {value: /hq}, headers: [{name: X-Env, value: canary}]}]
          backendRefs: [{name: b}]
        - name: by-query
          matches: [{path: {value: /hq}, queryParams: [{name: v, value: \"2\"}]}]
          backendRefs: [{name: a}]
";

#[tokio::test]
async fn hosts_paths_methods_headers_and_queries_pick_routes() {
    let rig = Rig::start("routing-match", "", MATCHING, true).await;
    let cases = [
        ("shop.example.com", "/api/x", "", "a"),
        ("SHOP.example.com:80", "/api", "", "a"),
        // The exact host's routes do not take /apix: the wildcard bucket does.
        ("shop.example.com", "/apix", "", "b"),
        ("x.y.example.com", "/anything", "", "b"),
        ("example.com", "/anything", "", "d"),
        ("other", "/login", "", "a"),
        ("other", "/login/x", "", "d"),
        ("other", "/item/42", "", "b"),
        ("other", "/item/42x", "", "d"),
        ("other", "/form", "", "d"),
        ("other", "/hq", "X-Env: canary\r\n", "b"),
        ("other", "/hq?v=2", "", "a"),
        // More header matches rank above more query matches.
        ("other", "/hq?v=2", "X-Env: canary\r\n", "b"),
        ("other", "/hq?v=3", "", "d"),
    ];
    for (host, target, extra, want) in cases {
        assert_eq!(
            rig.get(host, target, extra).await,
            want,
            "{host}{target} {extra:?}"
        );
    }
    let r = rig
        .send("POST /form HTTP/1.1\r\nHost: other\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        .await;
    assert_eq!(r.body_text(), "a");
    assert!(
        rig.d
            .requests()
            .iter()
            .all(|r| !r.target().starts_with("/api"))
    );
}

#[tokio::test]
async fn no_default_route_answers_404_and_weights_split() {
    let routes = "        - name: split
          matches: [{path: {value: /split}}]
          backendRefs: [{name: a, weight: 3}, {name: b, weight: 1}]
";
    let rig = Rig::start("routing-404", "", routes, false).await;
    let r = rig
        .send("GET /other HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 404, "{}", r.head);
    let mut counts = [0usize; 2];
    for _ in 0..40 {
        match rig.get("h", "/split", "").await.as_str() {
            "a" => counts[0] += 1,
            "b" => counts[1] += 1,
            other => panic!("unexpected backend {other}"),
        }
    }
    assert_eq!(counts[0] + counts[1], 40);
    assert!((20..=36).contains(&counts[0]), "{counts:?}");
    assert!(counts[1] >= 4, "{counts:?}");
}

const ACTIONS: &str = "        - name: to-https
          hostnames: [plain.example]
          filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
        - name: moved
          matches: [{path: {value: /old}}]
          filters: [{type: RequestRedirect, requestRedirect: {hostname: new.example, port: 8080, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 307}}]
        - name: maintenance
          matches: [{path: {value: /down}}]
          fixedResponse: {statusCode: 503, body: \"<p>back soon</p>\", contentType: text/html}
        - name: rewrite
          matches: [{path: {value: /api}}]
          filters:
            - {type: URLRewrite, urlRewrite: {hostname: internal.local, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
            - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Env, value: prod}], add: [{name: X-Added, value: \"1\"}], remove: [X-Secret]}}
            - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Served-By, value: halo}], remove: [Content-Type]}}
          backendRefs: [{name: a}]
        - name: full
          matches: [{path: {type: Exact, value: /full}}]
          filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}}]
          backendRefs: [{name: b}]
        - name: slow
          matches: [{path: {value: /slow}}]
          timeouts: {request: 300ms}
          backendRefs: [{name: b}]
";

#[tokio::test]
async fn redirects_fixed_answers_rewrites_and_timeouts() {
    let rig = Rig::start("routing-actions", "", ACTIONS, true).await;

    let r = rig
        .send("GET /a/b?q=1 HTTP/1.1\r\nHost: plain.example\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 301, "{}", r.head);
    assert_eq!(r.header("location"), ["https://plain.example/a/b?q=1"]);

    let r = rig
        .send("GET /old/page HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 307, "{}", r.head);
    assert_eq!(r.header("location"), ["http://new.example:8080/new/page"]);

    let r = rig
        .send("GET /down HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.header("content-type"), ["text/html"]);
    assert_eq!(r.body_text(), "<p>back soon</p>");

    let r = rig
        .send("GET /api/users?id=7 HTTP/1.1\r\nHost: h\r\nX-Env: dev\r\nX-Secret: s\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-served-by"), ["halo"]);
    assert!(r.header("content-type").is_empty(), "{}", r.head);
    let seen = rig.a.wait_requests(1, REPLY).await;
    let got = seen.last().expect("backend a got the request");
    assert_eq!(got.target(), "/v2/users?id=7");
    assert_eq!(got.header("host"), ["internal.local"]);
    assert_eq!(got.header("x-env"), ["prod"]);
    assert_eq!(got.header("x-added"), ["1"]);
    assert!(got.header("x-secret").is_empty());
    assert_eq!(got.header("x-forwarded-host"), ["h"]);

    assert_eq!(rig.get("h", "/full?x=1", "").await, "b");
    let seen = rig.b.wait_requests(1, REPLY).await;
    assert_eq!(seen.last().expect("b").target(), "/replaced?x=1");

    let r = rig
        .send("GET /slow HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 504, "{}", r.head);
    assert!(
        rig.d.requests().is_empty(),
        "default got {:?}",
        rig.d.requests()
    );
}

#[tokio::test]
async fn forwarded_modes_keep_only_trusted_headers() {
    let send = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    let cases = [
        // Append with no list trusts everyone.
        (
            "      forwarded: {mode: Append}\n",
            "203.0.113.9, 127.0.0.1",
            "https",
        ),
        // Append trusting another network: the client's own fields go.
        (
            "      forwarded: {mode: Append, trustedProxies: [10.0.0.0/8]}\n",
            "127.0.0.1",
            "http",
        ),
        ("      forwarded: {mode: Replace}\n", "127.0.0.1", "http"),
        (
            "      forwarded: {mode: Replace, trustedProxies: [127.0.0.0/8]}\n",
            "203.0.113.9, 127.0.0.1",
            "https",
        ),
        ("      forwarded: {mode: \"Off\"}\n", "203.0.113.9", "https"),
    ];
    for (listener, xff, proto) in cases {
        let rig = Rig::start("routing-fwd", listener, "", true).await;
        let r = rig.send(send).await;
        assert_eq!(r.status, 200, "{listener}: {}", r.head);
        let seen = rig.d.wait_requests(1, REPLY).await;
        let got = seen.first().expect("default backend got the request");
        assert_eq!(got.header("x-forwarded-for"), [xff], "{listener}");
        assert_eq!(got.header("x-forwarded-proto"), [proto], "{listener}");
    }
}
