//! Access log: one JSON line per HTTP request (and per TCP connection on TCP listeners),
//! like HAProxy's `option httplog` / `option tcplog`.
//!
//! Fields: `time` (RFC 3339, UTC, milliseconds, when the request started), `client`
//! (ip:port), `listener`, `route`, `group`, `backend`, `method`, `path`, `status`,
//! `bytesIn` (read from the client while the request was handled: a pipelined request
//! that arrived with the previous one counts there), `bytesOut` (sent to the client),
//! `queueMs` (request
//! head received to a backend chosen), `connectMs` (opening the backend connection, 0 for
//! a pooled one), `responseMs` (request sent to the response head: time to first byte),
//! `totalMs`, and `termination`. A field that does not apply (no backend, a phase not
//! reached) is `null`. `path` is the request path **without the query string**: queries
//! often carry tokens and personal data, and the path is what routes match on.
//!
//! `termination` is HAProxy's two-letter session state. The first letter says who or what
//! ended the exchange:
//!
//! | code | meaning |
//! |---|---|
//! | `-` | it ended normally |
//! | `C` | the client aborted (closed, reset) |
//! | `S` | the server aborted, refused the connection or sent a broken response |
//! | `P` | the proxy refused it (malformed or over-limit request, invalid response) |
//! | `R` | a resource ran out (listener at `maxConnections`) |
//! | `L` | the proxy answered locally (redirect, fixed response, no route) |
//! | `c` | client timeout |
//! | `s` | server timeout (or the route's timeout) |
//!
//! The second letter says in which phase: `R` waiting for the client's request, `Q` in the
//! queue for a backend, `C` connecting to the backend, `H` waiting for the response head,
//! `D` transferring data (either body, or a tunnel), `-` it ended normally. `--` is a
//! normal end; `SH` a backend that closed before answering; `SD` one that closed in the
//! middle of its response; `sH` no response head in time; `SC` no backend could be
//! reached; `PR` a malformed request; `cR` a request head that never finished; `LR` a
//! local answer.
//!
//! `samplePercent` keeps that share of the requests, picked by a per-listener counter
//! (request `n` is kept when `n × percent mod 100 < percent`: the first request, then
//! evenly spread); errors (5xx, or any abnormal termination) are always kept. Lines go
//! through a bounded channel to one writer thread per target, so a slow disk never holds
//! up the proxy: when the channel is full the line is dropped and counted in
//! `halo_access_log_dropped_total`. A file is opened for appending and reopened on SIGHUP
//! and when its path stops naming the open file (logrotate's rename, or a delete).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use halo_crds::node_config::{AccessLogConfig, LogTarget};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::metrics::{Metrics, listener_labels};

/// Lines waiting for the writer at most; past this they are dropped and counted.
const CHANNEL: usize = 8192;
/// How often the writer checks whether its file was renamed or deleted.
const REOPEN_CHECK: Duration = Duration::from_secs(1);
/// Longest path logged, in bytes (the rest is cut; targets may be 8 KiB or more).
const MAX_PATH: usize = 1024;

/// Who or what ended an exchange (first letter of the termination code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Normal,
    Client,
    Server,
    Proxy,
    Resource,
    Local,
    ClientTimeout,
    ServerTimeout,
}

/// The phase an exchange was in when it ended (second letter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Normal,
    Request,
    Queue,
    Connect,
    Headers,
    Data,
}

/// How an exchange ended: HAProxy's two-letter session state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Termination {
    pub by: By,
    pub phase: Phase,
}

impl Termination {
    pub const NORMAL: Self = Self::new(By::Normal, Phase::Normal);
    pub const LOCAL: Self = Self::new(By::Local, Phase::Request);

    pub const fn new(by: By, phase: Phase) -> Self {
        Self { by, phase }
    }

    /// The two letters, e.g. `--`, `SD`, `cR`.
    pub fn code(self) -> [u8; 2] {
        let by = match self.by {
            By::Normal => b'-',
            By::Client => b'C',
            By::Server => b'S',
            By::Proxy => b'P',
            By::Resource => b'R',
            By::Local => b'L',
            By::ClientTimeout => b'c',
            By::ServerTimeout => b's',
        };
        let phase = match self.phase {
            Phase::Normal => b'-',
            Phase::Request => b'R',
            Phase::Queue => b'Q',
            Phase::Connect => b'C',
            Phase::Headers => b'H',
            Phase::Data => b'D',
        };
        [by, phase]
    }

    /// Ended by a failure (a local answer is not one).
    pub fn is_abnormal(self) -> bool {
        !matches!(self.by, By::Normal | By::Local)
    }
}

/// What one log line says.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<'a> {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub listener: &'a str,
    pub route: Option<&'a str>,
    pub group: Option<&'a str>,
    pub backend: Option<&'a str>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub status: Option<u16>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub queue: Option<Duration>,
    pub connect: Option<Duration>,
    pub response: Option<Duration>,
    pub total: Duration,
    pub termination: Termination,
}

impl Record<'_> {
    /// Always logged, whatever the sample: a 5xx or an abnormal end.
    pub fn is_error(&self) -> bool {
        self.termination.is_abnormal() || self.status.is_some_and(|s| s >= 500)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    time: String,
    client: String,
    listener: &'a str,
    route: Option<&'a str>,
    group: Option<&'a str>,
    backend: Option<&'a str>,
    method: Option<&'a str>,
    path: Option<&'a str>,
    status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    queue_ms: Option<u64>,
    connect_ms: Option<u64>,
    response_ms: Option<u64>,
    total_ms: u64,
    termination: &'a str,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The record as one JSON line, newline included (pure).
pub fn format(r: &Record<'_>) -> String {
    let code = r.termination.code();
    let termination = std::str::from_utf8(&code).unwrap_or("??");
    let line = Line {
        time: rfc3339(r.time),
        client: r.client.to_string(),
        listener: r.listener,
        route: r.route,
        group: r.group,
        backend: r.backend,
        method: r.method,
        path: r.path.map(|p| cut(p, MAX_PATH)),
        status: r.status,
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        queue_ms: r.queue.map(millis),
        connect_ms: r.connect.map(millis),
        response_ms: r.response.map(millis),
        total_ms: millis(r.total),
        termination,
    };
    // Serializing plain strings and numbers cannot fail.
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The path part of a request target: the query string is not logged.
pub fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

/// `2026-12-02T14:09:41.123Z` (pure; no time zone database needed for UTC).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = String::with_capacity(24);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    );
    out
}

/// Year, month, day of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Request `n` (counting from 0) is in a `percent` sample (pure).
pub fn sampled(n: u64, percent: u8) -> bool {
    let p = u64::from(percent.min(100));
    (n % 100) * p % 100 < p
}

/// Bumped on SIGHUP: every file writer reopens its file.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Asks every access log file to be reopened (SIGHUP).
pub fn reopen() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

/// One target's channel to its writer thread; the thread ends when the last listener
/// using the target lets go of it.
struct Sink {
    tx: SyncSender<String>,
}

/// Writers by target, so listeners logging to the same place share one (and a reload
/// keeps it).
static SINKS: Mutex<Vec<(LogTarget, Weak<Sink>)>> = Mutex::new(Vec::new());

fn sink(target: &LogTarget) -> std::io::Result<Arc<Sink>> {
    let mut sinks = SINKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    sinks.retain(|(_, w)| w.strong_count() > 0);
    if let Some(s) = sinks
        .iter()
        .find(|(t, _)| t == target)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(s);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
    let owned = target.clone();
    std::thread::Builder::new()
        .name("halo-access-log".into())
        .spawn(move || write_loop(&rx, &owned))?;
    let s = Arc::new(Sink { tx });
    sinks.push((target.clone(), Arc::downgrade(&s)));
    Ok(s)
}

/// A listener's access log: sampling, and the hand-off to the writer.
pub struct Logger {
    sink: Arc<Sink>,
    percent: u8,
    seen: AtomicU64,
    dropped: Counter,
}

impl Logger {
    /// The logger for a listener's `accessLog`, or `None` when it has none (or its
    /// writer thread cannot start, which is logged).
    pub fn open(
        listener: &str,
        config: Option<&AccessLogConfig>,
        metrics: &Metrics,
    ) -> Option<Self> {
        let config = config.filter(|c| c.sample_percent > 0)?;
        let sink = match sink(&config.target) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(listener, error = %e, "access log writer not started");
                return None;
            }
        };
        Some(Self {
            sink,
            percent: config.sample_percent,
            seen: AtomicU64::new(0),
            dropped: metrics
                .access_log_dropped
                .get_or_create(&listener_labels(listener))
                .clone(),
        })
    }

    /// Logs `record` if it is sampled (or an error), without ever waiting.
    pub fn log(&self, record: &Record<'_>) {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        if !sampled(n, self.percent) && !record.is_error() {
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.sink.tx.try_send(format(record))
        {
            self.dropped.inc();
        }
    }
}

/// Where the writer thread puts lines.
enum Output {
    Stdout,
    Stderr,
    File {
        path: PathBuf,
        file: Option<File>,
        generation: u64,
        checked: Instant,
    },
}

impl Output {
    fn new(target: &LogTarget) -> Self {
        match target {
            LogTarget::Stdout => Self::Stdout,
            LogTarget::Stderr => Self::Stderr,
            LogTarget::File(path) => {
                let path = PathBuf::from(path);
                let file = open_file(&path);
                Self::File {
                    path,
                    file,
                    generation: REOPEN.load(Ordering::Relaxed),
                    checked: Instant::now(),
                }
            }
        }
    }

    fn write(&mut self, lines: &[u8]) {
        let result = match self {
            Self::Stdout => std::io::stdout().lock().write_all(lines),
            Self::Stderr => std::io::stderr().lock().write_all(lines),
            Self::File { file: Some(f), .. } => f.write_all(lines),
            Self::File { file: None, .. } => Ok(()),
        };
        if let Err(e) = result
            && complaint_due(Instant::now())
        {
            tracing::warn!(error = %e, "access log write failed (further failures for a minute are not logged)");
        }
    }

    /// Reopens the file after SIGHUP, or when its path names another file or none.
    fn maintain(&mut self) {
        let Self::File {
            path,
            file,
            generation,
            checked,
        } = self
        else {
            return;
        };
        let now_generation = REOPEN.load(Ordering::Relaxed);
        let hup = now_generation != *generation;
        if !hup && checked.elapsed() < REOPEN_CHECK {
            return;
        }
        *checked = Instant::now();
        *generation = now_generation;
        let moved = match (
            file.as_ref().and_then(|f| f.metadata().ok()),
            path.metadata(),
        ) {
            (Some(open), Ok(named)) => open.ino() != named.ino() || open.dev() != named.dev(),
            _ => true,
        };
        if hup || moved {
            *file = open_file(path);
        }
    }
}

fn open_file(path: &PathBuf) -> Option<File> {
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            if complaint_due(Instant::now()) {
                tracing::error!(path = %path.display(), error = %e, "cannot open the access log file; lines are lost until it can be");
            }
            None
        }
    }
}

/// How often a writer complains about a failing target at most.
const COMPLAIN: Duration = Duration::from_secs(60);

thread_local! {
    /// When this writer thread last complained.
    static COMPLAINED: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// True at most once a minute per writer: a full disk or a closed stdout must not turn
/// every request into a log line of its own.
fn complaint_due(now: Instant) -> bool {
    COMPLAINED.with(|last| {
        let due = last.get().is_none_or(|t| now.duration_since(t) >= COMPLAIN);
        if due {
            last.set(Some(now));
        }
        due
    })
}

/// The writer thread: batches what is waiting into one write.
fn write_loop(rx: &Receiver<String>, target: &LogTarget) {
    let mut out = Output::new(target);
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        match rx.recv_timeout(REOPEN_CHECK) {
            Ok(line) => {
                out.maintain();
                batch.extend_from_slice(line.as_bytes());
                while batch.len() < 64 * 1024 {
                    let Ok(more) = rx.try_recv() else { break };
                    batch.extend_from_slice(more.as_bytes());
                }
                out.write(&batch);
                batch.clear();
            }
            Err(RecvTimeoutError::Timeout) => out.maintain(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record<'static> {
        Record {
            time: UNIX_EPOCH + Duration::from_millis(1_764_684_581_123),
            client: "127.0.0.1:40000".parse().expect("addr"),
            listener: "test/site/main",
            route: Some("api"),
            group: Some("a"),
            backend: Some("a/one"),
            method: Some("GET"),
            path: Some("/x\"y"),
            status: Some(200),
            bytes_in: 78,
            bytes_out: 120,
            queue: Some(Duration::from_micros(300)),
            connect: Some(Duration::from_millis(2)),
            response: Some(Duration::from_millis(15)),
            total: Duration::from_millis(18),
            termination: Termination::NORMAL,
        }
    }

    #[test]
    fn a_record_is_one_json_line() {
        let line = format(&record());
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["time"], "2025-12-02T14:09:41.123Z");
        assert_eq!(v["client"], "127.0.0.1:40000");
        assert_eq!(v["route"], "api");
        assert_eq!(v["backend"], "a/one");
        assert_eq!(v["path"], "/x\"y");
        assert_eq!(v["status"], 200);
        assert_eq!(
            (v["bytesIn"].clone(), v["bytesOut"].clone()),
            (78.into(), 120.into())
        );
        assert_eq!(v["queueMs"], 0);
        assert_eq!(v["connectMs"], 2);
        assert_eq!(v["responseMs"], 15);
        assert_eq!(v["totalMs"], 18);
        assert_eq!(v["termination"], "--");
        let bare = format(&Record {
            route: None,
            backend: None,
            connect: None,
            status: None,
            ..record()
        });
        let v: serde_json::Value = serde_json::from_str(&bare).expect("json");
        assert!(v["route"].is_null() && v["backend"].is_null() && v["connectMs"].is_null());
        assert!(v["status"].is_null());
    }

    #[test]
    fn table_of_termination_codes() {
        use By::{Client, ClientTimeout, Local, Proxy, Resource, Server, ServerTimeout};
        use Phase::{Connect, Data, Headers, Queue, Request};
        let table = [
            (By::Normal, Phase::Normal, "--", false),
            (Client, Request, "CR", true),
            (Client, Data, "CD", true),
            (Server, Connect, "SC", true),
            (Server, Headers, "SH", true),
            (Server, Data, "SD", true),
            (Proxy, Request, "PR", true),
            (Proxy, Headers, "PH", true),
            (Resource, Request, "RR", true),
            (Local, Request, "LR", false),
            (ClientTimeout, Request, "cR", true),
            (ServerTimeout, Headers, "sH", true),
            (ServerTimeout, Queue, "sQ", true),
        ];
        for (by, phase, code, abnormal) in table {
            let t = Termination::new(by, phase);
            assert_eq!(&t.code(), code.as_bytes(), "{by:?} {phase:?}");
            assert_eq!(t.is_abnormal(), abnormal, "{code}");
        }
    }

    #[test]
    fn errors_are_always_logged() {
        let ok = record();
        assert!(!ok.is_error());
        assert!(
            Record {
                status: Some(503),
                ..record()
            }
            .is_error()
        );
        assert!(
            Record {
                termination: Termination::new(By::Server, Phase::Data),
                ..record()
            }
            .is_error()
        );
        assert!(
            !Record {
                status: Some(404),
                termination: Termination::LOCAL,
                ..record()
            }
            .is_error()
        );
    }

    #[test]
    fn table_of_samples() {
        let kept = |percent: u8, n: u64| (0..n).filter(|i| sampled(*i, percent)).count();
        assert_eq!(kept(100, 100), 100);
        assert_eq!(kept(0, 100), 0);
        assert_eq!(kept(50, 100), 50);
        assert_eq!(kept(10, 100), 10);
        assert_eq!(kept(30, 10), 3);
        assert_eq!(kept(1, 100), 1);
        assert_eq!(kept(1, 1000), 10);
        // The first request is always in, so a sample shows something at once.
        assert!((1..=100).all(|p| sampled(0, p)));
        assert!(!sampled(1, 1) && sampled(100, 1));
    }

    #[test]
    fn failures_are_complained_about_once_a_minute() {
        let t0 = Instant::now();
        assert!(complaint_due(t0));
        assert!(!complaint_due(t0 + Duration::from_secs(59)));
        assert!(complaint_due(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_zero_sample_is_no_log() {
        let metrics = Metrics::new();
        let config = |sample_percent| AccessLogConfig {
            target: LogTarget::Stderr,
            sample_percent,
        };
        assert!(Logger::open("l", Some(&config(0)), &metrics).is_none());
        assert!(Logger::open("l", None, &metrics).is_none());
        assert!(Logger::open("l", Some(&config(1)), &metrics).is_some());
    }

    #[test]
    fn table_of_times() {
        let at = |ms: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn paths_lose_their_query_and_long_ones_are_cut() {
        assert_eq!(path_of("/a/b?token=x"), "/a/b");
        assert_eq!(path_of("/a"), "/a");
        assert_eq!(path_of("*"), "*");
        assert_eq!(cut("ééé", 3), "é");
        assert_eq!(cut("abc", 8), "abc");
    }
}
