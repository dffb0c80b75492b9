//! One VRRP instance: the pure machine driven by a raw socket, timers and commands, with
//! its actions carried out through netlink (addresses) and gratuitous ARP.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use halo_crds::node_config::{VipConfig, VrrpConfig};
use halo_crds::protocol::VrrpState;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::announce::Announcer;
use super::machine::{Action, Config, Machine, State, Version};
use super::packet::{self, Advert, DropReason};
use super::socket::{VrrpSocket, multicast_group};
use crate::metrics::{Metrics, with};
use crate::netlink::Netlink;
use crate::proxy::gate::Gate;

pub enum Command {
    /// Leave the election; with `hand_over` (a graceful stop of the data plane) a master
    /// keeps serving until its successor advertises.
    Stop {
        done: oneshot::Sender<()>,
        hand_over: bool,
    },
    /// Tracking result, applied whenever it changes.
    Track(Tracking),
    /// Planned handover to this node.
    Takeover(oneshot::Sender<Result<(), String>>),
}

/// What tracking and the node's state ask of an instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracking {
    /// Lower the configured priority by this much.
    pub penalty: u8,
    /// Leave the election.
    pub fault: bool,
    /// Hand the addresses to another node and stay below everyone (cordoned node).
    pub draining: bool,
}

impl Tracking {
    /// Across a sync group: the worst of both, so the group moves as one.
    pub fn merge(self, other: Tracking) -> Tracking {
        Tracking {
            penalty: self.penalty.max(other.penalty),
            fault: self.fault || other.fault,
            draining: self.draining || other.draining,
        }
    }

    /// The priority to run at, from the configured (or takeover-raised) one.
    pub fn priority(self, base: u8) -> u8 {
        if self.draining {
            1
        } else {
            base.saturating_sub(self.penalty).max(1)
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    pub name: String,
    pub vrid: u8,
    pub state: VrrpState,
    pub priority: u8,
    pub interface: Option<String>,
    pub since_ms_ago: u64,
    pub error: Option<String>,
    #[serde(skip)]
    pub since: Option<Instant>,
    /// The instance's track checks (`track.checks`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<super::track::CheckStatus>,
    /// Its tracked interfaces (`track.interfaces`), as last looked at.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceTrack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceTrack {
    pub name: String,
    /// `weight N` or `fault`.
    pub effect: String,
    pub down: bool,
}

/// How long a stopping master keeps its addresses after its successor's first advert.
const HANDOVER_LINGER: Duration = Duration::from_millis(50);

/// How long a stopping master waits for its successor: a backup answers priority 0
/// after its skew time (under one interval), so two intervals, within the manager's
/// patience for a stopping instance (and never long where no backup exists).
pub fn handover_limit(advert_interval: Duration) -> Duration {
    (advert_interval * 2).clamp(Duration::from_millis(100), Duration::from_millis(1500))
}

pub fn reported(state: State) -> VrrpState {
    match state {
        State::Initialize => VrrpState::Initialize,
        State::Backup => VrrpState::Backup,
        State::Master => VrrpState::Master,
        State::Fault => VrrpState::Fault,
    }
}

pub fn state_name(state: State) -> &'static str {
    reported(state).as_str()
}

struct Driver {
    vip: VipConfig,
    vrrp: VrrpConfig,
    metrics: Arc<Metrics>,
    status: Arc<Mutex<InstanceStatus>>,
    /// Woken on every state change, so the state is reported without waiting for a poll.
    changed: Arc<tokio::sync::Notify>,
    netlink: Netlink,
    ifindex: u32,
    source: IpAddr,
    socket: VrrpSocket,
    arp: Option<Arc<Announcer>>,
    origin: Instant,
    logged_mismatch: bool,
    /// Priority raised by a planned takeover; tracking penalties apply below it.
    boost: Option<u8>,
    fault: bool,
    draining: bool,
    /// While master: when time as master was last added to the metric.
    master_accounted: Option<Instant>,
    /// Repeats of the last announcement still to go out; cancelled on release.
    announce_task: Option<tokio::task::JoinHandle<()>>,
    /// The listening sockets: closed to new connections while handing over.
    gate: Arc<Gate>,
}

pub async fn run(
    vip: VipConfig,
    vrrp: VrrpConfig,
    metrics: Arc<Metrics>,
    status: Arc<Mutex<InstanceStatus>>,
    changed: Arc<tokio::sync::Notify>,
    gate: Arc<Gate>,
    mut commands: mpsc::Receiver<Command>,
) {
    let opened = Driver::open(vip, vrrp, metrics, status.clone(), changed.clone(), gate).await;
    let mut driver = match opened {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "VRRP instance cannot start");
            if let Ok(mut s) = status.lock() {
                s.state = VrrpState::Fault;
                s.error = Some(e);
            }
            changed.notify_one();
            // Stay reachable for Stop so the manager never blocks.
            while let Some(cmd) = commands.recv().await {
                if let Command::Stop { done, .. } = cmd {
                    let _ = done.send(());
                    return;
                }
            }
            return;
        }
    };
    let mut machine = Machine::new(driver.machine_config());
    let actions = machine.startup(driver.now());
    driver.execute(&machine, actions).await;
    let refresh = Duration::from_millis(driver.vrrp.garp.refresh_ms);
    let mut next_refresh = Instant::now() + refresh;
    let mut was_master = machine.state() == State::Master;
    loop {
        let mut deadline = machine.next_deadline().map(|d| driver.origin + d);
        let is_master = machine.state() == State::Master;
        if is_master && !was_master {
            // The refresh period counts from the takeover's own announcements.
            next_refresh = Instant::now() + refresh;
        }
        was_master = is_master;
        let refreshing = !refresh.is_zero() && is_master;
        if refreshing {
            deadline = Some(deadline.map_or(next_refresh, |d| d.min(next_refresh)));
        }
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        // Commands first, then a waiting advert before our own timer: an advert that
        // already arrived must count before the master-down timer fires.
        tokio::select! {
            biased;
            cmd = commands.recv() => match cmd {
                Some(Command::Track(tracking)) => driver.track(&mut machine, tracking).await,
                Some(Command::Takeover(reply)) => {
                    let actions = if driver.draining { Vec::new() } else { machine.takeover(driver.now()) };
                    if driver.draining {
                        let _ = reply.send(Err("this node is draining".into()));
                    } else if actions.is_empty() {
                        let _ = reply.send(Err(format!("this node is {}, not Backup", state_name(machine.state()))));
                    } else {
                        driver.boost = Some(machine.effective_priority());
                        tracing::info!(vip = %driver.vip.name, priority = machine.effective_priority(), "planned takeover");
                        driver.execute(&machine, actions).await;
                        let _ = reply.send(Ok(()));
                    }
                }
                Some(Command::Stop { done, hand_over }) => {
                    if hand_over && machine.state() == State::Master {
                        driver.hand_over().await;
                    }
                    let actions = machine.shutdown(driver.now());
                    driver.execute(&machine, actions).await;
                    driver.reopen();
                    let _ = done.send(());
                    return;
                }
                None => {
                    let actions = machine.shutdown(driver.now());
                    driver.execute(&machine, actions).await;
                    return;
                }
            },
            received = driver.socket.recv() => match received {
                Ok(Some(pkt)) => {
                    if let Some((priority, interval, src)) = driver.accept(&pkt) {
                        let actions = machine.on_advert(driver.now(), priority, interval, src);
                        driver.execute(&machine, actions).await;
                    }
                }
                Ok(None) => driver.drop_packet(DropReason::BadLength),
                Err(e) => {
                    tracing::warn!(vip = %driver.vip.name, error = %e, "VRRP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = sleep => {
                if refreshing && Instant::now() >= next_refresh {
                    next_refresh = Instant::now() + refresh;
                    driver.announce(1);
                }
                let actions = machine.on_timer(driver.now());
                driver.execute(&machine, actions).await;
            }
        }
    }
}

impl Driver {
    async fn open(
        vip: VipConfig,
        vrrp: VrrpConfig,
        metrics: Arc<Metrics>,
        status: Arc<Mutex<InstanceStatus>>,
        changed: Arc<tokio::sync::Notify>,
        gate: Arc<Gate>,
    ) -> Result<Self, String> {
        let first = *vip.addresses.first().ok_or("no addresses")?;
        let netlink = Netlink::connect().map_err(|e| e.to_string())?;
        let ifindex = netlink
            .resolve_interface(vip.interface.as_deref(), first)
            .await
            .map_err(|e| e.to_string())?;
        let ifname = netlink
            .link_name(ifindex)
            .await
            .map_err(|e| e.to_string())?;
        let present = netlink.addresses().await.map_err(|e| e.to_string())?;
        // A VIP still on the interface was left by a crash of this node: remove it
        // before joining, so there is never a stale duplicate.
        for prefix in &vip.addresses {
            if present
                .iter()
                .any(|a| a.index == ifindex && a.prefix.addr == prefix.addr)
            {
                tracing::warn!(vip = %vip.name, address = %prefix, "removing an address left from an earlier run");
                netlink
                    .delete(ifindex, *prefix)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let v6 = first.addr.is_ipv6();
        let source = match vrrp.unicast_source {
            Some(s) if s.is_ipv6() == v6 => s,
            _ => present
                .iter()
                .filter(|a| {
                    a.index == ifindex && !vip.addresses.iter().any(|v| v.addr == a.prefix.addr)
                })
                .map(|a| a.prefix.addr)
                .find(|a| match a {
                    IpAddr::V4(_) => !v6,
                    // VRRP over IPv6 speaks from the link-local address.
                    IpAddr::V6(x) => v6 && x.segments()[0] & 0xffc0 == 0xfe80,
                })
                .ok_or_else(|| {
                    let kind = if v6 { "IPv6 link-local" } else { "IPv4" };
                    format!("interface {ifname} has no {kind} address to send VRRP from")
                })?,
        };
        let socket = VrrpSocket::open(&ifname, ifindex, source)
            .map_err(|e| format!("VRRP socket on {ifname}: {e}"))?;
        let arp = match Announcer::open(&ifname, ifindex, v6) {
            Ok(a) => Some(Arc::new(a)),
            Err(e) => {
                tracing::warn!(interface = %ifname, error = %e, "gratuitous ARP / NA unavailable");
                None
            }
        };
        if let Ok(mut s) = status.lock() {
            s.interface = Some(ifname.clone());
        }
        tracing::info!(vip = %vip.name, vrid = vrrp.vrid, priority = vrrp.priority, interface = %ifname, %source, "VRRP instance starting");
        Ok(Self {
            vip,
            vrrp,
            metrics,
            status,
            changed,
            netlink,
            ifindex,
            source,
            socket,
            arp,
            origin: Instant::now(),
            logged_mismatch: false,
            boost: None,
            draining: false,
            fault: false,
            master_accounted: None,
            announce_task: None,
            gate,
        })
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn version(&self) -> Version {
        if self.vrrp.version == 2 {
            Version::V2
        } else {
            Version::V3
        }
    }

    fn machine_config(&self) -> Config {
        Config {
            version: self.version(),
            priority: self.vrrp.priority,
            advert_interval: Duration::from_millis(u64::from(self.vrrp.advert_interval_ms)),
            preempt: self.vrrp.preempt,
            preempt_delay: Duration::from_millis(self.vrrp.preempt_delay_ms),
            accept_mode: true,
            primary_address: self.source,
        }
    }

    fn labels(&self) -> Vec<(&'static str, String)> {
        vec![("vip", self.vip.name.clone())]
    }

    fn addresses(&self) -> Vec<IpAddr> {
        self.vip.addresses.iter().map(|a| a.addr).collect()
    }

    fn auth(&self) -> Option<[u8; 8]> {
        self.vrrp
            .auth_password
            .as_deref()
            .and_then(packet::password_bytes)
    }

    fn drop_packet(&self, reason: DropReason) {
        self.metrics
            .vrrp_dropped
            .get_or_create(&with(self.labels(), "reason", reason.as_str()))
            .inc();
    }

    /// Validates a received advert; returns what the machine needs, or counts the drop.
    fn accept(&mut self, pkt: &super::socket::Received) -> Option<(u8, Duration, IpAddr)> {
        if pkt.src == self.source {
            return None;
        }
        if let Err(r) = packet::check_ttl(pkt.ttl) {
            self.drop_packet(r);
            return None;
        }
        let advert = match packet::decode(&pkt.payload, pkt.src, pkt.dst) {
            Ok(a) => a,
            Err(r) => {
                self.drop_packet(r);
                return None;
            }
        };
        if advert.vrid != self.vrrp.vrid {
            // Other routers on the same LAN are normal: count, do not log.
            self.drop_packet(DropReason::WrongVrid);
            return None;
        }
        if advert.version != self.version() {
            self.drop_packet(DropReason::BadVersion);
            return None;
        }
        if let Err(r) = packet::check_auth(self.auth().as_ref(), advert.auth.as_ref()) {
            self.drop_packet(r);
            return None;
        }
        if self.version() == Version::V2
            && let Err(r) = packet::check_interval(
                Version::V2,
                self.interval_cs(),
                advert.max_advert_interval_cs,
            )
        {
            self.drop_packet(r);
            return None;
        }
        if let Err(r) = packet::check_addresses(&self.addresses(), &advert.addresses) {
            if !self.logged_mismatch {
                self.logged_mismatch = true;
                tracing::warn!(vip = %self.vip.name, peer = %pkt.src, got = ?advert.addresses, "advert lists other addresses for this VRID; dropping (logged once)");
            }
            self.drop_packet(r);
            return None;
        }
        self.metrics
            .vrrp_adverts_received
            .get_or_create(&self.labels())
            .inc();
        Some((
            advert.priority,
            Duration::from_millis(u64::from(advert.max_advert_interval_cs) * 10),
            pkt.src,
        ))
    }

    fn interval_cs(&self) -> u16 {
        u16::try_from(self.vrrp.advert_interval_ms / 10).unwrap_or(u16::MAX)
    }

    /// Adds the time as master since the last call; `still_master` says whether to go on.
    fn account_master_time(&mut self, still_master: bool) {
        let now = Instant::now();
        if let Some(since) = self.master_accounted.take() {
            self.metrics
                .vrrp_master_seconds
                .get_or_create(&self.labels())
                .inc_by((now - since).as_secs_f64());
        }
        if still_master {
            self.master_accounted = Some(now);
        }
    }

    async fn execute(&mut self, machine: &Machine, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendAdvert { priority } => self.send_advert(priority).await,
                Action::TakeAddresses => self.take().await,
                Action::Announce => self.announce(self.vrrp.garp.count),
                Action::ReleaseAddresses => self.release().await,
                Action::StateChanged { from, to } => {
                    tracing::info!(vip = %self.vip.name, vrid = self.vrrp.vrid, from = state_name(from), to = state_name(to), "VRRP state change");
                    self.metrics
                        .vrrp_transitions
                        .get_or_create(&with(self.labels(), "to", state_name(to)))
                        .inc();
                    self.metrics
                        .vrrp_state
                        .get_or_create(&self.labels())
                        .set(match to {
                            State::Initialize => 0,
                            State::Backup => 1,
                            State::Master => 2,
                            State::Fault => 3,
                        });
                    if let Ok(mut s) = self.status.lock() {
                        s.state = reported(to);
                        s.since = Some(Instant::now());
                    }
                    self.changed.notify_one();
                }
                Action::SplitBrain {
                    kept,
                    peer,
                    peer_priority,
                } => {
                    let outcome = if kept { "kept" } else { "yielded" };
                    tracing::warn!(vip = %self.vip.name, %peer, peer_priority, outcome, "another master advertised the same VRID");
                    self.metrics
                        .vrrp_split_brain
                        .get_or_create(&with(self.labels(), "outcome", outcome))
                        .inc();
                }
            }
        }
        self.account_master_time(machine.state() == State::Master);
        let priority = machine.effective_priority();
        self.metrics
            .vrrp_priority
            .get_or_create(&self.labels())
            .set(i64::from(priority));
        if let Ok(mut s) = self.status.lock() {
            s.priority = priority;
        }
    }

    async fn send_advert(&self, priority: u8) {
        let advert = Advert {
            version: self.version(),
            vrid: self.vrrp.vrid,
            priority,
            max_advert_interval_cs: if self.version() == Version::V2 {
                u16::try_from(self.vrrp.advert_interval_ms / 1000 * 100).unwrap_or(u16::MAX)
            } else {
                self.interval_cs()
            },
            addresses: self.addresses(),
            auth: self.auth(),
        };
        let destinations: Vec<IpAddr> = if self.vrrp.unicast_peers.is_empty() {
            vec![multicast_group(self.source.is_ipv6())]
        } else {
            self.vrrp
                .unicast_peers
                .iter()
                .filter(|p| p.is_ipv6() == self.source.is_ipv6())
                .copied()
                .collect()
        };
        for dst in destinations {
            match packet::encode(&advert, self.source, dst) {
                Ok(bytes) => match self.socket.send(&bytes, dst).await {
                    Ok(()) => {
                        self.metrics
                            .vrrp_adverts_sent
                            .get_or_create(&self.labels())
                            .inc();
                    }
                    Err(e) => {
                        tracing::warn!(vip = %self.vip.name, %dst, error = %e, "cannot send VRRP advert")
                    }
                },
                Err(e) => {
                    tracing::error!(vip = %self.vip.name, error = %e, "cannot encode VRRP advert")
                }
            };
        }
    }

    async fn take(&mut self) {
        for prefix in &self.vip.addresses {
            if let Err(e) = self.netlink.add(self.ifindex, *prefix).await {
                tracing::error!(vip = %self.vip.name, address = %prefix, error = %e, "cannot add VIP");
            }
        }
        self.announce(self.vrrp.garp.count);
    }

    /// Sends `count` rounds of gratuitous ARP: the first now, the rest spaced out in the
    /// background so they never hold up the state machine.
    fn announce(&mut self, count: u32) {
        let Some(arp) = self.arp.clone() else { return };
        let addresses = self.addresses();
        let metrics = self.metrics.clone();
        let labels = self.labels();
        let name = self.vip.name.clone();
        let spacing = Duration::from_millis(self.vrrp.garp.interval_ms);
        let burst = move || {
            for a in &addresses {
                match arp.send(*a) {
                    Ok(()) => {
                        metrics.vrrp_garp_sent.get_or_create(&labels).inc();
                    }
                    Err(e) => tracing::warn!(vip = %name, error = %e, "cannot send gratuitous ARP"),
                }
            }
        };
        burst();
        if let Some(old) = self.announce_task.take() {
            old.abort();
        }
        if count > 1 {
            self.announce_task = Some(tokio::spawn(async move {
                for _ in 1..count {
                    tokio::time::sleep(spacing).await;
                    burst();
                }
            }));
        }
    }

    /// Applies a tracking result. A node that starts draining while master hands its
    /// addresses over first (as a graceful stop does) and stays on as a backup below
    /// everyone; it forgets a takeover's raised priority.
    async fn track(&mut self, machine: &mut Machine, tracking: Tracking) {
        if tracking.draining && !self.draining {
            self.boost = None;
            if machine.state() == State::Master {
                tracing::info!(vip = %self.vip.name, "node draining: handing the addresses over");
                self.hand_over().await;
                let actions = machine.resign(self.now());
                self.execute(machine, actions).await;
                self.reopen();
            }
        }
        self.draining = tracking.draining;
        let base = self.boost.unwrap_or(self.vrrp.priority);
        let actions = machine.set_priority(self.now(), tracking.priority(base));
        self.execute(machine, actions).await;
        if tracking.fault != self.fault {
            self.fault = tracking.fault;
            tracing::warn!(vip = %self.vip.name, fault = tracking.fault, "tracking changed the fault state");
            let actions = machine.set_fault(self.now(), tracking.fault);
            self.execute(machine, actions).await;
        }
    }

    /// A master that stops: priority 0 (a backup takes over after its skew time), while
    /// it keeps the addresses and serves them until the successor advertises (or
    /// `handover_limit` passes). Releasing first would drop every packet sent in
    /// between: connection attempts that the client retries only a second later.
    async fn hand_over(&mut self) {
        // New connections wait (see `proxy::gate`); those under way get the skew time.
        self.gate.close(&self.ips());
        self.send_advert(0).await;
        let until = tokio::time::Instant::now()
            + handover_limit(Duration::from_millis(u64::from(
                self.vrrp.advert_interval_ms,
            )));
        loop {
            tokio::select! {
                received = self.socket.recv() => match received {
                    Ok(Some(pkt)) => {
                        if self.accept(&pkt).is_some_and(|(priority, _, _)| priority > 0) {
                            // A new master advertises before it adds and announces the
                            // addresses: a moment more, so the client is never sent to
                            // a node that has none.
                            tokio::time::sleep(HANDOVER_LINGER).await;
                            tracing::info!(vip = %self.vip.name, "successor advertises; releasing");
                            return;
                        }
                    }
                    Ok(None) => self.drop_packet(DropReason::BadLength),
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                () = tokio::time::sleep_until(until) => return,
            }
        }
    }

    fn ips(&self) -> Vec<std::net::IpAddr> {
        self.vip.addresses.iter().map(|p| p.addr).collect()
    }

    /// After a handover: the addresses are gone from here, so new connections to them
    /// can be taken again should they come back.
    fn reopen(&self) {
        self.gate.open(&self.ips());
    }

    async fn release(&mut self) {
        // A node that lets go must stop telling the network the addresses are here.
        if let Some(task) = self.announce_task.take() {
            task.abort();
        }
        for prefix in &self.vip.addresses {
            if let Err(e) = self.netlink.delete(self.ifindex, *prefix).await {
                tracing::warn!(vip = %self.vip.name, address = %prefix, error = %e, "cannot remove VIP");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopping_master_waits_about_two_intervals_for_its_successor() {
        let ms = Duration::from_millis;
        for (interval, limit) in [
            (ms(10), ms(100)),
            (ms(100), ms(200)),
            (ms(500), ms(1000)),
            (ms(1000), ms(1500)),
            (ms(40_000), ms(1500)),
        ] {
            assert_eq!(handover_limit(interval), limit, "{interval:?}");
        }
    }
}
