//! One backend server as the proxy sees it: health, load, metrics and idle HTTP connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use halo_crds::node_config::{
    BackendConfig, HealthCheckConfig, ProxyProtocolVersion, UpstreamProtocol, UpstreamTlsConfig,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use super::balance::{Candidate, hash_bytes};
use super::tls::client::UpstreamTls;
use super::{proxy_protocol, workers};
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
        Arc::new(Self {
            id: hash_bytes(config.name.as_bytes()),
            listener: listener.to_string(),
            config,
            health_check,
            proxy_protocol,
            tls,
            up: AtomicBool::new(true),
            active: AtomicU32::new(0),
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
        self.up.store(up, Ordering::Relaxed);
        self.up_gauge.set(i64::from(up));
        if !up {
            self.drop_idle();
        }
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn candidate(&self) -> Candidate {
        let active = self.active();
        Candidate {
            id: self.id,
            weight: self.config.weight,
            backup: self.config.backup,
            up: self.is_up(),
            active,
            full: self.config.max_connections.is_some_and(|m| active >= m),
        }
    }

    /// Counts one request or connection in flight until the guard drops.
    pub fn track(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.active_gauge.inc();
        self.requests.inc();
        ActiveGuard(self.clone())
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
        let mut stream = self.connect(timeout).await?;
        if let Some(version) = self.proxy_protocol {
            let addr = self.addr();
            let local = accepted
                .local_addr()
                .map_err(|source| ConnectError::Io { addr, source })?;
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
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.active_gauge.dec();
    }
}
