//! Pure conversions from Kubernetes objects to the render's inputs.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use halo_crds::VirtualIP;
use halo_crds::net::IpPrefix;
use halo_crds::render::{
    Endpoint, Endpoints, NodeInfo, SecretValues, ServiceEndpoints, ServiceKey,
};
use halo_crds::virtual_ip::VrrpMode;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::assign::{NodeFacts, VipFacts};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Endpoints of every Service port, from the Service's EndpointSlices. An endpoint is
/// ready when its `ready` condition is not false and it is not terminating.
pub fn resolve_endpoints(services: &[&Service], slices: &[&EndpointSlice]) -> ServiceEndpoints {
    resolve_endpoints_with(services, slices, &mut EndpointsCache::default())
}

/// A Service and its slices as the API server last versioned them: (uid,
/// resourceVersion) of each. Equal means unchanged; objects without them are never kept.
type Versions = Vec<(String, String)>;

fn versions<'a>(objects: impl Iterator<Item = &'a ObjectMeta>) -> Option<Versions> {
    objects
        .map(|m| Some((m.uid.clone()?, m.resource_version.clone()?)))
        .collect()
}

/// One Service's endpoints, per port.
type PortEndpoints = Vec<(ServiceKey, Endpoints)>;

/// The endpoints of each Service kept from the last pass, with the versions they were
/// resolved from: a change resolves only the Services whose objects it touched.
#[derive(Default)]
pub struct EndpointsCache {
    services: HashMap<(String, String), (Versions, PortEndpoints)>,
}

/// [`resolve_endpoints`], reusing what `cache` holds for Services whose object and
/// slices have the same versions as when it was resolved.
pub fn resolve_endpoints_with(
    services: &[&Service],
    slices: &[&EndpointSlice],
    cache: &mut EndpointsCache,
) -> ServiceEndpoints {
    // Slices by (namespace, service), so this stays linear in the number of objects.
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if let Some(svc) = slice.labels().get(SERVICE_NAME_LABEL) {
            by_service
                .entry((slice.namespace().unwrap_or_default(), svc.clone()))
                .or_default()
                .push(slice);
        }
    }
    let mut out = ServiceEndpoints::new();
    let mut kept = HashMap::new();
    for svc in services {
        let id = (svc.namespace().unwrap_or_default(), svc.name_any());
        let own = by_service.get(&id).map(Vec::as_slice).unwrap_or_default();
        let seen = versions(std::iter::once(&svc.metadata).chain(own.iter().map(|s| &s.metadata)));
        let cached = cache
            .services
            .remove(&id)
            .filter(|(v, _)| Some(v) == seen.as_ref());
        let resolved = match cached {
            Some((_, resolved)) => resolved,
            None => service_endpoints(svc, &id, own),
        };
        out.extend(resolved.iter().cloned());
        if let Some(v) = seen {
            kept.insert(id, (v, resolved));
        }
    }
    cache.services = kept;
    out
}

/// The endpoints of each port of one Service, from its own slices.
fn service_endpoints(
    svc: &Service,
    (namespace, name): &(String, String),
    own: &[&EndpointSlice],
) -> PortEndpoints {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for port in ports {
        let Ok(service_port) = u16::try_from(port.port) else {
            continue;
        };
        let key = ServiceKey {
            namespace: namespace.clone(),
            name: name.clone(),
            port: service_port,
        };
        let mut endpoints = Vec::new();
        for slice in own {
            let Some(target) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == port.name.as_deref().unwrap_or(""))
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for ep in &slice.endpoints {
                let conditions = ep.conditions.clone().unwrap_or_default();
                let ready =
                    conditions.ready.unwrap_or(true) && !conditions.terminating.unwrap_or(false);
                let base = ep
                    .target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .or_else(|| ep.addresses.first().cloned())
                    .unwrap_or_default();
                let several = ep.addresses.len() > 1;
                for text in &ep.addresses {
                    let Ok(address) = text.parse::<IpAddr>() else {
                        continue;
                    };
                    endpoints.push(Endpoint {
                        name: if several {
                            format!("{base}-{address}")
                        } else {
                            base.clone()
                        },
                        address,
                        port: target,
                        ready,
                    });
                }
            }
        }
        endpoints.sort_by(|a, b| a.name.cmp(&b.name));
        endpoints.dedup_by(|a, b| a.name == b.name);
        out.push((key, endpoints.into()));
    }
    out
}

/// The well-known label that takes a node out of external load balancing.
pub const EXCLUDE_FROM_LOAD_BALANCERS: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

pub fn node_info(node: &Node) -> NodeInfo {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    NodeInfo {
        name: node.name_any(),
        labels: node.labels().clone(),
        draining: cordoned || node.labels().contains_key(EXCLUDE_FROM_LOAD_BALANCERS),
    }
}

pub fn internal_ips(node: &Node) -> Vec<IpAddr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

fn selects(vip: &VirtualIP, node: &NodeInfo) -> bool {
    vip.spec
        .node_selector
        .as_ref()
        .is_none_or(|sel| sel.iter().all(|(k, v)| node.labels.get(k) == Some(v)))
}

pub fn vip_facts(vip: &VirtualIP, nodes: &[&Node]) -> VipFacts {
    let ipv6 = vip
        .spec
        .addresses
        .first()
        .and_then(|a| a.parse::<IpPrefix>().ok())
        .is_some_and(|p| p.addr.is_ipv6());
    VipFacts {
        name: vip.name_any(),
        created: vip
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        explicit_vrid: vip.spec.vrrp.virtual_router_id,
        recorded_vrid: vip.status.as_ref().and_then(|s| s.vrid),
        ipv6,
        unicast: vip.spec.vrrp.mode == VrrpMode::Unicast,
        nodes: nodes
            .iter()
            .filter(|n| selects(vip, &node_info(n)))
            .map(|n| NodeFacts {
                name: n.name_any(),
                internal_ips: internal_ips(n),
            })
            .collect(),
        priorities: vip
            .spec
            .priorities
            .iter()
            .map(|p| (p.node.clone(), p.priority))
            .collect(),
    }
}

pub fn secret_values(secrets: &[&Secret]) -> SecretValues {
    let mut out = BTreeMap::new();
    for s in secrets {
        for (key, value) in s.data.iter().flatten() {
            if let Ok(text) = String::from_utf8(value.0.clone()) {
                out.insert((s.name_any(), key.clone()), text);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use kube::api::ObjectMeta;

    fn service() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    name: Some("mysql".into()),
                    port: 3306,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(endpoints: Vec<(&str, Option<bool>, Option<bool>)>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some("db-abc".into()),
                namespace: Some("shop".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "db".to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: endpoints
                .into_iter()
                .map(|(ip, ready, terminating)| SliceEndpoint {
                    addresses: vec![ip.into()],
                    conditions: Some(EndpointConditions {
                        ready,
                        terminating,
                        serving: None,
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("mysql".into()),
                port: Some(13306),
                ..Default::default()
            }]),
        }
    }

    #[test]
    fn maps_service_port_to_target_port_and_readiness() {
        let svc = service();
        let s = slice(vec![
            ("10.1.0.5", Some(true), None),
            ("10.1.0.6", Some(false), None),
            ("10.1.0.7", Some(true), Some(true)),
            ("10.1.0.8", None, None),
        ]);
        let eps = resolve_endpoints(&[&svc], &[&s]);
        let list = &eps[&ServiceKey {
            namespace: "shop".into(),
            name: "db".into(),
            port: 3306,
        }];
        let ready: Vec<(String, u16, bool)> = list
            .iter()
            .map(|e| (e.address.to_string(), e.port, e.ready))
            .collect();
        assert_eq!(
            ready,
            vec![
                ("10.1.0.5".into(), 13306, true),
                ("10.1.0.6".into(), 13306, false),
                ("10.1.0.7".into(), 13306, false),
                ("10.1.0.8".into(), 13306, true),
            ]
        );
    }

    fn versioned<T: kube::Resource>(mut object: T, uid: &str, version: &str) -> T {
        object.meta_mut().uid = Some(uid.into());
        object.meta_mut().resource_version = Some(version.into());
        object
    }

    /// Kept endpoints are reused only while the Service and its slices keep their
    /// versions; a new version, a slice that appears or goes, or objects without
    /// versions are resolved afresh: each step equals the uncached result.
    #[test]
    fn kept_endpoints_follow_every_versioned_change() {
        let svc = versioned(service(), "svc", "1");
        let one = versioned(slice(vec![("10.1.0.5", Some(true), None)]), "s1", "1");
        let not_ready = versioned(slice(vec![("10.1.0.5", Some(false), None)]), "s1", "2");
        let mut second = versioned(slice(vec![("10.1.0.9", None, None)]), "s2", "1");
        second.metadata.name = Some("db-def".into());
        let unversioned = slice(vec![("10.1.0.7", None, None)]);
        let steps: Vec<Vec<&EndpointSlice>> = vec![
            vec![&one],
            vec![&one],
            vec![&not_ready],
            vec![&not_ready, &second],
            vec![&second],
            vec![&unversioned],
            vec![&unversioned],
            vec![],
        ];
        let mut cache = EndpointsCache::default();
        for (i, slices) in steps.iter().enumerate() {
            let kept = resolve_endpoints_with(&[&svc], slices, &mut cache);
            assert_eq!(kept, resolve_endpoints(&[&svc], slices), "step {i}");
        }
        // The same version is trusted to mean the same object (the API server's rule).
        let mut cache = EndpointsCache::default();
        resolve_endpoints_with(&[&svc], &[&one], &mut cache);
        let same_version = versioned(slice(vec![("10.1.0.6", None, None)]), "s1", "1");
        let kept = resolve_endpoints_with(&[&svc], &[&same_version], &mut cache);
        assert_eq!(kept, resolve_endpoints(&[&svc], &[&one]));
        assert_eq!(cache.services.len(), 1);
    }

    #[test]
    fn slices_of_other_services_are_ignored() {
        let svc = service();
        let mut s = slice(vec![("10.1.0.5", Some(true), None)]);
        s.metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into());
        let eps = resolve_endpoints(&[&svc], &[&s]);
        assert!(eps.values().all(|e| e.is_empty()));
    }
}
