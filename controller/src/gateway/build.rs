//! A Gateway and its attached routes as the VirtualIP and LoadBalancer the render
//! serves: one listener per port, one route per attached rule and listener, one backend
//! group per Service port. Pure.

use std::collections::{BTreeMap, BTreeSet};

use halo_crds::load_balancer::{
    Backend, BackendGroup, BackendRef, CertificateRef, Listener, ListenerTls, Protocol,
    ServiceBackend, Upstream,
};
use halo_crds::net::IpPrefix;
use halo_crds::{LoadBalancer, LoadBalancerSpec, VirtualIP};
use kube::ResourceExt;
use kube::api::ObjectMeta;

use super::Attachment;
use super::api::Gateway;
use super::listeners::Prepared;
use super::routes::BackendKey;
use crate::services::allocated_virtual_ip;

pub fn virtual_ip_name(gw: &Gateway) -> String {
    format!(
        "gateway-{}-{}",
        gw.namespace().unwrap_or_default(),
        gw.name_any()
    )
}

pub fn lb_name(gw: &Gateway) -> String {
    format!("gateway-{}", gw.name_any())
}

/// `text` as a route or group name (`[a-z0-9-]`, at most 63), unique among `used`.
fn unique_name(text: &str, used: &mut BTreeSet<String>) -> String {
    let clean: String = text
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(56)
        .collect();
    let base = clean.trim_matches('-');
    let base = if base.is_empty() || base == "default" {
        "route"
    } else {
        base
    };
    let mut name = base.to_string();
    let mut n = 1;
    while !used.insert(name.clone()) {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

pub(super) fn build(
    gw: &Gateway,
    address: IpPrefix,
    listeners: &[Prepared<'_>],
    mine: &[&Attachment<'_>],
) -> (VirtualIP, LoadBalancer) {
    let own_ns = gw.namespace().unwrap_or_default();
    let vip = allocated_virtual_ip(
        &virtual_ip_name(gw),
        address,
        &gw.metadata.creation_timestamp,
    );
    let mut groups: BTreeMap<BackendKey, String> = BTreeMap::new();
    let mut group_names = BTreeSet::new();
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate().filter(|(_, l)| l.usable()) {
        by_port.entry(l.spec.port).or_default().push(i);
    }
    let mut out = Vec::new();
    for (port, members) in by_port {
        let Some(protocol) = listeners[members[0]].protocol else {
            continue;
        };
        let mut listener =
            Listener::new(format!("port-{port}"), port, protocol, Upstream::default());
        if protocol == Protocol::Https {
            listener.tls = Some(tls_of(listeners, &own_ns, &members));
        }
        let mut route_names = BTreeSet::new();
        for a in mine.iter().filter(|a| members.contains(&a.listener)) {
            for (r, rule) in a.rules.iter().enumerate() {
                // A passthrough connection cannot be answered: without a backend the
                // rule matches nothing, and the connection is closed.
                if protocol == Protocol::Tls && rule.route.fixed_response.is_some() {
                    continue;
                }
                let mut route = rule.route.clone();
                route.name = unique_name(
                    &format!("{}-{}-{r}", a.route.1, a.route.2),
                    &mut route_names,
                );
                route.hostnames = a.hostnames.clone();
                route.backend_refs = rule
                    .backends
                    .iter()
                    .map(|(key, weight)| BackendRef {
                        name: groups
                            .entry(key.clone())
                            .or_insert_with(|| {
                                unique_name(
                                    &format!("{}-{}-{}", key.0, key.1, key.2),
                                    &mut group_names,
                                )
                            })
                            .clone(),
                        weight: Some(*weight),
                    })
                    .collect();
                listener.routes.push(route);
            }
        }
        out.push(listener);
    }
    let backend_groups = groups
        .into_iter()
        .map(|((ns, svc, port), name)| BackendGroup {
            name,
            upstream: Upstream {
                backends: vec![Backend {
                    name: None,
                    address: None,
                    port: None,
                    service: Some(ServiceBackend {
                        name: svc,
                        port,
                        namespace: (ns != own_ns).then_some(ns),
                    }),
                    weight: None,
                    backup: false,
                    max_connections: None,
                }],
                ..Upstream::default()
            },
        })
        .collect();
    let lb = LoadBalancer {
        metadata: ObjectMeta {
            name: Some(lb_name(gw)),
            namespace: Some(own_ns),
            ..Default::default()
        },
        spec: LoadBalancerSpec {
            virtual_ip: vip.metadata.name.clone(),
            addresses: None,
            listeners: out,
            backend_groups,
        },
        status: None,
    };
    (vip, lb)
}

/// The certificates of every HTTPS listener on one port (chosen by SNI; the first is
/// the default).
/// (A listener's references were checked against ReferenceGrants before: only usable
/// listeners get here.)
fn tls_of(listeners: &[Prepared<'_>], own_ns: &str, members: &[usize]) -> ListenerTls {
    let mut secrets: Vec<(Option<String>, String)> = Vec::new();
    for &i in members {
        for r in listeners[i]
            .spec
            .tls
            .iter()
            .flat_map(|t| &t.certificate_refs)
        {
            let ns = r.namespace.clone().filter(|ns| ns != own_ns);
            let key = (ns, r.name.clone());
            if !secrets.contains(&key) {
                secrets.push(key);
            }
        }
    }
    ListenerTls {
        certificates: secrets
            .into_iter()
            .map(|(ns, name)| CertificateRef {
                secret_name: Some(name),
                cert_file: None,
                key_file: None,
                secret_namespace: ns,
            })
            .collect(),
        ..Default::default()
    }
}
