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
    /// Named sets of servers that routes forward to (HAProxy's `backend` sections).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(g, self.exists_one(h, h.name == g.name))").message("backend group names must be unique"))]
    pub backend_groups: Vec<BackendGroup>,
}

impl LoadBalancerSpec {
    /// Every upstream: each listener's own, then each backend group's.
    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        self.listeners
            .iter()
            .map(|l| &l.upstream)
            .chain(self.backend_groups.iter().map(|g| &g.upstream))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.protocol in ['HTTP', 'HTTPS'] || !has(self.forwardedHeaders) || !self.forwardedHeaders").message("forwardedHeaders applies to protocols HTTP and HTTPS"))]
#[x_kube(validation = Rule::new("self.protocol == 'HTTPS' ? has(self.tls) : !has(self.tls)").message("tls is required for protocol HTTPS and applies to it only"))]
#[x_kube(validation = Rule::new("!has(self.forwarded) || (self.protocol in ['HTTP', 'HTTPS'] && !has(self.forwardedHeaders))").message("forwarded applies to protocols HTTP and HTTPS and replaces forwardedHeaders"))]
#[x_kube(validation = Rule::new("self.protocol == 'HTTP' || !has(self.http2PriorKnowledge) || !self.http2PriorKnowledge").message("http2PriorKnowledge applies to protocol HTTP"))]
#[x_kube(validation = Rule::new("self.protocol != 'TCP' || !has(self.routes) || size(self.routes) == 0").message("a TCP listener has no routes"))]
pub struct Listener {
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    pub protocol: Protocol,
    /// The listener's own servers: where requests go when no route matches, and the
    /// only destination of a TCP listener.
    #[serde(flatten)]
    pub upstream: Upstream,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Concurrent client connections; excess connections are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// Add X-Forwarded-For / X-Forwarded-Proto / Forwarded (HTTP; default true).
    /// Shorthand for `forwarded.mode` Append (true) or Off (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_headers: Option<bool>,
    /// X-Forwarded-* / Forwarded handling in full (HTTP, HTTPS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<Forwarded>,
    /// TLS termination (protocol HTTPS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Request routing (HTTP, HTTPS) or SNI routing (TLS), shaped like Gateway API's
    /// HTTPRoute rules; a request no route takes goes to the listener's own backends
    /// (a 404 when it has none).
    /// At most 1024: rules on routes and their filters are costed per possible item.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub routes: Vec<Route>,
    /// Accept HTTP/2 without TLS from clients that start with it (h2c prior knowledge).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http2_prior_knowledge: bool,
    /// Sources (addresses or CIDRs) that must open with a PROXY protocol v1/v2 header,
    /// whose client address it carries (another load balancer in front).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 49)))]
    pub accept_proxy_protocol: Vec<String>,
    /// One structured line per request or connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

impl Listener {
    /// A listener with these servers and every other setting at its default.
    pub fn new(name: impl Into<String>, port: u16, protocol: Protocol, upstream: Upstream) -> Self {
        Self {
            name: name.into(),
            port,
            protocol,
            upstream,
            timeouts: None,
            max_connections: None,
            forwarded_headers: None,
            forwarded: None,
            tls: None,
            routes: Vec::new(),
            http2_prior_knowledge: false,
            accept_proxy_protocol: Vec::new(),
            access_log: None,
        }
    }
}

/// Servers and how to use them: a listener's own backends or a named backend group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub backends: Vec<Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Connection attempts on other backends after a connect failure (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 16))]
    pub retries: Option<u32>,
    /// Keep a client on one backend (cookie or source address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
    /// A backend that comes up ramps from a small weight to full over this period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub slow_start: Option<String>,
    /// Requests that may wait for a backend below its maxConnections (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000))]
    pub max_queue: Option<u32>,
    /// Send a PROXY protocol header with the client's address on backend connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_proxy_protocol: Option<ProxyProtocolVersion>,
    /// TLS towards the backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_tls: Option<BackendTls>,
    /// HTTP version spoken to the backends (default HTTP1; HTTP2 for gRPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_protocol: Option<BackendProtocol>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendGroup {
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    #[serde(flatten)]
    pub upstream: Upstream,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum BackendProtocol {
    Http1,
    Http2,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'Cookie' || !has(self.cookie)").message("cookie applies to type Cookie"))]
pub struct SessionPersistence {
    #[serde(rename = "type")]
    pub kind: PersistenceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookiePersistence>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PersistenceType {
    /// A cookie naming the backend, inserted by the proxy.
    Cookie,
    /// The client's address picks the backend.
    SourceIP,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CookiePersistence {
    /// Cookie name (default `HALO_SERVER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    )]
    pub name: Option<String>,
    /// Remove the cookie from requests before they reach the backend (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indirect: Option<bool>,
    /// Mark responses that set the cookie as not cacheable by shared caches (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nocache: Option<bool>,
    /// Cookie lifetime; none: a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_age: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.caSecretName) && has(self.caFile))").message("set caSecretName or caFile, not both"))]
#[x_kube(validation = Rule::new("has(self.caSecretName) || has(self.caFile) || (has(self.insecureSkipVerify) && self.insecureSkipVerify)").message("set caSecretName or caFile to verify backends, or insecureSkipVerify"))]
#[x_kube(validation = Rule::new("!(has(self.insecureSkipVerify) && self.insecureSkipVerify) || !(has(self.caSecretName) || has(self.caFile))").message("insecureSkipVerify cannot be combined with a CA"))]
pub struct BackendTls {
    /// A Secret (in the LoadBalancer's namespace) holding `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_name: Option<String>,
    /// A PEM file of CA certificates (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// SNI and the name the certificate must carry (default: the backend's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Accept any certificate (test servers only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Forwarded {
    /// Append (default): keep what trusted clients sent and add this hop; Replace:
    /// drop what untrusted clients sent; Off: neither add nor remove (quote "Off" in
    /// YAML, which reads a bare Off as false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ForwardedMode>,
    /// Clients (addresses or CIDRs) whose forwarding headers are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 49)))]
    pub trusted_proxies: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ForwardedMode {
    Append,
    Replace,
    Off,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    /// The first is served to clients without SNI or with a name no certificate has.
    #[schemars(length(min = 1, max = 64))]
    pub certificates: Vec<CertificateRef>,
    /// Lowest TLS version accepted (default 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<TlsVersion>,
    /// IANA cipher suite names, e.g. TLS13_AES_256_GCM_SHA384 (default: the library's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub cipher_suites: Vec<String>,
    /// ALPN protocols offered (default h2, http/1.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4), inner(length(max = 16)))]
    #[x_kube(validation = Rule::new("self.all(p, p in ['h2', 'http/1.1'])").message("ALPN protocols are h2 and http/1.1"))]
    pub alpn: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != (has(self.certFile) && has(self.keyFile))").message("set secretName, or certFile and keyFile"))]
pub struct CertificateRef {
    /// A `kubernetes.io/tls` Secret in the LoadBalancer's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// PEM certificate chain file (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key file (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// The Secret's namespace when it is not the LoadBalancer's: set only by the
    /// controller's own translations (a Gateway's certificateRefs a ReferenceGrant allows),
    /// never read from an object. (Serialized when set, for KubeSchema's copy of the
    /// struct to read it.)
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub secret_namespace: Option<String>,
}

/// One routing rule: Gateway API HTTPRoute's hostnames plus one rule (matches, filters,
/// backendRefs, timeouts), with a fixed response as Halo's own addition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.filters) || !self.filters.exists(f, f.type == 'RequestRedirect') || ((!has(self.backendRefs) || size(self.backendRefs) == 0) && !has(self.fixedResponse))").message("a RequestRedirect filter cannot be combined with backendRefs or fixedResponse"))]
#[x_kube(validation = Rule::new("!has(self.fixedResponse) || !has(self.backendRefs) || size(self.backendRefs) == 0").message("fixedResponse cannot be combined with backendRefs"))]
pub struct Route {
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Exact names or `*.example.com`; none: any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 253)))]
    pub hostnames: Vec<String>,
    /// Any one matches; none: every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub matches: Vec<RouteMatch>,
    /// At most one of each type, as in Gateway API (also keeps the CEL cost in budget).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub filters: Vec<RouteFilter>,
    /// Backend groups of this LoadBalancer, by name, with weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub backend_refs: Vec<BackendRef>,
    /// Answer with this instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_response: Option<FixedResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub query_params: Vec<ValueMatch>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// PathPrefix (default), Exact or RegularExpression.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<PathMatchType>,
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PathMatchType {
    Exact,
    PathPrefix,
    RegularExpression,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatch {
    /// Exact (default) or RegularExpression.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ValueMatchType>,
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[schemars(length(max = 4096))]
    pub value: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ValueMatchType {
    Exact,
    RegularExpression,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.type == 'RequestHeaderModifier') == has(self.requestHeaderModifier) && (self.type == 'ResponseHeaderModifier') == has(self.responseHeaderModifier) && (self.type == 'RequestRedirect') == has(self.requestRedirect) && (self.type == 'URLRewrite') == has(self.urlRewrite)").message("set the field named by type (requestHeaderModifier for RequestHeaderModifier, ...) and no other"))]
pub struct RouteFilter {
    #[serde(rename = "type")]
    pub kind: RouteFilterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RouteFilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    URLRewrite,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub set: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub add: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 256)))]
    pub remove: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct HeaderValue {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[schemars(length(max = 4096))]
    pub value: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRedirect {
    /// http or https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// 302 (default), 301, 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in [301, 302, 303, 307, 308]").message("a redirect status is 301, 302, 303, 307 or 308"))]
    pub status_code: Option<u16>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'ReplaceFullPath' ? (has(self.replaceFullPath) && !has(self.replacePrefixMatch)) : (has(self.replacePrefixMatch) && !has(self.replaceFullPath))").message("set the field named by type, and only it"))]
pub struct PathModifier {
    #[serde(rename = "type")]
    pub kind: PathModifierType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub replace_prefix_match: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct BackendRef {
    /// A backend group of this LoadBalancer.
    pub name: String,
    /// Share of requests among this route's backendRefs (default 1; 0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000))]
    pub weight: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FixedResponse {
    #[schemars(range(min = 200, max = 599))]
    pub status_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
    /// Default text/plain; charset=utf-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub content_type: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTimeouts {
    /// Whole request until the response head (Gateway API `timeouts.request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub request: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.path) == (has(self.target) && self.target == 'File')").message("path is required for target File and applies to it only"))]
pub struct AccessLog {
    /// Stdout (default), Stderr or File.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<AccessLogTarget>,
    /// For target File.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub path: Option<String>,
    /// Share of requests logged, 1-100 (default 100); errors are always logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub sample_percent: Option<u8>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccessLogTarget {
    Stdout,
    Stderr,
    File,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Http,
    /// HTTP over TLS terminated here.
    Https,
    Tcp,
    /// TLS passed through untouched, routed by the ClientHello's SNI name.
    Tls,
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
    /// Another namespace's Service: set only by the controller's own translations (a
    /// Gateway API route reaching a Service a ReferenceGrant allows), never read from an
    /// object, so a LoadBalancer cannot name Services outside its namespace.
    #[serde(skip)]
    #[schemars(skip)]
    pub namespace: Option<String>,
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
    /// Waiting for a backend below its maxConnections (default 5s), then 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub queue: Option<String>,
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
