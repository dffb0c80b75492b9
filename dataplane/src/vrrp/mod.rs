//! The VRRP speaker: one instance per VirtualIP with election enabled.

pub mod announce;
pub mod instance;
pub mod machine;
pub mod packet;
pub mod socket;
pub mod track;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use halo_crds::node_config::{TrackConfig, TrackEffect, VipConfig, VrrpConfig};
use halo_crds::protocol::VrrpState;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use self::instance::{Command, InstanceStatus, InterfaceTrack, Tracking};
use crate::metrics::Metrics;
use crate::proxy::gate::Gate;

struct Running {
    vip: VipConfig,
    vrrp: VrrpConfig,
    commands: mpsc::Sender<Command>,
    status: Arc<Mutex<InstanceStatus>>,
    task: JoinHandle<()>,
    /// Last tracking result sent, to send only changes.
    tracked: Option<Tracking>,
    /// When a takeover (for `preferred`, or to join its sync group) was last asked for.
    last_move: Option<std::time::Instant>,
}

/// What the rest of the data plane reports for tracking, by VirtualIP name.
#[derive(Debug, Default, Clone)]
pub struct TrackInputs {
    /// A listener on the VIP has no healthy backend.
    pub backends_down: BTreeSet<String>,
    /// A listener on the VIP cannot bind.
    pub bind_failed: BTreeSet<String>,
    /// Track checks that count as failed, by VIP.
    pub checks_failed: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("no VRRP instance named {0} on this node")]
    Unknown(String),
    #[error("{vip}: {reason}")]
    Refused { vip: String, reason: String },
}

/// How long a preferred node stays Backup (having heard the master) before it takes over.
const PREFERENCE_SETTLE: Duration = Duration::from_secs(1);
/// How long before a takeover for the preferred node is asked for again.
const PREFERENCE_RETRY: Duration = Duration::from_secs(5);

fn interface_down(ifname: &str) -> bool {
    link_down(ifname).unwrap_or(false)
}

/// None when the link does not exist (or sysfs cannot be read).
fn link_down(ifname: &str) -> Option<bool> {
    // operstate is "up" only with carrier; "unknown" is what some virtual links report.
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/operstate"))
        .ok()
        .map(|s| !matches!(s.trim(), "up" | "unknown"))
}

/// The tracked interfaces (`track.interfaces`) now; a missing link counts as down.
fn tracked_interfaces(track: &TrackConfig) -> Vec<InterfaceTrack> {
    track
        .interfaces
        .iter()
        .map(|i| InterfaceTrack {
            name: i.name.clone(),
            effect: track::effect_text(i.effect),
            down: link_down(&i.name).unwrap_or(true),
        })
        .collect()
}

/// Penalty and fault of one instance from its own conditions (`interfaces`: the state of
/// its tracked interfaces, in `track.interfaces` order).
fn own_tracking(
    vrrp: &VrrpConfig,
    name: &str,
    ifname: Option<&str>,
    interfaces: &[InterfaceTrack],
    inputs: &TrackInputs,
) -> (u8, bool) {
    let mut penalty: u8 = 0;
    let mut fault = false;
    let failed_checks = inputs.checks_failed.get(name);
    let mut conditions = vec![
        (
            vrrp.track.backends_down,
            inputs.backends_down.contains(name),
        ),
        (vrrp.track.bind_failure, inputs.bind_failed.contains(name)),
        (
            vrrp.track.interface_down,
            ifname.is_some_and(interface_down),
        ),
    ];
    for (i, state) in vrrp.track.interfaces.iter().zip(interfaces) {
        conditions.push((Some(i.effect), state.down));
    }
    for c in &vrrp.track.checks {
        conditions.push((
            Some(c.effect),
            failed_checks.is_some_and(|f| f.contains(&c.name)),
        ));
    }
    for (effect, active) in conditions {
        match (effect, active) {
            (Some(TrackEffect::Weight(w)), true) => penalty = penalty.saturating_add(w),
            (Some(TrackEffect::Fault), true) => fault = true,
            _ => {}
        }
    }
    (penalty, fault)
}

#[derive(Default)]
pub struct VrrpManager {
    running: tokio::sync::Mutex<BTreeMap<String, Running>>,
    statuses: Mutex<Vec<Arc<Mutex<InstanceStatus>>>>,
    checks: track::Checks,
    /// Notified when an instance changes state (one waiter: the status reporter).
    changed: Arc<tokio::sync::Notify>,
    /// The proxy's listening sockets, which a master handing over closes first.
    gate: Arc<Gate>,
}

/// Equal but for tracking, preference and draining, which reach a running instance as
/// commands: a change there needs no restart (a restart would drop the addresses).
fn same_instance(a: &VipConfig, b: &VipConfig) -> bool {
    let untracked = |v: &VipConfig| {
        let mut v = v.clone();
        if let Some(r) = &mut v.vrrp {
            r.track = TrackConfig::default();
            r.preferred = false;
            r.draining = false;
        }
        v
    };
    a == b || untracked(a) == untracked(b)
}

impl VrrpManager {
    pub fn new(gate: Arc<Gate>) -> Self {
        Self {
            gate,
            ..Self::default()
        }
    }

    /// Starts, restarts (on change) and stops instances to match `vips`.
    pub async fn apply(&self, vips: &[VipConfig], metrics: &Arc<Metrics>) {
        let mut running = self.running.lock().await;
        let wanted: BTreeMap<&str, (&VipConfig, &VrrpConfig)> = vips
            .iter()
            .filter_map(|v| v.vrrp.as_ref().map(|r| (v.name.as_str(), (v, r))))
            .collect();
        self.checks.apply(vips, metrics);
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, r)| {
                wanted
                    .get(name.as_str())
                    .is_none_or(|(v, _)| !same_instance(v, &r.vip))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(r) = running.remove(&name) {
                // Changed or gone from the config: no successor to wait for.
                stop(r, false).await;
            }
        }
        for (name, (vip, vrrp)) in wanted {
            if let Some(r) = running.get_mut(name) {
                if r.vip != *vip {
                    // Only tracking changed: the next round sends the new result.
                    r.vip = vip.clone();
                    r.vrrp = vrrp.clone();
                    r.tracked = None;
                }
                continue;
            }
            let status = Arc::new(Mutex::new(InstanceStatus {
                name: name.to_string(),
                vrid: vrrp.vrid,
                state: VrrpState::Initialize,
                priority: vrrp.priority,
                interface: vip.interface.clone(),
                since_ms_ago: 0,
                error: None,
                since: None,
                checks: Vec::new(),
                interfaces: Vec::new(),
            }));
            let (tx, rx) = mpsc::channel(8);
            let task = tokio::spawn(instance::run(
                vip.clone(),
                vrrp.clone(),
                metrics.clone(),
                status.clone(),
                self.changed.clone(),
                self.gate.clone(),
                rx,
            ));
            running.insert(
                name.to_string(),
                Running {
                    vip: vip.clone(),
                    vrrp: vrrp.clone(),
                    commands: tx,
                    status,
                    task,
                    tracked: None,
                    last_move: None,
                },
            );
        }
        if let Ok(mut s) = self.statuses.lock() {
            *s = running.values().map(|r| r.status.clone()).collect();
        }
    }

    /// Applies tracking: each instance's own conditions, merged across its sync group
    /// (worst penalty, any fault) so the group always moves as one.
    pub async fn track(&self, inputs: &TrackInputs) {
        let mut running = self.running.lock().await;
        let own: BTreeMap<String, Tracking> = running
            .iter()
            .map(|(name, r)| {
                let interfaces = tracked_interfaces(&r.vrrp.track);
                let ifname = r.status.lock().ok().and_then(|mut s| {
                    s.interfaces.clone_from(&interfaces);
                    s.interface.clone()
                });
                let (penalty, fault) =
                    own_tracking(&r.vrrp, name, ifname.as_deref(), &interfaces, inputs);
                let draining = r.vrrp.draining;
                (
                    name.clone(),
                    Tracking {
                        penalty,
                        fault,
                        draining,
                    },
                )
            })
            .collect();
        let groups: BTreeMap<String, Option<String>> = running
            .iter()
            .map(|(n, r)| (n.clone(), r.vrrp.sync_group.clone()))
            .collect();
        for (name, r) in running.iter_mut() {
            let mut result = own.get(name).copied().unwrap_or_default();
            if let Some(group) = &r.vrrp.sync_group {
                for (other, g) in &groups {
                    if g.as_ref() == Some(group)
                        && let Some(o) = own.get(other)
                    {
                        result = result.merge(*o);
                    }
                }
            }
            if r.tracked != Some(result) && r.commands.try_send(Command::Track(result)).is_ok() {
                r.tracked = Some(result);
            }
        }
    }

    /// Moves the VIPs whose `preferred` node this is here, with a planned takeover (the
    /// whole sync group at once), when they have sat in Backup for a while: so a start
    /// or a restart of this node ends with it master again. A refused takeover (the
    /// master outranks any boost, say) is asked again only after [`PREFERENCE_RETRY`].
    pub async fn prefer(&self) {
        let due: Vec<String> = {
            let mut running = self.running.lock().await;
            let mut groups = BTreeSet::new();
            let mut due = Vec::new();
            for (name, r) in running.iter_mut() {
                let settled_backup = state_of(r).is_some_and(|(state, held)| {
                    state == VrrpState::Backup && held >= PREFERENCE_SETTLE
                });
                let recently = r.last_move.is_some_and(|t| t.elapsed() < PREFERENCE_RETRY);
                if !r.vrrp.preferred || r.vrrp.draining || !settled_backup || recently {
                    continue;
                }
                if r.vrrp
                    .sync_group
                    .as_ref()
                    .is_some_and(|g| !groups.insert(g.clone()))
                {
                    continue;
                }
                r.last_move = Some(std::time::Instant::now());
                due.push(name.clone());
            }
            due
        };
        for name in due {
            match self.takeover(&name).await {
                Ok(()) => tracing::info!(vip = %name, "moved to its preferred node"),
                Err(e) => {
                    tracing::warn!(vip = %name, error = %e, "cannot move to the preferred node")
                }
            }
        }
    }

    /// Keeps each sync group together on this node: a member in Backup here while the
    /// group's leader (its first member by name, which elects as usual) is Master here
    /// is taken over (the planned, lossless way). Every node follows the same leader, so
    /// members that were elected apart (started at different times, `preempt: false`)
    /// come together where the leader is.
    pub async fn align_groups(&self) {
        let due: Vec<String> = {
            let mut running = self.running.lock().await;
            let mut leaders: BTreeMap<String, Option<(VrrpState, Duration)>> = BTreeMap::new();
            for r in running.values() {
                if let Some(g) = &r.vrrp.sync_group {
                    leaders.entry(g.clone()).or_insert_with(|| state_of(r));
                }
            }
            let mut due = Vec::new();
            for (name, r) in running.iter_mut() {
                let leader = r
                    .vrrp
                    .sync_group
                    .as_ref()
                    .and_then(|g| leaders.get(g).copied().flatten());
                let (Some(leader), Some(own)) = (leader, state_of(r)) else {
                    continue;
                };
                let recently = r.last_move.is_some_and(|t| t.elapsed() < PREFERENCE_RETRY);
                if joins_leader(leader, own) && !recently {
                    r.last_move = Some(std::time::Instant::now());
                    due.push(name.clone());
                }
            }
            due
        };
        for name in due {
            let running = self.running.lock().await;
            let Some(r) = running.get(&name) else {
                continue;
            };
            match ask_takeover(&name, r).await {
                Ok(()) => tracing::info!(vip = %name, "joined its sync group's master"),
                Err(e) => {
                    tracing::warn!(vip = %name, error = %e, "cannot join its sync group's master")
                }
            }
        }
    }

    /// Planned handover of `vip` (and the rest of its sync group) to this node; members
    /// already Master here stay as they are.
    pub async fn takeover(&self, vip: &str) -> Result<(), TakeoverError> {
        let running = self.running.lock().await;
        let target = running
            .get(vip)
            .ok_or_else(|| TakeoverError::Unknown(vip.to_string()))?;
        let members: Vec<(&String, &Running)> = match &target.vrrp.sync_group {
            None => vec![(
                running
                    .get_key_value(vip)
                    .map_or(&target.vip.name, |(k, _)| k),
                target,
            )],
            Some(group) => running
                .iter()
                .filter(|(_, r)| r.vrrp.sync_group.as_ref() == Some(group))
                .filter(|(name, r)| {
                    name.as_str() == vip || state_of(r).is_none_or(|(s, _)| s != VrrpState::Master)
                })
                .collect(),
        };
        for (name, r) in members {
            ask_takeover(name, r).await?;
        }
        Ok(())
    }

    /// The track checks that count as failed now, by VIP.
    pub fn failed_checks(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.checks.failed()
    }

    /// Graceful stop: every master sends priority 0 and releases its addresses.
    pub async fn stop_all(&self) {
        self.checks.stop_all();
        let mut running = self.running.lock().await;
        // Together: each master waits for its successor before letting go.
        futures::future::join_all(
            std::mem::take(&mut *running)
                .into_values()
                .map(|r| stop(r, true)),
        )
        .await;
        if let Ok(mut s) = self.statuses.lock() {
            s.clear();
        }
    }

    /// Returns at the next state change of any instance (or at once if one happened
    /// since the last call): for a single waiter.
    pub async fn state_changed(&self) {
        self.changed.notified().await;
    }

    pub fn status(&self) -> Vec<InstanceStatus> {
        let list = self.statuses.lock().map(|s| s.clone()).unwrap_or_default();
        list.iter()
            .filter_map(|s| s.lock().ok().map(|s| s.clone()))
            .map(|mut s| {
                s.since_ms_ago = s.since.map_or(0, |t| {
                    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
                });
                s.checks = self.checks.status(&s.name);
                s
            })
            .collect()
    }
}

/// Asks one instance for a planned takeover and waits for its answer (at most 2 s).
async fn ask_takeover(name: &str, r: &Running) -> Result<(), TakeoverError> {
    let refused = |reason: String| TakeoverError::Refused {
        vip: name.to_string(),
        reason,
    };
    let (reply, answer) = oneshot::channel();
    r.commands
        .send(Command::Takeover(reply))
        .await
        .map_err(|_| refused("instance stopped".into()))?;
    match tokio::time::timeout(Duration::from_secs(2), answer).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(reason))) => Err(refused(reason)),
        _ => Err(refused("no answer".into())),
    }
}

/// An instance's state and how long it has held it.
fn state_of(r: &Running) -> Option<(VrrpState, Duration)> {
    r.status
        .lock()
        .ok()
        .map(|s| (s.state, s.since.map_or(Duration::ZERO, |t| t.elapsed())))
}

/// How long both the group's leader and a member must have held their states before
/// the member moves to the leader: a takeover or an election under way settles first.
const GROUP_SETTLE: Duration = Duration::from_millis(500);

/// Whether a sync group member in state `member` must take over to join its leader in
/// state `leader` (each with how long it has held it).
fn joins_leader(leader: (VrrpState, Duration), member: (VrrpState, Duration)) -> bool {
    leader.0 == VrrpState::Master
        && member.0 == VrrpState::Backup
        && leader.1 >= GROUP_SETTLE
        && member.1 >= GROUP_SETTLE
}

/// Stops an instance (see `Command::Stop`), waiting for it at most 2 s.
async fn stop(r: Running, hand_over: bool) {
    let (done, wait) = oneshot::channel();
    if r.commands
        .send(Command::Stop { done, hand_over })
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
    }
    r.task.abort();
}

#[cfg(test)]
mod tests {
    use halo_crds::node_config::{
        CheckKind, GarpConfig, TrackCheckConfig, TrackEffect, TrackedInterface,
    };

    use super::*;

    fn vrrp(track: TrackConfig) -> VrrpConfig {
        VrrpConfig {
            version: 3,
            vrid: 1,
            priority: 150,
            advert_interval_ms: 100,
            preempt: true,
            preempt_delay_ms: 0,
            unicast_peers: Vec::new(),
            unicast_source: None,
            auth_password: None,
            sync_group: None,
            track,
            garp: GarpConfig::default(),
            preferred: false,
            draining: false,
        }
    }

    fn check(name: &str, effect: TrackEffect) -> TrackCheckConfig {
        TrackCheckConfig {
            name: name.into(),
            kind: CheckKind::Tcp {
                address: "127.0.0.1:1".parse().expect("addr"),
            },
            interval_ms: 1000,
            timeout_ms: 1000,
            rise: 1,
            fall: 1,
            effect,
        }
    }

    fn link(name: &str, down: bool) -> InterfaceTrack {
        InterfaceTrack {
            name: name.into(),
            effect: String::new(),
            down,
        }
    }

    /// (failed checks, tracked interfaces down, backends down) → (penalty, fault)
    type Case<'a> = (&'a [&'a str], [bool; 2], bool, (u8, bool));

    #[test]
    fn table_of_own_tracking() {
        let config = vrrp(TrackConfig {
            backends_down: Some(TrackEffect::Weight(10)),
            interfaces: vec![
                TrackedInterface {
                    name: "eth1".into(),
                    effect: TrackEffect::Weight(20),
                },
                TrackedInterface {
                    name: "eth2".into(),
                    effect: TrackEffect::Fault,
                },
            ],
            checks: vec![
                check("app", TrackEffect::Weight(30)),
                check("db", TrackEffect::Fault),
                check("big", TrackEffect::Weight(250)),
            ],
            ..TrackConfig::default()
        });
        let cases: &[Case<'_>] = &[
            (&[], [false, false], false, (0, false)),
            (&["app"], [false, false], false, (30, false)),
            (&["app"], [true, false], true, (60, false)),
            (&["db"], [false, false], false, (0, true)),
            (&[], [false, true], false, (0, true)),
            // Penalties saturate rather than wrap.
            (&["app", "big"], [false, false], false, (255, false)),
            // A failed check of another name (or VIP) does not count.
            (&["other"], [false, false], false, (0, false)),
        ];
        for (failed, down, backends, want) in cases {
            let mut inputs = TrackInputs::default();
            if *backends {
                inputs.backends_down.insert("web".into());
            }
            inputs.checks_failed.insert(
                "web".into(),
                failed.iter().map(|c| (*c).to_string()).collect(),
            );
            inputs
                .checks_failed
                .insert("other-vip".into(), BTreeSet::from(["app".to_string()]));
            let links = [link("eth1", down[0]), link("eth2", down[1])];
            let got = own_tracking(&config, "web", None, &links, &inputs);
            assert_eq!(
                got, *want,
                "failed {failed:?} down {down:?} backends {backends}"
            );
        }
    }

    #[test]
    fn a_tracking_change_alone_keeps_the_instance() {
        let vip = |track: TrackConfig| VipConfig {
            name: "web".into(),
            addresses: Vec::new(),
            interface: None,
            vrrp: Some(vrrp(track)),
        };
        let base = vip(TrackConfig::default());
        let tracked = vip(TrackConfig {
            checks: vec![check("app", TrackEffect::Fault)],
            ..TrackConfig::default()
        });
        assert!(same_instance(&base, &tracked));
        let mut other = base.clone();
        if let Some(r) = &mut other.vrrp {
            r.priority = 10;
        }
        assert!(!same_instance(&base, &other));
    }

    #[test]
    fn a_member_joins_its_leader_only_once_both_have_settled() {
        use VrrpState::{Backup, Fault, Master};
        let settled = GROUP_SETTLE;
        let fresh = GROUP_SETTLE / 2;
        for (leader, member, joins) in [
            ((Master, settled), (Backup, settled), true),
            ((Master, fresh), (Backup, settled), false),
            ((Master, settled), (Backup, fresh), false),
            ((Master, settled), (Master, settled), false),
            ((Backup, settled), (Master, settled), false),
            ((Backup, settled), (Backup, settled), false),
            ((Master, settled), (Fault, settled), false),
        ] {
            assert_eq!(joins_leader(leader, member), joins, "{leader:?} {member:?}");
        }
    }
}
