//! The data plane as a real process on loopback, balancing real HTTP and TCP backends.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use halo_tests::backends::{self, Backend, free_port};
use halo_tests::client::{self, Connection};
use halo_tests::process::DataPlane;
use halo_tests::standalone::{self, front, lb, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");

fn lab(name: &str) -> standalone::Lab {
    standalone::Lab::new(BIN, name)
}

async fn two_http() -> (Backend, Backend) {
    let a = backends::http("web-1", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let b = backends::http("web-2", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    (a, b)
}

fn backend_up(dp: &DataPlane, name: &str) -> Option<bool> {
    let status: serde_json::Value = serde_json::from_str(&dp.status_json().ok()?).ok()?;
    status["listeners"]
        .as_array()?
        .iter()
        .flat_map(|l| l["backends"].as_array().cloned().unwrap_or_default())
        .find(|b| b["name"] == name)
        .and_then(|b| b["up"].as_bool())
}

#[tokio::test]
async fn http_round_robin_alternates_over_keep_alive_and_adds_forwarded_headers() {
    let (a, b) = two_http().await;
    let lab = lab("rr");
    let port = free_port().expect("port");
    let _dp = lab.start(&lb(
        port,
        "HTTP",
        "",
        &[("web-1", a.port()), ("web-2", b.port())],
    ));

    let mut conn = Connection::open(front(port)).await.expect("connect");
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = conn.get("/").await.expect("request");
        assert_eq!(r.status, 200);
        seen.push(r.body.trim().to_string());
    }
    assert_eq!(seen, ["web-1", "web-2", "web-1", "web-2", "web-1", "web-2"]);

    let r = conn
        .get_with(
            "/headers",
            &[
                ("x-forwarded-for", "198.51.100.7"),
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "drop me"),
            ],
        )
        .await
        .expect("headers");
    assert!(
        r.body
            .contains("x-forwarded-for: 198.51.100.7, 127.0.0.1\n"),
        "{}",
        r.body
    );
    assert!(r.body.contains("x-forwarded-proto: http\n"), "{}", r.body);
    assert!(
        r.body.contains(&format!(
            "forwarded: for=127.0.0.1;proto=http;host=\"127.0.0.1:{port}\"\n"
        )),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains("x-secret"),
        "hop-by-hop header leaked: {}",
        r.body
    );
}

#[tokio::test]
async fn weights_and_backup_servers() {
    let (a, b) = two_http().await;
    let backup = backends::http("sorry", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let lab = lab("weights");
    let port = free_port().expect("port");
    let yaml = format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: w}}\nspec:\n  addresses: [127.0.0.1]\n  listeners:\n    - name: main\n      port: {port}\n      protocol: HTTP\n      backends:\n        - {{name: web-1, address: 127.0.0.1, port: {}, weight: 3}}\n        - {{name: web-2, address: 127.0.0.1, port: {}, weight: 1}}\n        - {{name: sorry, address: 127.0.0.1, port: {}, backup: true}}\n",
        a.port(),
        b.port(),
        backup.port()
    );
    let _dp = lab.start(&yaml);
    let mut conn = Connection::open(front(port)).await.expect("connect");
    for _ in 0..40 {
        assert_eq!(conn.get("/").await.expect("request").status, 200);
    }
    assert_eq!((a.served(), b.served(), backup.served()), (30, 10, 0));
    // With every primary gone the backup serves (retries skip the dead primaries).
    drop(a);
    drop(b);
    for _ in 0..4 {
        let r = client::get(front(port), "/").await.expect("request");
        assert_eq!((r.status.as_u16(), r.body.trim()), (200, "sorry"));
    }
}

#[tokio::test]
async fn tcp_listener_balances_connections() {
    let a = backends::tcp_echo("db-1", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let b = backends::tcp_echo("db-2", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let lab = lab("tcp");
    let port = free_port().expect("port");
    let _dp = lab.start(&lb(
        port,
        "TCP",
        "      algorithm: LeastConnections\n",
        &[("db-1", a.port()), ("db-2", b.port())],
    ));
    // Two sessions held open at once: least-connections must put them on different backends.
    let mut greetings = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(front(port))
            .await
            .expect("connect");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.expect("greeting");
        greetings.push(String::from_utf8_lossy(&buf).to_string());
        s.write_all(b"ping\n").await.expect("write");
        let mut echo = [0u8; 5];
        s.read_exact(&mut echo).await.expect("echo");
        assert_eq!(&echo, b"ping\n");
        sessions.push(s);
    }
    greetings.sort();
    assert_eq!(greetings, ["db-1\n", "db-2\n"]);
}

#[tokio::test]
async fn health_check_takes_a_dead_backend_out_and_brings_it_back() {
    let (a, b) = two_http().await;
    let b_addr = b.addr;
    let lab = lab("health");
    let port = free_port().expect("port");
    let check = "      healthCheck: {type: HTTP, path: /health, interval: 200ms, downInterval: 200ms, timeout: 300ms, rise: 2, fall: 2}\n      retries: 0\n";
    let dp = lab.start(&lb(
        port,
        "HTTP",
        check,
        &[("web-1", a.port()), ("web-2", b.port())],
    ));
    assert!(
        wait_until(Duration::from_secs(2), || backend_up(&dp, "web-2")
            == Some(true))
        .await
    );

    drop(b);
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || backend_up(&dp, "web-2")
            == Some(false))
        .await,
        "not marked down"
    );
    let took = killed.elapsed();
    // fall × interval, plus one interval for where the kill fell in the cycle.
    assert!(
        took <= Duration::from_millis(2 * 200 + 200 + 300),
        "down after {took:?}"
    );

    // No retries configured: a down backend must simply get no traffic.
    for _ in 0..10 {
        let r = client::get(front(port), "/").await.expect("request");
        assert_eq!((r.status.as_u16(), r.body.trim()), (200, "web-1"));
    }

    let _b2 = backends::http("web-2", b_addr).await.expect("rebind web-2");
    let back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || backend_up(&dp, "web-2")
            == Some(true))
        .await,
        "not marked up"
    );
    assert!(
        back.elapsed() <= Duration::from_millis(2 * 200 + 200 + 300),
        "up after {:?}",
        back.elapsed()
    );
    let metrics = dp.metrics().expect("metrics");
    assert!(
        metrics.contains("halo_backend_up{listener=\"test/site/main\",backend=\"web-2\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("halo_health_checks_total{listener=\"test/site/main\",backend=\"web-2\",result=\"fail\"}"), "{metrics}");
}

#[tokio::test]
async fn retries_hide_a_dead_backend_from_clients() {
    let (a, b) = two_http().await;
    let dead_port = free_port().expect("port");
    let lab = lab("retries");
    let port = free_port().expect("port");
    let dp = lab.start(&lb(
        port,
        "HTTP",
        "      retries: 2\n",
        &[
            ("web-1", a.port()),
            ("dead", dead_port),
            ("web-2", b.port()),
        ],
    ));
    for _ in 0..30 {
        let r = client::get(front(port), "/").await.expect("request");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(a.served() + b.served(), 30);
    let metrics = dp.metrics().expect("metrics");
    assert!(metrics.contains("halo_backend_errors_total{listener=\"test/site/main\",backend=\"dead\",kind=\"connect\"}"), "{metrics}");
}

#[tokio::test]
async fn no_healthy_backend_answers_503() {
    let dead_port = free_port().expect("port");
    let lab = lab("503");
    let port = free_port().expect("port");
    let _dp = lab.start(&lb(port, "HTTP", "", &[("dead", dead_port)]));
    let r = client::get(front(port), "/").await.expect("request");
    assert_eq!(r.status, 503);
}

async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn max_connections_refuses_the_excess_and_counts_it() {
    let (a, _b) = two_http().await;
    let lab = lab("maxconn");
    let port = free_port().expect("port");
    let dp = lab.start(&lb(
        port,
        "HTTP",
        "      maxConnections: 2\n",
        &[("web-1", a.port())],
    ));
    let mut first = Connection::open(front(port)).await.expect("1");
    let mut second = Connection::open(front(port)).await.expect("2");
    assert_eq!(first.get("/").await.expect("1").status, 200);
    assert_eq!(second.get("/").await.expect("2").status, 200);
    match client::get(front(port), "/").await {
        Ok(r) => assert_eq!(r.status, 503),
        Err(e) => panic!("third connection should get a clean 503, got {e}"),
    }
    let metrics = dp.metrics().expect("metrics");
    assert!(metrics.contains("halo_listener_refused_connections_total{listener=\"test/site/main\",reason=\"max_connections\"} 1"), "{metrics}");
    // The held connections still work, and a slot frees when one closes.
    assert_eq!(first.get("/").await.expect("1 again").status, 200);
    drop(second);
    assert!(
        eventually(async || client::get(front(port), "/")
            .await
            .is_ok_and(|r| r.status == 200))
        .await
    );
}

#[tokio::test]
async fn malformed_requests_get_400_and_are_counted() {
    let (a, _b) = two_http().await;
    let lab = lab("bad");
    let port = free_port().expect("port");
    let dp = lab.start(&lb(port, "HTTP", "", &[("web-1", a.port())]));
    let mut s = tokio::net::TcpStream::connect(front(port))
        .await
        .expect("connect");
    s.write_all(b"GARBAGE \x01\x02 NOT HTTP\r\n\r\n")
        .await
        .expect("write");
    let mut reply = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut reply)).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    assert_eq!(a.served(), 0);
    assert!(
        wait_until(Duration::from_secs(2), || dp
            .metrics()
            .is_ok_and(|m| m.contains(
                "halo_http_responses_total{listener=\"test/site/main\",code=\"4xx\"} 1"
            )))
        .await
    );
}

#[tokio::test]
async fn a_bad_reload_is_rejected_and_the_old_config_keeps_serving() {
    let (a, b) = two_http().await;
    let lab = lab("badreload");
    let port = free_port().expect("port");
    let good = lb(
        port,
        "HTTP",
        "",
        &[("web-1", a.port()), ("web-2", b.port())],
    );
    let dp = lab.start(&good);
    let mut conn = Connection::open(front(port)).await.expect("connect");
    assert_eq!(conn.get("/").await.expect("before").status, 200);

    lab.write(&good.replace(
        "protocol: HTTP",
        "protocol: HTTP\n      timeouts: {connect: soon}",
    ));
    assert!(
        wait_until(Duration::from_secs(5), || dp.log_text().contains(
            "spec.listeners[0].timeouts.connect: invalid duration \\\"soon\\\""
        ))
        .await
            || dp
                .log_text()
                .contains("spec.listeners[0].timeouts.connect: invalid duration \"soon\""),
        "no clear error in the log:\n{}",
        dp.log_text()
    );
    for _ in 0..4 {
        assert_eq!(conn.get("/").await.expect("kept-alive request").status, 200);
        assert_eq!(
            client::get(front(port), "/")
                .await
                .expect("new connection")
                .status,
            200
        );
    }
    let status = dp.status_json().expect("status");
    assert!(status.contains("\"version\": 1"), "{status}");
    assert!(
        dp.metrics()
            .expect("metrics")
            .contains("halo_config_reloads_total{result=\"rejected\"} 1")
    );
}

#[tokio::test]
async fn a_good_reload_under_load_fails_no_request() {
    let (a, b) = two_http().await;
    let c = backends::http("web-3", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend");
    let lab = lab("reload");
    let port = free_port().expect("port");
    let before = lb(
        port,
        "HTTP",
        "",
        &[("web-1", a.port()), ("web-2", b.port())],
    );
    let after = lb(
        port,
        "HTTP",
        "      algorithm: LeastConnections\n",
        &[("web-2", b.port()), ("web-3", c.port())],
    );
    let dp = lab.start(&before);

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(3);
    let mut workers = Vec::new();
    for w in 0..8 {
        let (ok, failed) = (ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            // Half the workers keep one connection, half open one per request; each
            // loop is bounded by count and time.
            let mut conn = if w % 2 == 0 {
                Connection::open(front(port)).await.ok()
            } else {
                None
            };
            for _ in 0..5_000 {
                if Instant::now() >= stop_at {
                    break;
                }
                let result = match conn.as_mut() {
                    Some(c) => c.get("/").await,
                    None => client::get(front(port), "/").await,
                };
                match result {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    lab.write(&after);
    assert!(
        wait_until(Duration::from_secs(3), || dp
            .status_json()
            .is_ok_and(|s| s.contains("\"version\": 2")))
        .await,
        "reload not applied:\n{}",
        dp.log_text()
    );
    for w in workers {
        w.await.expect("worker");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "too little load to mean anything: {ok}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed across the reload",
        ok + failed
    );
    assert!(c.served() > 0, "the new backend never served");
    let served_a = a.served();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..10 {
        client::get(front(port), "/").await.expect("after reload");
    }
    assert_eq!(
        a.served(),
        served_a,
        "the removed backend still gets traffic"
    );
}

#[tokio::test]
async fn sighup_reloads_and_vip_without_election_serves_on_its_address() {
    let (a, b) = two_http().await;
    let lab = lab("sighup");
    let port = free_port().expect("port");
    let vip = format!(
        "apiVersion: halo.dev/v1alpha1\nkind: VirtualIP\nmetadata: {{name: local}}\nspec:\n  addresses: [127.0.0.77/8]\n  vrrp: {{enabled: false}}\n---\napiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  virtualIP: local\n  listeners:\n    - name: main\n      port: {port}\n      protocol: HTTP\n      backends:\n        - {{name: web-1, address: 127.0.0.1, port: {}}}\n",
        a.port()
    );
    // A long poll interval, so only SIGHUP can explain the reload.
    lab.write(&vip);
    let dp = DataPlane::start_with(
        Path::new(BIN),
        &lab.config,
        "node-a",
        lab.admin,
        &lab.dir.join("dp.log"),
        &["--poll", "1h"],
    )
    .expect("start");
    let addr = SocketAddr::from(([127, 0, 0, 77], port));
    assert_eq!(
        client::get(addr, "/").await.expect("via VIP").body.trim(),
        "web-1"
    );
    lab.write(&vip.replace(
        &format!("port: {}}}", a.port()),
        &format!("port: {}}}", b.port()),
    ));
    dp.signal("HUP").expect("SIGHUP");
    assert!(
        wait_until(Duration::from_secs(3), || dp
            .status_json()
            .is_ok_and(|s| s.contains("\"version\": 2")))
        .await
    );
    assert_eq!(
        client::get(addr, "/").await.expect("via VIP").body.trim(),
        "web-2"
    );
}

#[tokio::test]
async fn a_port_held_by_another_process_is_reported_and_retried() {
    let (a, _b) = two_http().await;
    let lab = lab("bind");
    let port = free_port().expect("port");
    // Someone else holds the port (no SO_REUSEADDR sharing of a listening socket).
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("squat");
    let dp = lab.start(&lb(port, "HTTP", "", &[("web-1", a.port())]));
    let status = dp.status_json().expect("status");
    assert!(
        status.contains(&format!("\"address\": \"127.0.0.1:{port}\""))
            && status.contains("bindErrors"),
        "{status}"
    );
    drop(squatter);
    assert!(
        wait_until(Duration::from_secs(5), || dp
            .status_json()
            .is_ok_and(|s| s.contains("\"bindErrors\": []")))
        .await,
        "never bound: {}",
        dp.status_json().unwrap_or_default()
    );
    assert_eq!(
        client::get(front(port), "/")
            .await
            .expect("served after retry")
            .body
            .trim(),
        "web-1"
    );
}
