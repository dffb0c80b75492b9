//! PROXY protocol v1/v2 against HAProxy, an independent implementation, on both sides of
//! the data plane: HAProxy in front (`send-proxy`, `send-proxy-v2`) to a listener that
//! accepts the header from its address, and HAProxy behind (`accept-proxy`) a group that
//! sends it, answering with the client address it read. Clients connect from 127.0.0.2
//! so the original client differs from the hop that carries its connection (127.0.0.1).

use std::net::SocketAddr;
use std::time::Duration;

use halo_tests::backends::free_port;
use halo_tests::curl::{Reply, curl};
use halo_tests::haproxy::{self, Haproxy};
use halo_tests::raw::{self, Recorder};
use halo_tests::standalone::{Lab, front, metric_sum, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");
const REPLY: Duration = Duration::from_secs(5);
/// The original client: not the address HAProxy or the data plane connect from.
const CLIENT: &str = "127.0.0.2";
/// A source no listener lists.
const STRANGER: &str = "127.0.0.3";
const LISTENER: &str = "test/site/main";

fn get_from(source: &str, url: &str, extra: &[&str]) -> anyhow::Result<Reply> {
    let mut args = vec!["--interface", source];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args)
}

fn errors(dp: &halo_tests::process::DataPlane, metric: &str, reason: &str) -> f64 {
    metric_sum(
        &dp.metrics().unwrap_or_default(),
        metric,
        &[("listener", LISTENER), ("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_sends_the_client_address_halo_takes_it_from_listed_sources_only() {
    assert!(
        haproxy::available(),
        "haproxy not installed: scripts/install-test-deps.sh installs it"
    );
    let lab = Lab::new(BIN, "pp-front");
    let backend: Recorder = raw::recording(|_| raw::ok("web")).await.expect("backend");
    let port = free_port().expect("port");
    let dp = lab.start(&format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n  listeners:\n    - name: main\n      port: {port}\n      protocol: HTTP\n      acceptProxyProtocol: [127.0.0.1/32]\n      backends:\n        - {{name: web, address: 127.0.0.1, port: {}}}\n",
        backend.port()
    ));
    // Three HAProxy frontends onto the one listener: v1, v2 with a TLV (CRC32C, which
    // a receiver must skip or check), and v1 from a source the listener does not list.
    let (v1, v2, spoof) = (
        front(free_port().expect("port")),
        front(free_port().expect("port")),
        front(free_port().expect("port")),
    );
    let halo = front(port);
    let config = format!(
        "frontend v1\n    bind {v1}\n    default_backend halo_v1\nbackend halo_v1\n    server halo {halo} send-proxy\n\n\
         frontend v2\n    bind {v2}\n    default_backend halo_v2\nbackend halo_v2\n    server halo {halo} send-proxy-v2 proxy-v2-options crc32c\n\n\
         frontend spoof\n    bind {spoof}\n    default_backend halo_spoof\nbackend halo_spoof\n    server halo {halo} send-proxy source {STRANGER}\n"
    );
    let hap = Haproxy::start(&lab.dir, "front", &config, &[v1, v2, spoof]).expect("haproxy");

    for (version, at) in [("v1", v1), ("v2", v2)] {
        let reply = get_from(CLIENT, &format!("http://{at}/{version}"), &[]).expect("curl");
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "web"),
            "{version}:\n{}\n{}",
            dp.log_text(),
            hap.log_text()
        );
    }
    let seen = backend.wait_requests(2, REPLY).await;
    for version in ["v1", "v2"] {
        let r = seen
            .iter()
            .find(|r| r.target() == format!("/{version}"))
            .unwrap_or_else(|| panic!("{version} did not reach the backend: {seen:?}"));
        assert_eq!(
            r.header("x-forwarded-for"),
            [CLIENT],
            "{version}: the backend was not told the original client"
        );
    }
    assert_eq!(
        errors(&dp, "halo_proxy_protocol_errors_total", "missing"),
        0.0
    );

    // A header from a source not listed is not taken as a client address: refused
    // with a 400 and closed, nothing reaches the backend, counted as `unlisted`.
    let spoofed = get_from(CLIENT, &format!("http://{spoof}/spoof"), &[]).expect("curl");
    assert_eq!(spoofed.status, 400, "{}", hap.log_text());
    let direct = get_from(
        STRANGER,
        &format!("http://{halo}/direct"),
        &["--haproxy-protocol"],
    )
    .expect("curl");
    assert_eq!(direct.status, 400);
    assert!(
        backend.requests().len() == 2,
        "a request behind an unlisted header reached the backend: {:?}",
        backend.requests()
    );
    assert_eq!(
        errors(&dp, "halo_proxy_protocol_errors_total", "unlisted"),
        2.0,
        "{}",
        dp.metrics().unwrap_or_default()
    );

    // A listed source must send the header: without one (plain curl from 127.0.0.1),
    // and with a malformed one, the connection is closed unanswered and counted.
    assert!(curl(&[&format!("http://{halo}/plain")]).is_err());
    let mut bad = raw::Client::open(halo).await.expect("connect");
    bad.send(b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    assert!(bad.closed_within(REPLY).await);
    assert!(bad.unread().is_empty(), "answered: {:?}", bad.unread());
    assert!(
        wait_until(REPLY, || errors(
            &dp,
            "halo_proxy_protocol_errors_total",
            "missing"
        ) >= 1.0
            && errors(&dp, "halo_proxy_protocol_errors_total", "malformed")
                >= 1.0)
        .await,
        "{}",
        dp.metrics().unwrap_or_default()
    );
    assert_eq!(backend.requests().len(), 2);
}

/// An HAProxy frontend that needs a PROXY header and answers every request with the
/// client address and the destination the header named.
fn echo_section(name: &str, at: SocketAddr) -> String {
    format!(
        "frontend {name}\n    bind {at} accept-proxy\n    http-request return status 200 content-type text/plain lf-string \"%ci %fi:%fp\"\n\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halo_sends_v1_and_v2_that_haproxy_reads_on_http_tcp_and_health_checks() {
    assert!(
        haproxy::available(),
        "haproxy not installed: scripts/install-test-deps.sh installs it"
    );
    let lab = Lab::new(BIN, "pp-back");
    let (e1, e2, e3) = (
        front(free_port().expect("port")),
        front(free_port().expect("port")),
        front(free_port().expect("port")),
    );
    let config = [
        echo_section("v1", e1),
        echo_section("v2", e2),
        echo_section("tcp", e3),
    ]
    .concat();
    let hap = Haproxy::start(&lab.dir, "back", &config, &[e1, e2, e3]).expect("haproxy");
    let (http, grouped, tcp) = (
        free_port().expect("port"),
        free_port().expect("port"),
        free_port().expect("port"),
    );
    // v1 from a listener's own backends; v2 from a backend group whose HTTP health check
    // must also open with a header (a LOCAL one) or HAProxy drops it; v2 on TCP.
    let dp = lab.start(&format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n  backendGroups:\n    - name: echo\n      sendProxyProtocol: V2\n      healthCheck: {{type: HTTP, path: /health, interval: 1s, rise: 1}}\n      backends:\n        - {{name: v2, address: 127.0.0.1, port: {}}}\n  listeners:\n    - name: http\n      port: {http}\n      protocol: HTTP\n      sendProxyProtocol: V1\n      backends:\n        - {{name: v1, address: 127.0.0.1, port: {}}}\n    - name: grouped\n      port: {grouped}\n      protocol: HTTP\n      routes:\n        - name: all\n          backendRefs: [{{name: echo}}]\n    - name: tcp\n      port: {tcp}\n      protocol: TCP\n      sendProxyProtocol: V2\n      backends:\n        - {{name: tcp, address: 127.0.0.1, port: {}}}\n",
        e2.port(),
        e1.port(),
        e3.port()
    ));

    // Health checks pass only if HAProxy took the header they open with (a LOCAL one).
    let checks = |result: &str| {
        metric_sum(
            &dp.metrics().unwrap_or_default(),
            "halo_health_checks_total",
            &[("result", result)],
        )
    };
    assert!(
        wait_until(Duration::from_secs(10), || checks("pass") >= 2.0).await,
        "health checks through accept-proxy did not pass: {}\n{}",
        dp.metrics().unwrap_or_default(),
        hap.log_text()
    );
    assert_eq!(checks("fail"), 0.0);
    assert!(
        dp.status_json()
            .is_ok_and(|s| backend_up(&s, "test/site/grouped")),
        "{}",
        dp.status_json().unwrap_or_default()
    );
    for (what, port) in [("V1", http), ("V2 group", grouped), ("V2 TCP", tcp)] {
        // Twice: a second request must not find a pooled connection without a header.
        for _ in 0..2 {
            let reply = get_from(CLIENT, &format!("http://127.0.0.1:{port}/"), &[])
                .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", hap.log_text()));
            assert_eq!(
                (reply.status, reply.text()),
                (200, format!("{CLIENT} 127.0.0.1:{port}")),
                "{what}: HAProxy read another client or destination\n{}",
                dp.log_text()
            );
        }
    }
}

/// Whether every backend of listener `name` in a `/status` document is up.
fn backend_up(status: &str, name: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(status) else {
        return false;
    };
    let backends: Vec<serde_json::Value> = v["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["name"] == name)
        .flat_map(|l| l["backends"].as_array().cloned().unwrap_or_default())
        .collect();
    !backends.is_empty() && backends.iter().all(|b| b["up"] == true)
}

/// The hyper engine (HTTPS listener, over HTTP/1.1 and HTTP/2) opens every backend
/// connection with the header too, and pools none of them for another client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_sends_the_header_on_every_backend_connection() {
    assert!(
        haproxy::available(),
        "haproxy not installed: scripts/install-test-deps.sh installs it"
    );
    let lab = Lab::new(BIN, "pp-https");
    let ca = halo_tests::certs::Ca::new(&lab.dir, "ca", "Halo Test CA");
    ca.issue("site", &["site.test"]);
    let echo = front(free_port().expect("port"));
    let hap =
        Haproxy::start(&lab.dir, "back", &echo_section("v2", echo), &[echo]).expect("haproxy");
    let port = free_port().expect("port");
    let _dp = lab.start(&format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n  backendGroups:\n    - name: echo\n      sendProxyProtocol: V2\n      backends:\n        - {{name: v2, address: 127.0.0.1, port: {}}}\n  listeners:\n    - name: main\n      port: {port}\n      protocol: HTTPS\n      tls:\n        certificates: [{{certFile: site.crt, keyFile: site.key}}]\n      routes:\n        - name: all\n          backendRefs: [{{name: echo}}]\n",
        echo.port()
    ));
    let url = format!("https://site.test:{port}/");
    let resolve = format!("site.test:{port}:127.0.0.1");
    for flag in ["--http1.1", "--http2"] {
        for _ in 0..2 {
            let reply = get_from(CLIENT, &url, &["-k", "--resolve", &resolve, flag])
                .unwrap_or_else(|e| panic!("{flag}: {e:#}\n{}", hap.log_text()));
            assert_eq!(
                (reply.status, reply.text()),
                (200, format!("{CLIENT} 127.0.0.1:{port}")),
                "{flag}: HAProxy read another client or destination\n{}",
                hap.log_text()
            );
        }
    }
}
