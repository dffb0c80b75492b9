//! `Service type: LoadBalancer` with `loadBalancerClass: halo.dev/vrrp` (or no class,
//! when a VirtualIPPool is marked `defaultClass`): an address from a pool, then a
//! VirtualIP and a TCP LoadBalancer made for it, rendered like any other.

use std::collections::BTreeMap;
use std::net::IpAddr;

use halo_crds::load_balancer::{
    Algorithm, Backend, BackendProtocol, Listener, Protocol, ServiceBackend, Upstream,
};
use halo_crds::net::IpPrefix;
use halo_crds::{LoadBalancer, LoadBalancerSpec, VirtualIP, VirtualIPPool, VirtualIPSpec};

use crate::pools::Pool;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::ObjectMeta;

pub const LOAD_BALANCER_CLASS: &str = "halo.dev/vrrp";

pub type ServiceId = (String, String);

/// The address picked for each served Service, or why there is none.
pub type Allocations = BTreeMap<ServiceId, Result<IpPrefix, String>>;

fn is_ours(svc: &Service, default_class: bool) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer")
        && match spec.load_balancer_class.as_deref() {
            Some(class) => class == LOAD_BALANCER_CLASS,
            None => default_class,
        }
}

pub fn current_ingress(svc: &Service) -> Option<IpAddr> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .as_ref()?
        .parse()
        .ok()
}

/// How much of a pool is in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Addresses of the pool held by Services.
    pub allocated: u64,
    /// Addresses the pool can hand out (at most the first 65,536 of each CIDR or range,
    /// reserved ones left out).
    pub usable: u64,
    /// Services that got no address because every pool is full.
    pub waiting: u64,
}

/// The usage of `pool` under `allocations` (pure).
pub fn pool_usage(pool: &VirtualIPPool, allocations: &Allocations) -> PoolUsage {
    let view = Pool::of(pool);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    PoolUsage {
        allocated: count(
            allocations
                .values()
                .filter_map(|a| a.as_ref().ok())
                .filter(|p| view.contains(p.addr))
                .count(),
        ),
        usable: u64::try_from(view.usable()).unwrap_or(u64::MAX),
        waiting: count(
            allocations
                .values()
                .filter(|a| a.as_ref().is_err_and(|e| e == POOLS_FULL))
                .count(),
        ),
    }
}

/// Why a Service got no address when pools exist but are full.
pub const POOLS_FULL: &str = "every VirtualIPPool address is in use";
/// The annotation that names the pool to draw from.
pub const POOL_ANNOTATION: &str = "halo.dev/pool";
/// The annotation that asks for an address (as `spec.loadBalancerIP`, which is deprecated).
pub const ADDRESSES_ANNOTATION: &str = "halo.dev/addresses";

/// What a Service asks for beyond "any address".
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    address: Option<IpAddr>,
    pool: Option<String>,
}

fn request_of(svc: &Service) -> Result<Request, String> {
    let annotations = svc.annotations();
    let pool = annotations
        .get(POOL_ANNOTATION)
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty());
    let asked = match annotations.get(ADDRESSES_ANNOTATION) {
        Some(list) => {
            let items: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .collect();
            if items.len() > 1 {
                return Err(format!(
                    "annotation {ADDRESSES_ANNOTATION}: one address per Service, not {}",
                    items.len()
                ));
            }
            items.first().map(|a| (ADDRESSES_ANNOTATION, a.to_string()))
        }
        None => svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_ip.clone())
            .filter(|a| !a.is_empty())
            .map(|a| ("spec.loadBalancerIP", a)),
    };
    let address = match asked {
        None => None,
        Some((from, text)) => Some(
            text.parse::<IpAddr>()
                .map_err(|_| format!("{from}: {text:?} is not an IP address"))?,
        ),
    };
    Ok(Request { address, pool })
}

fn id_of(svc: &Service) -> ServiceId {
    (svc.namespace().unwrap_or_default(), svc.name_any())
}

/// Picks an address for every Service this controller serves. Addresses already in a
/// Service's status are kept (stable across restarts) while the Service may still hold
/// them; then requested addresses, then the rest, oldest Services first.
pub fn allocate(services: &[&Service], pools: &[&VirtualIPPool]) -> Allocations {
    let default_class = pools.iter().any(|p| p.spec.default_class);
    let views: Vec<Pool> = pools.iter().map(|p| Pool::of(p)).collect();
    let mut ours: Vec<&Service> = services
        .iter()
        .copied()
        .filter(|s| is_ours(s, default_class))
        .collect();
    ours.sort_by_key(|s| {
        (
            s.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
            s.namespace(),
            s.name_any(),
        )
    });

    let mut holder: BTreeMap<IpAddr, ServiceId> = BTreeMap::new();
    let mut out = Allocations::new();
    let mut pending: Vec<(&Service, Request)> = Vec::new();
    for svc in &ours {
        let request = match request_of(svc) {
            Ok(r) => r,
            Err(why) => {
                out.insert(id_of(svc), Err(why));
                continue;
            }
        };
        let kept = current_ingress(svc)
            .filter(|ip| request.address.is_none_or(|want| want == *ip))
            .and_then(|ip| {
                eligible(&views, svc, &request)
                    .find_map(|p| p.block_of(ip))
                    .map(|b| (ip, b))
            })
            .filter(|(ip, _)| !holder.contains_key(ip));
        match kept {
            Some((ip, block)) => {
                holder.insert(ip, id_of(svc));
                out.insert(
                    id_of(svc),
                    Ok(IpPrefix {
                        addr: ip,
                        prefix_len: block.prefix_len,
                    }),
                );
            }
            None => pending.push((svc, request)),
        }
    }
    // Requested addresses before automatic ones, so an automatic pick never takes an
    // address a later Service asked for by name.
    pending.sort_by_key(|(_, r)| r.address.is_none());
    for (svc, request) in pending {
        let id = id_of(svc);
        let result = match request.address {
            Some(ip) => requested(&views, svc, &request, ip, &holder),
            None => automatic(&views, svc, &request, &holder),
        };
        if let Ok(p) = &result {
            holder.insert(p.addr, id.clone());
        }
        out.insert(id, result);
    }
    out
}

/// Pools `svc` may draw from, by its namespace, labels and pool annotation.
fn eligible<'p, 'a>(
    views: &'p [Pool<'a>],
    svc: &'p Service,
    request: &'p Request,
) -> impl Iterator<Item = &'p Pool<'a>> {
    views
        .iter()
        .filter(move |p| p.admits(svc) && request.pool.as_ref().is_none_or(|want| *want == p.name))
}

fn requested(
    views: &[Pool],
    svc: &Service,
    request: &Request,
    ip: IpAddr,
    holder: &BTreeMap<IpAddr, ServiceId>,
) -> Result<IpPrefix, String> {
    let Some(pool) = eligible(views, svc, request).find(|p| p.contains(ip)) else {
        return Err(match &request.pool {
            Some(name) => format!(
                "{ip} is not in VirtualIPPool {name}, or the pool does not serve this Service"
            ),
            None => format!("{ip} is in no VirtualIPPool that serves this Service"),
        });
    };
    let Some(block) = pool.block_of(ip) else {
        return Err(format!("{ip} is reserved in VirtualIPPool {}", pool.name));
    };
    if let Some((ns, name)) = holder.get(&ip) {
        return Err(format!("{ip} is held by Service {ns}/{name}"));
    }
    Ok(IpPrefix {
        addr: ip,
        prefix_len: block.prefix_len,
    })
}

fn automatic(
    views: &[Pool],
    svc: &Service,
    request: &Request,
    holder: &BTreeMap<IpAddr, ServiceId>,
) -> Result<IpPrefix, String> {
    // A pool named by the annotation serves even when it does not assign automatically.
    let mut candidates = eligible(views, svc, request)
        .filter(|p| p.auto_assign || request.pool.is_some())
        .peekable();
    if candidates.peek().is_none() {
        return Err(match &request.pool {
            Some(name) => format!("no VirtualIPPool {name} that serves this Service"),
            None => "no VirtualIPPool to allocate from".into(),
        });
    }
    candidates
        .flat_map(Pool::candidates)
        .find(|p| !holder.contains_key(&p.addr))
        .ok_or_else(|| POOLS_FULL.to_string())
}

pub fn virtual_ip_name(id: &ServiceId) -> String {
    format!("service-{}-{}", id.0, id.1)
}

/// What a Service port's `appProtocol` says its backends speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortProtocol {
    Tcp,
    /// `http`: an HTTP listener (routing, health, HTTP statistics, access log).
    Http,
    /// `kubernetes.io/h2c`: HTTP with HTTP/2 cleartext to the backends.
    H2c,
}

fn port_protocol(app_protocol: Option<&str>) -> PortProtocol {
    match app_protocol {
        Some("http") => PortProtocol::Http,
        Some("kubernetes.io/h2c") => PortProtocol::H2c,
        _ => PortProtocol::Tcp,
    }
}

/// A VirtualIP on an allocated address, with every other setting at its default (any
/// node, VRRP with an assigned VRID); `created` orders it as its owner is ordered.
pub fn allocated_virtual_ip(
    name: &str,
    address: IpPrefix,
    created: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> VirtualIP {
    VirtualIP {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            creation_timestamp: created.clone(),
            ..Default::default()
        },
        spec: VirtualIPSpec {
            addresses: vec![address.to_string()],
            interface: None,
            node_selector: None,
            vrrp: Default::default(),
            priorities: Vec::new(),
            peers: Vec::new(),
            preferred_node: None,
        },
        status: None,
    }
}

/// The VirtualIP and LoadBalancer that serve each allocated Service (TCP ports only).
pub fn synthesize(
    services: &[&Service],
    allocations: &BTreeMap<ServiceId, Result<IpPrefix, String>>,
) -> (Vec<VirtualIP>, Vec<LoadBalancer>) {
    let mut vips = Vec::new();
    let mut lbs = Vec::new();
    for svc in services {
        let id = (svc.namespace().unwrap_or_default(), svc.name_any());
        let Some(Ok(address)) = allocations.get(&id) else {
            continue;
        };
        let vip_name = virtual_ip_name(&id);
        vips.push(allocated_virtual_ip(
            &vip_name,
            *address,
            &svc.metadata.creation_timestamp,
        ));
        let listeners: Vec<Listener> = svc
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                let port = u16::try_from(p.port).ok()?;
                let name = p
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| format!("port-{port}"));
                let speaks = port_protocol(p.app_protocol.as_deref());
                let upstream = Upstream {
                    algorithm: Algorithm::RoundRobin,
                    backend_protocol: (speaks == PortProtocol::H2c)
                        .then_some(BackendProtocol::Http2),
                    backends: vec![Backend {
                        name: None,
                        address: None,
                        port: None,
                        service: Some(ServiceBackend {
                            name: id.1.clone(),
                            port,
                            namespace: None,
                        }),
                        weight: None,
                        backup: false,
                        max_connections: None,
                    }],
                    ..Upstream::default()
                };
                let protocol = if speaks == PortProtocol::Tcp {
                    Protocol::Tcp
                } else {
                    Protocol::Http
                };
                let mut listener = Listener::new(name, port, protocol, upstream);
                // An h2c port's clients speak HTTP/2 without TLS too.
                listener.http2_prior_knowledge = speaks == PortProtocol::H2c;
                Some(listener)
            })
            .collect();
        if listeners.is_empty() {
            continue;
        }
        lbs.push(LoadBalancer {
            metadata: ObjectMeta {
                name: Some(format!("service-{}", id.1)),
                namespace: Some(id.0.clone()),
                ..Default::default()
            },
            spec: LoadBalancerSpec {
                virtual_ip: Some(vip_name),
                addresses: None,
                listeners,
                backend_groups: Vec::new(),
            },
            status: None,
        });
    }
    (vips, lbs)
}

/// What a served Service's `status.loadBalancer` should become.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngressChange {
    /// Write this address (the status holds another one, or none).
    Assign(IpAddr),
    /// No address can be given: say why (an Event; the status stays as it is).
    Unavailable(String),
}

/// The Services whose status must change to match `allocations`: pure, for the status
/// writer (which also skips what it already said).
pub fn ingress_changes(
    services: &[&Service],
    allocations: &Allocations,
) -> Vec<(ServiceId, IngressChange)> {
    services
        .iter()
        .filter_map(|svc| {
            let id = (svc.namespace().unwrap_or_default(), svc.name_any());
            let change = match allocations.get(&id)? {
                Ok(p) if current_ingress(svc) == Some(p.addr) => return None,
                Ok(p) => IngressChange::Assign(p.addr),
                Err(why) => IngressChange::Unavailable(why.clone()),
            };
            Some((id, change))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };

    fn svc(name: &str, class: Option<&str>, ingress: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                load_balancer_class: class.map(str::to_string),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: ingress.map(|ip| ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some(ip.into()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
        }
    }

    fn pool(cidr: &str, default_class: bool) -> VirtualIPPool {
        pool_from(serde_json::json!({
            "metadata": {"name": "pool"},
            "spec": {"cidrs": [cidr], "defaultClass": default_class}
        }))
    }

    fn pool_from(v: serde_json::Value) -> VirtualIPPool {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("pool: {e}"))
    }

    /// A served Service in `ns` with these annotations, labels and `spec.loadBalancerIP`.
    fn asking(
        ns: &str,
        name: &str,
        annotations: &[(&str, &str)],
        labels: &[(&str, &str)],
        lb_ip: Option<&str>,
        ingress: Option<&str>,
    ) -> Service {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let mut s = svc(name, Some(LOAD_BALANCER_CLASS), ingress);
        s.metadata.namespace = Some(ns.into());
        s.metadata.annotations = map(annotations);
        s.metadata.labels = map(labels);
        if let Some(spec) = s.spec.as_mut() {
            spec.load_balancer_ip = lb_ip.map(str::to_string);
        }
        s
    }

    #[test]
    fn requests_pools_reservations_and_who_may_draw() {
        let pools = [
            pool_from(serde_json::json!({"metadata": {"name": "pub"}, "spec": {
                "cidrs": ["192.0.2.0/29"], "reserved": ["192.0.2.1"]}})),
            pool_from(serde_json::json!({"metadata": {"name": "manual"}, "spec": {
                "ranges": ["198.51.100.10-198.51.100.12"], "autoAssign": false}})),
            pool_from(
                serde_json::json!({"metadata": {"name": "shop-only"}, "spec": {
                "cidrs": ["203.0.113.0/30"], "namespaces": ["shop"],
                "serviceSelector": {"tier": "front"}}}),
            ),
        ];
        let pool = ("halo.dev/pool", "");
        let addrs = "halo.dev/addresses";
        let services = [
            asking("default", "auto", &[], &[], None, None),
            asking("default", "lb-ip", &[], &[], Some("198.51.100.11"), None),
            asking(
                "default",
                "named-pool",
                &[(pool.0, "manual")],
                &[],
                None,
                None,
            ),
            asking(
                "default",
                "reserved",
                &[(addrs, "192.0.2.1")],
                &[],
                None,
                None,
            ),
            asking("default", "outside", &[], &[], Some("10.9.9.9"), None),
            asking(
                "default",
                "two",
                &[(addrs, "192.0.2.3, 192.0.2.4")],
                &[],
                None,
                None,
            ),
            asking(
                "default",
                "garbage",
                &[(addrs, "nonsense")],
                &[],
                None,
                None,
            ),
            asking(
                "shop",
                "front",
                &[(pool.0, "shop-only")],
                &[("tier", "front")],
                None,
                None,
            ),
            asking(
                "default",
                "front",
                &[(pool.0, "shop-only")],
                &[("tier", "front")],
                None,
                None,
            ),
            asking(
                "shop",
                "back",
                &[(pool.0, "shop-only")],
                &[("tier", "back")],
                None,
                None,
            ),
            asking("default", "dup-a", &[(addrs, "192.0.2.5")], &[], None, None),
            asking("default", "dup-b", &[], &[], Some("192.0.2.5"), None),
            asking(
                "default",
                "moved",
                &[(addrs, "192.0.2.6")],
                &[],
                None,
                Some("192.0.2.4"),
            ),
            asking("default", "stays", &[], &[], None, Some("192.0.2.3")),
        ];
        let got = allocate(
            &services.iter().collect::<Vec<_>>(),
            &pools.iter().collect::<Vec<_>>(),
        );
        let want: &[(&str, &str, Result<&str, &str>)] = &[
            ("default", "auto", Ok("192.0.2.2/29")),
            ("default", "lb-ip", Ok("198.51.100.11/32")),
            ("default", "named-pool", Ok("198.51.100.10/32")),
            (
                "default",
                "reserved",
                Err("192.0.2.1 is reserved in VirtualIPPool pub"),
            ),
            (
                "default",
                "outside",
                Err("10.9.9.9 is in no VirtualIPPool that serves this Service"),
            ),
            (
                "default",
                "two",
                Err("annotation halo.dev/addresses: one address per Service, not 2"),
            ),
            (
                "default",
                "garbage",
                Err("halo.dev/addresses: \"nonsense\" is not an IP address"),
            ),
            ("shop", "front", Ok("203.0.113.1/30")),
            (
                "default",
                "front",
                Err("no VirtualIPPool shop-only that serves this Service"),
            ),
            (
                "shop",
                "back",
                Err("no VirtualIPPool shop-only that serves this Service"),
            ),
            ("default", "dup-a", Ok("192.0.2.5/29")),
            (
                "default",
                "dup-b",
                Err("192.0.2.5 is held by Service default/dup-a"),
            ),
            ("default", "moved", Ok("192.0.2.6/29")),
            ("default", "stays", Ok("192.0.2.3/29")),
        ];
        for (ns, name, expected) in want {
            let result = got
                .get(&(ns.to_string(), name.to_string()))
                .unwrap_or_else(|| panic!("{ns}/{name} missing"))
                .as_ref()
                .map(ToString::to_string)
                .map_err(String::as_str);
            assert_eq!(result.as_deref().map_err(|e| *e), *expected, "{ns}/{name}");
        }
        assert_eq!(got.len(), want.len());
        // `pub`: 6 hosts, one reserved; auto, dup-a, moved and stays hold four.
        let usage = pool_usage(&pools[0], &got);
        assert_eq!((usage.allocated, usage.usable), (4, 5));
    }

    #[test]
    fn allocates_lowest_free_keeps_existing_and_reports_exhaustion() {
        let p = pool("192.0.2.0/30", false);
        let a = svc("a", Some(LOAD_BALANCER_CLASS), None);
        let b = svc("b", Some(LOAD_BALANCER_CLASS), Some("192.0.2.1"));
        let c = svc("c", Some(LOAD_BALANCER_CLASS), None);
        let other = svc("d", Some("example.com/other"), None);
        let got = allocate(&[&a, &b, &c, &other], &[&p]);
        assert_eq!(
            got[&("default".into(), "b".into())],
            Ok("192.0.2.1/30"
                .parse()
                .unwrap_or(IpPrefix::host(IpAddr::from([0, 0, 0, 0]))))
        );
        assert_eq!(
            got[&("default".into(), "a".into())]
                .as_ref()
                .map(|p| p.addr),
            Ok(IpAddr::from([192, 0, 2, 2]))
        );
        assert_eq!(
            got[&("default".into(), "c".into())],
            Err("every VirtualIPPool address is in use".into())
        );
        assert!(!got.contains_key(&("default".into(), "d".into())));
    }

    #[test]
    fn default_class_serves_services_without_a_class() {
        let s = svc("a", None, None);
        assert!(allocate(&[&s], &[&pool("192.0.2.0/24", false)]).is_empty());
        assert_eq!(allocate(&[&s], &[&pool("192.0.2.0/24", true)]).len(), 1);
    }

    #[test]
    fn synthesized_objects_serve_tcp_ports_through_the_service() {
        let s = svc("web", Some(LOAD_BALANCER_CLASS), None);
        let alloc = allocate(&[&s], &[&pool("192.0.2.0/24", false)]);
        let (vips, lbs) = synthesize(&[&s], &alloc);
        assert_eq!(vips[0].spec.addresses, ["192.0.2.1/24"]);
        assert_eq!(
            lbs[0].spec.virtual_ip.as_deref(),
            Some("service-default-web")
        );
        assert_eq!(lbs[0].spec.listeners[0].port, 80);
        assert_eq!(lbs[0].spec.listeners[0].protocol, Protocol::Tcp);
    }

    #[test]
    fn app_protocol_http_and_h2c_ports_get_http_listeners() {
        let mut s = svc("web", Some(LOAD_BALANCER_CLASS), None);
        let port = |name: &str, number: i32, app: Option<&str>| ServicePort {
            name: Some(name.into()),
            port: number,
            app_protocol: app.map(str::to_string),
            ..Default::default()
        };
        if let Some(spec) = s.spec.as_mut() {
            spec.ports = Some(vec![
                port("web", 80, Some("http")),
                port("grpc", 81, Some("kubernetes.io/h2c")),
                port("db", 5432, Some("postgresql")),
            ]);
        }
        let alloc = allocate(&[&s], &[&pool("192.0.2.0/24", false)]);
        let (_, lbs) = synthesize(&[&s], &alloc);
        let got: Vec<(Protocol, bool, Option<BackendProtocol>)> = lbs[0]
            .spec
            .listeners
            .iter()
            .map(|l| {
                (
                    l.protocol,
                    l.http2_prior_knowledge,
                    l.upstream.backend_protocol,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Protocol::Http, false, None),
                (Protocol::Http, true, Some(BackendProtocol::Http2)),
                (Protocol::Tcp, false, None),
            ]
        );
    }
    #[test]
    fn ingress_changes_only_where_the_status_differs() {
        let p = pool("192.0.2.0/30", false);
        let kept = svc("kept", Some(LOAD_BALANCER_CLASS), Some("192.0.2.1"));
        let fresh = svc("fresh", Some(LOAD_BALANCER_CLASS), None);
        let starved = svc("starved", Some(LOAD_BALANCER_CLASS), None);
        let services = [&kept, &fresh, &starved];
        let alloc = allocate(&services, &[&p]);
        let id = |n: &str| ("default".to_string(), n.to_string());
        assert_eq!(
            ingress_changes(&services, &alloc),
            vec![
                (
                    id("fresh"),
                    IngressChange::Assign(IpAddr::from([192, 0, 2, 2]))
                ),
                (
                    id("starved"),
                    IngressChange::Unavailable("every VirtualIPPool address is in use".into())
                ),
            ]
        );
    }

    #[test]
    fn pool_usage_counts_what_the_pool_holds_and_who_waits() {
        let p = pool("192.0.2.0/30", false);
        let other = pool("198.51.100.0/24", false);
        let a = svc("a", Some(LOAD_BALANCER_CLASS), None);
        let b = svc("b", Some(LOAD_BALANCER_CLASS), None);
        let c = svc("c", Some(LOAD_BALANCER_CLASS), None);
        let alloc = allocate(&[&a, &b, &c], &[&p]);
        assert_eq!(
            pool_usage(&p, &alloc),
            PoolUsage {
                allocated: 2,
                usable: 2,
                waiting: 1
            }
        );
        assert_eq!(pool_usage(&other, &alloc).allocated, 0);
        assert_eq!(pool_usage(&other, &alloc).usable, 254);
        assert_eq!(
            pool_usage(&pool("10.0.0.0/8", false), &alloc).usable,
            65_536
        );
    }
}
