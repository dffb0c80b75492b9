//! NodeConfig: everything one data plane needs, the only thing that crosses from the
//! control plane to a node. Durations are plain milliseconds on the wire.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

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
    /// Shared: the controller's kept renders and every node serving a listener hold one
    /// copy of it.
    pub listeners: Vec<Arc<ListenerConfig>>,
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
    /// This node is the VirtualIP's (or its sync group's) `preferredNode`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preferred: bool,
    /// This node is cordoned or excluded from load balancers: it hands its addresses to
    /// another node and stays out of the election while one is there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TrackEffect {
    /// Lower the priority by this much.
    Weight(u8),
    /// Leave the election and hold nothing.
    Fault,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrackConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends_down: Option<TrackEffect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_failure: Option<TrackEffect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_down: Option<TrackEffect>,
    /// Other links whose loss counts (keepalived's `track_interface`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<TrackedInterface>,
    /// Periodic checks run on the node (keepalived's `vrrp_script`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<TrackCheckConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrackedInterface {
    pub name: String,
    pub effect: TrackEffect,
}

/// One periodic check: `fall` failures in a row make it failed, `rise` successes passing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrackCheckConfig {
    pub name: String,
    pub kind: CheckKind,
    pub interval_ms: u64,
    /// At most `interval_ms`.
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
    pub effect: TrackEffect,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum CheckKind {
    /// GET `path` from `address` with `Host: host`; passes on `expect_status`, or below 400.
    Http {
        address: SocketAddr,
        host: String,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect_status: Option<u16>,
    },
    /// A TCP connect.
    Tcp { address: SocketAddr },
    /// `command` with `args`, no shell; exit status 0 passes.
    Exec {
        command: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        args: Vec<String>,
    },
}

impl CheckKind {
    /// `http`, `tcp` or `exec`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Tcp { .. } => "tcp",
            Self::Exec { .. } => "exec",
        }
    }
}

impl Default for TrackConfig {
    fn default() -> Self {
        Self {
            backends_down: None,
            bind_failure: None,
            interface_down: Some(TrackEffect::Fault),
            interfaces: Vec::new(),
            checks: Vec::new(),
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
    pub timeouts: TimeoutsConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// X-Forwarded-For / -Proto and Forwarded handling (HTTP and HTTPS).
    #[serde(default)]
    pub forwarded: ForwardedConfig,
    /// TLS termination (HTTPS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
    /// Accept HTTP/2 with prior knowledge (h2c) on a plain HTTP listener.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub h2c: bool,
    /// Clients allowed to open with a PROXY protocol header (v1 or v2); a connection
    /// from one of them must send it. Empty: no PROXY protocol accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_protocol_from: Vec<IpPrefix>,
    /// Tried in this order for a request (HTTP/HTTPS) or a ClientHello's SNI name (TLS
    /// passthrough); the data plane applies the precedence rules itself (see the proxy's
    /// router), this order only breaks ties. A listener's own backends form a last
    /// route named `default`. TCP listeners have exactly one route.
    pub routes: Vec<RouteConfig>,
    /// Backend groups, referenced from routes by index.
    pub groups: Vec<GroupConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogConfig>,
}

/// One set of servers with its balancing, checks and connection behaviour: a listener's
/// own backends, or a named `backendGroups` entry (HAProxy's `backend` section).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GroupConfig {
    /// `default` for a listener's own backends, else the backend group's name.
    pub name: String,
    pub algorithm: Algorithm,
    pub backends: Vec<BackendConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceConfig>,
    /// A backend that comes up ramps from a small weight to full over this period (0: off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slow_start_ms: u64,
    /// Requests waiting for a backend under its maxConnections, at most (then 503).
    #[serde(default = "default_max_queue")]
    pub max_queue: u32,
    /// A PROXY protocol header sent first on every backend connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    /// TLS towards the backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsConfig>,
    /// HTTP version spoken to the backends (HTTP and HTTPS listeners).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
}

pub const DEFAULT_MAX_QUEUE: u32 = 1024;

fn default_max_queue() -> u32 {
    DEFAULT_MAX_QUEUE
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c), or via ALPN `h2` with TLS: gRPC backends.
    Http2,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum PersistenceConfig {
    /// HAProxy's `cookie NAME insert [indirect] [nocache] [maxlife]`.
    #[serde(rename_all = "camelCase")]
    Cookie {
        name: String,
        /// The cookie is removed from requests before they reach the backend.
        indirect: bool,
        /// Responses that set the cookie are marked not cacheable by shared caches.
        nocache: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_age_s: Option<u64>,
    },
    /// The same client address goes to the same backend while it is up.
    SourceIp,
}

/// Which X-Forwarded-* / Forwarded headers a request keeps and gets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ForwardedConfig {
    pub mode: ForwardedMode,
    /// Clients whose own forwarding headers are kept (and appended to) in any mode
    /// but `Off`. In `Append` mode an empty list trusts every client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted: Vec<IpPrefix>,
}

impl Default for ForwardedConfig {
    fn default() -> Self {
        Self {
            mode: ForwardedMode::Append,
            trusted: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardedMode {
    /// Keep what the client sent (from trusted clients) and add this hop.
    Append,
    /// Drop what an untrusted client sent and add this hop.
    Replace,
    /// Neither add nor remove anything.
    Off,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsConfig {
    /// The first is the default for a ClientHello without SNI or with an unknown name.
    pub certificates: Vec<CertificateConfig>,
    pub min_version: TlsVersion,
    /// IANA names (e.g. `TLS13_AES_128_GCM_SHA256`); empty: the library's safe defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// ALPN protocols offered, in preference order (default `h2`, `http/1.1`).
    pub alpn: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// A certificate chain and its private key, PEM, as read from a Secret or files.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateConfig {
    /// Where it came from (`secret ns/name`, or the certificate file's path), for logs.
    pub source: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertificateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a private key.
        f.debug_struct("CertificateConfig")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTlsConfig {
    /// CA certificates (PEM) the backend's certificate must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Skip verification (test servers only); needs no CA.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// SNI and the name verified (default: the backend's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RouteConfig {
    pub name: String,
    /// Lowercase; exact or `*.suffix` (any one or more labels). Empty: any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Any one of these matches the route; empty: every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    /// Applied in order before the action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterConfig>,
    pub action: RouteAction,
    /// Whole request to complete response head (HTTPRoute `timeouts.request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// All given conditions must hold (Gateway API HTTPRouteMatch).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Upper case, e.g. `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Names lowercase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<NamedMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<NamedMatch>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum PathMatch {
    Exact(String),
    /// Whole segments: `/api` matches `/api` and `/api/x`, not `/apix`.
    Prefix(String),
    /// The whole path must match.
    Regex(String),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NamedMatch {
    pub name: String,
    pub value: StringMatch,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum StringMatch {
    Exact(String),
    /// The whole value must match.
    Regex(String),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum FilterConfig {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    #[serde(rename_all = "camelCase")]
    UrlRewrite {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostname: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathModifier>,
    },
}

/// Gateway API HTTPHeaderFilter: `set` replaces, `add` appends, `remove` drops.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Names lowercase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum PathModifier {
    ReplaceFull(String),
    /// Replaces the prefix the route matched (its match must be a `Prefix`).
    ReplacePrefix(String),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum RouteAction {
    /// Weighted backend groups (canaries); a request goes to one, by weight.
    Forward { groups: Vec<WeightedGroup> },
    #[serde(rename_all = "camelCase")]
    Redirect {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheme: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostname: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathModifier>,
        status: u16,
    },
    /// An answer of the proxy's own.
    #[serde(rename_all = "camelCase")]
    Fixed {
        status: u16,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
    },
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WeightedGroup {
    /// Index into the listener's `groups`.
    pub group: usize,
    pub weight: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogConfig {
    pub target: LogTarget,
    /// Log this share of requests, 1-100 (errors are always logged).
    pub sample_percent: u8,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type", content = "path")]
pub enum LogTarget {
    Stdout,
    Stderr,
    File(String),
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
    /// Waiting in a backend group's queue for a backend under its maxConnections.
    #[serde(default = "default_queue_ms")]
    pub queue_ms: u64,
}

pub const DEFAULT_QUEUE_MS: u64 = 5_000;

fn default_queue_ms() -> u64 {
    DEFAULT_QUEUE_MS
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            client_ms: 60_000,
            server_ms: 60_000,
            http_request_ms: 10_000,
            idle_ms: 60_000,
            queue_ms: DEFAULT_QUEUE_MS,
        }
    }
}

impl NodeConfig {
    /// The content hash, independent of version and of any previous hash: FNV-1a 64 of
    /// the JSON with version 0, an empty hash and no listeners, then of each listener's
    /// own hash ([`ListenerConfig::content_hash`], 8 bytes little-endian) in order. A
    /// renderer that keeps the hashes of listeners it did not change need not serialise
    /// them again; nothing is copied or held as text to hash it.
    pub fn content_hash(&self) -> String {
        self.hash_with(self.listeners.iter().map(|l| l.content_hash()))
    }

    fn hash_with(&self, listener_hashes: impl Iterator<Item = u64>) -> String {
        let blank = Blank {
            node: &self.node,
            version: 0,
            hash: "",
            vips: &self.vips,
            listeners: &[],
        };
        let mut hasher = Fnv1a64::default();
        if serde_json::to_writer(&mut hasher, &blank).is_err() {
            // Never for these types; a hash no config has then.
            return String::new();
        }
        for h in listener_hashes {
            hasher.eat(&h.to_le_bytes());
        }
        format!("{:016x}", hasher.0)
    }

    /// Stamps a version and the matching hash.
    pub fn sealed(mut self, version: u64) -> Self {
        self.version = version;
        self.hash = self.content_hash();
        self
    }

    /// [`NodeConfig::sealed`] from the listeners' hashes, known already (one per
    /// listener, in order).
    pub fn sealed_with(mut self, version: u64, listener_hashes: &[u64]) -> Self {
        debug_assert_eq!(
            listener_hashes,
            self.listeners
                .iter()
                .map(|l| l.content_hash())
                .collect::<Vec<_>>()
                .as_slice()
        );
        self.version = version;
        self.hash = self.hash_with(listener_hashes.iter().copied());
        self
    }
}

impl ListenerConfig {
    /// FNV-1a 64 of this listener's JSON: its part of the node's content hash.
    pub fn content_hash(&self) -> u64 {
        let mut hasher = Fnv1a64::default();
        if serde_json::to_writer(&mut hasher, self).is_err() {
            return 0;
        }
        hasher.0
    }
}

/// [`NodeConfig`] with borrowed fields: serialises exactly like it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Blank<'a> {
    node: &'a str,
    version: u64,
    hash: &'a str,
    vips: &'a [VipConfig],
    listeners: &'a [Arc<ListenerConfig>],
}

/// FNV-1a 64 over everything written to it.
struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a64 {
    fn eat(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl std::io::Write for Fnv1a64 {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.eat(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
