//! `LoadBalancer` (namespaced): listeners on a VirtualIP and the backends behind them.

// Each `printcolumn(...)` repeats `type_ =`, which this lint mistakes for a repeated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::DURATION_PATTERN;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "halo.dev",
    version = "v1alpha1",
    kind = "LoadBalancer",
    plural = "loadbalancers",
    shortname = "hlb",
    category = "halo",
    namespaced,
    status = "LoadBalancerStatus",
    doc = "L4/L7 listeners on a VirtualIP, balancing to pods or static servers",
    printcolumn(name = "VirtualIP", type_ = "string", json_path = ".spec.virtualIP"),
    printcolumn(name = "Address", type_ = "string", json_path = ".status.addresses"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.virtualIP) != has(self.addresses)").message("set exactly one of virtualIP or addresses"))]
pub struct LoadBalancerSpec {
    /// Name of the VirtualIP whose addresses the listeners bind.
    #[serde(default, rename = "virtualIP", skip_serializing_if = "Option::is_none")]
    pub virtual_ip: Option<String>,
    /// Explicit listen addresses, for a box without a VirtualIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(max = 45)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a))").message("every address must be an IP address"))]
    pub addresses: Option<Vec<String>>,
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.name == l.name))").message("listener names must be unique"))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.port == l.port))").message("listener ports must be unique"))]
    pub listeners: Vec<Listener>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.protocol == 'HTTP' || !has(self.forwardedHeaders) || !self.forwardedHeaders").message("forwardedHeaders applies to protocol HTTP"))]
pub struct Listener {
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[schemars(length(max = 256))]
    pub backends: Vec<Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Connection attempts on other backends after a connect failure (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 16))]
    pub retries: Option<u32>,
    /// Concurrent client connections; excess connections are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// Add X-Forwarded-For / X-Forwarded-Proto / Forwarded (HTTP; default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_headers: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Http,
    Tcp,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum Algorithm {
    #[default]
    RoundRobin,
    LeastConnections,
    SourceHash,
    Random2,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.address) != has(self.service)").message("set exactly one of address or service"))]
#[x_kube(validation = Rule::new("!has(self.address) || has(self.port)").message("a static address needs a port"))]
pub struct Backend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A static server (outside the cluster, or in standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    #[x_kube(validation = Rule::new("isIP(self)").message("address must be an IP address"))]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// A Service in the same namespace, resolved through its EndpointSlices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceBackend>,
    /// Relative share of new connections, 0-256 (default 1; 0 takes no new traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 256))]
    pub weight: Option<u32>,
    /// Used only while no primary backend is up.
    #[serde(default)]
    pub backup: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ServiceBackend {
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'HTTP' || (!has(self.path) && !has(self.expectStatus))").message("path and expectStatus apply to type HTTP"))]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: HealthCheckType,
    /// HTTP path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// Expected HTTP status (default: any 2xx or 3xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<u16>,
    /// Check this port instead of the traffic port (e.g. 9200 for clustercheck).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Between checks while up (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Between checks while down (default: interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub down_interval: Option<String>,
    /// Per check (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Consecutive successes to mark a backend up (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub rise: Option<u32>,
    /// Consecutive failures to mark a backend down (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub fall: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthCheckType {
    Tcp,
    Http,
}

/// Defaults: connect 5s, client 60s, server 60s, httpRequest 10s, idle 60s.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Establishing a connection to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub connect: Option<String>,
    /// Client inactivity (TCP: no bytes from the client side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub client: Option<String>,
    /// Server inactivity (HTTP: waiting for the response; TCP: no bytes from the backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub server: Option<String>,
    /// Receiving a complete request head (HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub http_request: Option<String>,
    /// Keep-alive wait between requests (HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub idle: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    pub ready_backends: u32,
    pub total_backends: u32,
}
