//! Applies a NodeConfig as a diff: binds new sockets first (so a config that cannot be
//! served is refused before anything changes), then swaps each listener's service,
//! closes sockets that are gone and hands VIPs to their holder. Connections already
//! open keep the service they started with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use halo_crds::NodeConfig;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, with};
use crate::proxy::backend::clock_ms;
use crate::proxy::gate::Gate;
use crate::proxy::route::Routes;
use crate::proxy::workers::Workers;
use crate::proxy::{Build, Service, listener, slow_start};
use crate::vip::VipHolder;
use crate::vrrp::{TakeoverError, TrackInputs, VrrpManager};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{addr} is claimed by both {first} and {second}")]
    DuplicateBind {
        addr: SocketAddr,
        first: String,
        second: String,
    },
    #[error("VirtualIP {vip}: {message}")]
    Vip { vip: String, message: String },
    #[error("listener {listener}: {error}")]
    Tls {
        listener: String,
        error: crate::proxy::tls::TlsError,
    },
    #[error("listener {listener}: {error}")]
    Routes {
        listener: String,
        error: crate::proxy::route::RouteError,
    },
}

/// One listening address: a socket per worker, all serving the same swappable service.
struct Socket {
    listener: String,
    slot: Arc<ArcSwap<Service>>,
    tasks: Vec<JoinHandle<()>>,
    addr: SocketAddr,
    gate: Arc<Gate>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.gate.unregister(&self.addr);
    }
}

/// A socket that could not be bound (port taken by another process): retried, reported
/// in /status, and tracked by VRRP as `bindFailure`.
struct Unbound {
    listener: String,
    error: String,
    last_try: std::time::Instant,
}

#[derive(Default)]
struct State {
    config: Option<NodeConfig>,
    services: BTreeMap<String, Arc<Service>>,
    sockets: BTreeMap<SocketAddr, Socket>,
    unbound: BTreeMap<SocketAddr, Unbound>,
}

const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a graceful stop waits for requests in flight.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
const TRACK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

pub struct Runtime {
    metrics: Arc<Metrics>,
    workers: Workers,
    vips: VipHolder,
    vrrp: VrrpManager,
    /// Shared with VRRP: a master handing over stops new connections first.
    gate: Arc<Gate>,
    state: Mutex<State>,
}

impl Runtime {
    /// A runtime whose proxy runs on `workers` event loops.
    pub fn new(metrics: Arc<Metrics>, workers: usize) -> std::io::Result<Self> {
        let gate = Arc::new(Gate::default());
        Ok(Self {
            metrics,
            workers: Workers::start(workers)?,
            vips: VipHolder::default(),
            vrrp: VrrpManager::new(gate.clone()),
            gate,
            state: Mutex::new(State::default()),
        })
    }

    /// Starts the accept loops of one address, one per worker, and hands the gate a
    /// duplicate of each socket.
    fn listen(
        &self,
        addr: SocketAddr,
        listener: &str,
        sockets: Vec<std::net::TcpListener>,
        service: Arc<Service>,
    ) -> Socket {
        let slot = Arc::new(ArcSwap::new(service));
        let dups = sockets.iter().filter_map(|s| s.try_clone().ok()).collect();
        self.gate.register(addr, dups);
        let tasks = sockets
            .into_iter()
            .enumerate()
            .filter_map(|(i, socket)| {
                let handle = self.workers.handle(i)?;
                Some(handle.spawn(listener::accept_loop(socket, slot.clone())))
            })
            .collect();
        Socket {
            listener: listener.to_string(),
            slot,
            tasks,
            addr,
            gate: self.gate.clone(),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn applied_version(&self) -> Option<(u64, String)> {
        let state = self.state.lock().ok()?;
        state.config.as_ref().map(|c| (c.version, c.hash.clone()))
    }

    pub fn applied_hash(&self) -> Option<String> {
        self.applied_version().map(|(_, h)| h)
    }

    /// The config being served, if any.
    pub fn config(&self) -> Option<NodeConfig> {
        self.lock().config.clone()
    }

    /// Applies `config` whole or not at all.
    pub async fn apply(&self, config: NodeConfig) -> Result<(), ApplyError> {
        let result = self.apply_inner(config).await;
        let label = if result.is_ok() {
            "applied"
        } else {
            "rejected"
        };
        self.metrics
            .config_reloads
            .get_or_create(&vec![("result", label.to_string())])
            .inc();
        result
    }

    async fn apply_inner(&self, config: NodeConfig) -> Result<(), ApplyError> {
        // Which listener each socket address belongs to now.
        let mut wanted: BTreeMap<SocketAddr, String> = BTreeMap::new();
        for l in &config.listeners {
            check_listener(l)?;
            for ip in &l.addresses {
                let addr = SocketAddr::new(*ip, l.port);
                if let Some(first) = wanted.insert(addr, l.name.clone()) {
                    return Err(ApplyError::DuplicateBind {
                        addr,
                        first,
                        second: l.name.clone(),
                    });
                }
            }
        }

        // Bind what is new before anything running changes. A port another process
        // holds does not refuse the whole config: it is retried and reported.
        let mut fresh = BTreeMap::new();
        let mut failed = BTreeMap::new();
        {
            let state = self.lock();
            for (addr, name) in &wanted {
                if state.sockets.contains_key(addr) {
                    continue;
                }
                match listener::bind(*addr, self.workers.len()) {
                    Ok(bound) => {
                        fresh.insert(*addr, bound);
                    }
                    Err(e) => {
                        tracing::error!(%addr, listener = %name, error = %e, "cannot listen; will retry");
                        failed.insert(
                            *addr,
                            Unbound {
                                listener: name.clone(),
                                error: e.to_string(),
                                last_try: std::time::Instant::now(),
                            },
                        );
                    }
                }
            }
        }

        // Swap. Must not fail from here on.
        self.vips.apply(&config.vips).await;
        self.vrrp.apply(&config.vips, &self.metrics).await;
        let mut state = self.lock();
        let mut services = BTreeMap::new();
        // Backends that appear after the first config ramp up (slow start).
        let build = Build {
            ramp_new: state.config.is_some(),
        };
        for l in &config.listeners {
            let previous = state.services.get(&l.name).cloned();
            let service = Service::new(
                halo_crds::node_config::ListenerConfig::clone(l),
                previous.as_deref(),
                self.metrics.clone(),
                build,
            );
            services.insert(l.name.clone(), service);
        }
        for old in state.services.values() {
            for b in old.backends() {
                let kept = services
                    .get(&old.config.name)
                    .is_some_and(|s| s.backends().any(|n| Arc::ptr_eq(n, b)));
                if !kept {
                    self.metrics.forget_backend(&old.config.name, b.name());
                }
            }
            let new = services.get(&old.config.name);
            for g in &old.groups {
                let kept =
                    new.is_some_and(|s| s.groups.iter().any(|n| n.config.name == g.config.name));
                if !kept {
                    self.metrics.forget_queue(&old.config.name, &g.config.name);
                }
            }
        }
        state.sockets.retain(|addr, _| wanted.contains_key(addr));
        for (addr, name) in &wanted {
            let Some(service) = services.get(name).cloned() else {
                continue;
            };
            if let Some(socket) = state.sockets.get_mut(addr) {
                socket.slot.store(service);
                socket.listener = name.clone();
            } else if let Some(bound) = fresh.remove(addr) {
                let socket = self.listen(*addr, name, bound, service);
                tracing::info!(%addr, listener = %name, workers = socket.tasks.len(), "listening");
                state.sockets.insert(*addr, socket);
            }
        }
        state.unbound = failed;
        state.services = services;
        self.metrics
            .config_version
            .set(i64::try_from(config.version).unwrap_or(i64::MAX));
        tracing::info!(version = config.version, hash = %config.hash, listeners = config.listeners.len(), vips = config.vips.len(), "config applied");
        state.config = Some(config);
        Ok(())
    }

    /// Background upkeep: retries binds, feeds VRRP tracking and moves VIPs to their
    /// preferred node. Runs until the process ends.
    pub fn start_background(self: &Arc<Self>) {
        let runtime = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TRACK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                runtime.retry_binds();
                let inputs = runtime.track_inputs();
                runtime.vrrp.track(&inputs).await;
                runtime.vrrp.align_groups().await;
                runtime.vrrp.prefer().await;
            }
        });
    }

    fn retry_binds(&self) {
        let mut state = self.lock();
        let due: Vec<SocketAddr> = state
            .unbound
            .iter()
            .filter(|(_, u)| u.last_try.elapsed() >= BIND_RETRY)
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            let Some(name) = state.unbound.get(&addr).map(|u| u.listener.clone()) else {
                continue;
            };
            let Some(service) = state.services.get(&name).cloned() else {
                state.unbound.remove(&addr);
                continue;
            };
            match listener::bind(addr, self.workers.len()) {
                Ok(bound) => {
                    state.unbound.remove(&addr);
                    let socket = self.listen(addr, &name, bound, service);
                    tracing::info!(%addr, listener = %name, "listening (after retry)");
                    state.sockets.insert(addr, socket);
                }
                Err(e) => {
                    if let Some(u) = state.unbound.get_mut(&addr) {
                        u.error = e.to_string();
                        u.last_try = std::time::Instant::now();
                    }
                }
            }
        }
    }

    fn track_inputs(&self) -> TrackInputs {
        let state = self.lock();
        let mut inputs = TrackInputs::default();
        for s in state.services.values() {
            if let Some(vip) = &s.config.vip
                && s.ready_backends() == 0
            {
                inputs.backends_down.insert(vip.clone());
            }
        }
        for u in state.unbound.values() {
            if let Some(vip) = state
                .services
                .get(&u.listener)
                .and_then(|s| s.config.vip.clone())
            {
                inputs.bind_failed.insert(vip);
            }
        }
        inputs.checks_failed = self.vrrp.failed_checks();
        inputs
    }

    /// Planned handover of a VirtualIP to this node.
    pub async fn takeover(&self, vip: &str) -> Result<(), TakeoverError> {
        self.vrrp.takeover(vip).await
    }

    /// Stops listening and lets go of every VIP (graceful stop).
    pub async fn shutdown(&self) {
        // No new connections from here on (dropped SYNs, resent by clients a second
        // later, when the VIPs have moved); those under way finish here.
        self.gate.close_all();
        // Hand the VIPs over (priority 0), while this node still serves them.
        self.vrrp.stop_all().await;
        {
            let mut state = self.lock();
            state.sockets.clear();
        }
        // Nothing new is accepted; requests already at a backend get to finish.
        let until = tokio::time::Instant::now() + DRAIN_LIMIT;
        while self.in_flight() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.vips.release_all().await;
    }

    /// Backend connections in use, over every listener.
    fn in_flight(&self) -> u32 {
        let state = self.lock();
        state
            .services
            .values()
            .flat_map(|s| s.groups.iter())
            .flat_map(|g| g.backends.iter())
            .map(|b| b.active())
            .sum()
    }

    /// Returns when a VRRP instance has changed state (see `VrrpManager::state_changed`).
    pub async fn vrrp_state_changed(&self) {
        self.vrrp.state_changed().await;
    }

    pub fn status(&self) -> RuntimeStatus {
        let state = self.lock();
        let (version, hash) = state
            .config
            .as_ref()
            .map_or((None, None), |c| (Some(c.version), Some(c.hash.clone())));
        RuntimeStatus {
            node: state.config.as_ref().map(|c| c.node.clone()),
            version,
            hash,
            vips: self.vips.status(),
            vrrp: self.vrrp.status(),
            bind_errors: state
                .unbound
                .iter()
                .map(|(addr, u)| BindError {
                    address: addr.to_string(),
                    listener: u.listener.clone(),
                    error: u.error.clone(),
                })
                .collect(),
            listeners: state
                .services
                .values()
                .map(|s| ListenerStatus {
                    name: s.config.name.clone(),
                    protocol: format!("{:?}", s.config.protocol).to_uppercase(),
                    bind: state
                        .sockets
                        .iter()
                        .filter(|(_, sock)| sock.listener == s.config.name)
                        .map(|(addr, _)| addr.to_string())
                        .collect(),
                    ready_backends: s.ready_backends(),
                    backends: s
                        .groups
                        .iter()
                        .flat_map(|g| g.backends.iter().map(move |b| (g, b)))
                        .map(|(g, b)| BackendStatus {
                            name: b.name().to_string(),
                            group: g.config.name.clone(),
                            address: b.addr().to_string(),
                            up: b.is_up(),
                            backup: b.config.backup,
                            weight: b.config.weight,
                            effective_weight: slow_start::display(
                                b.effective_weight(clock_ms(), g.config.slow_start_ms),
                            ),
                            active: b.active(),
                            max_connections: b.config.max_connections,
                            stats: b.stats.view(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Counts a config that was refused before reaching `apply` (parse/render errors).
    pub fn count_rejected(&self) {
        self.metrics
            .config_reloads
            .get_or_create(&with(Vec::new(), "result", "rejected"))
            .inc();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every step replaces
        // whole values), so keep serving rather than poisoning the data plane.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStatus {
    pub node: Option<String>,
    pub version: Option<u64>,
    pub hash: Option<String>,
    pub vips: Vec<crate::vip::VipStatus>,
    pub vrrp: Vec<crate::vrrp::instance::InstanceStatus>,
    pub bind_errors: Vec<BindError>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BindError {
    pub address: String,
    pub listener: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    pub protocol: String,
    pub bind: Vec<String>,
    pub ready_backends: usize,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    pub name: String,
    /// The backend group (`default` for the listener's own backends).
    pub group: String,
    pub address: String,
    pub up: bool,
    pub backup: bool,
    pub weight: u32,
    /// The weight it balances with now: below `weight` while slow start ramps it up.
    pub effective_weight: f64,
    pub active: u32,
    /// Sessions, bytes, responses, times, check and up/down history.
    #[serde(flatten)]
    pub stats: crate::proxy::stats::StatsView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

/// What the data plane itself must accept in a listener before serving it: its routes
/// compile, its certificates and keys load.
pub fn check_listener(l: &halo_crds::node_config::ListenerConfig) -> Result<(), ApplyError> {
    if let Err(error) = Routes::compile(l) {
        return Err(ApplyError::Routes {
            listener: l.name.clone(),
            error,
        });
    }
    if let Err(error) = crate::proxy::tls::ListenerTls::build(l) {
        return Err(ApplyError::Tls {
            listener: l.name.clone(),
            error,
        });
    }
    Ok(())
}
