//! Gateway API status from the translation's facts (see `crate::gateway`), the render's
//! problems and `now`: GatewayClass Accepted and supportedFeatures; Gateway addresses,
//! Accepted, Programmed and per-listener conditions with attachedRoutes; HTTPRoute
//! parents, keeping the entries other controllers wrote. Pure.

use halo_crds::render::ObjectRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use super::compute::condition;
use crate::gateway::api::{
    Feature, Gateway, GatewayAddress, GatewayClass, GatewayClassStatus, GatewayStatus,
    ListenerStatus, RouteParentStatus, RouteStatus,
};
use crate::gateway::{
    CONTROLLER_NAME, Fact, GatewayReport, ListenerReport, ParentReport, SUPPORTED_FEATURES,
};
use crate::observed::View;

fn conditions(
    facts: &[Fact],
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    facts
        .iter()
        .map(|f| {
            condition(
                f.type_,
                f.status,
                f.reason,
                f.message.clone(),
                previous,
                generation,
                now,
            )
        })
        .collect()
}

pub fn class_status(
    class: &GatewayClass,
    generation: Option<i64>,
    accepted: &Fact,
    now: Timestamp,
) -> GatewayClassStatus {
    let previous = class
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    GatewayClassStatus {
        conditions: conditions(std::slice::from_ref(accepted), previous, generation, now),
        supported_features: SUPPORTED_FEATURES
            .iter()
            .map(|n| Feature { name: (*n).into() })
            .collect(),
    }
}

/// Programmed: the address is assigned and the render took the Gateway's LoadBalancer
/// without problems.
fn programmed(report: &GatewayReport, view: &View) -> Fact {
    let lb = ObjectRef {
        kind: "LoadBalancer",
        namespace: Some(report.load_balancer.0.clone()),
        name: report.load_balancer.1.clone(),
    };
    let problems: Vec<String> = view
        .problems
        .get(&lb)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .chain(
            view.secret_problems
                .get(&lb)
                .into_iter()
                .flatten()
                .map(ToString::to_string),
        )
        .collect();
    match (&report.address, problems.is_empty()) {
        (Err(why), _) => Fact::no("Programmed", "AddressNotAssigned", why.clone()),
        (Ok(_), false) => Fact::no("Programmed", "Invalid", problems.join("; ")),
        (Ok(_), true) => Fact::yes("Programmed", "Programmed", "served on the address"),
    }
}

/// The translation's facts, with a certificate Secret that is missing or unusable
/// making ResolvedRefs false (InvalidCertificateRef) and the listener not Programmed.
fn listener_facts(l: &ListenerReport, report: &GatewayReport, view: &View) -> Vec<Fact> {
    let lb = ObjectRef {
        kind: "LoadBalancer",
        namespace: Some(report.load_balancer.0.clone()),
        name: report.load_balancer.1.clone(),
    };
    let broken = view
        .secret_problems
        .get(&lb)
        .into_iter()
        .flatten()
        .find(|p| {
            l.certificates
                .iter()
                .any(|(ns, name)| p.secret.namespace == *ns && p.secret.name == *name)
        });
    let Some(problem) = broken else {
        return l.conditions.clone();
    };
    l.conditions
        .iter()
        .map(|f| match f.type_ {
            "ResolvedRefs" if f.status => Fact::no(
                "ResolvedRefs",
                "InvalidCertificateRef",
                problem.message.clone(),
            ),
            "Programmed" if f.status => Fact::no("Programmed", "Invalid", problem.message.clone()),
            _ => f.clone(),
        })
        .collect()
}

pub fn gateway_status(
    gw: &Gateway,
    report: &GatewayReport,
    view: &View,
    now: Timestamp,
) -> GatewayStatus {
    let before = gw.status.clone().unwrap_or_default();
    let generation = report.generation;
    let listeners = report
        .listeners
        .iter()
        .map(|l| {
            let previous = before
                .listeners
                .iter()
                .find(|p| p.name == l.name)
                .map(|p| p.conditions.as_slice())
                .unwrap_or_default();
            ListenerStatus {
                name: l.name.clone(),
                supported_kinds: l.kinds.clone(),
                attached_routes: l.attached,
                conditions: conditions(&listener_facts(l, report, view), previous, generation, now),
            }
        })
        .collect();
    let facts = [report.accepted.clone(), programmed(report, view)];
    GatewayStatus {
        addresses: report
            .address
            .iter()
            .map(|a| GatewayAddress {
                kind: Some("IPAddress".into()),
                value: a.to_string(),
            })
            .collect(),
        conditions: conditions(&facts, &before.conditions, generation, now),
        listeners,
    }
}

/// The route's parents: Halo's entries from `parents`, other controllers' kept as they are.
pub fn route_status(
    before: Option<&RouteStatus>,
    generation: Option<i64>,
    parents: &[ParentReport],
    now: Timestamp,
) -> RouteStatus {
    let before = before.cloned().unwrap_or_default();
    let mut out: Vec<RouteParentStatus> = before
        .parents
        .iter()
        .filter(|p| p.controller_name != CONTROLLER_NAME)
        .cloned()
        .collect();
    for p in parents {
        let previous = before
            .parents
            .iter()
            .find(|b| b.controller_name == CONTROLLER_NAME && b.parent_ref == p.parent)
            .map(|b| b.conditions.as_slice())
            .unwrap_or_default();
        out.push(RouteParentStatus {
            parent_ref: p.parent.clone(),
            controller_name: CONTROLLER_NAME.into(),
            conditions: conditions(&p.conditions, previous, generation, now),
        });
    }
    RouteStatus { parents: out }
}
