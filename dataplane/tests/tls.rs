//! TLS through the real data plane with real clients: certificates chosen by SNI,
//! versions and ALPN (`openssl s_client`), HTTPS routing over HTTP/1.1 and HTTP/2
//! (curl), certificate rotation under load, SNI passthrough to TLS backends, and
//! backend TLS verified against a CA. Certificates come from a private CA
//! (`halo_tests::certs`); every client run is bounded in time.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use halo_tests::backends::{self, free_port};
use halo_tests::certs::{self, Ca, SServer, s_client, s_client_send};
use halo_tests::client;
use halo_tests::curl::curl;
use halo_tests::process::DataPlane;
use halo_tests::standalone::{Lab, front, metric_sum, wait_until};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");

fn yaml(port: u16, protocol: &str, listener: &str, groups: &str) -> String {
    format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n{groups}  listeners:\n    - name: main\n      port: {port}\n      protocol: {protocol}\n{listener}"
    )
}

fn version(dp: &DataPlane) -> Option<u64> {
    let status: serde_json::Value = serde_json::from_str(&dp.status_json().ok()?).ok()?;
    status["version"].as_u64()
}

fn tls_errors(dp: &DataPlane, reason: &str) -> f64 {
    dp.metrics().map_or(0.0, |m| {
        metric_sum(&m, "halo_tls_handshake_errors_total", &[("reason", reason)])
    })
}

/// curl to `https://<host>:<port><path>` resolved to the listener, trusting `ca`.
fn https(
    host: &str,
    addr: SocketAddr,
    ca: &std::path::Path,
    path: &str,
    extra: &[&str],
) -> halo_tests::curl::Reply {
    let resolve = format!("{host}:{}:127.0.0.1", addr.port());
    let url = format!("https://{host}:{}{path}", addr.port());
    let mut args = vec![
        "--resolve",
        &resolve,
        "--cacert",
        ca.to_str().expect("path"),
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args).expect("curl")
}

/// For each (SNI or none, subject), the certificate `s_client` is served at `addr`.
fn assert_subjects(addr: SocketAddr, cases: &[(Option<&str>, &str)]) {
    for (sni, want) in cases {
        let args: Vec<&str> = match sni {
            Some(name) => vec!["-servername", name],
            None => vec!["-noservername"],
        };
        let (ok, text) = s_client(addr, &args);
        assert!(ok, "{sni:?}: {text}");
        assert_eq!(
            certs::subject(&text),
            Some(format!("subject={want}").as_str()),
            "{sni:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_follows_sni_and_versions_and_alpn_are_enforced() {
    let lab = Lab::new(BIN, "tls-sni");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    ca.issue("a", &["a.test"]);
    ca.issue("b", &["b.test", "*.b.test"]);
    let web = backends::http("web", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let port = free_port().expect("port");
    let listener = format!(
        "      timeouts: {{httpRequest: 500ms}}\n      tls:\n        certificates:\n          - {{certFile: a.crt, keyFile: a.key}}\n          - {{certFile: b.crt, keyFile: b.key}}\n      backends: [{{name: web, address: 127.0.0.1, port: {}}}]\n",
        web.port()
    );
    let dp = lab.start(&yaml(port, "HTTPS", &listener, ""));
    let addr = front(port);

    let cases = [
        (Some("a.test"), "CN = a.test"),
        (Some("b.test"), "CN = b.test"),
        (Some("x.b.test"), "CN = b.test"),
        (Some("unknown.test"), "CN = a.test"),
        (None, "CN = a.test"),
    ];
    assert_subjects(addr, &cases);

    for (alpn, want) in [
        ("h2", "ALPN protocol: h2"),
        ("http/1.1", "ALPN protocol: http/1.1"),
    ] {
        let (ok, text) = s_client(addr, &["-servername", "a.test", "-alpn", alpn]);
        assert!(ok && text.contains(want), "{alpn}: {text}");
    }

    // Default minimum 1.2: 1.2 and 1.3 are served, 1.1 is refused and counted.
    for v in ["-tls1_2", "-tls1_3"] {
        let (ok, text) = s_client(addr, &["-servername", "a.test", v]);
        assert!(ok, "{v}: {text}");
    }
    let before = tls_errors(&dp, "incompatible");
    let (ok, text) = s_client(addr, &["-servername", "a.test", "-tls1_1"]);
    assert!(!ok, "TLS 1.1 was accepted: {text}");
    assert!(
        wait_until(Duration::from_secs(5), || tls_errors(&dp, "incompatible")
            > before)
        .await,
        "{}",
        dp.metrics().unwrap_or_default()
    );

    // A client that never finishes its handshake is cut at httpRequest and counted.
    let mut silent = std::net::TcpStream::connect(addr).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut silent, &mut buf).unwrap_or(usize::MAX);
    assert_eq!(n, 0, "the silent connection was not closed");
    assert!(
        wait_until(Duration::from_secs(5), || tls_errors(&dp, "timeout") >= 1.0).await,
        "{}",
        dp.metrics().unwrap_or_default()
    );

    // minVersion 1.3: 1.2 is refused from now on.
    lab.write(&yaml(
        port,
        "HTTPS",
        &listener.replace("      tls:\n", "      tls:\n        minVersion: \"1.3\"\n"),
        "",
    ));
    assert!(
        wait_until(Duration::from_secs(10), || version(&dp) == Some(2)).await,
        "{}",
        dp.log_text()
    );
    let (ok, text) = s_client(addr, &["-servername", "a.test", "-tls1_2"]);
    assert!(!ok, "TLS 1.2 was accepted under minVersion 1.3: {text}");
    let (ok, text) = s_client(addr, &["-servername", "a.test", "-tls1_3"]);
    assert!(ok, "{text}");

    // cipherSuites: only the listed suite is negotiated.
    lab.write(&yaml(
        port,
        "HTTPS",
        &listener.replace(
            "      tls:\n",
            "      tls:\n        minVersion: \"1.3\"\n        cipherSuites: [TLS_AES_256_GCM_SHA384]\n",
        ),
        "",
    ));
    assert!(
        wait_until(Duration::from_secs(10), || version(&dp) == Some(3)).await,
        "{}",
        dp.log_text()
    );
    let only = |suite: &str| {
        s_client(
            addr,
            &["-servername", "a.test", "-tls1_3", "-ciphersuites", suite],
        )
    };
    let (ok, text) = only("TLS_AES_128_GCM_SHA256");
    assert!(!ok, "an unlisted suite was negotiated: {text}");
    let (ok, text) = only("TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256");
    assert!(
        ok && text.contains("Cipher is TLS_AES_256_GCM_SHA384"),
        "{text}"
    );
}

const ROUTES: &str = "      routes:
        - name: api
          matches: [{path: {value: /api}}]
          filters:
            - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Route, value: api}]}}
            - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: X-Served, value: api}]}}
            - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}
          backendRefs: [{name: api}]
        - name: old
          matches: [{path: {value: /old}}]
          filters:
            - {type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}}
        - name: teapot
          matches: [{path: {type: Exact, value: /teapot}}]
          fixedResponse: {statusCode: 418, body: \"short and stout\"}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_routes_requests_over_http1_and_http2() {
    let lab = Lab::new(BIN, "tls-routing");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    ca.issue("site", &["site.test"]);
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let api = backends::http("api", any).await.expect("backend");
    let web = backends::http("web", any).await.expect("backend");
    let port = free_port().expect("port");
    let groups = format!(
        "  backendGroups:\n    - name: api\n      backends: [{{name: api, address: 127.0.0.1, port: {}}}]\n",
        api.port()
    );
    let listener = format!(
        "      tls:\n        certificates: [{{certFile: site.crt, keyFile: site.key}}]\n      backends: [{{name: web, address: 127.0.0.1, port: {}}}]\n{ROUTES}",
        web.port()
    );
    let _dp = lab.start(&yaml(port, "HTTPS", &listener, &groups));
    let addr = front(port);

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let get = |path: &str, extra: &[&str]| {
            let mut args = vec![flag];
            args.extend_from_slice(extra);
            https("site.test", addr, &ca.cert, path, &args)
        };
        let r = get("/", &[]);
        assert_eq!(
            (r.status, r.version.as_str(), r.text().as_str()),
            (200, version, "web\n")
        );

        // The prefix is replaced: the api backend sees /headers.
        let r = get("/api/headers", &["-D", "-"]);
        assert_eq!(r.status, 200, "{flag}: {}", r.text());
        let text = r.text().to_ascii_lowercase();
        assert!(text.contains("x-route: api"), "{flag}: {text}");
        assert!(text.contains("x-forwarded-proto: https"), "{flag}: {text}");
        assert!(text.contains("x-served: api"), "{flag}: {text}");
        assert!(text.contains("host: site.test"), "{flag}: {text}");

        let r = get("/old/x?q=1", &["-D", "-"]);
        assert_eq!(r.status, 301, "{flag}");
        assert!(
            r.text()
                .to_ascii_lowercase()
                .contains("location: https://site.test:")
                && r.text().contains("/new?q=1"),
            "{flag}: {}",
            r.text()
        );

        let r = get("/teapot", &[]);
        assert_eq!(
            (r.status, r.text().as_str()),
            (418, "short and stout"),
            "{flag}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_upgrade_over_https() {
    let lab = Lab::new(BIN, "tls-ws");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    ca.issue("site", &["site.test"]);
    let ws = backends::ws_echo("ws", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let port = free_port().expect("port");
    let listener = format!(
        "      tls:\n        certificates: [{{certFile: site.crt, keyFile: site.key}}]\n      backends: [{{name: ws, address: 127.0.0.1, port: {}}}]\n",
        ws.port()
    );
    let _dp = lab.start(&yaml(port, "HTTPS", &listener, ""));
    let ca_pem = std::fs::read_to_string(&ca.cert).expect("ca");
    let tls = certs::tls_connect(front(port), "site.test", &ca_pem, &["http/1.1"])
        .await
        .expect("TLS connection");
    let echoes = client::ws_exchange_over(tls, "site.test", "/chat", &["hello", "tls"])
        .await
        .expect("websocket");
    assert_eq!(echoes, ["hello", "tls"]);
    assert_eq!(ws.served(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_without_a_default_route_answers_404_on_http2() {
    let lab = Lab::new(BIN, "tls-404");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    ca.issue("site", &["site.test"]);
    let api = backends::http("api", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let port = free_port().expect("port");
    let yaml = format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n  backendGroups:\n    - name: api\n      backends: [{{name: api, address: 127.0.0.1, port: {}}}]\n  listeners:\n    - name: main\n      port: {port}\n      protocol: HTTPS\n      tls:\n        certificates: [{{certFile: site.crt, keyFile: site.key}}]\n      routes:\n        - name: api\n          matches: [{{path: {{value: /api}}}}]\n          backendRefs: [{{name: api}}]\n",
        api.port()
    );
    let _dp = lab.start(&yaml);
    let r = https("site.test", front(port), &ca.cert, "/api", &["--http2"]);
    assert_eq!(
        (r.status, r.version.as_str(), r.text().as_str()),
        (200, "2", "api\n")
    );
    let r = https("site.test", front(port), &ca.cert, "/other", &["--http2"]);
    assert_eq!(r.status, 404);
}

/// Malformed requests over TLS get hyper's 400 (HTTP/1.1) or a GOAWAY (HTTP/2), and are
/// counted by reason like the plain HTTP/1.1 engine's, while good requests still pass.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_over_tls_are_refused_and_counted() {
    let lab = Lab::new(BIN, "tls-bad");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    ca.issue("site", &["site.test"]);
    let web = backends::http("web", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let port = free_port().expect("port");
    let listener = "      tls:\n        certificates: [{certFile: site.crt, keyFile: site.key}]\n";
    let groups = format!(
        "  backendGroups:\n    - name: web\n      backends: [{{name: web, address: 127.0.0.1, port: {}}}]\n",
        web.port()
    );
    let dp = lab.start(&format!(
        "{}      routes: [{{name: all, backendRefs: [{{name: web}}]}}]\n",
        yaml(port, "HTTPS", listener, &groups)
    ));
    let errors = |reason: &str| {
        dp.metrics().map_or(0.0, |m| {
            metric_sum(&m, "halo_http_client_errors_total", &[("reason", reason)])
        })
    };
    let addr = front(port);
    let h1 = ["-servername", "site.test", "-alpn", "http/1.1"];
    let answer = s_client_send(
        addr,
        &h1,
        b"GET / HTTP/1.1\r\nHost: site.test\r\nno colon here\r\n\r\n",
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        wait_until(Duration::from_secs(3), || errors("malformed") == 1.0).await,
        "{:?}",
        dp.metrics()
    );

    // The preface, then a HEADERS frame on stream 0: a connection error (RFC 9113 §6.2).
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    h2.extend_from_slice(&[0, 0, 1, 1, 5, 0, 0, 0, 0, 0x82]); // HEADERS, stream 0
    let answer = s_client_send(addr, &["-servername", "site.test", "-alpn", "h2"], &h2);
    // A GOAWAY frame (type 7) with PROTOCOL_ERROR (1) as its last 4 bytes of payload.
    let goaway = answer.windows(4).any(|w| w == [0, 0, 0, 1]) && answer.contains(&7);
    assert!(goaway, "no GOAWAY(PROTOCOL_ERROR) in {answer:?}");
    assert!(
        wait_until(Duration::from_secs(3), || errors("h2_protocol_error")
            == 1.0)
        .await,
        "{:?}",
        dp.metrics()
    );

    let r = https("site.test", addr, &ca.cert, "/", &["--http2"]);
    assert_eq!((r.status, r.text().as_str()), (200, "web\n"));
}

/// GET / on an open HTTP/1.1 connection, within 5 s: status and body.
async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> (u16, String) {
    let req = hyper::Request::get("/")
        .header("host", "site.test")
        .body(Empty::new())
        .expect("request");
    let exchange = async {
        let response = sender.send_request(req).await.expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("answer within 5 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_handshakes_without_failing_requests() {
    let lab = Lab::new(BIN, "tls-rotate");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    ca.issue("site", &["site.test"]);
    let web = backends::http("web", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let port = free_port().expect("port");
    let listener = format!(
        "      tls:\n        certificates: [{{certFile: site.crt, keyFile: site.key}}]\n      backends: [{{name: web, address: 127.0.0.1, port: {}}}]\n",
        web.port()
    );
    let dp = lab.start_with(&yaml(port, "HTTPS", &listener, ""), &["--settle", "200ms"]);
    let addr = front(port);
    let (ok, before) = s_client(addr, &["-servername", "site.test"]);
    assert!(ok, "{before}");
    let before = certs::served_pem(&before).expect("certificate").to_string();
    // A keep-alive connection opened before the swap, used again after it.
    let ca_pem = std::fs::read_to_string(&ca.cert).expect("ca");
    let tls = certs::tls_connect(addr, "site.test", &ca_pem, &["http/1.1"])
        .await
        .expect("TLS connection");
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    assert_eq!(get_on(&mut open).await, (200, "web\n".to_string()));

    // A bounded loop of requests, each a new connection (a new handshake), while the
    // certificate is replaced with one of the same name.
    let cacert = ca.cert.clone();
    let load = std::thread::spawn(move || {
        let mut failures = Vec::new();
        for i in 0..60 {
            let r = https("site.test", addr, &cacert, "/", &[]);
            if r.status != 200 || r.text() != "web\n" {
                failures.push((i, r.status, r.text()));
            }
        }
        failures
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    ca.issue("site", &["site.test"]);
    assert!(
        wait_until(Duration::from_secs(10), || version(&dp) == Some(2)).await,
        "{}",
        dp.log_text()
    );
    let failures = tokio::task::spawn_blocking(move || load.join().expect("load thread"))
        .await
        .expect("join");
    assert!(
        failures.is_empty(),
        "requests failed during rotation: {failures:?}"
    );

    assert_eq!(
        get_on(&mut open).await,
        (200, "web\n".to_string()),
        "the connection opened before the rotation"
    );
    let (ok, after) = s_client(addr, &["-servername", "site.test"]);
    assert!(ok, "{after}");
    let after = certs::served_pem(&after).expect("certificate");
    assert_ne!(before, after, "the old certificate is still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_picks_the_backend_by_sni() {
    let lab = Lab::new(BIN, "tls-pass");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    let (a_cert, a_key) = ca.issue("a", &["a.pass.test"]);
    let (b_cert, b_key) = ca.issue("b", &["b.pass.test"]);
    let (pa, pb) = (free_port().expect("port"), free_port().expect("port"));
    let _a = SServer::start(pa, &a_cert, &a_key);
    let _b = SServer::start(pb, &b_cert, &b_key);
    let port = free_port().expect("port");
    let groups = format!(
        "  backendGroups:\n    - name: a\n      backends: [{{name: a, address: 127.0.0.1, port: {pa}}}]\n"
    );
    // A second listener has no route for other names.
    let strict = free_port().expect("port");
    let listener = format!(
        "      backends: [{{name: b, address: 127.0.0.1, port: {pb}}}]\n      routes:\n        - name: a\n          hostnames: [a.pass.test, \"*.a.pass.test\"]\n          backendRefs: [{{name: a}}]\n    - name: strict\n      port: {strict}\n      protocol: TLS\n      routes:\n        - name: a\n          hostnames: [a.pass.test]\n          backendRefs: [{{name: a}}]\n"
    );
    let dp = lab.start(&yaml(port, "TLS", &listener, &groups));
    let addr = front(port);
    let cases = [
        (Some("a.pass.test"), "CN = a.pass.test"),
        (Some("x.a.pass.test"), "CN = a.pass.test"),
        (Some("other.test"), "CN = b.pass.test"),
        (None, "CN = b.pass.test"),
    ];
    assert_subjects(addr, &cases);

    let (ok, text) = s_client(front(strict), &["-servername", "a.pass.test"]);
    assert!(ok && text.contains("CN = a.pass.test"), "{text}");
    let (ok, text) = s_client(front(strict), &["-servername", "other.test"]);
    assert!(!ok, "a name without a route reached a backend: {text}");
    assert!(
        wait_until(Duration::from_secs(5), || tls_errors(&dp, "no_route")
            >= 1.0)
        .await,
        "{}",
        dp.metrics().unwrap_or_default()
    );

    // Not TLS at all: closed and counted.
    let mut plain = std::net::TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(&mut plain, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut plain, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a plain request got an answer");
    assert!(
        wait_until(Duration::from_secs(5), || tls_errors(&dp, "not_tls") >= 1.0).await,
        "{}",
        dp.metrics().unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_is_verified_against_the_ca() {
    let lab = Lab::new(BIN, "tls-backend");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    // Only its certificate file is used: the bad group trusts it instead of `ca`.
    Ca::new(&lab.dir, "other", "Some Other CA");
    let (cert, key) = ca.issue("backend", &["backend.internal"]);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("read pem");
    let secure = backends::https(
        "secure",
        "127.0.0.1:0".parse().expect("addr"),
        &read(&cert),
        &read(&key),
    )
    .await
    .expect("backend");
    let group = |name: &str, ca_file: &str, extra: &str| {
        format!(
            "    - name: {name}\n      backends: [{{name: {name}, address: 127.0.0.1, port: {}}}]\n      backendTls: {{caFile: {ca_file}, serverName: backend.internal}}\n{extra}",
            secure.port()
        )
    };
    // The good group is health-checked over TLS: a plain-text check would fail and take
    // its only server down.
    let check = "      healthCheck: {type: HTTP, path: /health, interval: 100ms, downInterval: 100ms, timeout: 1s, rise: 1, fall: 1}\n";
    let skip = format!(
        "    - name: skip\n      backends: [{{name: skip, address: 127.0.0.1, port: {}}}]\n      backendTls: {{insecureSkipVerify: true}}\n",
        secure.port()
    );
    // A TCP check of a TLS group completes the handshake: an untrusted server is down.
    let tcp = "      healthCheck: {type: TCP, interval: 100ms, downInterval: 100ms, timeout: 1s, rise: 1, fall: 1}\n";
    let groups = format!(
        "  backendGroups:\n{}{}{}{skip}",
        group("good", "ca.crt", check),
        group("bad", "other.crt", ""),
        group("untrusted", "other.crt", tcp)
    );
    let port = free_port().expect("port");
    let listener = "      routes:\n        - name: good\n          matches: [{path: {value: /good}}]\n          backendRefs: [{name: good}]\n        - name: bad\n          matches: [{path: {value: /bad}}]\n          backendRefs: [{name: bad}]\n        - name: skip\n          matches: [{path: {value: /skip}}]\n          backendRefs: [{name: skip}]\n        - name: untrusted\n          matches: [{path: {value: /untrusted}}]\n          backendRefs: [{name: untrusted}]\n";
    let dp = lab.start(&yaml(port, "HTTP", listener, &groups));
    let checks = |backend: &str, result: &str| {
        dp.metrics().map_or(0.0, |m| {
            let labels = [("backend", backend), ("result", result)];
            metric_sum(&m, "halo_health_checks_total", &labels)
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || checks("good/good", "pass")
            >= 3.0
            && checks("untrusted/untrusted", "fail") >= 3.0)
        .await,
        "{}",
        dp.metrics().unwrap_or_default()
    );
    assert_eq!(checks("good/good", "fail"), 0.0);
    assert_eq!(checks("untrusted/untrusted", "pass"), 0.0);
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let r = curl(&[&url("/good")]).expect("curl");
    assert_eq!((r.status, r.text().as_str()), (200, "secure\n"));
    let r = curl(&[&url("/bad")]).expect("curl");
    assert_eq!(r.status, 502, "{}", r.text());
    // Not verified at all: the wrong name (the backend's address) and no CA are fine.
    let r = curl(&[&url("/skip")]).expect("curl");
    assert_eq!((r.status, r.text().as_str()), (200, "secure\n"));
    let r = curl(&[&url("/untrusted")]).expect("curl");
    assert_eq!(r.status, 503, "{}", r.text());
    let m = dp.metrics().unwrap_or_default();
    assert!(
        metric_sum(&m, "halo_backend_errors_total", &[("kind", "tls")]) >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_match_its_certificate_is_refused_and_the_old_one_serves() {
    let lab = Lab::new(BIN, "tls-badkey");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    ca.issue("site", &["site.test"]);
    ca.issue("stray", &["stray.test"]);
    let port = free_port().expect("port");
    let listener = |key: &str| {
        format!(
            "      tls:\n        certificates: [{{certFile: site.crt, keyFile: {key}}}]\n      backends: [{{name: web, address: 127.0.0.1, port: 9}}]\n"
        )
    };
    let dp = lab.start_with(
        &yaml(port, "HTTPS", &listener("site.key"), ""),
        &["--settle", "200ms"],
    );
    let addr = front(port);

    // Both are PEM of the right kinds, so only the data plane can tell.
    lab.write(&yaml(port, "HTTPS", &listener("stray.key"), ""));
    let out = std::process::Command::new(BIN)
        .args(["check", "--node", "node-a", "--config"])
        .arg(&lab.config)
        .output()
        .expect("run check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("listener test/site/main: tls.certificates[0]: ")
            && err.contains("the private key does not belong to the certificate"),
        "{err}"
    );
    let rejected = || {
        dp.metrics().is_ok_and(|m| {
            metric_sum(&m, "halo_config_reloads_total", &[("result", "rejected")]) >= 1.0
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), rejected).await,
        "{}",
        dp.log_text()
    );
    assert!(
        dp.log_text().contains("tls.certificates[0]"),
        "{}",
        dp.log_text()
    );
    assert_eq!(version(&dp), Some(1));
    let (ok, text) = s_client(addr, &["-servername", "site.test"]);
    assert!(ok, "{text}");
    assert_eq!(certs::subject(&text), Some("subject=CN = site.test"));
}

/// `check` now loads every certificate and key too: the shipped L7 examples (their
/// certificates under `certs/`) must still pass it.
#[test]
fn the_l7_examples_pass_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/l7");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        seen += 1;
        let out = std::process::Command::new(BIN)
            .args(["check", "--node", "lb1", "--config"])
            .arg(&path)
            .output()
            .expect("run check");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        seen >= 10,
        "only {seen} examples found in {}",
        dir.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_backends_over_tls_negotiate_h2() {
    let lab = Lab::new(BIN, "tls-h2-backend");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    ca.issue("site", &["site.test"]);
    let (cert, key) = ca.issue("greeter", &["greeter.internal"]);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("read pem");
    // Accepts only ALPN h2: a request reaching it proves the proxy offered h2.
    let greeter = halo_tests::h2::grpc_echo_tls(
        "greeter",
        "127.0.0.1:0".parse().expect("addr"),
        &read(&cert),
        &read(&key),
    )
    .await
    .expect("backend");
    let port = free_port().expect("port");
    let groups = format!(
        "  backendGroups:\n    - name: greeter\n      backendProtocol: HTTP2\n      backendTls: {{caFile: ca.crt, serverName: greeter.internal}}\n      backends: [{{name: g, address: 127.0.0.1, port: {}}}]\n",
        greeter.port()
    );
    let listener = "      tls:\n        certificates: [{certFile: site.crt, keyFile: site.key}]\n      routes:\n        - name: greeter\n          backendRefs: [{name: greeter}]\n";
    let _dp = lab.start(&yaml(port, "HTTPS", listener, &groups));
    let args = [
        "--http2",
        "-X",
        "POST",
        "--data-binary",
        "ping",
        "-H",
        "content-type: application/grpc",
        "-D",
        "-",
    ];
    let r = https(
        "site.test",
        front(port),
        &ca.cert,
        "/helloworld.Greeter/SayHello",
        &args,
    );
    assert_eq!((r.status, r.version.as_str()), (200, "2"), "{}", r.text());
    let text = r.text();
    // curl -D prints the head, the echoed body, then the trailers.
    assert!(
        text.contains("x-backend: greeter")
            && text.contains("\r\n\r\nping")
            && text.contains("grpc-status: 0"),
        "{text}"
    );
    assert_eq!(greeter.served(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_https_listener_answers_503_until_a_connection_closes() {
    let lab = Lab::new(BIN, "tls-full");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    ca.issue("site", &["site.test"]);
    let web = backends::http("web", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let port = free_port().expect("port");
    let listener = format!(
        "      maxConnections: 1\n      tls:\n        certificates: [{{certFile: site.crt, keyFile: site.key}}]\n      backends: [{{name: web, address: 127.0.0.1, port: {}}}]\n",
        web.port()
    );
    let _dp = lab.start(&yaml(port, "HTTPS", &listener, ""));
    let addr = front(port);
    let ca_pem = std::fs::read_to_string(&ca.cert).expect("ca");
    let tls = certs::tls_connect(addr, "site.test", &ca_pem, &["http/1.1"])
        .await
        .expect("TLS connection");
    let (mut held, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    let driver = tokio::spawn(conn);
    assert_eq!(get_on(&mut held).await, (200, "web\n".to_string()));

    let r = https("site.test", addr, &ca.cert, "/", &[]);
    assert_eq!(r.status, 503, "{}", r.text());

    drop(held);
    driver.abort();
    let freed = wait_until(Duration::from_secs(5), || {
        https("site.test", addr, &ca.cert, "/", &[]).status == 200
    })
    .await;
    assert!(freed, "the slot was not given back");
}

/// The `name=value` of the Set-Cookie header for `name` in a `-D -` dump, and its attributes.
fn set_cookie(dump: &str, name: &str) -> Option<(String, String)> {
    dump.lines().find_map(|line| {
        let (header, value) = line.split_once(':')?;
        if !header.eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let value = value.trim();
        let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
        pair.starts_with(&format!("{name}="))
            .then(|| (pair.to_string(), attributes.to_string()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_persistence_over_https_sets_secure_cookies_that_pin_the_backend() {
    let lab = Lab::new(BIN, "tls-cookie");
    let ca = Ca::new(&lab.dir, "ca", "Halo Test CA");
    ca.issue("site", &["site.test"]);
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let a = backends::http("a", any).await.expect("backend");
    let b = backends::http("b", any).await.expect("backend");
    let port = free_port().expect("port");
    let listener = format!(
        "      tls:\n        certificates: [{{certFile: site.crt, keyFile: site.key}}]\n      sessionPersistence: {{type: Cookie, cookie: {{name: SRV}}}}\n      backends:\n        - {{name: a, address: 127.0.0.1, port: {}}}\n        - {{name: b, address: 127.0.0.1, port: {}}}\n",
        a.port(),
        b.port()
    );
    let _dp = lab.start(&yaml(port, "HTTPS", &listener, ""));
    let addr = front(port);

    for flag in ["--http1.1", "--http2"] {
        let first = https("site.test", addr, &ca.cert, "/", &[flag, "-D", "-"]);
        assert_eq!(first.status, 200, "{flag}: {}", first.text());
        let dump = first.text();
        let (pair, attributes) = set_cookie(&dump, "SRV").expect("a SRV cookie");
        let attributes = attributes.to_ascii_lowercase();
        assert!(attributes.contains("secure"), "{flag}: {attributes}");
        assert!(attributes.contains("httponly"), "{flag}: {attributes}");
        let home = if dump.ends_with("a\n") { "a\n" } else { "b\n" };
        assert!(dump.ends_with(home), "{flag}: {dump}");
        // Round robin would alternate; the cookie keeps every request on the first backend.
        let cookie = format!("Cookie: {pair}");
        for _ in 0..6 {
            let r = https("site.test", addr, &ca.cert, "/", &[flag, "-H", &cookie]);
            assert_eq!((r.status, r.text().as_str()), (200, home), "{flag}");
        }
    }
}
