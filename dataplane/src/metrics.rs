//! Prometheus metrics of the data plane (prometheus-client text format).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::proxy::queue::QueueMetrics;

pub type Labels = Vec<(&'static str, String)>;
/// Seconds, as HAProxy's stats show connect and response times: 1 ms to 10 s.
pub type Seconds = Family<Labels, Histogram, fn() -> Histogram>;
type FloatCounter = Counter<f64, std::sync::atomic::AtomicU64>;

fn seconds() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Queue waits from 1 ms to about 16 s.
fn queue_wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    pub config_version: Gauge,
    pub config_reloads: Family<Labels, Counter>,
    pub listener_connections: Family<Labels, Counter>,
    pub listener_active: Family<Labels, Gauge>,
    pub listener_refused: Family<Labels, Counter>,
    pub http_responses: Family<Labels, Counter>,
    pub backend_requests: Family<Labels, Counter>,
    pub backend_errors: Family<Labels, Counter>,
    pub backend_connections_opened: Family<Labels, Counter>,
    pub http_client_errors: Family<Labels, Counter>,
    pub proxy_protocol_errors: Family<Labels, Counter>,
    pub tls_handshake_errors: Family<Labels, Counter>,
    pub backend_active: Family<Labels, Gauge>,
    pub backend_up: Family<Labels, Gauge>,
    pub backend_bytes_in: Family<Labels, Counter>,
    pub backend_bytes_out: Family<Labels, Counter>,
    pub backend_responses: Family<Labels, Counter>,
    pub backend_connect_seconds: Seconds,
    pub backend_response_seconds: Seconds,
    pub backend_weight: Family<Labels, Gauge>,
    pub backend_last_change: Family<Labels, Gauge>,
    pub backend_downtime: Family<Labels, FloatCounter>,
    pub access_log_dropped: Family<Labels, Counter>,
    pub health_checks: Family<Labels, Counter>,
    pub queue_length: Family<Labels, Gauge>,
    pub queue_wait: HistogramFamily,
    pub queue_refused: Family<Labels, Counter>,
    pub vrrp_state: Family<Labels, Gauge>,
    pub vrrp_priority: Family<Labels, Gauge>,
    pub vrrp_transitions: Family<Labels, Counter>,
    pub vrrp_adverts_sent: Family<Labels, Counter>,
    pub vrrp_adverts_received: Family<Labels, Counter>,
    pub vrrp_dropped: Family<Labels, Counter>,
    pub vrrp_garp_sent: Family<Labels, Counter>,
    pub vrrp_split_brain: Family<Labels, Counter>,
    pub vrrp_master_seconds: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub track_check_up: Family<Labels, Gauge>,
    pub track_check_runs: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("halo");
        let config_version = Gauge::default();
        registry.register(
            "config_version",
            "Version of the applied NodeConfig",
            config_version.clone(),
        );
        let config_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config loads by result (applied, rejected, unchanged)",
            config_reloads.clone(),
        );
        let listener_connections = Family::<Labels, Counter>::default();
        registry.register(
            "listener_connections",
            "Client connections accepted",
            listener_connections.clone(),
        );
        let listener_active = Family::<Labels, Gauge>::default();
        registry.register(
            "listener_active_connections",
            "Client connections open",
            listener_active.clone(),
        );
        let listener_refused = Family::<Labels, Counter>::default();
        registry.register(
            "listener_refused_connections",
            "Client connections refused, by reason",
            listener_refused.clone(),
        );
        let http_responses = Family::<Labels, Counter>::default();
        registry.register(
            "http_responses",
            "HTTP responses sent to clients, by status class",
            http_responses.clone(),
        );
        let backend_requests = Family::<Labels, Counter>::default();
        registry.register(
            "backend_requests",
            "Requests (HTTP) or connections (TCP) sent to a backend",
            backend_requests.clone(),
        );
        let backend_errors = Family::<Labels, Counter>::default();
        registry.register(
            "backend_errors",
            "Backend failures by kind (connect, timeout, response)",
            backend_errors.clone(),
        );
        let backend_connections_opened = Family::<Labels, Counter>::default();
        registry.register(
            "backend_connections_opened",
            "Connections opened to a backend (pooled HTTP connections are reused)",
            backend_connections_opened.clone(),
        );
        let http_client_errors = Family::<Labels, Counter>::default();
        registry.register(
            "http_client_errors",
            "Requests refused as malformed or over a limit, by reason",
            http_client_errors.clone(),
        );
        let proxy_protocol_errors = Family::<Labels, Counter>::default();
        registry.register(
            "proxy_protocol_errors",
            "Connections from a PROXY protocol source closed for a missing or bad header, by reason",
            proxy_protocol_errors.clone(),
        );
        let tls_handshake_errors = Family::<Labels, Counter>::default();
        registry.register(
            "tls_handshake_errors",
            "TLS client connections closed before any request: failed handshakes, and passthrough ClientHellos without a route, by reason",
            tls_handshake_errors.clone(),
        );
        let backend_active = Family::<Labels, Gauge>::default();
        registry.register(
            "backend_active",
            "Requests or connections in flight to a backend",
            backend_active.clone(),
        );
        let backend_up = Family::<Labels, Gauge>::default();
        registry.register(
            "backend_up",
            "1 when the backend passes its health check",
            backend_up.clone(),
        );
        let backend_bytes_in = Family::<Labels, Counter>::default();
        registry.register(
            "backend_bytes_in",
            "Bytes received from clients for requests (or TCP sessions) this backend served",
            backend_bytes_in.clone(),
        );
        let backend_bytes_out = Family::<Labels, Counter>::default();
        registry.register(
            "backend_bytes_out",
            "Bytes sent to clients for requests (or TCP sessions) this backend served",
            backend_bytes_out.clone(),
        );
        let backend_responses = Family::<Labels, Counter>::default();
        registry.register(
            "backend_responses",
            "HTTP responses from a backend sent to clients, by status class",
            backend_responses.clone(),
        );
        let backend_connect_seconds = Seconds::new_with_constructor(seconds as fn() -> Histogram);
        registry.register(
            "backend_connect_seconds",
            "Time to open a connection to a backend (0 for a pooled one)",
            backend_connect_seconds.clone(),
        );
        let backend_response_seconds = Seconds::new_with_constructor(seconds as fn() -> Histogram);
        registry.register(
            "backend_response_seconds",
            "Time from the request sent to the backend's response head",
            backend_response_seconds.clone(),
        );
        let backend_weight = Family::<Labels, Gauge>::default();
        registry.register(
            "backend_weight",
            "Configured balancing weight of a backend",
            backend_weight.clone(),
        );
        let backend_last_change = Family::<Labels, Gauge>::default();
        registry.register(
            "backend_last_change_timestamp_seconds",
            "When the backend last went up or down (Unix time; its start if never)",
            backend_last_change.clone(),
        );
        let backend_downtime = Family::<Labels, FloatCounter>::default();
        registry.register(
            "backend_downtime_seconds",
            "Time the backend was down, counted when it comes back up",
            backend_downtime.clone(),
        );
        let access_log_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let health_checks = Family::<Labels, Counter>::default();
        registry.register(
            "health_checks",
            "Health checks run, by result",
            health_checks.clone(),
        );
        let queue_length = Family::<Labels, Gauge>::default();
        registry.register(
            "backend_queue_length",
            "Requests waiting in a backend group's queue for a backend under its maxConnections",
            queue_length.clone(),
        );
        let queue_wait = HistogramFamily::new_with_constructor(queue_wait_histogram);
        registry.register(
            "backend_queue_wait_seconds",
            "Time requests spent in a backend group's queue (served, failed or timed out)",
            queue_wait.clone(),
        );
        let queue_refused = Family::<Labels, Counter>::default();
        registry.register(
            "backend_queue_refused",
            "Requests answered 503 by a backend group's queue, by reason (timeout, overflow)",
            queue_refused.clone(),
        );
        let vrrp_state = Family::<Labels, Gauge>::default();
        registry.register(
            "vrrp_state",
            "VRRP state: 0 Initialize, 1 Backup, 2 Master, 3 Fault",
            vrrp_state.clone(),
        );
        let vrrp_priority = Family::<Labels, Gauge>::default();
        registry.register(
            "vrrp_priority",
            "Effective VRRP priority",
            vrrp_priority.clone(),
        );
        let vrrp_transitions = Family::<Labels, Counter>::default();
        registry.register(
            "vrrp_transitions",
            "VRRP state changes, by new state",
            vrrp_transitions.clone(),
        );
        let vrrp_adverts_sent = Family::<Labels, Counter>::default();
        registry.register(
            "vrrp_adverts_sent",
            "VRRP advertisements sent",
            vrrp_adverts_sent.clone(),
        );
        let vrrp_adverts_received = Family::<Labels, Counter>::default();
        registry.register(
            "vrrp_adverts_received",
            "Valid VRRP advertisements received",
            vrrp_adverts_received.clone(),
        );
        let vrrp_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "vrrp_dropped_packets",
            "VRRP packets dropped, by reason",
            vrrp_dropped.clone(),
        );
        let vrrp_garp_sent = Family::<Labels, Counter>::default();
        registry.register(
            "vrrp_garp_sent",
            "Gratuitous ARPs sent",
            vrrp_garp_sent.clone(),
        );
        let vrrp_split_brain = Family::<Labels, Counter>::default();
        registry.register(
            "vrrp_split_brain",
            "Adverts from another master, by outcome (kept, yielded)",
            vrrp_split_brain.clone(),
        );
        let vrrp_master_seconds =
            Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "vrrp_master_seconds",
            "Time spent as VRRP master",
            vrrp_master_seconds.clone(),
        );
        let track_check_up = Family::<Labels, Gauge>::default();
        registry.register(
            "track_check_up",
            "1 while a VRRP track check passes (after rise/fall), else 0",
            track_check_up.clone(),
        );
        let track_check_runs = Family::<Labels, Counter>::default();
        registry.register(
            "track_check_runs",
            "VRRP track check runs, by result (pass, fail, timeout)",
            track_check_runs.clone(),
        );
        Self {
            registry,
            track_check_up,
            track_check_runs,
            vrrp_master_seconds,
            vrrp_state,
            vrrp_priority,
            vrrp_transitions,
            vrrp_adverts_sent,
            vrrp_adverts_received,
            vrrp_dropped,
            vrrp_garp_sent,
            vrrp_split_brain,
            config_version,
            config_reloads,
            listener_connections,
            listener_active,
            listener_refused,
            http_responses,
            backend_requests,
            backend_errors,
            backend_connections_opened,
            http_client_errors,
            proxy_protocol_errors,
            tls_handshake_errors,
            backend_active,
            backend_up,
            backend_bytes_in,
            backend_bytes_out,
            backend_responses,
            backend_connect_seconds,
            backend_response_seconds,
            backend_weight,
            backend_last_change,
            backend_downtime,
            access_log_dropped,
            health_checks,
            queue_length,
            queue_wait,
            queue_refused,
        }
    }

    /// Drops the queue series of a backend group that left the config.
    pub fn forget_queue(&self, listener: &str, group: &str) {
        let labels = group_labels(listener, group);
        self.queue_length.remove(&labels);
        self.queue_wait.remove(&labels);
        for reason in ["timeout", "overflow"] {
            self.queue_refused
                .remove(&with(labels.clone(), "reason", reason));
        }
    }

    /// The queue series of backend group `group` of `listener`.
    pub fn queue(&self, listener: &str, group: &str) -> QueueMetrics {
        let labels = group_labels(listener, group);
        // One statement each: a family's read guard lives to the end of its statement,
        // and a second lookup in the same family there would wait for it forever.
        let length = self.queue_length.get_or_create(&labels).clone();
        let wait = self.queue_wait.get_or_create(&labels).clone();
        let timeouts = self
            .queue_refused
            .get_or_create(&with(labels.clone(), "reason", "timeout"))
            .clone();
        let overflows = self
            .queue_refused
            .get_or_create(&with(labels, "reason", "overflow"))
            .clone();
        QueueMetrics {
            length,
            wait,
            timeouts,
            overflows,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Drops the series of a backend that left the config.
    pub fn forget_backend(&self, listener: &str, backend: &str) {
        let labels = backend_labels(listener, backend);
        self.backend_active.remove(&labels);
        self.backend_up.remove(&labels);
        self.backend_bytes_in.remove(&labels);
        self.backend_bytes_out.remove(&labels);
        self.backend_connect_seconds.remove(&labels);
        self.backend_response_seconds.remove(&labels);
        self.backend_weight.remove(&labels);
        self.backend_last_change.remove(&labels);
        self.backend_downtime.remove(&labels);
        for class in CLASSES {
            self.backend_responses
                .remove(&with(labels.clone(), "code", class));
        }
    }
}

/// Status classes, as the `code` label says them.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`CLASSES`] of an HTTP status.
pub fn class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5)) - 1
}

pub fn listener_labels(listener: &str) -> Labels {
    vec![("listener", listener.to_string())]
}

fn group_labels(listener: &str, group: &str) -> Labels {
    vec![
        ("listener", listener.to_string()),
        ("group", group.to_string()),
    ]
}

pub fn backend_labels(listener: &str, backend: &str) -> Labels {
    vec![
        ("listener", listener.to_string()),
        ("backend", backend.to_string()),
    ]
}

pub fn with(mut labels: Labels, key: &'static str, value: impl Into<String>) -> Labels {
    labels.push((key, value.into()));
    labels
}
