//! NodeConfig: everything one data plane needs, the only thing that crosses from the
//! control plane to a node. Durations are plain milliseconds on the wire.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::load_balancer::{Algorithm, Protocol};
use crate::net::IpPrefix;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfig {
    pub node: String,
    /// Increases with every change pushed to this node.
    pub version: u64,
    /// Content hash (hex FNV-1a 64 of the config with version and hash blanked).
    pub hash: String,
    pub vips: Vec<VipConfig>,
    pub listeners: Vec<ListenerConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VipConfig {
    pub name: String,
    pub addresses: Vec<IpPrefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// None: hold the addresses with no election.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp: Option<VrrpConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VrrpConfig {
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    pub advert_interval_ms: u32,
    pub preempt: bool,
    pub preempt_delay_ms: u64,
    /// Empty: multicast.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unicast_peers: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unicast_source: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_group: Option<String>,
    pub track: TrackConfig,
    pub garp: GarpConfig,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TrackEffect {
    /// Lower the priority by this much.
    Weight(u8),
    /// Leave the election and hold nothing.
    Fault,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrackConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends_down: Option<TrackEffect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_failure: Option<TrackEffect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_down: Option<TrackEffect>,
}

impl Default for TrackConfig {
    fn default() -> Self {
        Self {
            backends_down: None,
            bind_failure: None,
            interface_down: Some(TrackEffect::Fault),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GarpConfig {
    pub count: u32,
    pub interval_ms: u64,
    /// 0: no periodic refresh.
    pub refresh_ms: u64,
}

impl Default for GarpConfig {
    fn default() -> Self {
        Self {
            count: 3,
            interval_ms: 100,
            refresh_ms: 0,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerConfig {
    /// `namespace/loadbalancer/listener`.
    pub name: String,
    /// The VirtualIP this listener rides on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub protocol: Protocol,
    pub algorithm: Algorithm,
    pub backends: Vec<BackendConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    pub timeouts: TimeoutsConfig,
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    pub forwarded_headers: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackendConfig {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub backup: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckConfig {
    pub probe: Probe,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub interval_ms: u64,
    pub down_interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Probe {
    Tcp,
    #[serde(rename_all = "camelCase")]
    Http {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect_status: Option<u16>,
    },
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsConfig {
    pub connect_ms: u64,
    pub client_ms: u64,
    pub server_ms: u64,
    pub http_request_ms: u64,
    pub idle_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            client_ms: 60_000,
            server_ms: 60_000,
            http_request_ms: 10_000,
            idle_ms: 60_000,
        }
    }
}

impl NodeConfig {
    /// The content hash, independent of version and of any previous hash.
    pub fn content_hash(&self) -> String {
        let mut blank = self.clone();
        blank.version = 0;
        blank.hash.clear();
        let bytes = serde_json::to_vec(&blank).unwrap_or_default();
        format!("{:016x}", fnv1a64(&bytes))
    }

    /// Stamps a version and the matching hash.
    pub fn sealed(mut self, version: u64) -> Self {
        self.version = version;
        self.hash = self.content_hash();
        self
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
