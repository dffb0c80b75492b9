//! The controller ⇄ data plane protocol. A data plane opens
//! `GET /v1/nodes/{node}/config?version=V&hash=H` (what it already runs) and reads one
//! JSON [`StreamMessage`] per line; it reports with `POST /v1/nodes/{node}/status`
//! carrying a [`NodeReport`]. Both present a ServiceAccount token as a bearer token.

use serde::{Deserialize, Serialize};

use crate::NodeConfig;

pub const CONFIG_PATH_PREFIX: &str = "/v1/nodes/";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StreamMessage {
    /// A full snapshot; versions only grow on one node.
    Config { config: NodeConfig },
    /// Sent when nothing changed, so a dead stream is noticed.
    Heartbeat,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// The last snapshot refused (NACK), with why; the previous one keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejection>,
    #[serde(default)]
    pub vrrp: Vec<VrrpReport>,
    #[serde(default)]
    pub listeners: Vec<ListenerReport>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub version: u64,
    pub hash: String,
    pub reason: String,
}

/// A node's VRRP state for one VirtualIP (RFC 5798 §6.4), as data planes report it and
/// VirtualIP status shows it.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum VrrpState {
    #[default]
    Initialize,
    Backup,
    Master,
    /// Out of the election: tracking, a start-up error, or an address it cannot hold.
    Fault,
}

impl VrrpState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialize => "Initialize",
            Self::Backup => "Backup",
            Self::Master => "Master",
            Self::Fault => "Fault",
        }
    }
}

impl std::fmt::Display for VrrpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VrrpReport {
    pub vip: String,
    pub state: VrrpState,
    pub priority: u8,
    /// Milliseconds since the last state change.
    #[serde(default)]
    pub since_ms_ago: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerReport {
    pub name: String,
    pub ready_backends: u32,
    pub total_backends: u32,
}

/// Splits `/v1/nodes/{node}/{what}` into (node, what).
pub fn parse_node_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(CONFIG_PATH_PREFIX)?;
    let (node, what) = rest.split_once('/')?;
    (!node.is_empty() && !node.contains('/')).then_some((node, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths() {
        assert_eq!(parse_node_path("/v1/nodes/a/config"), Some(("a", "config")));
        assert_eq!(parse_node_path("/v1/nodes//config"), None);
        assert_eq!(parse_node_path("/v1/nodes/a"), None);
        assert_eq!(parse_node_path("/v2/nodes/a/config"), None);
    }

    #[test]
    fn messages_are_tagged_json_lines() {
        let text = serde_json::to_string(&StreamMessage::Heartbeat).unwrap_or_default();
        assert_eq!(text, r#"{"type":"heartbeat"}"#);
    }
}
