//! Holds the addresses of VirtualIPs that run without election (`vrrp.enabled: false`):
//! adds them on apply, removes on change and on stop. Addresses that were already on the
//! machine are used as they are and never removed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use halo_crds::net::IpPrefix;
use halo_crds::node_config::VipConfig;
use serde::Serialize;

use crate::netlink::Netlink;

#[derive(Default)]
pub struct VipHolder {
    held: Mutex<BTreeMap<String, Held>>,
}

#[derive(Clone, Debug)]
struct Held {
    config: VipConfig,
    /// Addresses this process added, with their interface index.
    added: Vec<(u32, IpPrefix)>,
    error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VipStatus {
    pub name: String,
    pub addresses: Vec<String>,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl VipHolder {
    /// Holds the VIPs without election; the others belong to the VRRP speaker.
    pub async fn apply(&self, all: &[VipConfig]) {
        let vips: Vec<&VipConfig> = all.iter().filter(|v| v.vrrp.is_none()).collect();
        let previous = self.snapshot();
        let mut next = BTreeMap::new();
        for vip in vips {
            match previous.get(&vip.name) {
                Some(old) if old.config == *vip && old.error.is_none() => {
                    next.insert(vip.name.clone(), old.clone());
                }
                old => {
                    if let Some(old) = old {
                        release(old).await;
                    }
                    next.insert(vip.name.clone(), hold(vip).await);
                }
            }
        }
        for (name, old) in &previous {
            if !next.contains_key(name) {
                release(old).await;
            }
        }
        if let Ok(mut held) = self.held.lock() {
            *held = next;
        }
    }

    pub async fn release_all(&self) {
        let all = std::mem::take(
            &mut *self
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for held in all.values() {
            release(held).await;
        }
    }

    pub fn status(&self) -> Vec<VipStatus> {
        self.snapshot()
            .values()
            .map(|h| VipStatus {
                name: h.config.name.clone(),
                addresses: h.config.addresses.iter().map(ToString::to_string).collect(),
                state: if h.error.is_some() { "Error" } else { "Held" }.into(),
                error: h.error.clone(),
            })
            .collect()
    }

    fn snapshot(&self) -> BTreeMap<String, Held> {
        self.held.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

fn is_loopback(addr: IpAddr) -> bool {
    addr.is_loopback()
}

async fn hold(vip: &VipConfig) -> Held {
    let mut held = Held {
        config: vip.clone(),
        added: Vec::new(),
        error: None,
    };
    // Loopback addresses are local without any configuration.
    if vip.addresses.iter().all(|a| is_loopback(a.addr)) {
        return held;
    }
    let netlink = match Netlink::connect() {
        Ok(n) => n,
        Err(e) => {
            held.error = Some(e.to_string());
            return held;
        }
    };
    let present = netlink.addresses().await.unwrap_or_default();
    for prefix in &vip.addresses {
        if is_loopback(prefix.addr) || present.iter().any(|a| a.prefix.addr == prefix.addr) {
            continue;
        }
        let result = match netlink
            .resolve_interface(vip.interface.as_deref(), *prefix)
            .await
        {
            Ok(index) => netlink.add(index, *prefix).await.map(|()| index),
            Err(e) => Err(e),
        };
        match result {
            Ok(index) => {
                tracing::info!(vip = %vip.name, address = %prefix, "address added");
                held.added.push((index, *prefix));
            }
            Err(e) => {
                tracing::error!(vip = %vip.name, address = %prefix, error = %e, "cannot add address");
                held.error = Some(format!("{prefix}: {e}"));
            }
        }
    }
    held
}

async fn release(held: &Held) {
    if held.added.is_empty() {
        return;
    }
    let Ok(netlink) = Netlink::connect() else {
        return;
    };
    for (index, prefix) in &held.added {
        match netlink.delete(*index, *prefix).await {
            Ok(()) => tracing::info!(vip = %held.config.name, address = %prefix, "address removed"),
            Err(e) => {
                tracing::warn!(vip = %held.config.name, address = %prefix, error = %e, "cannot remove address")
            }
        }
    }
}
