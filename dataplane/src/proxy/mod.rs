//! The L4/L7 proxy: listening sockets, balancing, health checks, HTTP and TCP forwarding.

pub mod accesslog;
pub mod backend;
pub mod balance;
pub mod bufpool;
pub mod dispatch;
pub mod filter;
pub mod gate;
pub mod h1;
pub mod h2;
pub mod health;
pub mod listener;
pub mod persist;
pub mod proxy_protocol;
pub mod pump;
pub mod queue;
pub mod route;
pub mod slow_start;
pub mod splice;
pub mod stats;
pub mod sticky;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod workers;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use halo_crds::load_balancer::Protocol;
use halo_crds::node_config::{GroupConfig, ListenerConfig, RouteAction, UpstreamProtocol};
use halo_crds::render::DEFAULT_GROUP;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use self::backend::{ActiveGuard, Backend};
use self::balance::{BalanceState, Candidate, PickInput, hash_bytes, mix64};
use self::dispatch::{GroupQueue, Refused};
use self::filter::RoutePlan;
use self::persist::CookieRule;
use self::route::Routes;
use crate::metrics::{Labels, Metrics, listener_labels, with};

/// What one listener serves right now: swapped whole on reload, while connections that
/// started earlier keep the snapshot they began with.
pub struct Service {
    pub config: ListenerConfig,
    /// One per `config.groups`, same order.
    pub groups: Vec<Arc<Group>>,
    /// HTTP routing (unused by TCP listeners).
    pub routes: Routes,
    /// TLS termination (HTTPS listeners); built with the service, so a reload's new
    /// certificates serve new handshakes while open connections keep theirs.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    limit: Option<Arc<Semaphore>>,
    pub labels: Labels,
    pub metrics: Arc<Metrics>,
    /// `None` when the listener has no access log.
    pub access_log: Option<accesslog::Logger>,
    connections: Counter,
    active: Gauge,
    /// HTTP responses by status class 1xx..5xx, looked up once instead of per request.
    responses: [Counter; 5],
}

/// One backend group's servers and balancing state.
pub struct Group {
    pub config: GroupConfig,
    pub backends: Vec<Arc<Backend>>,
    balance: Mutex<BalanceState>,
    /// Itself, for the queue's waiters (which outlive no group they wait on).
    me: Weak<Group>,
    /// Requests waiting for a slot; None when no backend has a connection limit.
    queue: Option<Arc<GroupQueue>>,
    /// Cookie persistence, and each backend's cookie value (same order as `backends`).
    pub cookie: Option<CookieRule>,
    cookie_values: Vec<String>,
}

/// How a listener builds its groups.
#[derive(Clone, Copy, Debug)]
pub struct Build {
    /// Backends new to the data plane ramp up (slow start): false for the first config.
    pub ramp_new: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("no backend of {listener} could take the request{}", why.map(|w| format!(": {w}")).unwrap_or_default())]
pub struct NoBackend {
    pub listener: String,
    pub why: Option<Refused>,
}

impl Group {
    fn new(
        listener: &ListenerConfig,
        config: GroupConfig,
        upstream_tls: Option<Arc<tls::client::UpstreamTls>>,
        previous: Option<&Group>,
        metrics: &Arc<Metrics>,
        build: Build,
    ) -> Arc<Self> {
        let backends = Self::build_backends(
            &listener.name,
            &config,
            upstream_tls,
            previous,
            metrics,
            build,
        );
        let cookie = CookieRule::of(
            config.persistence.as_ref(),
            listener.protocol == Protocol::Https,
        );
        let cookie_values = backends
            .iter()
            .map(|b| persist::cookie_value(&listener.name, b.name()))
            .collect();
        let queue = dispatch::queue_for(&config, previous.and_then(|p| p.queue.clone()), || {
            metrics.queue(&listener.name, &config.name)
        });
        for b in &backends {
            b.set_queue(queue.clone());
        }
        let group = Arc::new_cyclic(|me| Self {
            config,
            backends,
            balance: Mutex::new(BalanceState::default()),
            me: me.clone(),
            queue,
            cookie,
            cookie_values,
        });
        // New backends or higher limits may serve requests queued before the reload.
        if let Some(q) = &group.queue {
            dispatch::run(q);
        }
        group
    }

    fn build_backends(
        listener: &str,
        config: &GroupConfig,
        upstream_tls: Option<Arc<tls::client::UpstreamTls>>,
        previous: Option<&Group>,
        metrics: &Arc<Metrics>,
        build: Build,
    ) -> Vec<Arc<Backend>> {
        config
            .backends
            .iter()
            .map(|b| {
                let mut b = b.clone();
                if config.name != DEFAULT_GROUP {
                    // Names are unique within a group; the listener's metrics and status
                    // need them unique across its groups.
                    b.name = format!("{}/{}", config.name, b.name);
                }
                previous
                    .and_then(|p| {
                        p.backends.iter().find(|old| {
                            old.reusable_for(
                                listener,
                                &b,
                                config.health_check.as_ref(),
                                config.proxy_protocol,
                                config.tls.as_ref().map(|t| (t, config.protocol)),
                            )
                        })
                    })
                    .cloned()
                    .unwrap_or_else(|| {
                        let fresh = Backend::new(
                            listener,
                            b,
                            config.health_check.clone(),
                            config.proxy_protocol,
                            upstream_tls.clone(),
                            metrics.clone(),
                            build.ramp_new,
                        );
                        health::spawn(&fresh);
                        fresh
                    })
            })
            .collect()
    }

    /// The balancer's choice among `candidates` for a client, skipping `excluded` ones.
    fn pick_from(
        &self,
        candidates: &[Candidate],
        excluded: &[bool],
        client: IpAddr,
    ) -> Option<usize> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let n = SEQUENCE.fetch_add(2, Ordering::Relaxed);
        let input = PickInput {
            source_hash: source_hash(client),
            random: (mix64(n ^ random_seed()), mix64((n + 1) ^ random_seed())),
        };
        let mut state = self.balance.lock().ok()?;
        balance::pick(
            self.config.algorithm,
            &mut state,
            candidates,
            excluded,
            input,
        )
    }

    /// The backend a persistence cookie value names, if it is one of this group's.
    pub fn cookie_backend(&self, value: &[u8]) -> Option<usize> {
        persist::named(value, &self.cookie_values)
    }

    /// The persistence cookie value of backend `i`.
    pub fn cookie_value(&self, i: usize) -> Option<&str> {
        self.cookie_values.get(i).map(String::as_str)
    }

    /// Index of `backend` in this group.
    pub fn index_of(&self, backend: &Arc<Backend>) -> Option<usize> {
        self.backends.iter().position(|b| Arc::ptr_eq(b, backend))
    }

    pub fn ready_backends(&self) -> usize {
        self.backends.iter().filter(|b| b.is_up()).count()
    }
}

impl Service {
    /// Builds the service for `config`, carrying over backends (health state, pooled
    /// connections) and the connection limit from the previous one where unchanged.
    pub fn new(
        config: ListenerConfig,
        previous: Option<&Service>,
        metrics: Arc<Metrics>,
        build: Build,
    ) -> Arc<Self> {
        let built = tls::ListenerTls::build(&config).unwrap_or_else(|e| {
            // The runtime checks TLS before applying a config; this is a fallback.
            tracing::error!(listener = %config.name, error = %e, "TLS not served");
            tls::ListenerTls {
                server: None,
                upstream: Vec::new(),
            }
        });
        let groups = config
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let old = previous.and_then(|p| p.groups.iter().find(|o| o.config.name == g.name));
                let upstream = built.upstream.get(i).cloned().flatten();
                Group::new(
                    &config,
                    g.clone(),
                    upstream,
                    old.map(|o| &**o),
                    &metrics,
                    build,
                )
            })
            .collect();
        let limit = match previous {
            Some(p) if p.config.max_connections == config.max_connections => p.limit.clone(),
            _ => config
                .max_connections
                .map(|m| Arc::new(Semaphore::new(m as usize))),
        };
        let routes = Routes::compile(&config).unwrap_or_else(|e| {
            // The runtime checks routes before applying a config; this is a fallback.
            tracing::error!(listener = %config.name, error = %e, "routes not served");
            Routes::none()
        });
        let labels = listener_labels(&config.name);
        let connections = metrics.listener_connections.get_or_create(&labels).clone();
        let active = metrics.listener_active.get_or_create(&labels).clone();
        let responses = ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
            metrics
                .http_responses
                .get_or_create(&with(labels.clone(), "code", class))
                .clone()
        });
        let access_log =
            accesslog::Logger::open(&config.name, config.access_log.as_ref(), &metrics);
        Arc::new(Self {
            access_log,
            config,
            groups,
            routes,
            tls: built.server,
            limit,
            labels,
            metrics,
            connections,
            active,
            responses,
        })
    }

    /// Every backend of every group.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.groups.iter().flat_map(|g| g.backends.iter())
    }

    /// The group an L4 listener forwards to: the first of its only route.
    pub fn stream_group(&self) -> Option<&Group> {
        self.config.routes.iter().find_map(|r| match &r.action {
            RouteAction::Forward { groups } => groups
                .first()
                .and_then(|w| self.groups.get(w.group))
                .map(|g| &**g),
            _ => None,
        })
    }

    /// The backend group a forwarded request of `plan` goes to now (by weight).
    pub fn route_group(&self, plan: &RoutePlan) -> Option<&Group> {
        plan.action
            .pick_group()
            .and_then(|g| self.groups.get(g))
            .map(|g| &**g)
    }

    /// Counts one HTTP response sent to a client.
    pub fn count_response(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.responses[class].inc();
    }

    /// Whether plain HTTP/1.1 clients of this listener go through the hyper-based
    /// engine: the byte-level one speaks HTTP/1.1 over plain TCP to backends only.
    pub fn needs_hyper(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.config.tls.is_some() || g.config.protocol == UpstreamProtocol::Http2)
    }

    /// Counts a client connection closed in or before its TLS handshake.
    pub fn count_tls_error(&self, reason: &'static str) {
        self.metrics
            .tls_handshake_errors
            .get_or_create(&with(self.labels.clone(), "reason", reason))
            .inc();
    }

    /// Counts a request refused as malformed or over a limit.
    pub fn count_client_error(&self, reason: &'static str) {
        self.metrics
            .http_client_errors
            .get_or_create(&with(self.labels.clone(), "reason", reason))
            .inc();
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeouts.connect_ms)
    }

    /// Admits a new client connection, or refuses it when the listener is at maxConnections.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let permit = match &self.limit {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    self.metrics
                        .listener_refused
                        .get_or_create(&with(self.labels.clone(), "reason", "max_connections"))
                        .inc();
                    return None;
                }
            },
        };
        self.connections.inc();
        self.active.inc();
        Some(Admitted {
            _permit: permit,
            service: self.clone(),
        })
    }

    /// Opens a connection to a backend of `group` for `client` (who connected to
    /// `accepted`), moving on to another one after a connect failure up to the group's
    /// `retries` times.
    pub async fn connect(
        &self,
        group: &Group,
        client: SocketAddr,
        accepted: &TcpStream,
    ) -> Result<(ActiveGuard, TcpStream), NoBackend> {
        let mut excluded = vec![false; group.backends.len()];
        for _ in 0..=group.config.retries {
            let guard = match group
                .acquire(client.ip(), None, &excluded, self.queue_timeout())
                .await
            {
                Ok(guard) => guard,
                Err(Refused::NoBackend) => break,
                Err(refused) => return Err(self.refused(refused)),
            };
            let backend = guard.backend().clone();
            if let Some(i) = group.index_of(&backend) {
                excluded[i] = true;
            }
            match backend.open(self.connect_timeout(), client, accepted).await {
                Ok(stream) => return Ok((guard, stream)),
                Err(e) => {
                    backend.count_error("connect");
                    tracing::warn!(listener = %self.config.name, backend = backend.name(), error = %e, "backend connect failed, trying another");
                }
            }
        }
        Err(self.no_backend())
    }

    pub fn no_backend(&self) -> NoBackend {
        NoBackend {
            listener: self.config.name.clone(),
            why: None,
        }
    }

    /// A request the group's slots and queue refused.
    pub fn refused(&self, why: Refused) -> NoBackend {
        NoBackend {
            listener: self.config.name.clone(),
            why: Some(why),
        }
    }

    /// How long a request may wait in a group's queue for a backend slot.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeouts.queue_ms)
    }

    pub fn ready_backends(&self) -> usize {
        self.backends().filter(|b| b.is_up()).count()
    }
}

/// A client connection the listener accepted; releases its slot when dropped.
pub struct Admitted {
    _permit: Option<OwnedSemaphorePermit>,
    service: Arc<Service>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.service.active.dec();
    }
}

/// Hash of a client address, for source hashing and affinity.
pub fn source_hash(client: IpAddr) -> u64 {
    match client {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| RandomState::new().hash_one(0x4841_4c4f_u64))
}
