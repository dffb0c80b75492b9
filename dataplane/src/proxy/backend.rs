//! One backend server as the proxy sees it: health, load, metrics and idle HTTP connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use halo_crds::node_config::{
    BackendConfig, HealthCheckConfig, ProxyProtocolVersion, UpstreamProtocol, UpstreamTlsConfig,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use super::balance::{Candidate, hash_bytes};
use super::dispatch::{self, GroupQueue};
use super::stats::BackendStats;
use super::tls::client::UpstreamTls;
use super::{proxy_protocol, slow_start, workers};
use crate::metrics::{Labels, Metrics, backend_labels, with};

/// Idle keep-alive connections kept per backend and worker: enough that a burst of
/// concurrent requests does not close and reopen connections (HAProxy keeps all).
const MAX_IDLE: usize = 1024;

pub struct Backend {
    pub config: BackendConfig,
    pub listener: String,
    pub health_check: Option<HealthCheckConfig>,
    /// Every connection starts with a PROXY protocol header naming its one client, so
    /// none is pooled for another.
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    /// TLS towards this server (its group's `tls`).
    pub tls: Option<Arc<UpstreamTls>>,
    pub id: u64,
    up: AtomicBool,
    active: AtomicU32,
    /// When it last came up (`clock_ms`), for slow start; `NOT_RAMPING` otherwise.
    up_since_ms: AtomicU64,
    /// The queue of the group it serves: a slot it frees goes to a waiting request.
    queue: ArcSwapOption<GroupQueue>,
    /// Idle keep-alive HTTP connections, one list per worker: a socket belongs to the
    /// event loop that opened it, and no other core ever takes this lock.
    idle: Box<[Mutex<Vec<TcpStream>>]>,
    opened: Counter,
    health_task: Mutex<Option<AbortHandle>>,
    labels: Labels,
    requests: Counter,
    active_gauge: Gauge,
    up_gauge: Gauge,
    metrics: Arc<Metrics>,
    pub stats: BackendStats,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} timed out after {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("connect to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Backend {
    pub fn new(
        listener: &str,
        config: BackendConfig,
        health_check: Option<HealthCheckConfig>,
        proxy_protocol: Option<ProxyProtocolVersion>,
        tls: Option<Arc<UpstreamTls>>,
        metrics: Arc<Metrics>,
        ramp: bool,
    ) -> Arc<Self> {
        let labels = backend_labels(listener, &config.name);
        let requests = metrics.backend_requests.get_or_create(&labels).clone();
        let active_gauge = metrics.backend_active.get_or_create(&labels).clone();
        let up_gauge = metrics.backend_up.get_or_create(&labels).clone();
        let opened = metrics
            .backend_connections_opened
            .get_or_create(&labels)
            .clone();
        up_gauge.set(1);
        let stats = BackendStats::new(&metrics, &labels, config.weight, health_check.is_some());
        Arc::new(Self {
            id: hash_bytes(config.name.as_bytes()),
            listener: listener.to_string(),
            config,
            health_check,
            proxy_protocol,
            tls,
            up: AtomicBool::new(true),
            active: AtomicU32::new(0),
            up_since_ms: AtomicU64::new(if ramp { clock_ms() } else { NOT_RAMPING }),
            queue: ArcSwapOption::empty(),
            idle: (0..workers::count())
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            opened,
            health_task: Mutex::new(None),
            labels,
            requests,
            active_gauge,
            up_gauge,
            metrics,
            stats,
        })
    }

    /// Same server, same check, same connection start: its state can carry over a reload.
    pub fn reusable_for(
        &self,
        listener: &str,
        config: &BackendConfig,
        hc: Option<&HealthCheckConfig>,
        proxy_protocol: Option<ProxyProtocolVersion>,
        tls: Option<(&UpstreamTlsConfig, UpstreamProtocol)>,
    ) -> bool {
        self.listener == listener
            && &self.config == config
            && self.health_check.as_ref() == hc
            && self.proxy_protocol == proxy_protocol
            && self.tls.as_ref().map(|t| (&t.config, t.protocol)) == tls
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.config.address, self.config.port)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::Relaxed);
        if was != up {
            self.stats.changed(up);
        }
        self.up_gauge.set(i64::from(up));
        if up && !was {
            self.up_since_ms.store(clock_ms(), Ordering::Relaxed);
        }
        if !up {
            self.drop_idle();
        }
        // Waiting requests may now go here, or (pinned here) must go elsewhere.
        self.dispatch_queue();
    }

    /// Serves the group's queue with what is free now.
    fn dispatch_queue(&self) {
        if let Some(queue) = self.queue.load_full() {
            dispatch::run(&queue);
        }
    }

    pub fn set_queue(&self, queue: Option<Arc<GroupQueue>>) {
        self.queue.store(queue);
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// The balancer's view of this backend at `now_ms` (`clock_ms`), its weight ramped
    /// over `slow_start_ms` after it came up.
    pub fn candidate(&self, now_ms: u64, slow_start_ms: u64) -> Candidate {
        let active = self.active();
        Candidate {
            id: self.id,
            weight: self.effective_weight(now_ms, slow_start_ms),
            backup: self.config.backup,
            up: self.is_up(),
            active,
            full: self.config.max_connections.is_some_and(|m| active >= m),
        }
    }

    /// The scaled weight (`slow_start::SCALE`) it balances with now.
    pub fn effective_weight(&self, now_ms: u64, slow_start_ms: u64) -> u32 {
        let since = match self.up_since_ms.load(Ordering::Relaxed) {
            NOT_RAMPING => None,
            at => Some(at),
        };
        slow_start::effective(self.config.weight, since, slow_start_ms, now_ms)
    }

    /// Takes one of its maxConnections slots for a request or connection until the
    /// guard drops; None when all are taken. Atomic, so concurrent requests on every
    /// worker together never exceed the limit.
    pub fn try_reserve(self: &Arc<Self>) -> Option<ActiveGuard> {
        let limit = self.config.max_connections.unwrap_or(u32::MAX);
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        self.active_gauge.inc();
        self.requests.inc();
        Some(ActiveGuard(self.clone()))
    }

    pub fn count_error(&self, kind: &'static str) {
        self.metrics
            .backend_errors
            .get_or_create(&with(self.labels.clone(), "kind", kind))
            .inc();
    }

    pub fn count_check(&self, result: &'static str) {
        self.metrics
            .health_checks
            .get_or_create(&with(self.labels.clone(), "result", result))
            .inc();
    }

    pub async fn connect(&self, timeout: Duration) -> Result<TcpStream, ConnectError> {
        let addr = self.addr();
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => Err(ConnectError::Timeout {
                addr,
                after: timeout,
            }),
            Ok(Err(source)) => Err(ConnectError::Io { addr, source }),
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                self.opened.inc();
                Ok(stream)
            }
        }
    }

    /// A new connection for the client `client` that connected to `accepted`, opening
    /// with the PROXY protocol header when the group sends one.
    pub async fn open(
        &self,
        timeout: Duration,
        client: SocketAddr,
        accepted: &TcpStream,
    ) -> Result<TcpStream, ConnectError> {
        // Asked only when needed: one system call fewer per connection otherwise.
        let local = match self.proxy_protocol {
            Some(_) => Some(accepted.local_addr().map_err(|source| ConnectError::Io {
                addr: self.addr(),
                source,
            })?),
            None => None,
        };
        self.open_for(timeout, client, local).await
    }

    /// A new connection for the client `client` that connected to `local`, opening with
    /// the PROXY protocol header when the group sends one (which needs `local`).
    pub async fn open_for(
        &self,
        timeout: Duration,
        client: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Result<TcpStream, ConnectError> {
        let mut stream = self.connect(timeout).await?;
        if let Some(version) = self.proxy_protocol {
            let addr = self.addr();
            let local = local.ok_or_else(|| ConnectError::Io {
                addr,
                source: std::io::Error::other("the client connection's local address is unknown"),
            })?;
            proxy_protocol::send(&mut stream, version, client, local, timeout)
                .await
                .map_err(|source| ConnectError::Io { addr, source })?;
        }
        Ok(stream)
    }

    /// A pooled connection of this worker that the backend has not closed meanwhile.
    pub fn take_idle(&self) -> Option<TcpStream> {
        if self.proxy_protocol.is_some() {
            return None;
        }
        let mut idle = self.idle.get(workers::current()?)?.lock().ok()?;
        while let Some(stream) = idle.pop() {
            // Readiness is cached by the event loop: this makes no system call unless
            // the backend sent something (a close, or stray bytes) while idle.
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(stream),
                _ => continue,
            }
        }
        None
    }

    pub fn put_idle(&self, stream: TcpStream) {
        if !self.is_up() || self.proxy_protocol.is_some() {
            return;
        }
        let Some(list) = workers::current().and_then(|i| self.idle.get(i)) else {
            return;
        };
        if let Ok(mut idle) = list.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(stream);
        }
    }

    fn drop_idle(&self) {
        for list in &self.idle {
            if let Ok(mut idle) = list.lock() {
                idle.clear();
            }
        }
    }

    pub fn set_health_task(&self, handle: AbortHandle) {
        if let Ok(mut slot) = self.health_task.lock()
            && let Some(old) = slot.replace(handle)
        {
            old.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.health_task.lock()
            && let Some(task) = slot.take()
        {
            task.abort();
        }
    }
}

pub struct ActiveGuard(Arc<Backend>);

impl ActiveGuard {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        // SeqCst: ordered before the queue's waiter count is read (see `Queue::with`).
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.active_gauge.dec();
        self.0.dispatch_queue();
    }
}

const NOT_RAMPING: u64 = u64::MAX;

/// Milliseconds on a monotonic clock that starts with the process.
pub fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
}
