//! `VirtualIP` (cluster-scoped): addresses that move between nodes with VRRP.

// Each `printcolumn(...)` repeats `type_ =`, which this lint mistakes for a repeated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::DURATION_PATTERN;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "halo.dev",
    version = "v1alpha1",
    kind = "VirtualIP",
    plural = "virtualips",
    shortname = "vip",
    category = "halo",
    status = "VirtualIPStatus",
    doc = "A highly available address: one node holds it at a time, elected with VRRP",
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses"),
    printcolumn(name = "VRID", type_ = "integer", json_path = ".status.vrid"),
    printcolumn(name = "Master", type_ = "string", json_path = ".status.master"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.vrrp.enabled || !has(self.vrrp.authentication) || self.vrrp.version == 2").message("vrrp.authentication is only defined for VRRP version 2"))]
pub struct VirtualIPSpec {
    /// IPv4/IPv6 addresses with prefix length, e.g. `192.0.2.10/24`.
    #[schemars(length(min = 1, max = 16), inner(length(max = 49)))]
    #[x_kube(validation = Rule::new("self.all(a, isCIDR(a) || isIP(a))").message("every address must be an IP address with an optional /prefix"))]
    pub addresses: Vec<String>,
    /// Interface that carries the addresses; default: the one holding the node's address in that subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Only nodes with these labels take part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub vrrp: VrrpSpec,
    /// Per-node VRRP priority (higher wins); nodes not listed get 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub priorities: Vec<NodePriority>,
    /// Unicast peers, by node. Written by hand in standalone mode; a node's own entry is
    /// the address it sends its adverts from (unless `vrrp.unicastSource` is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub peers: Vec<Peer>,
    /// Node that should hold the addresses whenever it can: it takes them over from the
    /// current master without dropping a request (`halo-dataplane takeover`), and again
    /// after it restarts. In a sync group the first VirtualIP by name that sets it
    /// decides for the whole group. Clearing it leaves the addresses where they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub preferred_node: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.version == 3 || !has(self.advertisementInterval) || self.advertisementInterval.endsWith('s') && !self.advertisementInterval.endsWith('ms')").message("VRRP version 2 advertises in whole seconds"))]
pub struct VrrpSpec {
    /// false: hold the addresses with no election (a single standalone box).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// 3 (RFC 5798) or 2 (RFC 3768, for old peers).
    #[serde(default = "default_vrrp_version")]
    #[schemars(range(min = 2, max = 3))]
    pub version: u8,
    /// 1-255; allocated by the controller when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub virtual_router_id: Option<u8>,
    /// Default 100ms for version 3, 1s for version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub advertisement_interval: Option<String>,
    /// A higher-priority node takes the addresses back (default true).
    #[serde(default = "default_true")]
    pub preempt: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub preempt_delay: Option<String>,
    #[serde(default)]
    pub mode: VrrpMode,
    /// Source address for unicast adverts (keepalived's `unicast_src_ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    #[x_kube(validation = Rule::new("isIP(self)").message("unicastSource must be an IP address"))]
    pub unicast_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<VrrpAuthentication>,
    /// VirtualIPs on a node with the same group share one master and move together
    /// (keepalived's `vrrp_sync_group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub sync_group: Option<String>,
    /// What lowers this node's priority or takes it out of the election.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackSpec>,
    /// Gratuitous ARP / unsolicited NA after a takeover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garp: Option<GarpSpec>,
}

/// Conditions watched on each node; each either lowers the priority by `weight` or, with
/// `fault: true`, gives up the addresses entirely. Default: `interfaceDown: {fault: true}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackSpec {
    /// A listener on this VirtualIP has no healthy backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends_down: Option<TrackAction>,
    /// A listener on this VirtualIP cannot bind its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_failure: Option<TrackAction>,
    /// The VirtualIP's interface has no carrier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_down: Option<TrackAction>,
    /// Other links this node needs (keepalived's `track_interface`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(i, self.exists_one(j, j.name == i.name))").message("tracked interface names must be unique"))]
    pub interfaces: Vec<TrackInterface>,
    /// Periodic checks run by the data plane on its node (keepalived's `vrrp_script`), shaped
    /// like a Pod's probes: one of `http`, `tcp` or `exec` each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d.name == c.name))").message("track check names must be unique"))]
    pub checks: Vec<TrackCheck>,
}

/// A link whose loss lowers the priority or faults the instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.weight) != (has(self.fault) && self.fault)").message("set either weight or fault: true"))]
pub struct TrackInterface {
    #[schemars(length(min = 1, max = 15))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub weight: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<bool>,
}

/// One periodic check; after `fall` failures in a row it counts as failed (lowering the
/// priority by `weight`, or faulting), after `rise` successes as passing again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.http), has(self.tcp), has(self.exec)].filter(x, x).size() == 1").message("set exactly one of http, tcp or exec"))]
#[x_kube(validation = Rule::new("has(self.weight) != (has(self.fault) && self.fault)").message("set either weight or fault: true"))]
pub struct TrackCheck {
    /// Names the check in metrics, logs and status.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTrack>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpTrack>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecTrack>,
    /// Time between checks (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
    /// A check that takes longer fails (default 1s; at most the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Successes in a row that make a failed check pass again (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub rise: Option<u8>,
    /// Failures in a row that make a passing check fail (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub fall: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub weight: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<bool>,
}

/// An HTTP GET; passes on `expectStatus`, or on any status below 400 without it
/// (what `curl -f` accepts).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpTrack {
    /// `http://host:port/path`, with an IP address or `localhost` as host.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://')").message("url must start with http://"))]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<u16>,
}

/// A TCP connect to `address` (`ip:port` or `[ipv6]:port`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpTrack {
    #[schemars(length(min = 1, max = 64))]
    pub address: String,
}

/// A program run without a shell; exit status 0 passes. Standalone mode runs it; the
/// controller refuses it unless started with `--allow-track-exec`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecTrack {
    /// Absolute path of the program.
    #[schemars(length(min = 2, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("command must be an absolute path"))]
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 1024)))]
    pub args: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.weight) != (has(self.fault) && self.fault)").message("set either weight or fault: true"))]
pub struct TrackAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub weight: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GarpSpec {
    /// Announcements sent after becoming master (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub count: Option<u32>,
    /// Spacing between them (default 100ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Repeat the announcement this often while master (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub refresh: Option<String>,
}

impl Default for VrrpSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            version: 3,
            virtual_router_id: None,
            advertisement_interval: None,
            preempt: true,
            preempt_delay: None,
            mode: VrrpMode::default(),
            unicast_source: None,
            authentication: None,
            sync_group: None,
            track: None,
            garp: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_vrrp_version() -> u8 {
    3
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum VrrpMode {
    #[default]
    Multicast,
    Unicast,
}

/// VRRPv2 simple password (keepalived `auth_type PASS`); at most 8 characters on the wire.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.password) != has(self.secretRef)").message("set exactly one of password or secretRef"))]
pub struct VrrpAuthentication {
    #[serde(rename = "type")]
    pub kind: VrrpAuthType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8))]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum VrrpAuthType {
    Pass,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct NodePriority {
    pub node: String,
    #[schemars(range(min = 1, max = 255))]
    pub priority: u8,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
pub struct Peer {
    pub node: String,
    #[schemars(length(max = 45))]
    #[x_kube(validation = Rule::new("isIP(self)").message("peer address must be an IP address"))]
    pub address: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualIPStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrid: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeVrrpStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeVrrpStatus {
    pub node: String,
    pub state: crate::protocol::VrrpState,
    pub priority: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}
