//! Session persistence and slow start through the real data plane: the inserted cookie
//! (indirect, nocache, Max-Age) keeps a client on its backend over HTTP/1.1 and HTTP/2,
//! a stopped backend's clients are redispatched and re-cookied, source-address affinity
//! keeps each client address on one backend, and `/status` shows a recovered or new
//! backend's weight ramping up.

use std::net::SocketAddr;
use std::time::Duration;

use halo_tests::backends::{self, free_port};
use halo_tests::curl::curl_async;
use halo_tests::raw::{self, Client, Recorder, Response};
use halo_tests::standalone::{Lab, front, lb, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");
const REPLY: Duration = Duration::from_secs(5);
const COOKIE: &str =
    "      sessionPersistence: {type: Cookie, cookie: {name: SRV, maxAge: 1h}}\n      retries: 2\n";

async fn named(name: &'static str) -> Recorder {
    raw::recording(move |_| raw::ok(name))
        .await
        .expect("recording backend")
}

/// One GET on its own connection, with `cookie` as the Cookie header.
async fn get(port: u16, cookie: Option<&str>) -> Response {
    let mut c = Client::open(front(port)).await.expect("connect");
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let request = format!("GET / HTTP/1.1\r\nHost: app\r\n{cookie}Connection: close\r\n\r\n");
    c.send(request.as_bytes()).await.expect("send");
    c.response(false, REPLY).await.expect("response")
}

/// The `SRV=value` part of a response's Set-Cookie, if it set one.
fn srv(r: &Response) -> Option<String> {
    r.header("set-cookie")
        .iter()
        .find_map(|v| v.split(';').next().filter(|p| p.starts_with("SRV=")))
        .map(str::to_string)
}

#[tokio::test]
async fn the_cookie_pins_the_client_and_never_reaches_the_backend() {
    let (a, b) = (named("a").await, named("b").await);
    let lab = Lab::new(BIN, "cookie");
    let port = free_port().expect("port");
    let _dp = lab.start(&lb(
        port,
        "HTTP",
        COOKIE,
        &[("a", a.port()), ("b", b.port())],
    ));
    let first = get(port, None).await;
    assert_eq!(first.status, 200);
    let set = first.header("set-cookie");
    assert_eq!(set.len(), 1, "{}", first.head);
    assert!(
        set[0].ends_with("; Max-Age=3600; Path=/; HttpOnly"),
        "{set:?}"
    );
    assert_eq!(first.header("cache-control"), vec!["private"]);
    let pin = srv(&first).expect("SRV cookie");
    let value = pin.trim_start_matches("SRV=");
    assert!(
        value.len() == 16 && !value.contains('.') && !value.contains(&a.port().to_string()),
        "cookie value {value:?} should say nothing about the address"
    );
    let home = first.body_text();

    // Round robin alone would alternate: with the cookie every request goes home, and
    // nothing is set again.
    let jar = format!("a=1; {pin}; b=2");
    for _ in 0..6 {
        let r = get(port, Some(&jar)).await;
        assert_eq!(r.body_text(), home);
        assert!(r.header("set-cookie").is_empty(), "{}", r.head);
    }
    // Indirect: the backend saw the other cookies, never the persistence one.
    let seen: Vec<_> = a.requests().into_iter().chain(b.requests()).collect();
    assert_eq!(seen.len(), 7);
    for r in &seen {
        for c in r.header("cookie") {
            assert!(!c.contains("SRV"), "backend saw {c:?}");
        }
    }
    let with_jar = seen
        .iter()
        .filter(|r| r.header("cookie") == vec!["a=1; b=2"])
        .count();
    assert_eq!(with_jar, 6);
    // A cookie naming no backend is balanced like none, and replaced.
    let stale = get(port, Some("SRV=0000000000000000")).await;
    assert!(srv(&stale).is_some(), "{}", stale.head);
}

#[tokio::test]
async fn a_stopped_backend_s_clients_are_redispatched_and_re_cookied() {
    let (a, b) = (named("a").await, named("b").await);
    let lab = Lab::new(BIN, "cookie-down");
    let port = free_port().expect("port");
    let _dp = lab.start(&lb(
        port,
        "HTTP",
        COOKIE,
        &[("a", a.port()), ("b", b.port())],
    ));
    let first = get(port, None).await;
    let pin = srv(&first).expect("SRV cookie");
    let (gone, stays, _kept) = if first.body_text() == "a" {
        (a, "b", b)
    } else {
        (b, "a", a)
    };
    drop(gone);
    let r = get(port, Some(&pin)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), stays);
    let moved = srv(&r).expect("the cookie is rewritten");
    assert_ne!(moved, pin);
    // The new cookie sticks to the backend that stayed.
    let again = get(port, Some(&moved)).await;
    assert_eq!(again.body_text(), r.body_text());
    assert!(again.header("set-cookie").is_empty());
}

/// `curl -i` over h2c with `args`; the response head and body as text.
async fn h2c(port: u16, args: &[&str]) -> String {
    let mut all: Vec<String> = ["-i", "--http2-prior-knowledge"].map(String::from).to_vec();
    all.extend(args.iter().map(|a| a.to_string()));
    all.push(format!("http://{}/", front(port)));
    let reply = curl_async(all).await.expect("curl");
    assert_eq!((reply.version.as_str(), reply.status), ("2", 200));
    reply.text()
}

#[tokio::test]
async fn http2_clients_get_the_same_persistence() {
    let (a, b) = (named("a").await, named("b").await);
    let lab = Lab::new(BIN, "cookie-h2");
    let port = free_port().expect("port");
    let extra = format!("      http2PriorKnowledge: true\n{COOKIE}");
    let _dp = lab.start(&lb(
        port,
        "HTTP",
        &extra,
        &[("a", a.port()), ("b", b.port())],
    ));
    let first = h2c(port, &[]).await;
    let line = first
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: srv="))
        .unwrap_or_else(|| panic!("no Set-Cookie in {first:?}"));
    let pin = line["set-cookie: ".len()..]
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    assert!(
        first
            .to_ascii_lowercase()
            .contains("cache-control: private"),
        "{first}"
    );
    let home = first.lines().last().expect("body").to_string();
    let header = format!("Cookie: x=1; {pin}");
    for _ in 0..4 {
        let text = h2c(port, &["-H", &header]).await;
        assert_eq!(text.lines().last(), Some(home.as_str()), "{text}");
        assert!(!text.to_ascii_lowercase().contains("set-cookie"), "{text}");
    }
    for r in a.requests().into_iter().chain(b.requests()) {
        for c in r.header("cookie") {
            assert!(!c.contains("SRV"), "backend saw {c:?}");
        }
    }
}

/// The backend (its body) that answers a request from source address `source`.
async fn from(source: &str, port: u16) -> String {
    let url = format!("http://{}/", front(port));
    let reply = curl_async(vec!["--interface".into(), source.into(), url])
        .await
        .expect("curl");
    assert_eq!(reply.status, 200);
    reply.text()
}

#[tokio::test]
async fn source_ip_affinity_keeps_each_client_address_on_one_backend() {
    let (a, b) = (named("a").await, named("b").await);
    let lab = Lab::new(BIN, "sourceip");
    let port = free_port().expect("port");
    let extra = "      sessionPersistence: {type: SourceIP}\n      retries: 2\n";
    let _dp = lab.start(&lb(
        port,
        "HTTP",
        extra,
        &[("a", a.port()), ("b", b.port())],
    ));
    let sources: Vec<String> = (2..18).map(|n| format!("127.0.0.{n}")).collect();
    let mut homes = Vec::new();
    for s in &sources {
        homes.push(from(s, port).await);
    }
    for (s, home) in sources.iter().zip(&homes) {
        for _ in 0..3 {
            assert_eq!(&from(s, port).await, home, "client {s} moved");
        }
    }
    // Sixteen addresses all hashing to one of two backends would be a broken hash.
    assert!(
        homes.iter().any(|h| h == "a") && homes.iter().any(|h| h == "b"),
        "{homes:?}"
    );
    // Its backend gone, a client moves to the other one, and the rest stay put.
    drop(a);
    for (s, home) in sources.iter().zip(&homes) {
        assert_eq!(from(s, port).await, "b", "client {s} (was on {home})");
    }
}

/// The `effectiveWeight` and `up` of backend `name` in `/status`.
fn weight_of(status: &str, name: &str) -> Option<(f64, bool)> {
    let json: serde_json::Value = serde_json::from_str(status).ok()?;
    json["listeners"].as_array()?.iter().find_map(|l| {
        l["backends"]
            .as_array()?
            .iter()
            .find(|b| b["name"] == name)
            .map(|b| {
                (
                    b["effectiveWeight"].as_f64().unwrap_or(-1.0),
                    b["up"].as_bool().unwrap_or(false),
                )
            })
    })
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn slow_start_ramps_a_recovered_or_new_backend_in_status() {
    let (pa, pb, pc) = (
        free_port().expect("port"),
        free_port().expect("port"),
        free_port().expect("port"),
    );
    let _a = backends::http("a", addr(pa)).await.expect("a");
    let b = backends::http("b", addr(pb)).await.expect("b");
    let _c = backends::http("c", addr(pc)).await.expect("c");
    let lab = Lab::new(BIN, "slowstart");
    let port = free_port().expect("port");
    let extra = "      slowStart: 2s\n      healthCheck: {type: TCP, interval: 100ms, downInterval: 100ms, timeout: 200ms, rise: 1, fall: 1}\n";
    let dp = lab.start(&lb(port, "HTTP", extra, &[("a", pa), ("b", pb)]));
    let status = || dp.status_json().unwrap_or_default();
    // The first config starts at full weight.
    assert_eq!(weight_of(&status(), "b"), Some((1.0, true)));

    drop(b);
    assert!(
        wait_until(Duration::from_secs(5), || weight_of(&status(), "b")
            .is_some_and(|(_, up)| !up))
        .await,
        "b never went down: {}",
        status()
    );
    let _b = backends::http("b", addr(pb)).await.expect("b again");
    // Read from the first snapshot that shows it up, so a slow poll cannot miss the ramp.
    let mut seen = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let snapshot = status();
            seen = weight_of(&snapshot, "b")
                .filter(|(_, up)| *up)
                .map(|(w, _)| (w, snapshot));
            seen.is_some()
        })
        .await,
        "b never came back: {}",
        status()
    );
    let (ramping, snapshot) = seen.expect("b");
    assert!(ramping > 0.0 && ramping < 1.0, "just recovered: {ramping}");
    assert_eq!(weight_of(&snapshot, "a"), Some((1.0, true)));
    assert!(
        wait_until(Duration::from_secs(6), || weight_of(&status(), "b")
            == Some((1.0, true)))
        .await,
        "b never reached full weight: {}",
        status()
    );

    // A backend added by a reload ramps too.
    lab.write(&lb(port, "HTTP", extra, &[("a", pa), ("b", pb), ("c", pc)]));
    let mut fresh = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            fresh = weight_of(&status(), "c").map(|(w, _)| w);
            fresh.is_some()
        })
        .await,
        "c never appeared: {}",
        status()
    );
    let fresh = fresh.expect("c");
    assert!(fresh < 1.0, "new backend: {fresh}");
}
