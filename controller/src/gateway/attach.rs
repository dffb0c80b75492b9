//! Which listeners an HTTPRoute attaches to, through each of its parentRefs, and the
//! parent's status facts (Accepted with the spec's reasons, ResolvedRefs). Pure.

use std::collections::BTreeMap;

use super::api::{Gateway, GatewayListener, HTTPRoute, ParentReference};
use super::hosts::{intersect, selects};
use super::listeners::Prepared;
use super::routes::Converted;
use super::{Attachment, Fact, GROUP, ObjectId, ParentReport, RouteKind, id_of};
use kube::ResourceExt;

/// A listener (by index) and the hostnames a route serves on it.
type Placed = (usize, Vec<String>);

type GatewayListeners<'g> = (&'g Gateway, Vec<Prepared<'g>>);

/// Whether routes from `route_ns` may attach to `l` of a Gateway in `gw_ns`.
fn admits(
    l: &GatewayListener,
    gw_ns: &str,
    route_ns: &str,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> bool {
    let namespaces = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Selector" => namespaces
            .and_then(|n| n.selector.as_ref())
            .is_some_and(|s| labels.get(route_ns).is_some_and(|l| selects(s, l))),
        _ => gw_ns == route_ns,
    }
}

/// The route's parents that are Halo Gateways, each with its status facts; attachments
/// are added for the accepted ones.
pub(super) fn attach_route<'r>(
    kind: RouteKind,
    route: &HTTPRoute,
    converted: &'r Result<Converted, String>,
    gateways: &BTreeMap<ObjectId, GatewayListeners<'_>>,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
    out: &mut Vec<Attachment<'r>>,
) -> Vec<ParentReport> {
    let (route_ns, _) = id_of(route);
    let resolved = match converted {
        Ok(c) => match &c.unresolved {
            None => Fact::yes(
                "ResolvedRefs",
                "ResolvedRefs",
                "every backend reference is resolved",
            ),
            Some((reason, why)) => Fact::no("ResolvedRefs", reason, why.clone()),
        },
        Err(_) => Fact::yes(
            "ResolvedRefs",
            "ResolvedRefs",
            "the route is not accepted; references were not looked at",
        ),
    };
    let mut reports = Vec::new();
    for parent in &route.spec.parent_refs {
        if parent.group.as_deref().unwrap_or(GROUP) != GROUP
            || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway"
        {
            continue;
        }
        let gw_id = (
            parent.namespace.clone().unwrap_or_else(|| route_ns.clone()),
            parent.name.clone(),
        );
        let Some((_, listeners)) = gateways.get(&gw_id) else {
            continue;
        };
        let accepted = match converted {
            Err(why) => Fact::no("Accepted", "UnsupportedValue", why.clone()),
            Ok(c) => match place(kind, parent, &gw_id, &route_ns, route, listeners, labels) {
                Err((reason, why)) => Fact::no("Accepted", reason, why),
                Ok(placed) => {
                    for (listener, hostnames) in placed {
                        out.push(Attachment {
                            gateway: gw_id.clone(),
                            listener,
                            hostnames,
                            route: (kind, route_ns.clone(), route.name_any()),
                            rules: &c.rules,
                        });
                    }
                    Fact::yes("Accepted", "Accepted", "attached to the Gateway")
                }
            },
        };
        reports.push(ParentReport {
            parent: parent.clone(),
            conditions: vec![accepted, resolved.clone()],
        });
    }
    reports
}

/// The listeners (index, hostnames served) a parentRef attaches to, or why none.
fn place(
    kind: RouteKind,
    parent: &ParentReference,
    (gw_ns, _): &ObjectId,
    route_ns: &str,
    route: &HTTPRoute,
    listeners: &[Prepared<'_>],
    labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<Placed>, (&'static str, String)> {
    let named: Vec<(usize, &Prepared)> = listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            parent
                .section_name
                .as_ref()
                .is_none_or(|s| *s == l.spec.name)
        })
        .filter(|(_, l)| parent.port.is_none_or(|p| p == l.spec.port))
        .collect();
    if named.is_empty() {
        return Err((
            "NoMatchingParent",
            "no listener has the parentRef's sectionName and port".into(),
        ));
    }
    let allowed: Vec<(usize, &Prepared)> = named
        .into_iter()
        .filter(|(_, l)| {
            l.usable()
                && l.kinds.iter().any(|k| k.kind == kind.name())
                && admits(l.spec, gw_ns, route_ns, labels)
        })
        .collect();
    if allowed.is_empty() {
        return Err((
            "NotAllowedByListeners",
            "no valid listener allows routes of this kind from this namespace".into(),
        ));
    }
    let placed: Vec<Placed> = allowed
        .into_iter()
        .filter_map(|(i, l)| {
            intersect(l.spec.hostname.as_deref(), &route.spec.hostnames).map(|h| (i, h))
        })
        .collect();
    if placed.is_empty() {
        return Err((
            "NoMatchingListenerHostname",
            "no listener hostname matches the route's hostnames".into(),
        ));
    }
    Ok(placed)
}
