//! Prometheus metrics of the data plane (prometheus-client text format).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub type Labels = Vec<(&'static str, String)>;

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
    pub health_checks: Family<Labels, Counter>,
    pub vrrp_state: Family<Labels, Gauge>,
    pub vrrp_priority: Family<Labels, Gauge>,
    pub vrrp_transitions: Family<Labels, Counter>,
    pub vrrp_adverts_sent: Family<Labels, Counter>,
    pub vrrp_adverts_received: Family<Labels, Counter>,
    pub vrrp_dropped: Family<Labels, Counter>,
    pub vrrp_garp_sent: Family<Labels, Counter>,
    pub vrrp_split_brain: Family<Labels, Counter>,
    pub vrrp_master_seconds: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
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
        let health_checks = Family::<Labels, Counter>::default();
        registry.register(
            "health_checks",
            "Health checks run, by result",
            health_checks.clone(),
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
        Self {
            registry,
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
            health_checks,
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
    }
}

pub fn listener_labels(listener: &str) -> Labels {
    vec![("listener", listener.to_string())]
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
