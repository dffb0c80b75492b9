//! `halo-dataplane import --haproxy` on the real binary: the exit status (0/3/2), report
//! lines with file:line, that `check` accepts what it writes (certificate files next to
//! it, or Secrets with --namespace), and that an imported config serves the host, path,
//! redirect and cookie behaviour its haproxy.cfg describes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use halo_tests::backends::{self, free_port};
use halo_tests::curl::curl_async;
use halo_tests::standalone::Lab;

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");

/// `tests/import/NAME` of the workspace.
fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/import")
        .join(name)
}

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run halo-dataplane")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A PEM bundle (certificate then key) for `cn`, as `crt` files usually are.
fn bundle(lab: &Lab, cn: &str, path: &Path) {
    let (cert, key) = lab.self_signed("bundle", cn);
    let pem =
        std::fs::read_to_string(cert).expect("cert") + &std::fs::read_to_string(key).expect("key");
    std::fs::write(path, pem).expect("write bundle");
}

/// Copies a test config and the certificate it names into the lab directory.
fn staged(lab: &Lab, name: &str) -> PathBuf {
    let cfg = lab.dir.join(name);
    std::fs::copy(source(name), &cfg).expect("copy config");
    bundle(lab, "shop.example.com", &lab.dir.join("shop.pem"));
    cfg
}

#[test]
fn the_three_tier_config_imports_with_approximations_and_check_accepts_it() {
    let lab = Lab::new(BIN, "import-3tier");
    staged(&lab, "three-tier.cfg");
    let out = run(
        &["import", "--haproxy", "three-tier.cfg", "-o", "site.yaml"],
        &lab.dir,
    );
    let report = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{report}");
    for line in [
        "three-tier.cfg:28: use_backend be_static if host_shop is_static: mapped to LoadBalancer/www spec.listeners[1].routes[0]",
        "three-tier.cfg:34: cookie SRV insert indirect nocache: mapped to",
        "three-tier.cfg:57: option mysql-check: approximated as LoadBalancer/www spec.listeners[2].healthCheck.type",
        "three-tier.cfg:58: timeout client 8h: mapped to LoadBalancer/www spec.listeners[2].timeouts.client",
        "three-tier.cfg:61: server db1 10.0.4.41:3306 check port 9200 inter 2s downinter 10s rise 3 fall 2: mapped to",
        "three-tier.cfg:5: maxconn 20000: unsupported:",
    ] {
        assert!(report.contains(line), "missing {line:?} in\n{report}");
    }
    let yaml = std::fs::read_to_string(lab.dir.join("site.yaml")).expect("manifest");
    for part in [
        "certFile: site-certs/shop.crt",
        "port: 9200",
        "downInterval: 10s",
        "client: 8h",
        "name: SRV",
    ] {
        assert!(yaml.contains(part), "{part} not in\n{yaml}");
    }
    assert!(lab.dir.join("site-certs/shop.key").is_file());
    let check = run(&["check", "-c", "site.yaml", "--node", "node-a"], &lab.dir);
    assert!(
        check.status.success(),
        "check refused the import: {}",
        stderr(&check)
    );

    let json = run(
        &[
            "import",
            "--haproxy",
            "three-tier.cfg",
            "-o",
            "j.yaml",
            "--report",
            "json",
        ],
        &lab.dir,
    );
    let value: serde_json::Value = serde_json::from_slice(&json.stderr).expect("JSON report");
    assert_eq!(value["unsupported"], 1, "{value}");
    let entry = value["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["line"] == 57)
        .cloned();
    assert_eq!(
        entry.map(|e| e["outcome"].clone()),
        Some("approximated".into())
    );

    let cluster = run(
        &[
            "import",
            "--haproxy",
            "three-tier.cfg",
            "--namespace",
            "shop",
        ],
        &lab.dir,
    );
    let docs = String::from_utf8_lossy(&cluster.stdout);
    assert!(
        docs.contains("kind: Secret") && docs.contains("type: kubernetes.io/tls"),
        "{docs}"
    );
    assert!(
        docs.contains("secretName: shop") && docs.contains("namespace: shop"),
        "{docs}"
    );
}

#[test]
fn every_unsupported_kind_is_reported_on_its_line_and_the_rest_still_checks() {
    let lab = Lab::new(BIN, "import-unsupported");
    staged(&lab, "unsupported.cfg");
    let out = run(
        &["import", "--haproxy", "unsupported.cfg", "-o", "u.yaml"],
        &lab.dir,
    );
    let report = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{report}");
    for line in [
        "unsupported.cfg:15: userlist admins: unsupported",
        "unsupported.cfg:19: peer lb1 192.0.2.1:1024: unsupported",
        "unsupported.cfg:27: use_backend be_admin if office: unsupported: office: routes cannot match the client address (src)",
        "unsupported.cfg:28: use_backend be_api if !api: unsupported",
        "unsupported.cfg:29: use_backend be_api if api || beta: mapped to LoadBalancer/public spec.listeners[0].routes[0], LoadBalancer/public spec.listeners[0].routes[1]",
        "unsupported.cfg:30: http-request set-header X-Client %[src]: unsupported",
        "unsupported.cfg:36: balance uri: unsupported",
        "unsupported.cfg:40: server web2 web2.internal:80 check: unsupported",
        "unsupported.cfg:50: server old1 192.0.2.51:80: unsupported: no imported frontend uses backend be_unused",
        "unsupported.cfg:54: stats enable: approximated as halo-dataplane run --admin",
        "unsupported.cfg:22: bind :8080 accept-proxy: approximated as LoadBalancer/public spec.addresses",
    ] {
        assert!(report.contains(line), "missing {line:?} in\n{report}");
    }
    let check = run(&["check", "-c", "u.yaml", "--node", "node-a"], &lab.dir);
    assert!(
        check.status.success(),
        "check refused the import: {}",
        stderr(&check)
    );
}

#[test]
fn a_syntax_error_exits_2_naming_file_and_line() {
    let lab = Lab::new(BIN, "import-broken");
    std::fs::copy(source("broken.cfg"), lab.dir.join("broken.cfg")).expect("copy");
    let out = run(&["import", "--haproxy", "broken.cfg"], &lab.dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("broken.cfg:6: unmatched double quote"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

/// A config that maps completely: exit status 0.
#[test]
fn a_config_that_maps_completely_exits_0() {
    let lab = Lab::new(BIN, "import-clean");
    let cfg = "defaults\n  mode http\n  timeout connect 2s\nfrontend web\n  bind 127.0.0.1:8080\n  default_backend app\nbackend app\n  balance leastconn\n  server a 127.0.0.1:9001 check inter 1s\n";
    std::fs::write(lab.dir.join("clean.cfg"), cfg).expect("write");
    let out = run(&["import", "--haproxy", "clean.cfg"], &lab.dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).ends_with("mapped, 0 approximated, 0 unsupported\n"),
        "{}",
        stderr(&out)
    );
}

/// The served test's haproxy.cfg: the three-tier frontend on loopback ports.
fn served_cfg(
    http: u16,
    https: u16,
    app: &[SocketAddr; 2],
    api: SocketAddr,
    stat: SocketAddr,
) -> String {
    format!(
        "defaults\n    mode http\n    timeout connect 2s\n\
         frontend www\n    bind 127.0.0.1:{http}\n    bind 127.0.0.1:{https} ssl crt shop.pem\n\
         \x20   acl host_shop hdr(host) -i shop.example.com\n    acl host_api hdr(host) -i api.example.com\n\
         \x20   acl is_static path_beg /static/\n\
         \x20   http-request redirect scheme https code 301 unless {{ ssl_fc }}\n\
         \x20   use_backend be_static if host_shop is_static\n    use_backend be_api if host_api\n\
         \x20   default_backend be_app\n\
         backend be_app\n    cookie SRV insert indirect nocache\n    option httpchk GET /health\n\
         \x20   server app1 {} check inter 500ms rise 1\n    server app2 {} check inter 500ms rise 1\n\
         backend be_static\n    server static1 {stat}\n\
         backend be_api\n    server api1 {api}\n",
        app[0], app[1]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_config_serves_hosts_paths_redirects_and_cookies() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let app1 = backends::http("app1", any).await.expect("app1");
    let app2 = backends::http("app2", any).await.expect("app2");
    let api = backends::http("api", any).await.expect("api");
    let stat = backends::http("static", any).await.expect("static");
    let lab = Lab::new(BIN, "import-served");
    let (http, https) = (free_port().expect("port"), free_port().expect("port"));
    let cfg = served_cfg(http, https, &[app1.addr, app2.addr], api.addr, stat.addr);
    std::fs::write(lab.dir.join("haproxy.cfg"), cfg).expect("write cfg");
    bundle(&lab, "shop.example.com", &lab.dir.join("shop.pem"));
    let out = run(
        &["import", "--haproxy", "haproxy.cfg", "-o", "imported.yaml"],
        &lab.dir,
    );
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", stderr(&out));
    let manifest = std::fs::read_to_string(lab.dir.join("imported.yaml")).expect("manifest");
    // The lab's manifest sits in the same directory, so imported-certs/ still resolves.
    let _dp = lab.start(&manifest);

    let get = |host: &str, path: &str, extra: &[&str]| {
        let mut args = vec![
            "-k".to_string(),
            "--resolve".into(),
            format!("{host}:{https}:127.0.0.1"),
            format!("https://{host}:{https}{path}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        curl_async(args)
    };
    // The app servers become ready after a check; wait for a first answer.
    let mut ready = false;
    for _ in 0..50 {
        if get("www.example.com", "/", &[])
            .await
            .is_ok_and(|r| r.status == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the imported HTTPS listener never answered");

    let body = |r: anyhow::Result<halo_tests::curl::Reply>| r.expect("curl").text();
    assert_eq!(
        body(get("shop.example.com", "/static/app.css", &[]).await),
        "static\n"
    );
    assert_eq!(
        body(get("api.example.com", "/static/app.css", &[]).await),
        "api\n"
    );
    assert_eq!(
        body(get("api.example.com", "/v1/items", &[]).await),
        "api\n"
    );
    let other = body(get("shop.example.com", "/cart", &[]).await);
    assert!(other == "app1\n" || other == "app2\n", "{other}");

    // Plain HTTP is redirected to HTTPS with HAProxy's status code.
    let redirect = curl_async(vec![
        "-o".into(),
        "/dev/null".into(),
        "-D".into(),
        "-".into(),
        format!("http://127.0.0.1:{http}/cart"),
    ])
    .await
    .expect("curl");
    assert_eq!(redirect.status, 301);
    assert!(
        redirect
            .text()
            .to_ascii_lowercase()
            .contains("location: https://"),
        "{}",
        redirect.text()
    );

    // Cookie persistence: the SRV cookie pins every later request to one app server.
    let jar = lab.dir.join("jar.txt").display().to_string();
    let first = body(get("shop.example.com", "/", &["-c", &jar]).await);
    for _ in 0..6 {
        assert_eq!(
            body(get("shop.example.com", "/", &["-b", &jar]).await),
            first
        );
    }
    let jar_text = std::fs::read_to_string(&jar).expect("cookie jar");
    assert!(jar_text.contains("\tSRV\t"), "{jar_text}");
    let pinned = if first == "app1\n" { &app1 } else { &app2 };
    let other = if first == "app1\n" { &app2 } else { &app1 };
    assert!(
        pinned.served() >= 7,
        "pinned {} other {}",
        pinned.served(),
        other.served()
    );
}

#[test]
fn a_crt_directory_gives_one_certificate_per_file_and_a_missing_one_exits_2() {
    let lab = Lab::new(BIN, "import-crt-dir");
    let certs = lab.dir.join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    bundle(&lab, "a.example.com", &certs.join("a.pem"));
    // b: the key in b.pem.key next to it, as HAProxy also accepts.
    let (cert, key) = lab.self_signed("b", "b.example.com");
    std::fs::copy(cert, certs.join("b.pem")).expect("b cert");
    std::fs::copy(key, certs.join("b.pem.key")).expect("b key");
    let cfg = "defaults\n  mode http\nfrontend tls\n  bind 127.0.0.1:8443 ssl crt certs/\n  default_backend app\nbackend app\n  server a 127.0.0.1:9001\n";
    std::fs::write(lab.dir.join("dir.cfg"), cfg).expect("write");
    let out = run(
        &["import", "--haproxy", "dir.cfg", "-o", "dir.yaml"],
        &lab.dir,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let yaml = std::fs::read_to_string(lab.dir.join("dir.yaml")).expect("manifest");
    assert!(
        yaml.contains("certFile: dir-certs/a.crt") && yaml.contains("keyFile: dir-certs/b.key"),
        "{yaml}"
    );
    let b_key = std::fs::read_to_string(lab.dir.join("dir-certs/b.key")).expect("b key written");
    assert!(b_key.contains("PRIVATE KEY"));
    let check = run(&["check", "-c", "dir.yaml", "--node", "node-a"], &lab.dir);
    assert!(
        check.status.success(),
        "check refused the import: {}",
        stderr(&check)
    );

    // Without --output there is nowhere to put certificate files.
    let out = run(&["import", "--haproxy", "dir.cfg"], &lab.dir);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--output"), "{}", stderr(&out));

    std::fs::write(
        lab.dir.join("gone.cfg"),
        cfg.replace("certs/", "missing.pem"),
    )
    .expect("write");
    let out = run(
        &["import", "--haproxy", "gone.cfg", "-o", "gone.yaml"],
        &lab.dir,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("gone.cfg:4: crt missing.pem: cannot read"),
        "{}",
        stderr(&out)
    );
}
