//! The VRRP speaker: one instance per VirtualIP with election enabled.

pub mod announce;
pub mod instance;
pub mod machine;
pub mod packet;
pub mod socket;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use halo_crds::node_config::{TrackEffect, VipConfig, VrrpConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use self::instance::{Command, InstanceStatus};
use crate::metrics::Metrics;

struct Running {
    vip: VipConfig,
    vrrp: VrrpConfig,
    commands: mpsc::Sender<Command>,
    status: Arc<Mutex<InstanceStatus>>,
    task: JoinHandle<()>,
    /// Last tracking result sent, to send only changes.
    tracked: Option<(u8, bool)>,
}

/// What the rest of the data plane reports for tracking, by VirtualIP name.
#[derive(Debug, Default, Clone)]
pub struct TrackInputs {
    /// A listener on the VIP has no healthy backend.
    pub backends_down: BTreeSet<String>,
    /// A listener on the VIP cannot bind.
    pub bind_failed: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("no VRRP instance named {0} on this node")]
    Unknown(String),
    #[error("{vip}: {reason}")]
    Refused { vip: String, reason: String },
}

fn interface_down(ifname: &str) -> bool {
    // operstate is "up" only with carrier; "unknown" is what some virtual links report.
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/operstate"))
        .map(|s| !matches!(s.trim(), "up" | "unknown"))
        .unwrap_or(false)
}

/// Penalty and fault of one instance from its own conditions.
fn own_tracking(
    vrrp: &VrrpConfig,
    name: &str,
    ifname: Option<&str>,
    inputs: &TrackInputs,
) -> (u8, bool) {
    let mut penalty: u8 = 0;
    let mut fault = false;
    let conditions = [
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
}

impl VrrpManager {
    /// Starts, restarts (on change) and stops instances to match `vips`.
    pub async fn apply(&self, vips: &[VipConfig], metrics: &Arc<Metrics>) {
        let mut running = self.running.lock().await;
        let wanted: BTreeMap<&str, (&VipConfig, &VrrpConfig)> = vips
            .iter()
            .filter_map(|v| v.vrrp.as_ref().map(|r| (v.name.as_str(), (v, r))))
            .collect();
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, r)| wanted.get(name.as_str()).is_none_or(|(v, _)| **v != r.vip))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(r) = running.remove(&name) {
                stop(r).await;
            }
        }
        for (name, (vip, vrrp)) in wanted {
            if running.contains_key(name) {
                continue;
            }
            let status = Arc::new(Mutex::new(InstanceStatus {
                name: name.to_string(),
                vrid: vrrp.vrid,
                state: "Initialize".into(),
                priority: vrrp.priority,
                interface: vip.interface.clone(),
                since_ms_ago: 0,
                error: None,
                since: None,
            }));
            let (tx, rx) = mpsc::channel(8);
            let task = tokio::spawn(instance::run(
                vip.clone(),
                vrrp.clone(),
                metrics.clone(),
                status.clone(),
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
        let own: BTreeMap<String, (u8, bool)> = running
            .iter()
            .map(|(name, r)| {
                let ifname = r.status.lock().ok().and_then(|s| s.interface.clone());
                (
                    name.clone(),
                    own_tracking(&r.vrrp, name, ifname.as_deref(), inputs),
                )
            })
            .collect();
        let groups: BTreeMap<String, Option<String>> = running
            .iter()
            .map(|(n, r)| (n.clone(), r.vrrp.sync_group.clone()))
            .collect();
        for (name, r) in running.iter_mut() {
            let mut result = own.get(name).copied().unwrap_or((0, false));
            if let Some(group) = &r.vrrp.sync_group {
                for (other, g) in &groups {
                    if g.as_ref() == Some(group)
                        && let Some((p, f)) = own.get(other)
                    {
                        result = (result.0.max(*p), result.1 || *f);
                    }
                }
            }
            if r.tracked != Some(result) {
                let (penalty, fault) = result;
                if r.commands
                    .try_send(Command::Track { penalty, fault })
                    .is_ok()
                {
                    r.tracked = Some(result);
                }
            }
        }
    }

    /// Planned handover of `vip` (and the rest of its sync group) to this node.
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
                .collect(),
        };
        for (name, r) in members {
            let (reply, answer) = oneshot::channel();
            let refused = |reason: String| TakeoverError::Refused {
                vip: name.clone(),
                reason,
            };
            r.commands
                .send(Command::Takeover(reply))
                .await
                .map_err(|_| refused("instance stopped".into()))?;
            match tokio::time::timeout(Duration::from_secs(2), answer).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(reason))) => return Err(refused(reason)),
                _ => return Err(refused("no answer".into())),
            }
        }
        Ok(())
    }

    /// Graceful stop: every master sends priority 0 and releases its addresses.
    pub async fn stop_all(&self) {
        let mut running = self.running.lock().await;
        for (_, r) in std::mem::take(&mut *running) {
            stop(r).await;
        }
        if let Ok(mut s) = self.statuses.lock() {
            s.clear();
        }
    }

    pub fn status(&self) -> Vec<InstanceStatus> {
        let list = self.statuses.lock().map(|s| s.clone()).unwrap_or_default();
        list.iter()
            .filter_map(|s| s.lock().ok().map(|s| s.clone()))
            .map(|mut s| {
                s.since_ms_ago = s.since.map_or(0, |t| {
                    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
                });
                s
            })
            .collect()
    }
}

async fn stop(r: Running) {
    let (done, wait) = oneshot::channel();
    if r.commands.send(Command::Stop(done)).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
    }
    r.task.abort();
}
