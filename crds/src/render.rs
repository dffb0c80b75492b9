//! The pure function from API objects to one node's NodeConfig, shared by the controller
//! and the standalone data plane. It also validates: whatever the API server could not
//! check becomes a [`Problem`] naming the object and field, and that object is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use kube::ResourceExt;

use crate::duration;
use crate::load_balancer::LoadBalancer;
use crate::net::IpPrefix;
use crate::node_config::{GarpConfig, NodeConfig, VipConfig, VrrpConfig};
use crate::virtual_ip::{VirtualIP, VrrpMode};

mod group;
mod listener;
mod memo;
mod route;
pub mod syntax;
mod tls;
pub mod track;

pub use group::DEFAULT_COOKIE;
pub use memo::RenderMemo;
pub use route::{DEFAULT_REDIRECT_STATUS, REDIRECT_STATUSES};
pub use tls::{ALPN_PROTOCOLS, CA_KEY, CIPHER_SUITES, TLS_CERT_KEY, TLS_KEY_KEY, material_refs};

pub const DEFAULT_PRIORITY: u8 = 100;
pub const DEFAULT_RETRIES: u32 = 3;
/// The name of a listener's own backend group and of the route to it.
pub const DEFAULT_GROUP: &str = "default";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Cordoned or excluded from load balancers: VIPs leave it gracefully.
    pub draining: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
    pub port: u16,
}

/// A Service endpoint already resolved from EndpointSlices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub ready: bool,
}

/// One Service port's endpoints: shared, so a render keeps them without copying.
pub type Endpoints = Arc<[Endpoint]>;

pub type ServiceEndpoints = BTreeMap<ServiceKey, Endpoints>;

/// What the controller decided for a VirtualIP; standalone mode takes it from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipAssignment {
    pub vrid: u8,
    pub priority: u8,
    pub peers: Vec<IpAddr>,
}

pub type Assignments = BTreeMap<String, VipAssignment>;

/// Secret values referenced by specs, keyed by (secret name, key).
pub type SecretValues = BTreeMap<(String, String), String>;

/// Where TLS material (certificates, keys, CAs) comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MaterialRef {
    /// A Secret in a LoadBalancer's namespace; its keys (`tls.crt`, `tls.key`, `ca.crt`).
    Secret { namespace: String, name: String },
    /// A file (standalone mode); its whole content under the key `""`.
    File(String),
}

/// The contents (key → text) of every source the specs reference, or why it could not
/// be read or is unusable (becomes a Problem on the referencing field).
/// One Secret's or file's keys, or why it cannot be used.
pub type MaterialEntry = Result<BTreeMap<String, String>, String>;

pub type Material = BTreeMap<MaterialRef, MaterialEntry>;

#[derive(Clone, Copy, Debug)]
pub struct RenderInput<'a> {
    pub node: &'a NodeInfo,
    pub virtual_ips: &'a [&'a VirtualIP],
    pub load_balancers: &'a [&'a LoadBalancer],
    pub endpoints: &'a ServiceEndpoints,
    pub assignments: &'a Assignments,
    pub secrets: &'a SecretValues,
    pub material: &'a Material,
    pub options: RenderOptions,
}

/// What the caller permits beyond the API's own rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Run `exec` track checks: standalone mode does; the controller only when started
    /// with `--allow-track-exec`, since the program runs on every selected node.
    pub allow_track_exec: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub object: ObjectRef,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Version 0 and its content hash; the caller stamps the real version.
    pub config: NodeConfig,
    pub problems: Vec<Problem>,
}

pub fn virtual_ip_ref(vip: &VirtualIP) -> ObjectRef {
    ObjectRef {
        kind: "VirtualIP",
        namespace: None,
        name: vip.name_any(),
    }
}

pub fn load_balancer_ref(lb: &LoadBalancer) -> ObjectRef {
    ObjectRef {
        kind: "LoadBalancer",
        namespace: lb.namespace(),
        name: lb.name_any(),
    }
}

/// Collects the problems of one object.
struct Checker {
    object: ObjectRef,
    problems: Vec<Problem>,
}

impl Checker {
    fn new(object: ObjectRef) -> Self {
        Self {
            object,
            problems: Vec::new(),
        }
    }

    fn report(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        });
    }

    fn duration_ms(&mut self, field: &str, value: Option<&String>, default_ms: u64) -> u64 {
        match value {
            None => default_ms,
            Some(text) => match duration::parse(text) {
                Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                Err(e) => {
                    self.report(field, e.to_string());
                    default_ms
                }
            },
        }
    }

    fn ip(&mut self, field: &str, text: &str) -> Option<IpAddr> {
        match text.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.report(field, format!("{text:?} is not an IP address"));
                None
            }
        }
    }
}

pub fn render(input: &RenderInput<'_>) -> Rendered {
    render_with(input, &mut RenderMemo::default())
}

/// What a LoadBalancer's render reads besides its own object and its VirtualIP's
/// standing on the node (see [`RenderMemo`]).
#[derive(Clone, Copy)]
pub(crate) struct LbSources<'a> {
    pub endpoints: &'a ServiceEndpoints,
    pub material: &'a Material,
    /// The named VirtualIP exists (when it does not include this node, nothing is served).
    pub vip_exists: bool,
}

/// [`render`], reusing the LoadBalancer renders kept in `memo` whose inputs are unchanged
/// (across nodes and passes; see [`RenderMemo`]). Call `memo.end_pass()` after the last
/// node of a pass.
pub fn render_with(input: &RenderInput<'_>, memo: &mut RenderMemo) -> Rendered {
    let mut problems = Vec::new();

    let mut vips: Vec<&VirtualIP> = input.virtual_ips.to_vec();
    vips.sort_by_key(|v| v.name_any());
    // VirtualIPs that are valid and include this node, by name.
    let mut usable_vips: BTreeMap<String, VipConfig> = BTreeMap::new();
    let mut invalid_vips: BTreeSet<String> = BTreeSet::new();
    let mut seen_names = BTreeSet::new();
    for vip in vips {
        let name = vip.name_any();
        if !seen_names.insert(name.clone()) {
            problems.push(Problem {
                object: virtual_ip_ref(vip),
                field: "metadata.name".into(),
                message: "duplicate VirtualIP name".into(),
            });
            continue;
        }
        match render_vip(input, vip) {
            Ok(Some(config)) => {
                usable_vips.insert(name, config);
            }
            Ok(None) => {}
            Err(mut p) => {
                invalid_vips.insert(name);
                problems.append(&mut p);
            }
        }
    }
    check_vrid_conflicts(input, &usable_vips, &mut problems, &mut invalid_vips);
    usable_vips.retain(|name, _| !invalid_vips.contains(name));
    settle_group_preference(input, &mut usable_vips);

    let mut lbs: Vec<&LoadBalancer> = input.load_balancers.to_vec();
    // The oldest object keeps a contested port (as Gateway API settles conflicts), so a
    // new object never takes it from one that serves; name order among equals.
    lbs.sort_by_key(|lb| {
        (
            lb.metadata.creation_timestamp.as_ref().map(|t| t.0),
            lb.namespace().unwrap_or_default(),
            lb.name_any(),
        )
    });
    let vip_names: BTreeSet<String> = input.virtual_ips.iter().map(|v| v.name_any()).collect();
    let mut listeners = Vec::new();
    let mut listener_hashes = Vec::new();
    let mut bound: BTreeMap<(IpAddr, u16), String> = BTreeMap::new();
    for lb in lbs {
        let src = LbSources {
            endpoints: input.endpoints,
            material: input.material,
            vip_exists: lb
                .spec
                .virtual_ip
                .as_ref()
                .is_some_and(|v| vip_names.contains(v)),
        };
        let (rendered, hashes) = memo.render(lb, &src, &usable_vips, &invalid_vips);
        match rendered {
            Ok(rendered) => match port_conflicts(lb, rendered, &bound) {
                None => {
                    for l in rendered {
                        for addr in &l.addresses {
                            bound.insert((*addr, l.port), l.name.clone());
                        }
                    }
                    listeners.extend(rendered.iter().cloned());
                    listener_hashes.extend_from_slice(hashes);
                }
                Some(mut p) => problems.append(&mut p),
            },
            Err(p) => problems.extend(p.iter().cloned()),
        }
    }

    let config = NodeConfig {
        node: input.node.name.clone(),
        version: 0,
        hash: String::new(),
        vips: usable_vips.into_values().collect(),
        listeners,
    }
    .sealed_with(0, &listener_hashes);
    Rendered { config, problems }
}

/// The problems of a LoadBalancer whose listeners claim an address and port an earlier
/// one holds (`bound`), if any.
fn port_conflicts(
    lb: &LoadBalancer,
    rendered: &[Arc<crate::node_config::ListenerConfig>],
    bound: &BTreeMap<(IpAddr, u16), String>,
) -> Option<Vec<Problem>> {
    let mut checker = Checker::new(load_balancer_ref(lb));
    for (i, l) in rendered.iter().enumerate() {
        for addr in &l.addresses {
            if let Some(owner) = bound.get(&(*addr, l.port)) {
                checker.report(
                    format!("spec.listeners[{i}].port"),
                    format!("{addr}:{} is already used by listener {owner}", l.port),
                );
            }
        }
    }
    (!checker.problems.is_empty()).then_some(checker.problems)
}

fn selects(selector: Option<&BTreeMap<String, String>>, node: &NodeInfo) -> bool {
    selector.is_none_or(|sel| sel.iter().all(|(k, v)| node.labels.get(k) == Some(v)))
}

fn render_vip(input: &RenderInput<'_>, vip: &VirtualIP) -> Result<Option<VipConfig>, Vec<Problem>> {
    if !selects(vip.spec.node_selector.as_ref(), input.node) {
        return Ok(None);
    }
    let name = vip.name_any();
    let mut c = Checker::new(virtual_ip_ref(vip));
    let spec = &vip.spec;

    if spec.addresses.is_empty() {
        c.report("spec.addresses", "at least one address is required");
    }
    let mut addresses = Vec::new();
    for (i, text) in spec.addresses.iter().enumerate() {
        match text.parse::<IpPrefix>() {
            Ok(p) => addresses.push(p),
            Err(e) => c.report(format!("spec.addresses[{i}]"), e.to_string()),
        }
    }

    let vrrp = if spec.vrrp.enabled {
        render_vrrp(input, vip, &addresses, &mut c)
    } else {
        None
    };
    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Some(VipConfig {
        name,
        addresses,
        interface: spec.interface.clone(),
        vrrp,
    }))
}

fn render_vrrp(
    input: &RenderInput<'_>,
    vip: &VirtualIP,
    addresses: &[IpPrefix],
    c: &mut Checker,
) -> Option<VrrpConfig> {
    let spec = &vip.spec;
    let vrrp = &spec.vrrp;
    let assignment = input.assignments.get(&vip.name_any());

    if vrrp.version != 2 && vrrp.version != 3 {
        c.report(
            "spec.vrrp.version",
            format!("must be 2 or 3, not {}", vrrp.version),
        );
    }
    let families: BTreeSet<bool> = addresses.iter().map(|a| a.addr.is_ipv4()).collect();
    if families.len() > 1 {
        c.report(
            "spec.addresses",
            "one VRRP instance carries one address family: use a VirtualIP per family",
        );
    }
    if vrrp.version == 2 && addresses.iter().any(|a| a.addr.is_ipv6()) {
        c.report("spec.vrrp.version", "VRRP version 2 carries IPv4 only");
    }

    let vrid = match (assignment.map(|a| a.vrid), vrrp.virtual_router_id) {
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => {
            c.report(
                "spec.vrrp.virtualRouterId",
                "required when no VRID is allocated (standalone mode)",
            );
            0
        }
    };
    if vrid == 0 && (assignment.is_some() || vrrp.virtual_router_id.is_some()) {
        c.report("spec.vrrp.virtualRouterId", "must be 1-255");
    }

    let default_advert = if vrrp.version == 2 { 1_000 } else { 100 };
    let advert_ms = c.duration_ms(
        "spec.vrrp.advertisementInterval",
        vrrp.advertisement_interval.as_ref(),
        default_advert,
    );
    if vrrp.version == 2
        && (advert_ms == 0 || !advert_ms.is_multiple_of(1_000) || advert_ms > 255_000)
    {
        c.report(
            "spec.vrrp.advertisementInterval",
            "VRRP version 2 advertises in whole seconds, 1s-255s",
        );
    }
    if vrrp.version == 3 && (advert_ms < 10 || !advert_ms.is_multiple_of(10) || advert_ms > 40_950)
    {
        c.report(
            "spec.vrrp.advertisementInterval",
            "VRRP version 3 advertises in centiseconds, 10ms-40950ms",
        );
    }
    let preempt_delay_ms = c.duration_ms("spec.vrrp.preemptDelay", vrrp.preempt_delay.as_ref(), 0);

    let node = &input.node.name;
    let priority = match assignment {
        Some(a) => a.priority,
        None => spec
            .priorities
            .iter()
            .find(|p| &p.node == node)
            .map_or(DEFAULT_PRIORITY, |p| p.priority),
    };
    if priority == 0 {
        c.report(
            "spec.priorities",
            "priority 0 is reserved for releasing the address",
        );
    }

    let mut unicast_peers = Vec::new();
    // This node's own entry in spec.peers is the address it speaks from (keepalived's
    // unicast_src_ip on that node), unless spec.vrrp.unicastSource says otherwise.
    let mut own_address = None;
    if vrrp.mode == VrrpMode::Unicast {
        match assignment {
            Some(a) => unicast_peers = a.peers.clone(),
            None => {
                for (i, p) in spec.peers.iter().enumerate() {
                    if &p.node == node {
                        own_address = c.ip(&format!("spec.peers[{i}].address"), &p.address);
                        continue;
                    }
                    if let Some(ip) = c.ip(&format!("spec.peers[{i}].address"), &p.address) {
                        unicast_peers.push(ip);
                    }
                }
            }
        }
        if unicast_peers.is_empty() {
            c.report(
                "spec.peers",
                "unicast mode needs at least one peer besides this node",
            );
        }
    }
    let unicast_source = vrrp
        .unicast_source
        .as_ref()
        .and_then(|s| c.ip("spec.vrrp.unicastSource", s))
        .or(own_address);

    let auth_password = match &vrrp.authentication {
        None => None,
        Some(_) if vrrp.version != 2 => {
            c.report(
                "spec.vrrp.authentication",
                "only defined for VRRP version 2",
            );
            None
        }
        Some(auth) => match (&auth.password, &auth.secret_ref) {
            (Some(p), None) => Some(p.clone()),
            (None, Some(r)) => match input.secrets.get(&(r.name.clone(), r.key.clone())) {
                Some(p) => Some(p.clone()),
                None => {
                    c.report(
                        "spec.vrrp.authentication.secretRef",
                        format!("secret {}/{} is not available", r.name, r.key),
                    );
                    None
                }
            },
            _ => {
                c.report(
                    "spec.vrrp.authentication",
                    "set exactly one of password or secretRef",
                );
                None
            }
        },
    };
    if let Some(p) = &auth_password
        && (p.is_empty() || p.len() > 8)
    {
        c.report(
            "spec.vrrp.authentication.password",
            "must be 1-8 bytes (VRRPv2 PASS)",
        );
    }

    let track = track::render_track(c, vrrp.track.as_ref(), input.options);
    let garp = match &vrrp.garp {
        None => GarpConfig::default(),
        Some(g) => {
            let defaults = GarpConfig::default();
            let count = g.count.unwrap_or(defaults.count);
            if !(1..=100).contains(&count) {
                c.report("spec.vrrp.garp.count", "must be 1-100");
            }
            GarpConfig {
                count,
                interval_ms: c.duration_ms(
                    "spec.vrrp.garp.interval",
                    g.interval.as_ref(),
                    defaults.interval_ms,
                ),
                refresh_ms: c.duration_ms("spec.vrrp.garp.refresh", g.refresh.as_ref(), 0),
            }
        }
    };

    Some(VrrpConfig {
        version: vrrp.version,
        vrid,
        priority,
        advert_interval_ms: u32::try_from(advert_ms).unwrap_or(u32::MAX),
        preempt: vrrp.preempt,
        preempt_delay_ms,
        unicast_peers,
        unicast_source,
        auth_password,
        sync_group: vrrp.sync_group.clone(),
        track,
        garp,
        preferred: spec.preferred_node.as_ref() == Some(node),
        draining: input.node.draining,
    })
}

/// A sync group moves as one, so one preferred node holds for all of it: that of its
/// first VirtualIP by name that names one.
fn settle_group_preference(input: &RenderInput<'_>, vips: &mut BTreeMap<String, VipConfig>) {
    let specs: BTreeMap<String, &VirtualIP> = input
        .virtual_ips
        .iter()
        .map(|v| (v.name_any(), *v))
        .collect();
    let mut preferred: BTreeMap<String, &str> = BTreeMap::new();
    for (name, vip) in vips.iter() {
        let group = vip.vrrp.as_ref().and_then(|r| r.sync_group.clone());
        let wanted = specs
            .get(name)
            .and_then(|v| v.spec.preferred_node.as_deref());
        if let (Some(group), Some(node)) = (group, wanted) {
            preferred.entry(group).or_insert(node);
        }
    }
    for vrrp in vips.values_mut().filter_map(|v| v.vrrp.as_mut()) {
        if let Some(node) = vrrp.sync_group.as_ref().and_then(|g| preferred.get(g)) {
            vrrp.preferred = *node == input.node.name;
        }
    }
}

/// Two VirtualIPs on this node must not share a VRID within one address family.
fn check_vrid_conflicts(
    input: &RenderInput<'_>,
    vips: &BTreeMap<String, VipConfig>,
    problems: &mut Vec<Problem>,
    invalid: &mut BTreeSet<String>,
) {
    let mut owners: BTreeMap<(bool, u8), &str> = BTreeMap::new();
    for (name, vip) in vips {
        let (Some(vrrp), Some(first)) = (&vip.vrrp, vip.addresses.first()) else {
            continue;
        };
        let key = (first.addr.is_ipv4(), vrrp.vrid);
        if let Some(owner) = owners.get(&key) {
            let object = input
                .virtual_ips
                .iter()
                .find(|v| &v.name_any() == name)
                .map_or_else(
                    || ObjectRef {
                        kind: "VirtualIP",
                        namespace: None,
                        name: name.clone(),
                    },
                    |v| virtual_ip_ref(v),
                );
            problems.push(Problem {
                object,
                field: "spec.vrrp.virtualRouterId".into(),
                message: format!("VRID {} is already used by VirtualIP {owner}", vrrp.vrid),
            });
            invalid.insert(name.clone());
        } else {
            owners.insert(key, name);
        }
    }
}
