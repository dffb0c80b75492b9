//! Backend maxConnections and the group queue through the real data plane: a burst
//! larger than the backends' limits is served in full without any backend ever holding
//! more than its limit, and with a short queue timeout or a small maxQueue the excess
//! gets a 503 that the queue metrics count.

use std::net::SocketAddr;
use std::sync::Arc;

use halo_tests::backends::{self, Concurrency, free_port};
use halo_tests::client;
use halo_tests::process::DataPlane;
use std::time::Duration;

use halo_tests::standalone::{Lab, front, metric_sum, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_halo-dataplane");
const GROUP: [(&str, &str); 2] = [("listener", "test/site/main"), ("group", "default")];

/// A LoadBalancer whose backends (name, port) each allow `max` connections; `extra` is
/// more listener fields (six-space indent).
fn limited(port: u16, max: u32, extra: &str, backends: &[(&str, u16)]) -> String {
    let mut list = String::new();
    for (name, p) in backends {
        list.push_str(&format!(
            "        - {{name: {name}, address: 127.0.0.1, port: {p}, maxConnections: {max}}}\n"
        ));
    }
    format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n  listeners:\n    - name: main\n      port: {port}\n      protocol: HTTP\n{extra}      backends:\n{list}"
    )
}

async fn counted(name: &str) -> (backends::Backend, Arc<Concurrency>) {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    backends::http_counted(name, addr).await.expect("backend")
}

/// `n` concurrent GETs of `path`, each on its own connection; their statuses.
async fn burst(port: u16, n: usize, path: &str) -> Vec<u16> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_string();
            tokio::spawn(async move {
                match client::get(front(port), &path).await {
                    Ok(r) => r.status.as_u16(),
                    Err(_) => 0,
                }
            })
        })
        .collect();
    let mut statuses = Vec::with_capacity(n);
    for t in tasks {
        statuses.push(t.await.unwrap_or(0));
    }
    statuses
}

fn queue_metric(dp: &DataPlane, name: &str, extra: &[(&str, &str)]) -> f64 {
    let mut labels = GROUP.to_vec();
    labels.extend_from_slice(extra);
    metric_sum(&dp.metrics().expect("metrics"), name, &labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_waits_its_turn_and_no_backend_exceeds_its_limit() {
    let ((a, peak_a), (b, peak_b)) = (counted("a").await, counted("b").await);
    let lab = Lab::new(BIN, "queue-burst");
    let port = free_port().expect("port");
    let extra = "      timeouts: {queue: 30s, server: 30s}\n";
    // Two event loops, so the limit also holds across workers.
    let dp = lab.start_with(
        &limited(port, 2, extra, &[("a", a.port()), ("b", b.port())]),
        &["--workers", "2"],
    );
    let statuses = burst(port, 40, "/slow?ms=200").await;
    assert_eq!(statuses, vec![200; 40]);
    assert_eq!(a.served() + b.served(), 40);
    // The limit was reached and never passed.
    assert_eq!((peak_a.peak(), peak_b.peak()), (2, 2));
    // Most requests had to wait, and every wait ended in a slot.
    let waited = queue_metric(&dp, "halo_backend_queue_wait_seconds_count", &[]);
    assert!(waited >= 30.0, "only {waited} requests queued");
    let refused = queue_metric(&dp, "halo_backend_queue_refused_total", &[]);
    assert_eq!(refused, 0.0);
    assert_eq!(queue_metric(&dp, "halo_backend_queue_length", &[]), 0.0);
}

#[tokio::test]
async fn the_queue_timeout_answers_the_excess_503_and_counts_it() {
    let (a, peak) = counted("a").await;
    let lab = Lab::new(BIN, "queue-timeout");
    let port = free_port().expect("port");
    let extra = "      timeouts: {queue: 300ms}\n";
    let dp = lab.start(&limited(port, 1, extra, &[("a", a.port())]));
    let mut statuses = burst(port, 5, "/slow?ms=2000").await;
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 503, 503, 503, 503]);
    assert_eq!(peak.peak(), 1);
    assert_eq!(a.served(), 1);
    let timeouts = queue_metric(
        &dp,
        "halo_backend_queue_refused_total",
        &[("reason", "timeout")],
    );
    assert_eq!(timeouts, 4.0);

    // The group leaves with its listener: so do its queue series.
    let renamed = limited(port, 1, extra, &[("a", a.port())]).replace("name: main", "name: other");
    lab.write(&renamed);
    let gone = wait_until(Duration::from_secs(10), || {
        let m = dp.metrics().unwrap_or_default();
        [
            "halo_backend_queue_length",
            "halo_backend_queue_refused_total",
        ]
        .iter()
        .all(|name| {
            let series = |l: &str| m.lines().any(|s| s.starts_with(name) && s.contains(l));
            series("\"test/site/other\"") && !series("\"test/site/main\"")
        })
    })
    .await;
    assert!(gone, "{:?}", dp.metrics());
}

#[tokio::test]
async fn over_max_queue_is_refused_at_once() {
    let (a, peak) = counted("a").await;
    let lab = Lab::new(BIN, "queue-overflow");
    let port = free_port().expect("port");
    let extra = "      maxQueue: 2\n      timeouts: {queue: 20s}\n";
    let dp = lab.start(&limited(port, 1, extra, &[("a", a.port())]));
    let mut statuses = burst(port, 6, "/slow?ms=700").await;
    statuses.sort_unstable();
    // One served at once, two after waiting, three refused.
    assert_eq!(statuses, vec![200, 200, 200, 503, 503, 503]);
    assert_eq!(peak.peak(), 1);
    let overflows = queue_metric(
        &dp,
        "halo_backend_queue_refused_total",
        &[("reason", "overflow")],
    );
    assert_eq!(overflows, 3.0);
}
