//! The differential test of `halo-dataplane import` (root only, needs haproxy and
//! keepalived): the site in `tests/import/differential/` runs once as real HAProxy +
//! keepalived on the two nodes and once as Halo on the manifest imported from exactly
//! those files, in the same lab with the same backends. The same client requests go
//! through the VIP in both runs and each scenario's outcome is recorded; the table of
//! both columns is printed and every row must agree.

use std::collections::BTreeMap;
use std::time::Duration;

use halo_tests::differential::{
    IN_SERVICE_PORT, INSTANCE, Lab, MYSQL_PORT, NODES, Outcomes, Stack,
};
use halo_tests::lab::{self, Share, Tool};

const A: usize = 0;
const B: usize = 1;
const SHOP: &str = "shop.example.com";
const API: &str = "api.example.com";

/// From haproxy.cfg: `inter 400ms downinter 800ms rise 2 fall 2 slowstart 1s`.
const INTER: Duration = Duration::from_millis(400);
const DOWNINTER: Duration = Duration::from_millis(800);
const RISE: u32 = 2;
const FALL: u32 = 2;
const SLOWSTART: Duration = Duration::from_secs(1);
/// Marked down within fall × inter + one interval (the kill may land just after a check).
const DOWN_BOUND: Duration = INTER.saturating_mul(FALL + 1);
/// Marked up within rise × downinter + one interval: a down server is checked every
/// downinter. Here the two legitimately differ in speed, not outcome: after the first
/// passing check HAProxy checks at fastinter (= inter, none is set), Halo stays at
/// downInterval until the server is up, so Halo takes up to one downinter longer (about
/// 1.5 s against 1 s in this lab); both are within this bound.
const UP_BOUND: Duration = DOWNINTER.saturating_mul(RISE + 1);
/// From node-b.conf: VRRPv2, `advert_int 1`, priority 100 (+2 while chk_haproxy
/// passes): Master_Down_Interval 3 × 1 s + (256 − 102) / 256 s, plus one advert for
/// timer granularity and the gratuitous ARP.
const FAILOVER: Duration = Duration::from_millis(3000 + 154 * 1000 / 256 + 1000);

/// Rows where the outcome legitimately differs, with both columns asserted:
/// - HAProxy's `nocache` adds `Cache-Control: private` only to answers it considers
///   cacheable (explicit freshness or a validator), so the backend's plain answer gets
///   none; Halo marks every answer that sets the cookie private, which is stricter and
///   never lets a shared cache hand one client's cookie to another.
/// - Halo's persistence cookie is always HttpOnly (no script needs it); HAProxy's only
///   with the `httponly` option, which this haproxy.cfg does not set.
const PLAIN_NOCACHE: &str = "nocache: Cache-Control, plain answer";
const COOKIE_ATTRIBUTES: &str = "cookie: attributes";
const LEGITIMATE: [(&str, &str, &str); 2] = [
    (PLAIN_NOCACHE, "-", "private"),
    (COOKIE_ATTRIBUTES, "path=/", "httponly; path=/"),
];

/// How long each stack took, printed next to the table (not compared: Halo and HAProxy
/// schedule their checks differently within the same bound).
type Timings = BTreeMap<String, (u128, u128)>;

fn timing(t: &mut Timings, stack: Stack, what: &str, d: Option<Duration>) {
    let ms = d.map_or(u128::MAX, |d| d.as_millis());
    let e = t.entry(what.to_string()).or_insert((0, 0));
    match stack {
        Stack::Legacy => e.0 = ms,
        Stack::Halo => e.1 = ms,
    }
}

/// Both nodes up, node-a first so that it is the one elected (both start as BACKUP
/// with nopreempt, so the first to run takes the VIP).
fn start_pair(lab: &mut Lab, stack: Stack, o: &mut Outcomes) {
    lab.start(stack, A).expect("node-a");
    assert!(
        lab.site.wait_master(A, FAILOVER * 2),
        "{stack:?}: node-a should take the VIP:\n{}",
        lab.debug()
    );
    lab.start(stack, B).expect("node-b");
    let backup = match stack {
        Stack::Legacy => lab
            .site
            .keepalived(B)
            .expect("ka")
            .wait_state("BACKUP", FAILOVER),
        Stack::Halo => halo_tests::site::wait_until(FAILOVER, Duration::from_millis(50), || {
            lab.site.vrrp_state(B, INSTANCE).as_deref() == Some("Backup")
        }),
    };
    assert!(
        backup,
        "{stack:?}: node-b should be backup:\n{}",
        lab.debug()
    );
    o.record(stack, "VRRP: owner once both run", lab.owner());
    for name in [
        "web1", "web2", "web3", "api1", "api2", "static1", "db1", "db2", "my1", "my2",
    ] {
        assert!(
            lab.time_to(stack, A, name, true, UP_BOUND * 2).is_some(),
            "{stack:?}: {name} never up: {:?}\n{}",
            lab.site.status(A).map(|s| s["listeners"].to_string()),
            lab.debug()
        );
    }
}

fn routing(lab: &Lab, stack: Stack, o: &mut Outcomes) {
    let cases = [
        ("route: shop /  (round robin, 4 requests)", SHOP, "/", 4),
        ("route: api /v1/items (4)", API, "/v1/items", 4),
        (
            "route: shop /static/app.css (2)",
            SHOP,
            "/static/app.css",
            2,
        ),
        (
            "route: api /static/app.css (first rule wins)",
            API,
            "/static/app.css",
            2,
        ),
    ];
    for (scenario, host, path, n) in cases {
        o.record(
            stack,
            scenario,
            lab.spread_of(n, host, path, None).expect("get"),
        );
    }
}

/// The same routes over `bind ... ssl crt certs/site.pem`, and the certificate served.
fn tls(lab: &Lab, stack: Stack, o: &mut Outcomes) {
    let cases = [
        ("https: shop / (4)", SHOP, "/", 4),
        ("https: api /v1/items (4)", API, "/v1/items", 4),
        (
            "https: shop /static/app.css (2)",
            SHOP,
            "/static/app.css",
            2,
        ),
    ];
    for (scenario, host, path, n) in cases {
        o.record(
            stack,
            scenario,
            lab.spread_of_https(n, host, path).expect("https"),
        );
    }
    // Two requests per host, so that the round robin stays where the HTTP rows leave it.
    for host in [SHOP, API] {
        let answers: Vec<_> = (0..2)
            .map(|_| lab.get_https(host, "/").expect("https"))
            .collect();
        let statuses: Vec<String> = answers.iter().map(|a| a.0.status.to_string()).collect();
        o.record(
            stack,
            &format!("https: {host} subject (2 statuses)"),
            format!("{} ({})", answers[0].1, statuses.join(",")),
        );
    }
}

/// The cookie each server sets (`SRV=value`, as the client would send it back).
fn cookies(lab: &Lab, stack: Stack, o: &mut Outcomes) -> BTreeMap<String, String> {
    let mut jar = BTreeMap::new();
    let mut first = None;
    for _ in 0..4 {
        let a = lab.get(SHOP, "/", None).expect("get");
        let cookie = a.set_cookie.as_deref().and_then(|c| c.split(';').next());
        if let Some(c) = cookie {
            jar.insert(a.backend.clone(), c.to_string());
        }
        first.get_or_insert(a);
    }
    let first = first.expect("one answer");
    let name = first
        .set_cookie
        .as_deref()
        .and_then(|c| c.split_once('='))
        .map_or("-", |(n, _)| n);
    o.record(stack, "cookie: first answer sets", name.to_string());
    let mut attributes: Vec<String> = first
        .set_cookie
        .as_deref()
        .unwrap_or("")
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    attributes.sort();
    o.record(stack, COOKIE_ATTRIBUTES, attributes.join("; "));
    o.record(
        stack,
        PLAIN_NOCACHE,
        first.cache_control.clone().unwrap_or_else(|| "-".into()),
    );
    // nocache on an answer a shared cache could store: both must stop that.
    let cacheable = lab.get(SHOP, "/cacheable", None).expect("get");
    o.record(
        stack,
        "nocache: max-age=60 answer shared-cacheable",
        format!(
            "{} ({})",
            cacheable.shared_cacheable(),
            cacheable.set_cookie.is_some()
        ),
    );
    o.record(
        stack,
        "cookie: servers that set one",
        jar.keys().cloned().collect::<Vec<_>>().join(","),
    );
    let mut pinned = Vec::new();
    let mut reset = false;
    for (server, cookie) in &jar {
        for _ in 0..3 {
            let a = lab.get(SHOP, "/", Some(cookie)).expect("get");
            pinned.push(a.backend == *server);
            reset |= a.set_cookie.is_some();
        }
    }
    o.record(
        stack,
        "cookie: replayed 3× per server → same server",
        format!("{}", pinned.iter().all(|p| *p)),
    );
    o.record(
        stack,
        "cookie: answer to a valid cookie re-sets it",
        format!("{reset}"),
    );
    // indirect: the persistence cookie is taken out, the application's are kept.
    let web1 = jar.get("web1").cloned().unwrap_or_default();
    let seen = lab
        .get(SHOP, "/headers", Some(&format!("{web1}; theme=dark")))
        .expect("get")
        .body
        .to_ascii_lowercase();
    o.record(
        stack,
        "indirect: backend sees SRV / theme",
        format!(
            "{} / {}",
            seen.contains("srv="),
            seen.contains("theme=dark")
        ),
    );
    jar
}

fn health(
    lab: &mut Lab,
    stack: Stack,
    o: &mut Outcomes,
    t: &mut Timings,
    jar: &BTreeMap<String, String>,
) {
    lab.kill_backend("web1", 8000).expect("kill web1");
    let down = lab.time_to(stack, A, "web1", false, DOWN_BOUND * 2);
    timing(t, stack, "web1 marked down", down);
    o.record(
        stack,
        "web1 killed: down within fall×inter+inter",
        format!("{}", down.is_some_and(|d| d <= DOWN_BOUND)),
    );
    o.record(
        stack,
        "web1 down: shop / (4)",
        lab.spread_of(4, SHOP, "/", None).expect("get"),
    );
    let web1 = jar.get("web1").map(String::as_str);
    o.record(
        stack,
        "web1 down: web1's cookie (2) → redispatched",
        lab.spread_of(2, SHOP, "/", web1).expect("get"),
    );

    lab.kill_backend("web2", 8000).expect("kill web2");
    let down = lab.time_to(stack, A, "web2", false, DOWN_BOUND * 2);
    timing(t, stack, "web2 marked down", down);
    o.record(
        stack,
        "web2 killed too: down within bound",
        format!("{}", down.is_some_and(|d| d <= DOWN_BOUND)),
    );
    o.record(
        stack,
        "all primaries down: shop / (4)",
        lab.spread_of(4, SHOP, "/", None).expect("get"),
    );

    lab.start_backend("web1", 8000).expect("web1 back");
    let up = lab.time_to(stack, A, "web1", true, UP_BOUND * 2);
    timing(t, stack, "web1 marked up", up);
    o.record(
        stack,
        "web1 back: up within rise×downinter+downinter",
        format!("{}", up.is_some_and(|d| d <= UP_BOUND)),
    );
    o.record(
        stack,
        "web1 up, web2 down: shop / (4)",
        lab.spread_of(4, SHOP, "/", None).expect("get"),
    );

    lab.start_backend("web2", 8000).expect("web2 back");
    let up = lab.time_to(stack, A, "web2", true, UP_BOUND * 2);
    timing(t, stack, "web2 marked up", up);
    // Past both slow starts the weights are equal again.
    std::thread::sleep(SLOWSTART + INTER);
    o.record(
        stack,
        "both back, after slowstart: shop / (4)",
        lab.spread_of(4, SHOP, "/", None).expect("get"),
    );
}

fn tcp(lab: &mut Lab, stack: Stack, o: &mut Outcomes, t: &mut Timings) {
    let (first, second) = lab.tcp_pair().expect("tcp");
    let mut pair = [first.clone(), second.clone()];
    pair.sort();
    o.record(
        stack,
        "leastconn: 1st held, 2nd → other server",
        format!("{} ({})", first != second, pair.join(",")),
    );
    // Only the clustercheck port dies: `check port 9200` must notice, the service
    // port still answers.
    lab.kill_backend("db1", 9200).expect("kill db1 check port");
    let down = lab.time_to(stack, A, "db1", false, DOWN_BOUND * 2);
    timing(t, stack, "db1 (check port) marked down", down);
    o.record(
        stack,
        "db1 check port killed: down within bound",
        format!("{}", down.is_some_and(|d| d <= DOWN_BOUND)),
    );
    let (first, second) = lab.tcp_pair().expect("tcp");
    o.record(
        stack,
        "db1 down: two connections",
        format!("{first},{second}"),
    );
    lab.start_backend("db1", 9200).expect("db1 check port back");
    let up = lab.time_to(stack, A, "db1", true, UP_BOUND * 2);
    timing(t, stack, "db1 marked up", up);
}

/// `option mysql-check` (HAProxy reads the handshake; the import makes it a TCP check):
/// a dead MySQL server is marked down by both and its connections go to the other.
fn mysql(lab: &mut Lab, stack: Stack, o: &mut Outcomes, t: &mut Timings) {
    let (first, second) = lab.mysql_pair().expect("mysql");
    let mut pair = [first, second];
    pair.sort();
    o.record(stack, "mysql-check: two connections", pair.join(","));
    lab.kill_backend("db1", MYSQL_PORT)
        .expect("kill db1's mysql");
    let down = lab.time_to(stack, A, "my1", false, DOWN_BOUND * 2);
    timing(t, stack, "my1 (mysql-check) marked down", down);
    o.record(
        stack,
        "mysql-check: my1 killed, down within bound",
        format!("{}", down.is_some_and(|d| d <= DOWN_BOUND)),
    );
    let (first, second) = lab.mysql_pair().expect("mysql");
    o.record(
        stack,
        "mysql-check: my1 down, two connections",
        format!("{first},{second}"),
    );
    lab.start_backend("db1", MYSQL_PORT)
        .expect("db1's mysql back");
    let up = lab.time_to(stack, A, "my1", true, UP_BOUND * 2);
    timing(t, stack, "my1 marked up", up);
}

fn failover(lab: &mut Lab, stack: Stack, o: &mut Outcomes, t: &mut Timings) {
    let start = std::time::Instant::now();
    lab.kill_node(stack, A).expect("kill node-a");
    let took = lab
        .site
        .wait_master(B, FAILOVER * 2)
        .then(|| start.elapsed());
    timing(t, stack, "node-b owns the VIP", took);
    o.record(stack, "node-a dies: new owner", lab.owner());
    o.record(
        stack,
        "node-a dies: taken over within failover time",
        format!("{}", took.is_some_and(|d| d <= FAILOVER)),
    );
    let a = lab.get(SHOP, "/", None).expect("get");
    o.record(
        stack,
        "node-a dies: shop / answered",
        format!("{}", a.status),
    );
    lab.start(stack, A).expect("node-a back");
    // Long enough for node-a (higher priority) to preempt if it were allowed to.
    std::thread::sleep(FAILOVER);
    o.record(stack, "node-a back (nopreempt): owner", lab.owner());
}

/// node-b holds the VIP (after `failover`); its local health endpoint stops, so its
/// `chk_in_service` fails there and the node leaves the election: node-a takes the VIP.
fn track_script(lab: &mut Lab, stack: Stack, o: &mut Outcomes, t: &mut Timings) {
    let start = std::time::Instant::now();
    lab.kill_backend(NODES[B], IN_SERVICE_PORT)
        .expect("stop node-b's health endpoint");
    let took = lab
        .site
        .wait_master(A, FAILOVER * 2)
        .then(|| start.elapsed());
    timing(t, stack, "chk_in_service: node-a owns", took);
    o.record(stack, "chk_in_service fails on node-b: owner", lab.owner());
    o.record(
        stack,
        "chk_in_service fails: within failover time",
        format!("{}", took.is_some_and(|d| d <= FAILOVER)),
    );
    let a = lab.get(SHOP, "/", None).expect("get");
    o.record(
        stack,
        "chk_in_service fails: shop / answered",
        format!("{}", a.status),
    );
    lab.start_backend(NODES[B], IN_SERVICE_PORT)
        .expect("node-b's health endpoint back");
}

fn run(lab: &mut Lab, stack: Stack, o: &mut Outcomes, t: &mut Timings) {
    start_pair(lab, stack, o);
    routing(lab, stack, o);
    tls(lab, stack, o);
    let jar = cookies(lab, stack, o);
    health(lab, stack, o, t, &jar);
    tcp(lab, stack, o, t);
    mysql(lab, stack, o, t);
    failover(lab, stack, o, t);
    track_script(lab, stack, o, t);
    lab.stop_all(stack).expect("stop");
}

#[test]
fn imported_site_behaves_as_haproxy_and_keepalived() {
    let Some(_lab) = lab::enter(&[Tool::Keepalived, Tool::Haproxy], Share::Shared) else {
        return;
    };
    let mut lab = Lab::new("diff").expect("lab");
    let mut outcomes = Outcomes::default();
    let mut timings = Timings::new();
    run(&mut lab, Stack::Legacy, &mut outcomes, &mut timings);
    run(&mut lab, Stack::Halo, &mut outcomes, &mut timings);

    let expected: Vec<&str> = LEGITIMATE.iter().map(|l| l.0).collect();
    eprintln!(
        "differential: HAProxy + keepalived vs Halo on the imported manifest\n{}",
        outcomes.table(&expected)
    );
    for (what, (legacy, halo)) in &timings {
        eprintln!("{what:<32} HAProxy/keepalived {legacy:>6} ms   Halo {halo:>6} ms");
    }
    let differences: Vec<_> = outcomes
        .differences()
        .into_iter()
        .filter(|r| !LEGITIMATE.iter().any(|l| l.0 == r.0))
        .collect();
    assert!(
        differences.is_empty(),
        "outcomes differ: {differences:#?}\n{}\n{}",
        outcomes.table(&expected),
        lab.debug()
    );
    // The expected outcomes themselves, so that two equally broken runs do not pass.
    let row = |s: &str| {
        outcomes
            .rows
            .iter()
            .find(|r| r.0 == s)
            .map(|r| r.1.clone())
            .unwrap_or_default()
    };
    assert_eq!(row("VRRP: owner once both run"), NODES[A]);
    assert_eq!(
        row("route: shop /  (round robin, 4 requests)"),
        "web1×2 web2×2"
    );
    assert_eq!(row("route: api /v1/items (4)"), "api1×2 api2×2");
    assert_eq!(row("route: shop /static/app.css (2)"), "static1×2");
    assert_eq!(
        row("route: api /static/app.css (first rule wins)"),
        "api1×1 api2×1"
    );
    assert_eq!(row("cookie: first answer sets"), "SRV");
    for (scenario, legacy, halo) in LEGITIMATE {
        let got = outcomes
            .rows
            .iter()
            .find(|r| r.0 == scenario)
            .map(|r| (r.1.as_str(), r.2.as_str()));
        assert_eq!(got, Some((legacy, halo)), "{}", outcomes.table(&expected));
    }
    assert_eq!(
        row("nocache: max-age=60 answer shared-cacheable"),
        "false (true)"
    );
    assert_eq!(row("cookie: servers that set one"), "web1,web2");
    assert_eq!(row("cookie: replayed 3× per server → same server"), "true");
    assert_eq!(row("indirect: backend sees SRV / theme"), "false / true");
    assert_eq!(row("web1 down: shop / (4)"), "web2×4");
    assert_eq!(row("all primaries down: shop / (4)"), "web3×4");
    assert_eq!(row("web1 up, web2 down: shop / (4)"), "web1×4");
    assert_eq!(
        row("both back, after slowstart: shop / (4)"),
        "web1×2 web2×2"
    );
    assert_eq!(
        row("leastconn: 1st held, 2nd → other server"),
        "true (db1,db2)"
    );
    assert_eq!(row("db1 down: two connections"), "db2,db2");
    assert_eq!(row("mysql-check: two connections"), "db1,db2");
    assert_eq!(row("mysql-check: my1 down, two connections"), "db2,db2");
    assert_eq!(row("node-a dies: new owner"), NODES[B]);
    assert_eq!(row("node-a back (nopreempt): owner"), NODES[B]);
    assert_eq!(row("https: shop / (4)"), "web1×2 web2×2");
    assert_eq!(row("https: api /v1/items (4)"), "api1×2 api2×2");
    assert_eq!(row("https: shop /static/app.css (2)"), "static1×2");
    for host in [SHOP, API] {
        assert_eq!(
            row(&format!("https: {host} subject (2 statuses)")),
            "CN=shop.example.com (200,200)"
        );
    }
    assert_eq!(row("chk_in_service fails on node-b: owner"), NODES[A]);
    assert_eq!(row("chk_in_service fails: shop / answered"), "200");
    for r in &outcomes.rows {
        if r.0.contains("within") {
            assert_eq!(r.1, "true", "{}", outcomes.table(&expected));
        }
    }
}
