//! Per-backend statistics like HAProxy's stats page: sessions, bytes, responses by class,
//! connect and response times, check status, last state change, downtime and weight.
//! Everything lands in `/metrics` (prometheus-client) and in the backend's `/status` entry.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use crate::metrics::{CLASSES, Labels, Metrics, class_index, with};

type FloatCounter = Counter<f64, AtomicU64>;

/// The last health check's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result", content = "reason")]
pub enum Check {
    /// The backend has no health check.
    None,
    /// Not checked yet.
    Pending,
    Passed,
    Failed(String),
}

impl Check {
    /// A short word for a table: `-`, `pending`, `ok`, `FAIL <reason>`.
    pub fn short(&self) -> String {
        match self {
            Self::None => "-".into(),
            Self::Pending => "pending".into(),
            Self::Passed => "ok".into(),
            Self::Failed(why) => format!("FAIL {why}"),
        }
    }
}

/// Up/down history: when it last changed, and how long it has been down in all.
#[derive(Debug)]
struct History {
    changed: Instant,
    changed_wall: SystemTime,
    down_since: Option<Instant>,
    downtime: Duration,
    check: Check,
}

/// The statistics of one backend (carried over reloads with the backend).
pub struct BackendStats {
    sessions: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    responses: [Counter; 5],
    connect: Histogram,
    response: Histogram,
    /// Sums and counts in microseconds, for the averages in `/status`.
    connect_us: (AtomicU64, AtomicU64),
    response_us: (AtomicU64, AtomicU64),
    last_change: Gauge,
    downtime: FloatCounter,
    history: Mutex<History>,
}

/// A backend's statistics as `/status` shows them.
#[derive(Debug, Serialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    pub sessions_total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub responses: Responses,
    pub connect_ms_avg: Option<f64>,
    pub response_ms_avg: Option<f64>,
    pub check: Check,
    pub last_change_secs_ago: u64,
    pub downtime_secs: u64,
}

/// Responses by status class.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq, Default)]
pub struct Responses {
    #[serde(rename = "1xx")]
    pub c1: u64,
    #[serde(rename = "2xx")]
    pub c2: u64,
    #[serde(rename = "3xx")]
    pub c3: u64,
    #[serde(rename = "4xx")]
    pub c4: u64,
    #[serde(rename = "5xx")]
    pub c5: u64,
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Mean in milliseconds of `sum` microseconds over `count` (pure).
fn mean_ms(sum: u64, count: u64) -> Option<f64> {
    (count > 0).then(|| sum as f64 / count as f64 / 1000.0)
}

impl BackendStats {
    pub fn new(metrics: &Metrics, labels: &Labels, weight: u32, checked: bool) -> Self {
        let responses = CLASSES.map(|class| {
            metrics
                .backend_responses
                .get_or_create(&with(labels.clone(), "code", class))
                .clone()
        });
        metrics
            .backend_weight
            .get_or_create(labels)
            .set(i64::from(weight));
        let last_change = metrics.backend_last_change.get_or_create(labels).clone();
        let now = SystemTime::now();
        last_change.set(unix_secs(now));
        Self {
            sessions: metrics.backend_requests.get_or_create(labels).clone(),
            bytes_in: metrics.backend_bytes_in.get_or_create(labels).clone(),
            bytes_out: metrics.backend_bytes_out.get_or_create(labels).clone(),
            responses,
            connect: metrics
                .backend_connect_seconds
                .get_or_create(labels)
                .clone(),
            response: metrics
                .backend_response_seconds
                .get_or_create(labels)
                .clone(),
            connect_us: Default::default(),
            response_us: Default::default(),
            last_change,
            downtime: metrics.backend_downtime.get_or_create(labels).clone(),
            history: Mutex::new(History {
                changed: Instant::now(),
                changed_wall: now,
                down_since: None,
                downtime: Duration::ZERO,
                check: if checked { Check::Pending } else { Check::None },
            }),
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One finished request (or TCP session) this backend served.
    pub fn record(
        &self,
        status: Option<u16>,
        bytes: (u64, u64),
        connect: Option<Duration>,
        response: Option<Duration>,
    ) {
        if let Some(s) = status {
            self.responses[class_index(s)].inc();
        }
        self.bytes_in.inc_by(bytes.0);
        self.bytes_out.inc_by(bytes.1);
        if let Some(d) = connect {
            self.connect.observe(d.as_secs_f64());
            self.connect_us.0.fetch_add(micros(d), Ordering::Relaxed);
            self.connect_us.1.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(d) = response {
            self.response.observe(d.as_secs_f64());
            self.response_us.0.fetch_add(micros(d), Ordering::Relaxed);
            self.response_us.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The backend went up or down.
    pub fn changed(&self, up: bool) {
        let mut h = self.history();
        let now = Instant::now();
        h.changed = now;
        h.changed_wall = SystemTime::now();
        self.last_change.set(unix_secs(h.changed_wall));
        match (up, h.down_since) {
            (true, Some(since)) => {
                let down = now.duration_since(since);
                h.downtime += down;
                h.down_since = None;
                self.downtime.inc_by(down.as_secs_f64());
            }
            (false, None) => h.down_since = Some(now),
            _ => {}
        }
    }

    /// A health check ran: `Ok` passed, `Err` with why not.
    pub fn checked(&self, outcome: Result<(), &str>) {
        self.history().check = match outcome {
            Ok(()) => Check::Passed,
            Err(why) => Check::Failed(why.to_string()),
        };
    }

    pub fn view(&self) -> StatsView {
        let h = self.history();
        let now = Instant::now();
        let ongoing = h
            .down_since
            .map_or(Duration::ZERO, |s| now.duration_since(s));
        let r = |i: usize| self.responses[i].get();
        let load = |pair: &(AtomicU64, AtomicU64)| {
            mean_ms(
                pair.0.load(Ordering::Relaxed),
                pair.1.load(Ordering::Relaxed),
            )
        };
        StatsView {
            sessions_total: self.sessions.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            responses: Responses {
                c1: r(0),
                c2: r(1),
                c3: r(2),
                c4: r(3),
                c5: r(4),
            },
            connect_ms_avg: load(&self.connect_us),
            response_ms_avg: load(&self.response_us),
            check: h.check.clone(),
            last_change_secs_ago: now.duration_since(h.changed).as_secs(),
            downtime_secs: (h.downtime + ongoing).as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::backend_labels;

    #[test]
    fn a_request_moves_its_class_bytes_and_times() {
        let metrics = Metrics::new();
        let stats = BackendStats::new(&metrics, &backend_labels("l", "b"), 3, true);
        stats.record(
            Some(204),
            (10, 20),
            Some(Duration::from_millis(2)),
            Some(Duration::from_millis(8)),
        );
        stats.record(Some(503), (1, 2), None, None);
        stats.record(None, (5, 5), Some(Duration::from_millis(4)), None);
        let v = stats.view();
        assert_eq!(
            v.responses,
            Responses {
                c2: 1,
                c5: 1,
                ..Responses::default()
            }
        );
        assert_eq!((v.bytes_in, v.bytes_out), (16, 27));
        assert_eq!(v.connect_ms_avg, Some(3.0));
        assert_eq!(v.response_ms_avg, Some(8.0));
        assert_eq!(v.check, Check::Pending);
        let text = metrics.encode();
        assert!(
            text.contains(r#"halo_backend_responses_total{listener="l",backend="b",code="2xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"halo_backend_bytes_out_total{listener="l",backend="b"} 27"#),
            "{text}"
        );
        assert!(
            text.contains(r#"halo_backend_connect_seconds_count{listener="l",backend="b"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"halo_backend_weight{listener="l",backend="b"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn downtime_adds_up_when_the_backend_returns() {
        let metrics = Metrics::new();
        let stats = BackendStats::new(&metrics, &backend_labels("l", "b"), 1, true);
        stats.changed(false);
        stats.checked(Err("connect: refused"));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(stats.view().check, Check::Failed("connect: refused".into()));
        stats.changed(true);
        stats.checked(Ok(()));
        let text = metrics.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("halo_backend_downtime_seconds_total{"))
            .expect("downtime series");
        let secs: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("value");
        assert!(secs >= 0.02, "{line}");
        assert_eq!(stats.view().check.short(), "ok");
    }

    #[test]
    fn table_of_means() {
        assert_eq!(mean_ms(0, 0), None);
        assert_eq!(mean_ms(3000, 2), Some(1.5));
        assert_eq!(mean_ms(1, 1), Some(0.001));
    }
}
