//! The VRRP speaker: one instance per VirtualIP with election enabled.

pub mod announce;
pub mod instance;
pub mod machine;
pub mod packet;
pub mod socket;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use halo_crds::node_config::{VipConfig, VrrpConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use self::instance::{Command, InstanceStatus};
use crate::metrics::Metrics;

struct Running {
    vip: VipConfig,
    commands: mpsc::Sender<Command>,
    status: Arc<Mutex<InstanceStatus>>,
    task: JoinHandle<()>,
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
                    commands: tx,
                    status,
                    task,
                },
            );
        }
        if let Ok(mut s) = self.statuses.lock() {
            *s = running.values().map(|r| r.status.clone()).collect();
        }
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
