//! Gateway API (gateway.networking.k8s.io) as a translation: each Gateway of a
//! GatewayClass naming [`CONTROLLER_NAME`] becomes a VirtualIP (its address drawn from
//! the VirtualIPPools like a Service's) and a LoadBalancer whose listeners and routes
//! are the Gateway's listeners and the HTTPRoutes attached to them; the render then
//! treats them like any other. Pure: objects in, objects and status facts out.

pub mod api;
mod attach;
mod build;
pub mod hosts;
pub mod listeners;
pub mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use halo_crds::{LoadBalancer, VirtualIP};
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Namespace, Service, ServiceSpec, ServiceStatus,
};
use kube::ResourceExt;
use kube::api::ObjectMeta;

use self::api::{Gateway, GatewayClass, HTTPRoute, ParentReference, ReferenceGrant, TLSRoute};
use self::attach::attach_route;
use self::build::build;
pub use self::build::{lb_name, virtual_ip_name};
use self::listeners::Prepared;
use self::routes::Rule;
use crate::services::{
    ADDRESSES_ANNOTATION, Allocations, LOAD_BALANCER_CLASS, POOL_ANNOTATION, ServiceId,
};

pub use self::api::GROUP;

/// The `spec.controllerName` of the GatewayClasses Halo serves.
pub const CONTROLLER_NAME: &str = "halo.dev/gateway-controller";

/// What Halo's Gateways support, as GatewayClass `status.supportedFeatures` names them.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "Gateway",
    "GatewayStaticAddresses",
    "HTTPRoute",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
    "TLSRoute",
];

/// (namespace, name).
pub type ObjectId = (String, String);

/// The route kinds Halo attaches to listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    Http,
    Tls,
}

impl RouteKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "HTTPRoute",
            Self::Tls => "TLSRoute",
        }
    }
}

/// (kind, namespace, name) of a route.
pub type RouteId = (RouteKind, String, String);

/// One condition as the translation concludes it; the status writer adds the times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Fact {
    pub fn yes(type_: &'static str, reason: &'static str, message: &str) -> Self {
        Self {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }

    pub fn no(type_: &'static str, reason: &'static str, message: String) -> Self {
        Self {
            type_,
            status: false,
            reason,
            message,
        }
    }

    /// Conflicted is the one condition that is bad when true.
    pub fn conflict(reason: &'static str, message: String) -> Self {
        Self {
            type_: "Conflicted",
            status: true,
            reason,
            message,
        }
    }

    pub fn healthy(&self) -> bool {
        self.status != (self.type_ == "Conflicted")
    }
}

/// A listener's status facts.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerReport {
    pub name: String,
    /// The Secrets (namespace, name) it takes certificates from.
    pub certificates: Vec<ObjectId>,
    pub kinds: Vec<api::RouteGroupKind>,
    pub attached: i32,
    pub conditions: Vec<Fact>,
}

/// A Gateway's status facts.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayReport {
    pub generation: Option<i64>,
    pub address: Result<IpAddr, String>,
    pub accepted: Fact,
    pub listeners: Vec<ListenerReport>,
    /// The LoadBalancer it became (its render problems make it not Programmed).
    pub load_balancer: ObjectId,
}

/// One parent's part of a route's status.
#[derive(Clone, Debug, PartialEq)]
pub struct ParentReport {
    pub parent: ParentReference,
    pub conditions: Vec<Fact>,
}

/// Everything the status writer says about Gateway API objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reports {
    /// Per GatewayClass: its generation and Accepted.
    pub classes: BTreeMap<String, (Option<i64>, Fact)>,
    pub gateways: BTreeMap<ObjectId, GatewayReport>,
    /// Per HTTPRoute: its generation and one entry per parent Halo serves.
    pub routes: BTreeMap<RouteId, (Option<i64>, Vec<ParentReport>)>,
}

/// What a translation reads.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    pub classes: &'a [&'a GatewayClass],
    pub gateways: &'a [&'a Gateway],
    pub routes: &'a [&'a HTTPRoute],
    pub tls_routes: &'a [&'a TLSRoute],
    pub grants: &'a [&'a ReferenceGrant],
    pub services: &'a [&'a Service],
    pub namespaces: &'a [&'a Namespace],
    pub allocations: &'a Allocations,
}

pub struct Translation {
    pub virtual_ips: Vec<VirtualIP>,
    pub load_balancers: Vec<LoadBalancer>,
    pub reports: Reports,
}

/// Whether a ReferenceGrant in the target's namespace lets `from` (kind, namespace)
/// refer to `to` (group, kind, namespace, name).
pub fn granted(
    grants: &[&ReferenceGrant],
    from: (&str, &str),
    to: (&str, &str, &str, &str),
) -> bool {
    let (from_kind, from_ns) = from;
    let (group, kind, ns, name) = to;
    grants
        .iter()
        .filter(|g| g.namespace().as_deref() == Some(ns))
        .any(|g| {
            g.spec
                .from
                .iter()
                .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group == group
                        && t.kind == kind
                        && t.name.as_deref().is_none_or(|n| n == name)
                })
        })
}

fn our_classes(classes: &[&GatewayClass]) -> BTreeSet<String> {
    classes
        .iter()
        .filter(|c| c.spec.controller_name == CONTROLLER_NAME)
        .map(|c| c.name_any())
        .collect()
}

fn ours<'a>(input: &Input<'a>) -> Vec<&'a Gateway> {
    let classes = our_classes(input.classes);
    input
        .gateways
        .iter()
        .copied()
        .filter(|g| {
            classes.contains(&g.spec.gateway_class_name) && g.metadata.deletion_timestamp.is_none()
        })
        .collect()
}

/// The address a Gateway asks for in `spec.addresses`, or why Halo cannot give it.
fn asked_address(gw: &Gateway) -> Result<Option<String>, String> {
    match gw.spec.addresses.as_slice() {
        [] => Ok(None),
        [a] if a.kind.as_deref().unwrap_or("IPAddress") == "IPAddress" => Ok(Some(a.value.clone())),
        [a] => Err(format!(
            "spec.addresses[0]: type {} is not supported (IPAddress is)",
            a.kind.as_deref().unwrap_or("")
        )),
        more => Err(format!(
            "spec.addresses: one address per Gateway, not {}",
            more.len()
        )),
    }
}

/// The Secrets (namespace, name) the listeners of `gateways` name as certificates, so
/// their contents are read before the translation needs them.
pub fn certificate_secrets(gateways: &[&Gateway]) -> Vec<ObjectId> {
    gateways
        .iter()
        .flat_map(|gw| {
            let own = gw.namespace().unwrap_or_default();
            gw.spec
                .listeners
                .iter()
                .flat_map(|l| l.tls.iter().flat_map(|t| &t.certificate_refs))
                .map(move |r| {
                    (
                        r.namespace.clone().unwrap_or_else(|| own.clone()),
                        r.name.clone(),
                    )
                })
        })
        .collect()
}

/// The id under which a Gateway's address is allocated (a Service name cannot hold `/`).
pub fn claim_id(gw: &Gateway) -> ServiceId {
    (
        gw.namespace().unwrap_or_default(),
        format!("gateway/{}", gw.name_any()),
    )
}

/// Each served Gateway as the allocator sees a Service: its labels (for pool selectors),
/// the address it asks for, the pool annotation, and the address its status holds (kept
/// across restarts).
pub fn claims(input: &Input<'_>) -> Vec<Service> {
    ours(input)
        .into_iter()
        .filter_map(|gw| {
            let asked = asked_address(gw).ok()?;
            let (namespace, name) = claim_id(gw);
            let mut annotations = BTreeMap::new();
            if let Some(a) = asked {
                annotations.insert(ADDRESSES_ANNOTATION.to_string(), a);
            }
            if let Some(p) = gw.annotations().get(POOL_ANNOTATION) {
                annotations.insert(POOL_ANNOTATION.to_string(), p.clone());
            }
            let held = gw
                .status
                .iter()
                .flat_map(|s| &s.addresses)
                .next()
                .map(|a| a.value.clone());
            Some(Service {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(namespace),
                    labels: gw.metadata.labels.clone(),
                    annotations: Some(annotations),
                    creation_timestamp: gw.metadata.creation_timestamp.clone(),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    type_: Some("LoadBalancer".into()),
                    load_balancer_class: Some(LOAD_BALANCER_CLASS.into()),
                    ..Default::default()
                }),
                status: held.map(|ip| ServiceStatus {
                    load_balancer: Some(LoadBalancerStatus {
                        ingress: Some(vec![LoadBalancerIngress {
                            ip: Some(ip),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                }),
            })
        })
        .collect()
}

/// Routes attached to one listener.
struct Attachment<'r> {
    gateway: ObjectId,
    listener: usize,
    hostnames: Vec<String>,
    route: RouteId,
    rules: &'r [Rule],
}

/// The whole translation (see the module doc).
pub fn translate(input: &Input<'_>) -> Translation {
    let mut reports = Reports::default();
    for c in input
        .classes
        .iter()
        .filter(|c| c.spec.controller_name == CONTROLLER_NAME)
    {
        reports.classes.insert(
            c.name_any(),
            (
                c.metadata.generation,
                Fact::yes("Accepted", "Accepted", "served by Halo"),
            ),
        );
    }
    let gateways = ours(input);
    let prepared: BTreeMap<ObjectId, (&Gateway, Vec<Prepared>)> = gateways
        .iter()
        .map(|g| (id_of(*g), (*g, listeners::prepare(g, input.grants))))
        .collect();
    let services: BTreeMap<ObjectId, &Service> =
        input.services.iter().map(|s| (id_of(*s), *s)).collect();
    let labels: BTreeMap<String, BTreeMap<String, String>> = input
        .namespaces
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect();

    // TLSRoutes are read in HTTPRoute's shape; the oldest route goes first.
    let tls: Vec<HTTPRoute> = input.tls_routes.iter().map(|r| r.as_http_route()).collect();
    let mut routes: Vec<(RouteKind, &HTTPRoute)> = input
        .routes
        .iter()
        .map(|r| (RouteKind::Http, *r))
        .chain(tls.iter().map(|r| (RouteKind::Tls, r)))
        .collect();
    routes.sort_by_key(|(kind, r)| {
        (
            r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            r.namespace(),
            r.name_any(),
            *kind,
        )
    });
    let converted: Vec<(RouteKind, &HTTPRoute, Result<routes::Converted, String>)> = routes
        .iter()
        .map(|(kind, r)| (*kind, *r, routes::convert(r, &services, input.grants)))
        .collect();
    let mut attachments = Vec::new();
    for (kind, route, conv) in &converted {
        let parents = attach_route(*kind, route, conv, &prepared, &labels, &mut attachments);
        if !parents.is_empty() {
            let (ns, name) = id_of(*route);
            reports
                .routes
                .insert((*kind, ns, name), (route.metadata.generation, parents));
        }
    }
    let mut virtual_ips = Vec::new();
    let mut load_balancers = Vec::new();
    for (id, (gw, listeners)) in &prepared {
        let address = match input.allocations.get(&claim_id(gw)) {
            Some(Ok(p)) => Ok(*p),
            Some(Err(why)) => Err(why.clone()),
            None => Err(asked_address(gw)
                .err()
                .unwrap_or_else(|| "no address allocated yet".into())),
        };
        let mine: Vec<&Attachment> = attachments.iter().filter(|a| &a.gateway == id).collect();
        if let Ok(prefix) = &address {
            let (vip, lb) = build(gw, *prefix, listeners, &mine);
            virtual_ips.push(vip);
            load_balancers.push(lb);
        }
        reports.gateways.insert(
            id.clone(),
            gateway_report(gw, address.map(|p| p.addr), listeners, &mine),
        );
    }
    Translation {
        virtual_ips,
        load_balancers,
        reports,
    }
}

fn id_of<K: ResourceExt>(obj: &K) -> ObjectId {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

fn gateway_report(
    gw: &Gateway,
    address: Result<IpAddr, String>,
    listeners: &[Prepared],
    mine: &[&Attachment],
) -> GatewayReport {
    let usable = listeners.iter().filter(|l| l.usable()).count();
    let accepted = match asked_address(gw) {
        Err(why) => Fact::no("Accepted", "UnsupportedAddress", why),
        Ok(_) if usable == listeners.len() => {
            Fact::yes("Accepted", "Accepted", "the Gateway is valid")
        }
        Ok(_) => {
            let message = format!(
                "{} of {} listeners are invalid",
                listeners.len() - usable,
                listeners.len()
            );
            Fact {
                type_: "Accepted",
                status: usable > 0,
                reason: "ListenersNotValid",
                message,
            }
        }
    };
    let reports = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let attached: BTreeSet<&RouteId> = mine
                .iter()
                .filter(|a| a.listener == i)
                .map(|a| &a.route)
                .collect();
            let mut conditions = l.conditions.clone();
            conditions.push(if l.usable() {
                Fact::yes("Programmed", "Programmed", "the listener is served")
            } else {
                Fact::no("Programmed", "Invalid", "the listener is not valid".into())
            });
            let own = gw.namespace().unwrap_or_default();
            ListenerReport {
                name: l.spec.name.clone(),
                certificates: l
                    .spec
                    .tls
                    .iter()
                    .flat_map(|t| &t.certificate_refs)
                    .map(|r| {
                        (
                            r.namespace.clone().unwrap_or_else(|| own.clone()),
                            r.name.clone(),
                        )
                    })
                    .collect(),
                kinds: l.kinds.clone(),
                attached: i32::try_from(attached.len()).unwrap_or(i32::MAX),
                conditions,
            }
        })
        .collect();
    GatewayReport {
        generation: gw.metadata.generation,
        address,
        accepted,
        listeners: reports,
        load_balancer: (gw.namespace().unwrap_or_default(), lb_name(gw)),
    }
}

#[cfg(test)]
mod tests;
