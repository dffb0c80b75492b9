//! The data plane's control surfaces as a real process on loopback: the admin listener's
//! limits and authentication, the client commands, config reload safety, schema limits in
//! file mode, signals during start-up and /healthz.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use halo_tests::backends::{self, Backend, free_port};
use halo_tests::client;
use halo_tests::process::{DataPlane, http_get_blocking, http_request_blocking};
use halo_tests::standalone::{self, Lab, front, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");

/// The one-listener HTTP `LoadBalancer` these tests run.
fn lb(port: u16, backends: &[(&str, u16)]) -> String {
    standalone::lb(port, "HTTP", "", backends)
}

async fn web(name: &str) -> Backend {
    backends::http(name, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("backend")
}

async fn get_within(addr: SocketAddr, limit: Duration) -> Option<u16> {
    match tokio::time::timeout(limit, client::get(addr, "/")).await {
        Ok(Ok(r)) => Some(r.status.as_u16()),
        _ => None,
    }
}

/// Whether the server has closed `stream` (EOF after whatever it sent) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 512];
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

fn version(dp: &DataPlane) -> Option<u64> {
    let status: serde_json::Value = serde_json::from_str(&dp.status_json().ok()?).ok()?;
    status["version"].as_u64()
}

// --- admin listener: limits ---------------------------------------------------------

#[tokio::test]
async fn idle_and_half_sent_admin_connections_are_cut_and_never_starve_the_proxy() {
    let a = web("web-1").await;
    let lab = Lab::new(BIN, "adminfd");
    let port = free_port().expect("port");
    let mut dp = lab.spawn(
        &lb(port, &[("web-1", a.port())]),
        &["--admin-timeout", "1s"],
        Some(128),
    );
    dp.wait_started(Duration::from_secs(20)).expect("starts");

    // A request head that never ends, and a connection that never sends: both cut.
    let mut half = TcpStream::connect(lab.admin).expect("connect");
    half.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .expect("half a request");
    let mut idle = TcpStream::connect(lab.admin).expect("connect");
    assert!(
        closed_within(&mut half, Duration::from_secs(4)),
        "a half-sent request is still open"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(2)),
        "an idle connection is still open"
    );

    // Far more idle admin connections than the process has descriptors.
    // (Bounded in time too: a listener that stopped accepting fills its backlog.)
    let opening = Instant::now();
    let mut flood: Vec<TcpStream> = (0..300)
        .take_while(|_| opening.elapsed() < Duration::from_secs(10))
        .filter_map(|_| TcpStream::connect_timeout(&lab.admin, Duration::from_millis(500)).ok())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        assert_eq!(
            get_within(front(port), Duration::from_secs(3)).await,
            Some(200),
            "the proxy stopped serving:\n{}",
            dp.log_text()
        );
    }
    let still_open = flood
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_millis(100)))
        .filter(|closed| !closed)
        .count();
    assert!(
        still_open <= 8,
        "{still_open} idle admin connections still open after the timeout"
    );
    assert!(dp.running().expect("try_wait"), "{}", dp.log_text());
    assert!(
        wait_until(Duration::from_secs(5), || http_get_blocking(
            lab.admin, "/healthz"
        )
        .is_ok_and(|(c, _)| c == 200))
        .await,
        "admin listener did not recover"
    );
    assert!(
        dp.log_text().contains("admin listener full"),
        "{}",
        dp.log_text()
    );
}

// --- admin listener: authentication -------------------------------------------------

#[tokio::test]
async fn takeover_needs_the_token_and_refuses_cross_site_requests() {
    let a = web("web-1").await;
    let lab = Lab::new(BIN, "adminauth");
    let port = free_port().expect("port");
    let dp = lab.start_with(&lb(port, &[("web-1", a.port())]), &[]);
    let mode = std::fs::metadata(&dp.token_file)
        .expect("token file made at start")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let post = |headers: &[(&str, &str)]| {
        http_request_blocking(lab.admin, "POST", "/vrrp/nope/takeover", headers)
            .expect("admin answers")
    };
    // What a web page in a browser on the node can send without asking first.
    let (code, body) = post(&[("Origin", "evil"), ("Content-Type", "text/plain")]);
    assert!(matches!(code, 403 | 415), "{code}: {body}");
    let (code, _) = post(&[("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(code, 403);
    let (code, body) = post(&[]);
    assert_eq!(code, 401, "no token: {body}");
    let (code, _) = post(&[("Authorization", "Bearer wrong")]);
    assert_eq!(code, 401);
    let good = format!("Bearer {}", dp.token().expect("token"));
    let (code, _) = post(&[("Authorization", &good), ("Content-Type", "text/plain")]);
    assert_eq!(code, 415, "text/plain refused even with the token");
    // With the token the request reaches the handler (which knows no VIP "nope").
    let (code, body) = dp.admin_post("/vrrp/nope/takeover").expect("post");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no VRRP instance named nope"), "{body}");
}

#[tokio::test]
async fn read_endpoints_refuse_a_foreign_host_header() {
    let a = web("web-1").await;
    let lab = Lab::new(BIN, "adminhost");
    let port = free_port().expect("port");
    let _dp = lab.start_with(
        &lb(port, &[("web-1", a.port())]),
        &["--admin-allow-host", "node-a.example"],
    );
    for path in ["/status", "/metrics", "/healthz"] {
        let (code, _) = http_request_blocking(
            lab.admin,
            "GET",
            path,
            &[("Host", "rebind.evil.example:9100")],
        )
        .expect("admin answers");
        assert_eq!(code, 421, "{path} answered a foreign Host");
    }
    for host in [
        lab.admin.to_string(),
        format!("localhost:{}", lab.admin.port()),
        "node-a.example".to_string(),
    ] {
        let (code, body) = http_request_blocking(lab.admin, "GET", "/status", &[("Host", &host)])
            .expect("admin answers");
        assert_eq!(code, 200, "Host {host}: {body}");
    }
}

// --- client commands ----------------------------------------------------------------

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn status_and_takeover_commands_talk_to_the_admin_listener() {
    let a = web("web-1").await;
    let lab = Lab::new(BIN, "cli");
    let port = free_port().expect("port");
    let dp = lab.start_with(&lb(port, &[("web-1", a.port())]), &[]);
    let admin = lab.admin.to_string();
    let token = dp.token_file.to_string_lossy().into_owned();

    let (code, out, err) = cli(&["status", "--admin", &admin]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("node node-a") && out.contains("ready"),
        "{out}"
    );
    assert!(
        out.contains("test/site/main") && out.contains("backends 1/1 up"),
        "{out}"
    );

    let (code, _, err) = cli(&[
        "takeover",
        "nope",
        "--admin",
        &admin,
        "--admin-token-file",
        &token,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no VRRP instance named nope"), "{err}");

    let wrong = lab.dir.join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").expect("write");
    let wrong = wrong.to_string_lossy().into_owned();
    let (code, _, err) = cli(&[
        "takeover",
        "nope",
        "--admin",
        &admin,
        "--admin-token-file",
        &wrong,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401"), "{err}");

    let nobody = format!("127.0.0.1:{}", free_port().expect("port"));
    let (code, _, err) = cli(&["status", "--admin", &nobody]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
}

// --- config reloads -----------------------------------------------------------------

const LOCAL_VIP: &str = "apiVersion: halo.dev/v1alpha1\nkind: VirtualIP\nmetadata: {name: local}\nspec:\n  addresses: [127.0.0.78/8]\n  vrrp: {enabled: false}\n";

fn on_vip(port: u16, backend: u16) -> String {
    format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  virtualIP: local\n  listeners:\n    - name: main\n      port: {port}\n      protocol: HTTP\n      backends:\n        - {{name: web-1, address: 127.0.0.1, port: {backend}}}\n"
    )
}

#[tokio::test]
async fn a_file_cut_at_a_document_boundary_is_refused_unless_marked() {
    let a = web("web-1").await;
    let lab = Lab::new(BIN, "cut");
    let port = free_port().expect("port");
    let full = format!("{LOCAL_VIP}---\n{}", on_vip(port, a.port()));
    let dp = lab.start_with(&full, &[]);
    let addr = SocketAddr::from(([127, 0, 0, 78], port));
    assert_eq!(get_within(addr, Duration::from_secs(3)).await, Some(200));

    // What a reader sees when it catches the file right after the first document.
    lab.write(&format!("{LOCAL_VIP}---\n"));
    assert!(
        wait_until(Duration::from_secs(5), || dp.log_text().contains(
            "config refused, still serving the previous one: the new file has no listeners"
        ))
        .await,
        "{}",
        dp.log_text()
    );
    for _ in 0..5 {
        assert_eq!(get_within(addr, Duration::from_secs(3)).await, Some(200));
    }
    assert_eq!(version(&dp), Some(1));

    // Said explicitly, it applies.
    lab.write(&LOCAL_VIP.replace(
        "metadata: {name: local}",
        "metadata: {name: local, annotations: {halo.dev/allow-empty: \"true\"}}",
    ));
    assert!(
        wait_until(Duration::from_secs(5), || version(&dp) == Some(2)).await,
        "{}",
        dp.log_text()
    );
    assert!(
        dp.log_text().contains("listeners -[test/site/main]"),
        "{}",
        dp.log_text()
    );
}

#[tokio::test]
async fn a_file_written_in_two_steps_is_applied_once_whole() {
    let (a, b, c) = (web("web-1").await, web("web-2").await, web("web-3").await);
    let lab = Lab::new(BIN, "settle");
    let port = free_port().expect("port");
    let dp = lab.start_with(&lb(port, &[("web-1", a.port())]), &["--settle", "1s"]);

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        tokio::spawn(async move {
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match get_within(front(port), Duration::from_secs(3)).await {
                    Some(200) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    // The new file, written in place in two steps: first up to the end of a line.
    let whole = lb(port, &[("web-2", b.port()), ("web-3", c.port())]);
    let cut = whole.len() - whole.lines().last().map_or(0, |l| l.len() + 1);
    lab.overwrite(&whole[..cut]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    lab.overwrite(&whole);
    assert!(
        wait_until(Duration::from_secs(5), || version(&dp)
            .is_some_and(|v| v >= 2))
        .await,
        "{}",
        dp.log_text()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");

    let status = dp.status_json().expect("status");
    assert_eq!(
        version(&dp),
        Some(2),
        "the half file was applied:\n{}",
        dp.log_text()
    );
    assert!(
        status.contains("web-3") && !status.contains("web-1"),
        "{status}"
    );
    let log = dp.log_text();
    assert_eq!(log.matches("config applied").count(), 2, "{log}");
    assert!(
        log.contains("old_hash")
            && log.contains("new_hash")
            && log.contains("listeners ~[test/site/main]"),
        "{log}"
    );
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 20, "too little load: {ok}");
    assert_eq!(failed, 0, "{failed} requests failed");
}

#[tokio::test]
async fn a_file_over_the_schema_limits_is_refused_with_the_field() {
    let lab = Lab::new(BIN, "limits");
    let mut listeners = String::new();
    for i in 0..5_000 {
        listeners.push_str(&format!(
            "    - {{name: l{i}, port: {}, protocol: TCP, backends: [{{address: 127.0.0.1, port: 9}}]}}\n",
            10_000 + i
        ));
    }
    let yaml = format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: big, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n  listeners:\n{listeners}"
    );
    lab.write(&yaml);
    let config = lab.config.to_string_lossy().into_owned();
    let (code, _, err) = cli(&["check", "--config", &config, "--node", "node-a"]);
    assert_ne!(code, 0, "5,000 listeners accepted");
    assert!(
        err.contains("document 1 (LoadBalancer test/big): spec.listeners: must have at most 64 items (has 5000)"),
        "{err}"
    );
    // A CEL rule: listener ports must be unique.
    let twice = lb(8080, &[("web-1", 9)]).replace(
        "      backends:\n",
        "      backends: []\n    - name: again\n      port: 8080\n      protocol: TCP\n      backends:\n",
    );
    lab.write(&twice);
    let (code, _, err) = cli(&["check", "--config", &config, "--node", "node-a"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("spec.listeners: listener ports must be unique"),
        "{err}"
    );
}

// --- start-up and health ------------------------------------------------------------

/// Whether `/proc/<pid>/status` shows more than one thread (the async runtime is up).
fn threads_started(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .is_some_and(|n| n > 1)
    })
}

#[tokio::test]
async fn sighup_during_start_up_does_not_kill_the_process() {
    let a = web("web-1").await;
    let lab = Lab::new(BIN, "earlyhup");
    let port = free_port().expect("port");
    let mut dp = lab.spawn(&lb(port, &[("web-1", a.port())]), &[], None);
    let pid = dp.pid();
    let start = Instant::now();
    while !threads_started(pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::yield_now();
    }
    let pid_t = libc::pid_t::try_from(pid).expect("pid");
    for _ in 0..50 {
        // SAFETY: kill(2) on the PID of the child this test started.
        unsafe {
            libc::kill(pid_t, libc::SIGHUP);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    dp.wait_started(Duration::from_secs(20))
        .expect("survives SIGHUP during start-up");
    assert!(dp.running().expect("try_wait"));
    assert_eq!(
        get_within(front(port), Duration::from_secs(3)).await,
        Some(200)
    );
}

#[tokio::test]
async fn healthz_is_not_ready_while_a_listener_cannot_bind() {
    let a = web("web-1").await;
    let lab = Lab::new(BIN, "healthz");
    let port = free_port().expect("port");
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("squat");
    let _dp = lab.start_with(&lb(port, &[("web-1", a.port())]), &[]);
    let (code, body) = http_get_blocking(lab.admin, "/healthz").expect("healthz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(&format!(
            "listener test/site/main cannot bind 127.0.0.1:{port}"
        )),
        "{body}"
    );
    drop(squatter);
    assert!(
        wait_until(Duration::from_secs(5), || http_get_blocking(
            lab.admin, "/healthz"
        )
        .is_ok_and(|(c, _)| c == 200))
        .await,
        "still not ready after the port was freed"
    );
}
