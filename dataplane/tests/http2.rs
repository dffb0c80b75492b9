//! HTTP/2 clients through the real data plane: curl and h2load with prior knowledge
//! (h2c) on a plain listener, a gRPC-shaped exchange with trailers to an HTTP/2 backend,
//! large bodies both ways, gateway errors, and a WebSocket over extended CONNECT.

use std::time::Duration;

use bytes::Bytes;
use halo_tests::backends::{self, free_port};
use halo_tests::curl::{curl, h2load};
use halo_tests::h2;
use halo_tests::process::DataPlane;
use halo_tests::standalone::{self, front, lb, metric_sum};
use hyper::Request;

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");
const H2C: &str = "      http2PriorKnowledge: true\n";
const LISTENER: (&str, &str) = ("listener", "test/site/main");

fn lab(name: &str) -> standalone::Lab {
    standalone::Lab::new(BIN, name)
}

fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

fn responses(dp: &DataPlane, class: &str) -> f64 {
    let text = dp.metrics().expect("metrics");
    metric_sum(
        &text,
        "halo_http_responses_total",
        &[LISTENER, ("code", class)],
    )
}

/// Runs a blocking client off the test's event loop, which serves the backends.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("client thread")
}

#[tokio::test]
async fn curl_speaks_h2c_and_http1_on_the_same_listener() {
    let web = backends::http("web-1", loopback()).await.expect("backend");
    let lab = lab("h2c");
    let port = free_port().expect("port");
    let dp = lab.start(&lb(port, "HTTP", H2C, &[("web-1", web.port())]));

    let u = url(port, "/headers");
    let r = blocking(move || curl(&["--http2-prior-knowledge", &u])).await;
    let r = r.expect("curl h2c");
    assert_eq!((r.version.as_str(), r.status), ("2", 200), "{}", r.text());
    let body = r.text();
    assert!(
        body.contains(&format!("host: 127.0.0.1:{port}\n")),
        "{body}"
    );
    assert!(body.contains("x-forwarded-for: 127.0.0.1\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert!(
        body.contains(&format!(
            "forwarded: for=127.0.0.1;proto=http;host=\"127.0.0.1:{port}\"\n"
        )),
        "{body}"
    );

    let u = url(port, "/");
    let r = blocking(move || curl(&["--http1.1", &u])).await;
    let r = r.expect("curl h1");
    assert_eq!((r.version.as_str(), r.status), ("1.1", 200));
    assert_eq!(r.text().trim(), "web-1");
    assert_eq!(web.served(), 2);
    assert!(responses(&dp, "2xx") >= 2.0);
}

#[tokio::test]
async fn a_listener_without_h2c_does_not_speak_http2() {
    let web = backends::http("web-1", loopback()).await.expect("backend");
    let lab = lab("no-h2c");
    let port = free_port().expect("port");
    let _dp = lab.start(&lb(port, "HTTP", "", &[("web-1", web.port())]));
    let u = url(port, "/");
    let r = blocking(move || curl(&["--http2-prior-knowledge", &u])).await;
    assert!(
        r.as_ref().map_or(true, |r| r.version != "2"),
        "HTTP/2 answered on a listener without http2PriorKnowledge"
    );
    assert_eq!(web.served(), 0);
}

#[tokio::test]
async fn h2load_multiplexed_requests_all_succeed() {
    let a = backends::http("web-1", loopback()).await.expect("backend");
    let b = backends::http("web-2", loopback()).await.expect("backend");
    let lab = lab("h2load");
    let port = free_port().expect("port");
    let dp = lab.start(&lb(
        port,
        "HTTP",
        H2C,
        &[("web-1", a.port()), ("web-2", b.port())],
    ));
    let u = url(port, "/");
    let load = blocking(move || h2load(&["-n", "2000", "-c", "4", "-m", "10", &u])).await;
    let load = load.expect("h2load");
    assert_eq!(
        (load.succeeded, load.failed, load.errored),
        (2000, 0, 0),
        "{}",
        load.output
    );
    assert_eq!(a.served() + b.served(), 2000);
    // Round robin over both, and the backends' keep-alive connections were reused.
    assert!(a.served() >= 900 && b.served() >= 900);
    let opened = metric_sum(
        &dp.metrics().expect("metrics"),
        "halo_backend_connections_opened_total",
        &[LISTENER],
    );
    assert!(
        opened <= 200.0,
        "{opened} backend connections for 2000 requests"
    );
    assert!(responses(&dp, "2xx") >= 2000.0);
}

fn grpc_request(port: u16, body: Bytes) -> Request<h2::Body> {
    Request::builder()
        .method("POST")
        .uri(url(port, "/echo.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(h2::full(body))
        .expect("request")
}

#[tokio::test]
async fn grpc_shaped_calls_get_their_trailers_over_one_backend_connection() {
    let grpc = h2::grpc_echo("grpc-1", loopback()).await.expect("backend");
    let lab = lab("grpc");
    let port = free_port().expect("port");
    let extra = format!("{H2C}      backendProtocol: HTTP2\n");
    let dp = lab.start(&lb(port, "HTTP", &extra, &[("grpc-1", grpc.port())]));

    let mut client = h2::connect(front(port)).await.expect("h2 client");
    let mut calls = Vec::new();
    for i in 0..8u8 {
        let req = grpc_request(port, Bytes::from(vec![i; 5]));
        calls.push(client.send_request(req));
    }
    for (i, call) in calls.into_iter().enumerate() {
        let response = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("in time")
            .expect("response");
        let reply = h2::read(response).await.expect("body");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers["x-backend"], "grpc-1");
        assert_eq!(
            reply.headers["x-te"], "trailers",
            "te: trailers reaches the backend"
        );
        assert_eq!(&reply.body[..], &[i as u8; 5][..]);
        let trailers = reply.trailers.expect("trailers arrive");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "grpc-1");
    }
    assert_eq!(grpc.served(), 8);
    let opened = metric_sum(
        &dp.metrics().expect("metrics"),
        "halo_backend_connections_opened_total",
        &[LISTENER],
    );
    assert_eq!(opened, 1.0, "requests multiplex on one backend connection");
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let web = backends::http("web-1", loopback()).await.expect("backend");
    let grpc = h2::grpc_echo("grpc-1", loopback()).await.expect("backend");
    let lab = lab("large");
    let (p1, p2) = (free_port().expect("port"), free_port().expect("port"));
    let yaml = format!(
        "{}---\n{}",
        lb(p1, "HTTP", H2C, &[("web-1", web.port())]).replace("name: site", "name: one"),
        lb(
            p2,
            "HTTP",
            &format!("{H2C}      backendProtocol: HTTP2\n"),
            &[("grpc-1", grpc.port())]
        )
        .replace("name: site", "name: two"),
    );
    let _dp = lab.start(&yaml);

    // 8 MiB up through curl to an HTTP/1.1 backend that echoes it back (as text, so
    // the bytes are printable).
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| b'!' + (i % 94) as u8)
        .collect();
    let file = lab.dir.join("payload.bin");
    std::fs::write(&file, &payload).expect("payload");
    let (u, f) = (url(p1, "/upload"), format!("@{}", file.display()));
    let r = blocking(move || curl(&["--http2-prior-knowledge", "--data-binary", &f, &u])).await;
    let r = r.expect("curl upload");
    assert_eq!((r.version.as_str(), r.status), ("2", 200));
    assert!(r.body == payload, "echo of {} bytes differs", r.body.len());

    // 16 MiB through the HTTP/2 backend, streamed both ways with flow control.
    let big = Bytes::from(
        (0..16 * 1024 * 1024u32)
            .map(|i| (i % 241) as u8)
            .collect::<Vec<_>>(),
    );
    let mut client = h2::connect(front(p2)).await.expect("h2 client");
    let call = client.send_request(grpc_request(p2, big.clone()));
    let response = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("in time")
        .expect("response");
    let reply = tokio::time::timeout(Duration::from_secs(30), h2::read(response))
        .await
        .expect("in time")
        .expect("body");
    let trailers = reply.trailers.expect("trailers");
    assert_eq!(trailers["x-received"], big.len().to_string().as_str());
    assert!(
        reply.body == big,
        "echo of {} bytes differs",
        reply.body.len()
    );
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test]
async fn dead_backends_answer_503_and_slow_ones_504() {
    let web = backends::http("web-1", loopback()).await.expect("backend");
    let dead = free_port().expect("port");
    let lab = lab("gateway");
    let (p1, p2) = (free_port().expect("port"), free_port().expect("port"));
    let slow = format!("{H2C}      timeouts: {{server: 300ms}}\n");
    let yaml = format!(
        "{}---\n{}",
        lb(p1, "HTTP", H2C, &[("gone", dead)]).replace("name: site", "name: one"),
        lb(p2, "HTTP", &slow, &[("web-1", web.port())]).replace("name: site", "name: two"),
    );
    let dp = lab.start(&yaml);

    let u = url(p1, "/");
    let r = blocking(move || curl(&["--http2-prior-knowledge", &u])).await;
    let r = r.expect("curl");
    assert_eq!((r.version.as_str(), r.status), ("2", 503), "{}", r.text());

    let u = url(p2, "/slow?ms=3000");
    let r = blocking(move || curl(&["--http2-prior-knowledge", &u])).await;
    let r = r.expect("curl");
    assert_eq!((r.version.as_str(), r.status), ("2", 504), "{}", r.text());
    let u = url(p2, "/slow?ms=10");
    let r = blocking(move || curl(&["--http2-prior-knowledge", &u])).await;
    assert_eq!(
        r.expect("curl").status,
        200,
        "the same connection pool still serves"
    );

    let text = dp.metrics().expect("metrics");
    let count = |lb: &str, class: &str| {
        metric_sum(
            &text,
            "halo_http_responses_total",
            &[("listener", &format!("test/{lb}/main")), ("code", class)],
        )
    };
    assert_eq!((count("one", "5xx"), count("two", "5xx")), (1.0, 1.0));
}

#[tokio::test]
async fn websocket_over_extended_connect_reaches_an_http1_backend() {
    let ws = backends::ws_echo("ws-1", loopback())
        .await
        .expect("backend");
    let lab = lab("ws");
    let port = free_port().expect("port");
    let _dp = lab.start(&lb(port, "HTTP", H2C, &[("ws-1", ws.port())]));
    let mut client = h2::connect(front(port)).await.expect("h2 client");
    // The server's SETTINGS (with extended CONNECT enabled) arrive with the first answer.
    let warm = client
        .send_request(
            Request::get(url(port, "/"))
                .body(h2::full(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("response");
    let _ = h2::read(warm).await;
    let echoes = h2::ws_over_connect(&mut client, &url(port, "/chat"), &["hello", "world"])
        .await
        .expect("websocket");
    assert_eq!(echoes, ["hello", "world"]);
    assert_eq!(ws.served(), 1);
}

#[tokio::test]
async fn h2c_requests_follow_the_listeners_routes() {
    let (a, web) = (
        backends::http("a", loopback()).await.expect("backend"),
        backends::http("web", loopback()).await.expect("backend"),
    );
    let lab = lab("h2c-routes");
    let port = free_port().expect("port");
    let yaml = format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n  backendGroups:\n    - name: a\n      backends: [{{name: a, address: 127.0.0.1, port: {}}}]\n  listeners:\n    - name: main\n      port: {port}\n      protocol: HTTP\n{H2C}      backends: [{{name: web, address: 127.0.0.1, port: {}}}]\n      routes:\n        - name: api\n          hostnames: [api.test]\n          matches: [{{path: {{value: /v1}}}}]\n          filters:\n            - {{type: RequestHeaderModifier, requestHeaderModifier: {{add: [{{name: X-Route, value: api}}], remove: [x-drop]}}}}\n            - {{type: URLRewrite, urlRewrite: {{hostname: internal.api, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}}}\n          backendRefs: [{{name: a}}]\n        - name: moved\n          matches: [{{path: {{value: /old}}}}]\n          filters: [{{type: RequestRedirect, requestRedirect: {{scheme: https, statusCode: 308}}}}]\n        - name: down\n          matches: [{{path: {{type: Exact, value: /maintenance}}}}]\n          fixedResponse: {{statusCode: 503, body: back soon, contentType: text/html}}\n        - name: hurried\n          matches: [{{path: {{value: /slow}}}}]\n          timeouts: {{request: 300ms}}\n          backendRefs: [{{name: a}}]\n",
        a.port(),
        web.port()
    );
    let _dp = lab.start(&yaml);
    let get = |host: &'static str, path: &str, extra: &'static [&'static str]| {
        let u = url(port, path);
        let host = format!("Host: {host}");
        blocking(move || {
            let mut args = vec!["--http2-prior-knowledge", "-H", &host];
            args.extend_from_slice(extra);
            args.push(&u);
            curl(&args).expect("curl")
        })
    };
    let r = get("api.test", "/v1/headers", &["-H", "X-Drop: 1"]).await;
    assert_eq!((r.version.as_str(), r.status), ("2", 200), "{}", r.text());
    let body = r.text();
    assert!(body.contains("x-route: api\n"), "{body}");
    assert!(body.contains("host: internal.api\n"), "{body}");
    assert!(!body.contains("x-drop"), "{body}");
    assert!(body.contains("x-forwarded-host: api.test\n"), "{body}");

    // Another host misses the api route's bucket and gets the listener's backends.
    let r = get("www.test", "/v1/x", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "web\n"));

    let r = get("www.test", "/old/page?x=1", &["-D", "-"]).await;
    assert_eq!(r.status, 308);
    assert!(
        r.text().contains("location: https://www.test/old/page?x=1"),
        "{}",
        r.text()
    );

    // The route's timeout cuts a backend that answers after 2 s.
    let r = get("www.test", "/slow?ms=2000", &[]).await;
    assert_eq!(r.status, 504, "{}", r.text());

    let r = get("www.test", "/maintenance", &["-D", "-"]).await;
    assert_eq!(r.status, 503);
    let text = r.text();
    assert!(
        text.contains("content-type: text/html") && text.ends_with("back soon"),
        "{text}"
    );
}

#[tokio::test]
async fn http1_clients_reach_an_http2_backend_group_and_h2c_still_works() {
    let grpc = h2::grpc_echo("grpc-1", loopback()).await.expect("backend");
    let lab = lab("h1-to-h2");
    let port = free_port().expect("port");
    let extra = format!("{H2C}      backendProtocol: HTTP2\n");
    let _dp = lab.start(&lb(port, "HTTP", &extra, &[("grpc-1", grpc.port())]));
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let u = url(port, "/echo");
        let r =
            blocking(move || curl(&[flag, "-X", "POST", "--data-binary", "ping", "-D", "-", &u]))
                .await
                .expect("curl");
        let text = r.text();
        assert_eq!(r.status, 200, "{flag}: {text}");
        assert!(
            text.contains("x-backend: grpc-1") && text.contains("\r\n\r\nping"),
            "{flag}: {text}"
        );
    }
    assert_eq!(grpc.served(), 2);
}

/// Bodiless requests from HTTP/2 clients take the in-task HTTP/1.1 path: every response
/// framing arrives intact (Content-Length, chunked, until close, none for HEAD and 204),
/// connections are reused, a pooled connection the backend closed is replaced without
/// failing the request, and a response cut short is a 502, not a short 200.
#[tokio::test]
async fn every_response_framing_reaches_http2_clients_intact() {
    use halo_tests::raw::{self, Step};
    let backend = raw::recording(|r| {
        let send = |s: &str| Step::Send(Bytes::from(s.to_string()));
        match r.target().as_str() {
            "/chunked" => vec![send(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            )],
            "/close" => vec![send("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close"), Step::Close],
            "/empty" => vec![send("HTTP/1.1 204 No Content\r\n\r\n")],
            "/head" => vec![send("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")],
            "/then-close" => {
                let mut steps = raw::ok("pooled, then closed");
                steps.push(Step::Close);
                steps
            }
            "/cut" => vec![send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"), Step::Close],
            "/interim" => vec![send("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")],
            _ => raw::ok("length"),
        }
    })
    .await
    .expect("backend");
    let lab = lab("h2-direct");
    let port = free_port().expect("port");
    let _dp = lab.start(&lb(port, "HTTP", H2C, &[("b", backend.addr.port())]));
    let get = |path: &'static str, extra: &'static [&'static str]| {
        let u = url(port, path);
        async move {
            blocking(move || {
                let mut args = vec!["--http2-prior-knowledge"];
                args.extend_from_slice(extra);
                args.push(&u);
                curl(&args)
            })
            .await
        }
    };
    for (path, status, body) in [
        ("/length", 200, "length"),
        ("/chunked", 200, "hello world"),
        ("/length", 200, "length"),
        ("/close", 200, "until close"),
        ("/empty", 204, ""),
        ("/interim", 200, "final"),
        ("/then-close", 200, "pooled, then closed"),
        // The pooled connection was closed by the backend: a new one takes the request.
        ("/length", 200, "length"),
    ] {
        let r = get(path, &[]).await.expect("curl");
        assert_eq!(
            (r.version.as_str(), r.status, r.text().as_str()),
            ("2", status, body),
            "{path}"
        );
    }
    let r = get("/head", &["--head"]).await.expect("curl HEAD");
    // curl prints the head as the body of a HEAD: the length is the backend's, no body.
    assert_eq!(r.status, 200);
    assert!(r.text().contains("content-length: 42"), "{}", r.text());
    // The stream is reset (before or after the head went out): curl fails.
    let u = url(port, "/cut");
    let cut = blocking(move || {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", "--http2-prior-knowledge", &u])
            .output()
            .expect("run curl")
    })
    .await;
    assert!(
        !cut.status.success(),
        "a cut body must not look whole: {cut:?}"
    );

    // Connections were reused: one carried at least three requests.
    let requests = backend.requests();
    let seqs: Vec<(usize, usize)> = requests.iter().map(|r| (r.conn, r.seq)).collect();
    assert!(seqs.iter().any(|&(_, seq)| seq >= 2), "{seqs:?}");
}
