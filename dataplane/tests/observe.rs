//! Observability through the real data plane: the access log (one JSON line per HTTP
//! request or TCP session, sampling, termination codes, reopening after a rename),
//! per-backend statistics in `/metrics` and `/status`, and the `halo-dataplane status`
//! table. Recording backends (`halo_tests::raw`) answer; every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use halo_tests::backends::{self, free_port};
use halo_tests::process::DataPlane;
use halo_tests::raw::{self, Client, Recorder, Step};
use halo_tests::standalone::{Lab, front, metric_sum, wait_until};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");
const REPLY: Duration = Duration::from_secs(5);
const LOGGED: Duration = Duration::from_secs(10);
const LISTENER: &str = "test/site/main";

/// Answers with its name; `/cut` gets half of a 1000-byte body and a close, `/close` a
/// close before any answer, `/missing` a 404.
async fn backend(name: &'static str) -> Recorder {
    raw::recording(move |r| {
        let target = r.target();
        if target.ends_with("/cut") {
            vec![
                Step::Send(Bytes::from(format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{}",
                    "x".repeat(500)
                ))),
                Step::Close,
            ]
        } else if target.ends_with("/close") {
            vec![Step::Close]
        } else if target.ends_with("/missing") {
            vec![Step::Send(Bytes::from_static(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            ))]
        } else {
            raw::ok(name)
        }
    })
    .await
    .expect("recording backend")
}

/// Listener `main` (logged as `access`, when given) with route `api` to group `api`
/// (backend `one`, TCP-checked) and everything else to its own backend `web` (weight 5);
/// listener `quiet` has no access log.
fn manifest(ports: (u16, u16), api: u16, web: u16, access: &str) -> String {
    format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n  backendGroups:\n    - name: api\n      backends: [{{name: one, address: 127.0.0.1, port: {api}}}]\n      healthCheck: {{type: TCP, interval: 300ms}}\n  listeners:\n    - name: main\n      port: {}\n      protocol: HTTP\n{access}      backends:\n        - {{name: web, address: 127.0.0.1, port: {web}, weight: 5}}\n      routes:\n        - name: api\n          matches:\n            - path: {{type: PathPrefix, value: /api}}\n          backendRefs: [{{name: api}}]\n    - name: quiet\n      port: {}\n      protocol: HTTP\n      backends:\n        - {{name: web, address: 127.0.0.1, port: {web}}}\n",
        ports.0, ports.1
    )
}

fn file_log(path: &Path, percent: u8) -> String {
    format!(
        "      accessLog: {{target: File, path: {}, samplePercent: {percent}}}\n",
        path.display()
    )
}

/// Field order is drop order: the data plane stops before its backends and directory.
struct Rig {
    dp: DataPlane,
    main: u16,
    quiet: u16,
    log: PathBuf,
    api: Recorder,
    _web: Recorder,
    lab: Lab,
}

impl Rig {
    async fn start(test: &str, percent: Option<u8>) -> Rig {
        let (api, web) = (backend("one").await, backend("web").await);
        let lab = Lab::new(BIN, test);
        let log = lab.dir.join("access.log");
        let access = percent.map_or(String::new(), |p| file_log(&log, p));
        let (main, quiet) = (free_port().expect("port"), free_port().expect("port"));
        let dp = lab.start(&manifest((main, quiet), api.port(), web.port(), &access));
        Rig {
            dp,
            main,
            quiet,
            log,
            api,
            _web: web,
            lab,
        }
    }
}

/// Sends `request` on a fresh connection; returns the bytes of the response read.
async fn exchange(port: u16, request: &str) -> (u16, usize) {
    let mut c = Client::open(front(port)).await.expect("connect");
    c.send(request.as_bytes()).await.expect("send");
    let r = c.response(false, REPLY).await.expect("response");
    (r.status, r.head.len() + r.body.len())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n")
}

/// The access log's lines, each parsed as JSON.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits until the log has `n` lines.
async fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    wait_until(LOGGED, || lines(path).len() >= n).await;
    lines(path)
}

#[tokio::test]
async fn access_log_has_one_json_line_per_request_with_route_backend_status_and_bytes() {
    let rig = Rig::start("log-fields", Some(100)).await;
    let first = get("/api/items?token=secret");
    let (status, out1) = exchange(rig.main, &first).await;
    assert_eq!(status, 200);
    let post =
        "POST /other HTTP/1.1\r\nHost: site\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let (status, out2) = exchange(rig.main, post).await;
    assert_eq!(status, 200);

    let log = wait_lines(&rig.log, 2).await;
    assert_eq!(log.len(), 2, "{log:?}");
    let (a, b) = (&log[0], &log[1]);
    assert_eq!(a["listener"], LISTENER);
    assert_eq!(
        (&a["route"], &a["group"], &a["backend"]),
        (&"api".into(), &"api".into(), &"api/one".into()),
        "{a}"
    );
    assert_eq!(
        (&a["method"], &a["path"]),
        (&"GET".into(), &"/api/items".into())
    );
    assert_eq!(a["status"], 200);
    assert_eq!(a["bytesIn"], first.len());
    assert_eq!(a["bytesOut"], out1);
    assert_eq!(a["termination"], "--");
    assert!(
        a["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{a}"
    );
    let time = a["time"].as_str().expect("time");
    assert!(
        time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
        "{time}"
    );
    for field in ["queueMs", "connectMs", "responseMs", "totalMs"] {
        assert!(a[field].is_u64(), "{field}: {a}");
    }
    assert!(
        !a.to_string().contains("secret"),
        "the query is not logged: {a}"
    );

    assert_eq!(
        (&b["route"], &b["group"], &b["backend"]),
        (&"default".into(), &"default".into(), &"web".into()),
        "{b}"
    );
    assert_eq!(
        (&b["method"], &b["path"]),
        (&"POST".into(), &"/other".into())
    );
    assert_eq!(
        (b["bytesIn"].clone(), b["bytesOut"].clone()),
        (post.len().into(), out2.into())
    );
}

#[tokio::test]
async fn termination_codes_say_who_ended_the_exchange_and_when() {
    let rig = Rig::start("log-ends", Some(100)).await;
    let mut c = Client::open(front(rig.main)).await.expect("connect");
    c.send(get("/api/cut").as_bytes()).await.expect("send");
    assert!(c.closed_within(REPLY).await, "the client connection is cut");
    let (status, _) = exchange(rig.main, &get("/api/close")).await;
    assert!(status >= 500, "{status}");
    let bad = "GET /dup HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    assert_eq!(exchange(rig.main, bad).await.0, 400);

    let log = wait_lines(&rig.log, 3).await;
    let by_path = |path: &str| {
        log.iter()
            .find(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("no line for {path}: {log:?}"))
    };
    let cut = by_path("/api/cut");
    assert_eq!(cut["termination"], "SD", "closed mid-response: {cut}");
    assert_eq!(
        (&cut["status"], &cut["backend"]),
        (&200.into(), &"api/one".into())
    );
    let out = cut["bytesOut"].as_u64().expect("bytesOut");
    assert!((500..1000).contains(&out), "{cut}");
    let closed = by_path("/api/close");
    assert_eq!(
        closed["termination"], "SH",
        "closed before the head: {closed}"
    );
    assert_eq!(closed["status"], status);
    // A head that does not parse has no method or path to log.
    let refused = log
        .iter()
        .find(|l| l["status"] == 400)
        .expect("a line for the 400");
    assert_eq!(
        refused["termination"], "PR",
        "refused by the proxy: {refused}"
    );
    assert!(
        refused["backend"].is_null() && refused["path"].is_null(),
        "{refused}"
    );
}

#[tokio::test]
async fn sampling_keeps_every_other_request_and_every_error_and_an_unlogged_listener_writes_nothing()
 {
    let rig = Rig::start("log-sample", Some(50)).await;
    for path in ["/s0", "/s1", "/s2", "/s3"] {
        assert_eq!(exchange(rig.main, &get(path)).await.0, 200);
    }
    // The fifth request is not in a 50% sample, but an error is always logged.
    let mut c = Client::open(front(rig.main)).await.expect("connect");
    c.send(get("/api/cut").as_bytes()).await.expect("send");
    assert!(c.closed_within(REPLY).await);
    for path in ["/q0", "/q1", "/q2"] {
        assert_eq!(exchange(rig.quiet, &get(path)).await.0, 200);
    }
    for path in ["/after1", "/after2"] {
        assert_eq!(exchange(rig.main, &get(path)).await.0, 200);
    }
    let log = wait_lines(&rig.log, 4).await;
    let paths: Vec<&str> = log.iter().filter_map(|l| l["path"].as_str()).collect();
    assert_eq!(paths, ["/s0", "/s2", "/api/cut", "/after2"], "{log:?}");
    assert!(
        log.iter().all(|l| l["listener"] == LISTENER),
        "only the logged listener: {log:?}"
    );
    let text = rig.dp.log_text();
    assert!(
        !text.contains("\"termination\""),
        "nothing on stdout/stderr: {text}"
    );
}

#[tokio::test]
async fn a_renamed_log_file_is_reopened_like_logrotate_expects() {
    let rig = Rig::start("log-rotate", Some(100)).await;
    assert_eq!(exchange(rig.main, &get("/before")).await.0, 200);
    assert_eq!(wait_lines(&rig.log, 1).await.len(), 1);
    let rotated = rig.lab.dir.join("access.log.1");
    std::fs::rename(&rig.log, &rotated).expect("rotate");
    let mut reopened = false;
    for i in 0..50 {
        assert_eq!(exchange(rig.main, &get(&format!("/after{i}"))).await.0, 200);
        if !lines(&rig.log).is_empty() {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(reopened, "a new file appears at the old path");
    let old = lines(&rotated);
    assert_eq!(
        old.first().map(|l| l["path"].clone()),
        Some("/before".into())
    );
    assert!(lines(&rig.log).iter().all(|l| l["path"] != "/before"));
}

#[tokio::test]
async fn tcp_sessions_are_logged_with_their_backend_and_bytes() {
    let echo = backends::tcp_echo("echo", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("echo backend");
    let lab = Lab::new(BIN, "log-tcp");
    let log = lab.dir.join("access.log");
    let port = free_port().expect("port");
    let yaml =
        halo_tests::standalone::lb(port, "TCP", &file_log(&log, 100), &[("echo", echo.port())]);
    let _dp = lab.start(&yaml);
    let mut c = Client::open(front(port)).await.expect("connect");
    c.send(b"ping\n").await.expect("send");
    let mut got = Vec::new();
    for _ in 0..50 {
        got.extend(c.read_for(Duration::from_millis(100)).await);
        if got.len() >= b"echo\nping\n".len() {
            break;
        }
    }
    assert_eq!(got, b"echo\nping\n");
    drop(c);
    let lines = wait_lines(&log, 1).await;
    let line = lines.first().expect("a line for the session");
    assert_eq!(line["backend"], "echo");
    assert_eq!(
        (&line["bytesIn"], &line["bytesOut"]),
        (&5.into(), &10.into()),
        "{line}"
    );
    assert!(
        line["status"].is_null() && line["method"].is_null(),
        "{line}"
    );
    assert_eq!(line["termination"], "--");
    assert!(line["connectMs"].is_u64());
}

fn backend_status<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["name"] == LISTENER)
        .flat_map(|l| l["backends"].as_array().into_iter().flatten())
        .find(|b| b["name"] == name)
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn per_backend_statistics_move_with_requests_and_the_status_command_shows_them() {
    let rig = Rig::start("stats", None).await;
    for path in ["/api/a", "/api/b", "/api/c", "/missing"] {
        exchange(rig.main, &get(path)).await;
    }
    let metrics = rig.dp.metrics().expect("metrics");
    let m = |name: &str, backend: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("listener", LISTENER), ("backend", backend)];
        labels.extend_from_slice(extra);
        metric_sum(&metrics, name, &labels)
    };
    assert_eq!(
        m(
            "halo_backend_responses_total",
            "api/one",
            &[("code", "2xx")]
        ),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        m("halo_backend_responses_total", "web", &[("code", "4xx")]),
        1.0
    );
    assert_eq!(
        m("halo_backend_response_seconds_count", "api/one", &[]),
        3.0
    );
    assert_eq!(m("halo_backend_connect_seconds_count", "api/one", &[]), 3.0);
    assert!(m("halo_backend_bytes_in_total", "api/one", &[]) >= 3.0 * get("/api/a").len() as f64);
    assert!(m("halo_backend_bytes_out_total", "api/one", &[]) > 0.0);
    assert_eq!(m("halo_backend_weight", "web", &[]), 5.0);
    assert!(m("halo_backend_last_change_timestamp_seconds", "web", &[]) > 1.7e9);

    let passed = wait_until(LOGGED, || {
        let status: Value =
            serde_json::from_str(&rig.dp.status_json().unwrap_or_default()).unwrap_or_default();
        backend_status(&status, "api/one")["check"]["result"] == "passed"
    })
    .await;
    assert!(passed, "the TCP check passes");
    let status: Value = serde_json::from_str(&rig.dp.status_json().expect("status")).expect("json");
    let one = backend_status(&status, "api/one");
    assert_eq!(
        (&one["group"], &one["sessionsTotal"]),
        (&"api".into(), &3.into()),
        "{one}"
    );
    assert_eq!(one["responses"]["2xx"], 3);
    assert!(
        one["responseMsAvg"].is_number() && one["bytesOut"].as_u64() > Some(0),
        "{one}"
    );
    assert_eq!(backend_status(&status, "web")["responses"]["4xx"], 1);

    let out = Command::new(BIN)
        .args(["status", "--admin", &rig.lab.admin.to_string()])
        .output()
        .expect("run status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let row = |backend: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .find(|cells| {
                cells.first().map(String::as_str) == Some(LISTENER)
                    && cells.get(2).map(String::as_str) == Some(backend)
            })
            .unwrap_or_default()
    };
    // LISTENER GROUP BACKEND ADDRESS STATE WEIGHT CUR TOTAL 1xx 2xx 3xx 4xx 5xx CHECK ...
    let one = row("one");
    assert_eq!(
        one.get(..4).map(|c| c.join(" ")),
        Some(format!("{LISTENER} api one 127.0.0.1:{}", rig.api.port())),
        "{text}"
    );
    assert_eq!(one[4..14].join(" "), "up 1 0 3 0 3 0 0 0 ok", "{text}");
    let web = row("web");
    assert_eq!(web[4..14].join(" "), "up 5 0 1 0 0 0 1 0 -", "{text}");
}

#[tokio::test]
async fn http2_requests_are_logged_and_counted_on_their_backend() {
    let web = backends::http("web", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let lab = Lab::new(BIN, "log-h2");
    let log = lab.dir.join("access.log");
    let port = free_port().expect("port");
    let extra = format!("      http2PriorKnowledge: true\n{}", file_log(&log, 100));
    let yaml = halo_tests::standalone::lb(port, "HTTP", &extra, &[("web", web.port())]);
    let dp = lab.start(&yaml);
    let url = format!("http://127.0.0.1:{port}/h2/path?q=1");
    let reply = tokio::task::spawn_blocking(move || {
        halo_tests::curl::curl(&["--http2-prior-knowledge", &url])
    })
    .await
    .expect("client thread")
    .expect("curl h2c");
    assert_eq!((reply.version.as_str(), reply.status), ("2", 200));
    let lines = wait_lines(&log, 1).await;
    let line = lines.first().expect("a line for the HTTP/2 request");
    assert_eq!(
        (&line["method"], &line["path"]),
        (&"GET".into(), &"/h2/path".into()),
        "{line}"
    );
    assert_eq!(
        (&line["status"], &line["backend"]),
        (&200.into(), &"web".into()),
        "{line}"
    );
    assert_eq!(
        (&line["route"], &line["group"]),
        (&"default".into(), &"default".into()),
        "{line}"
    );
    assert!(line["responseMs"].is_u64(), "{line}");
    // The line is written when the body has gone out: its bytes are known.
    assert_eq!(
        (&line["bytesIn"], &line["bytesOut"], &line["termination"]),
        (&0.into(), &reply.body.len().into(), &"--".into()),
        "{line}"
    );

    // A request body's bytes are counted as they go to the backend.
    let url = format!("http://127.0.0.1:{port}/upload");
    let posted = tokio::task::spawn_blocking(move || {
        halo_tests::curl::curl(&[
            "--http2-prior-knowledge",
            "--data-binary",
            "0123456789",
            &url,
        ])
    })
    .await
    .expect("client thread")
    .expect("curl h2c POST");
    assert_eq!(posted.status, 200);
    let lines = wait_lines(&log, 2).await;
    let post = &lines[1];
    assert_eq!(
        (&post["method"], &post["bytesIn"], &post["bytesOut"]),
        (&"POST".into(), &10.into(), &posted.body.len().into()),
        "{post}"
    );
    let metrics = dp.metrics().expect("metrics");
    let labels = [("listener", LISTENER), ("backend", "web"), ("code", "2xx")];
    assert_eq!(
        metric_sum(&metrics, "halo_backend_responses_total", &labels),
        2.0
    );
    let sent = [("listener", LISTENER), ("backend", "web")];
    assert_eq!(
        metric_sum(&metrics, "halo_backend_bytes_in_total", &sent),
        10.0
    );
}

/// A redirect and a fixed response are logged with the route that answered (and no
/// group), on the HTTP/1.1 engine and on the HTTP/2 one.
#[tokio::test]
async fn a_routes_own_answers_are_logged_with_its_name_on_both_engines() {
    let web = backends::http("web", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let lab = Lab::new(BIN, "log-own");
    let log = lab.dir.join("access.log");
    let (h1, h2) = (free_port().expect("port"), free_port().expect("port"));
    let routes = "      routes:\n        - name: moved\n          matches: [{path: {value: /old}}]\n          filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}}]\n        - name: teapot\n          matches: [{path: {value: /tea}}]\n          fixedResponse: {statusCode: 418, body: short}\n";
    let listener = |name: &str, port: u16, h2c: &str| {
        format!(
            "    - name: {name}\n      port: {port}\n      protocol: HTTP\n{h2c}{}{routes}      backends: [{{name: web, address: 127.0.0.1, port: {}}}]\n",
            file_log(&log, 100),
            web.port()
        )
    };
    let yaml = format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n  listeners:\n{}{}",
        listener("main", h1, ""),
        listener("h2", h2, "      http2PriorKnowledge: true\n")
    );
    let _dp = lab.start(&yaml);
    assert_eq!(exchange(h1, &get("/old/page")).await.0, 301);
    assert_eq!(exchange(h1, &get("/tea")).await.0, 418);
    for path in ["/old/page", "/tea"] {
        let url = format!("http://127.0.0.1:{h2}{path}");
        let reply = tokio::task::spawn_blocking(move || {
            halo_tests::curl::curl(&["--http2-prior-knowledge", &url])
        })
        .await
        .expect("client thread")
        .expect("curl h2c");
        assert_eq!(reply.version, "2");
    }
    let lines = wait_lines(&log, 4).await;
    let seen: Vec<(String, String, u64, bool)> = lines
        .iter()
        .map(|l| {
            let text = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            let status = l["status"].as_u64().unwrap_or_default();
            (
                text("listener"),
                text("route"),
                status,
                l["group"].is_null(),
            )
        })
        .collect();
    let want = |listener: &str, route: &str, status| {
        (
            format!("test/site/{listener}"),
            route.to_string(),
            status,
            true,
        )
    };
    assert_eq!(
        seen,
        [
            want("main", "moved", 301),
            want("main", "teapot", 418),
            want("h2", "moved", 301),
            want("h2", "teapot", 418)
        ],
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_request_refused_at_max_connections_is_logged_as_a_resource_limit() {
    let web = backend("web").await;
    let lab = Lab::new(BIN, "log-full");
    let log = lab.dir.join("access.log");
    let port = free_port().expect("port");
    let extra = format!("      maxConnections: 1\n{}", file_log(&log, 100));
    let yaml = halo_tests::standalone::lb(port, "HTTP", &extra, &[("web", web.port())]);
    let _dp = lab.start(&yaml);
    // One kept-alive connection holds the only slot.
    let mut holder = Client::open(front(port)).await.expect("connect");
    holder
        .send(b"GET /held HTTP/1.1\r\nHost: site\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(
        holder
            .response(false, REPLY)
            .await
            .expect("response")
            .status,
        200
    );
    assert_eq!(exchange(port, &get("/refused")).await.0, 503);
    let lines = wait_lines(&log, 2).await;
    let refused = lines
        .iter()
        .find(|l| l["path"] == "/refused")
        .unwrap_or_else(|| panic!("no line for the refused request: {lines:?}"));
    assert_eq!(
        (&refused["termination"], &refused["status"]),
        (&"RR".into(), &503.into()),
        "{refused}"
    );
    assert!(refused["backend"].is_null(), "{refused}");
    drop(holder);
}
