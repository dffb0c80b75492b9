//! Controller metrics and the plain-HTTP /metrics, /healthz endpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::lease::Leader;

pub type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    pub renders: Counter,
    pub render_seconds: Histogram,
    pub reconciles: Family<Labels, Counter>,
    pub reconcile_errors: Family<Labels, Counter>,
    pub status_patches: Family<Labels, Counter>,
    pub pushes: Counter,
    pub push_seconds: Histogram,
    pub connected: Gauge,
    pub auth_refused: Family<Labels, Counter>,
    pub leader: Gauge,
    pub secrets_held: Gauge,
    pub secret_problems: Gauge,
    pub split_brain: Family<Labels, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("halo_controller");
        let renders = Counter::default();
        registry.register(
            "renders",
            "Full renders of every node's config",
            renders.clone(),
        );
        let render_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "render_seconds",
            "Time to render every node's config",
            render_seconds.clone(),
        );
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "reconciles",
            "Objects whose status was computed, by kind",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed status writes, by kind",
            reconcile_errors.clone(),
        );
        let status_patches = Family::<Labels, Counter>::default();
        registry.register(
            "status_patches",
            "Status patches written, by kind (only objects whose status changed)",
            status_patches.clone(),
        );
        let pushes = Counter::default();
        registry.register(
            "pushes",
            "Config snapshots pushed to data planes",
            pushes.clone(),
        );
        let push_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "push_latency_seconds",
            "From render to the snapshot written to a data plane",
            push_seconds.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "connected_dataplanes",
            "Data planes holding a config stream",
            connected.clone(),
        );
        let auth_refused = Family::<Labels, Counter>::default();
        registry.register(
            "auth_refused",
            "Requests refused, by reason",
            auth_refused.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "Whether this replica leads (1) or stands by (0)",
            leader.clone(),
        );
        let secrets_held = Gauge::default();
        registry.register(
            "secrets_held",
            "TLS and CA Secrets whose contents are held (those LoadBalancers reference)",
            secrets_held.clone(),
        );
        let secret_problems = Gauge::default();
        registry.register(
            "secret_problems",
            "LoadBalancer fields whose Secret is missing or invalid",
            secret_problems.clone(),
        );
        let split_brain = Family::<Labels, Gauge>::default();
        registry.register(
            "split_brain",
            "Nodes reporting Master for a VirtualIP when more than one does (0: none)",
            split_brain.clone(),
        );
        Self {
            registry,
            renders,
            render_seconds,
            reconciles,
            reconcile_errors,
            status_patches,
            pushes,
            push_seconds,
            connected,
            auth_refused,
            leader,
            secrets_held,
            secret_problems,
            split_brain,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    leader: Arc<Leader>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let leader = leader.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                metrics.leader.set(i64::from(leader.is_leader()));
                let (status, body) = match req.uri().path() {
                    "/metrics" => (StatusCode::OK, metrics.encode()),
                    "/healthz" | "/readyz" => (StatusCode::OK, "ok\n".to_string()),
                    _ => (
                        StatusCode::NOT_FOUND,
                        "try /metrics or /healthz\n".to_string(),
                    ),
                };
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
