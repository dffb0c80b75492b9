//! `Service type: LoadBalancer` with `loadBalancerClass: halo.dev/vrrp` (or no class,
//! when a VirtualIPPool is marked `defaultClass`): an address from a pool, then a
//! VirtualIP and a TCP LoadBalancer made for it, rendered like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use halo_crds::load_balancer::{Algorithm, Backend, Listener, Protocol, ServiceBackend, Upstream};
use halo_crds::net::IpPrefix;
use halo_crds::{LoadBalancer, LoadBalancerSpec, VirtualIP, VirtualIPPool, VirtualIPSpec};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::ObjectMeta;

pub const LOAD_BALANCER_CLASS: &str = "halo.dev/vrrp";
/// Addresses looked at per pool before giving up (pools can be huge IPv6 ranges).
const SCAN_LIMIT: u32 = 1 << 16;

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

fn current_ingress(svc: &Service) -> Option<IpAddr> {
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

/// The first usable host of a pool CIDR and how many there are (network and broadcast
/// addresses left out where the subnet has them).
fn host_range(net: IpPrefix) -> (u128, u128) {
    match net.addr {
        IpAddr::V4(a) => {
            let len = u32::from(net.prefix_len);
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            let base = u32::from(a) & mask;
            let size = 1u128 << (32 - len);
            if len <= 30 {
                (u128::from(base) + 1, size - 2)
            } else {
                (u128::from(base), size)
            }
        }
        IpAddr::V6(a) => {
            let len = u32::from(net.prefix_len);
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            let base = u128::from(a) & mask;
            let size = 1u128.checked_shl(128 - len).unwrap_or(u128::MAX);
            (base + 1, size.saturating_sub(1))
        }
    }
}

/// Usable host addresses of a pool CIDR, lowest first, bounded.
fn hosts(net: IpPrefix) -> impl Iterator<Item = IpAddr> {
    let (start, count) = host_range(net);
    let v4 = net.addr.is_ipv4();
    (0..count.min(u128::from(SCAN_LIMIT))).map(move |i| {
        let n = start + i;
        if v4 {
            IpAddr::from(u32::try_from(n).unwrap_or(0).to_be_bytes())
        } else {
            IpAddr::from(n.to_be_bytes())
        }
    })
}

/// How much of a pool is in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Addresses of the pool held by Services.
    pub allocated: u64,
    /// Addresses the pool can hand out (at most the first 65,536 of each CIDR).
    pub usable: u64,
    /// Services that got no address because every pool is full.
    pub waiting: u64,
}

/// The usage of `pool` under `allocations` (pure).
pub fn pool_usage(pool: &VirtualIPPool, allocations: &Allocations) -> PoolUsage {
    let nets: Vec<IpPrefix> = pool
        .spec
        .cidrs
        .iter()
        .filter_map(|c| c.parse::<IpPrefix>().ok())
        .collect();
    let usable = nets
        .iter()
        .map(|n| host_range(*n).1.min(u128::from(SCAN_LIMIT)))
        .sum::<u128>();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    PoolUsage {
        allocated: count(
            allocations
                .values()
                .filter_map(|a| a.as_ref().ok())
                .filter(|p| nets.iter().any(|n| n.contains(p.addr)))
                .count(),
        ),
        usable: u64::try_from(usable).unwrap_or(u64::MAX),
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

/// Picks an address for every Service this controller serves. Addresses already in a
/// Service's status are kept (stable across restarts); oldest Services go first.
pub fn allocate(services: &[&Service], pools: &[&VirtualIPPool]) -> Allocations {
    let default_class = pools.iter().any(|p| p.spec.default_class);
    let nets: Vec<IpPrefix> = pools
        .iter()
        .flat_map(|p| {
            p.spec
                .cidrs
                .iter()
                .filter_map(|c| c.parse::<IpPrefix>().ok())
        })
        .collect();
    let pool_of = |ip: IpAddr| nets.iter().find(|n| n.contains(ip)).copied();
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

    let mut taken: BTreeSet<IpAddr> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for svc in &ours {
        let id = (svc.namespace().unwrap_or_default(), svc.name_any());
        if let Some(ip) = current_ingress(svc)
            && let Some(net) = pool_of(ip)
            && taken.insert(ip)
        {
            out.insert(
                id,
                Ok(IpPrefix {
                    addr: ip,
                    prefix_len: net.prefix_len,
                }),
            );
        }
    }
    for svc in &ours {
        let id = (svc.namespace().unwrap_or_default(), svc.name_any());
        if out.contains_key(&id) {
            continue;
        }
        let found = nets.iter().find_map(|net| {
            hosts(*net)
                .find(|ip| !taken.contains(ip))
                .map(|ip| IpPrefix {
                    addr: ip,
                    prefix_len: net.prefix_len,
                })
        });
        match found {
            Some(p) => {
                taken.insert(p.addr);
                out.insert(id, Ok(p));
            }
            None if nets.is_empty() => {
                out.insert(id, Err("no VirtualIPPool to allocate from".into()));
            }
            None => {
                out.insert(id, Err(POOLS_FULL.into()));
            }
        }
    }
    out
}

pub fn virtual_ip_name(id: &ServiceId) -> String {
    format!("service-{}-{}", id.0, id.1)
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
        vips.push(VirtualIP {
            metadata: ObjectMeta {
                name: Some(vip_name.clone()),
                creation_timestamp: svc.metadata.creation_timestamp.clone(),
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
        });
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
                let upstream = Upstream {
                    algorithm: Algorithm::RoundRobin,
                    backends: vec![Backend {
                        name: None,
                        address: None,
                        port: None,
                        service: Some(ServiceBackend {
                            name: id.1.clone(),
                            port,
                        }),
                        weight: None,
                        backup: false,
                        max_connections: None,
                    }],
                    ..Upstream::default()
                };
                Some(Listener::new(name, port, Protocol::Tcp, upstream))
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
    use halo_crds::VirtualIPPoolSpec;
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
        VirtualIPPool::new(
            "pool",
            VirtualIPPoolSpec {
                cidrs: vec![cidr.into()],
                default_class,
            },
        )
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
