//! An HTTPRoute's rules in Halo's routing model (matches, filters and weighted backend
//! groups carry over one to one), with the backend references resolved. Pure.

use std::collections::BTreeMap;

use halo_crds::load_balancer::{
    BackendRef, FixedResponse, Route, RouteFilter, RouteMatch, RouteTimeouts,
};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use super::api::{HTTPRoute, HttpBackendRef, HttpRouteRule, ReferenceGrant};
use super::granted;

/// A Service port a rule sends to: (namespace, name, port).
pub type BackendKey = (String, String, u16);

/// One rule, ready to be placed on listeners (its hostnames come from each listener).
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub route: Route,
    /// Weight per backend; a backend group is made per key on each LoadBalancer.
    pub backends: Vec<(BackendKey, u32)>,
}

/// A route's rules, and its ResolvedRefs verdict.
pub struct Converted {
    pub rules: Vec<Rule>,
    /// `None`: every reference resolved; else (reason, message) of the first that did not.
    pub unresolved: Option<(&'static str, String)>,
}

/// The route's rules, or why one of them uses something Halo does not serve (the
/// route is then not accepted at all, rather than served differently than written).
pub fn convert(
    route: &HTTPRoute,
    services: &BTreeMap<(String, String), &Service>,
    grants: &[&ReferenceGrant],
) -> Result<Converted, String> {
    let mut rules = Vec::new();
    let mut unresolved = None;
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let mut out = convert_rule(rule, &at)?;
        let mut any_valid = false;
        for (j, b) in rule.backend_refs.iter().enumerate() {
            if !b.filters.is_empty() {
                return Err(format!(
                    "{at}.backendRefs[{j}].filters: backend filters are not supported"
                ));
            }
            match resolve(route, b, services, grants) {
                Ok(key) => {
                    any_valid = true;
                    out.backends.push((key, b.weight.unwrap_or(1)));
                }
                Err(why) => {
                    unresolved.get_or_insert((why.0, format!("{at}.backendRefs[{j}]: {}", why.1)));
                }
            }
        }
        out.route.fixed_response = fixed_response(rule, any_valid);
        if out.route.fixed_response.is_some() || redirects(rule) {
            out.backends.clear();
        }
        rules.push(out);
    }
    Ok(Converted { rules, unresolved })
}

/// What a rule answers itself: 500 when every backend reference is invalid, 503 when it
/// names no backend and no filter answers (Gateway API's rules).
fn fixed_response(rule: &HttpRouteRule, any_valid: bool) -> Option<FixedResponse> {
    let status_code = match (redirects(rule), rule.backend_refs.is_empty(), any_valid) {
        (true, _, _) | (false, false, true) => return None,
        (false, true, _) => 503,
        (false, false, false) => 500,
    };
    Some(FixedResponse {
        status_code,
        body: None,
        content_type: None,
    })
}

/// A redirect answers every request of its rule: backends are never used.
fn redirects(rule: &HttpRouteRule) -> bool {
    rule.filters
        .iter()
        .any(|f| f.get("type").and_then(|t| t.as_str()) == Some("RequestRedirect"))
}

fn convert_rule(rule: &HttpRouteRule, at: &str) -> Result<Rule, String> {
    let matches = rule
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            serde_json::from_value::<RouteMatch>(m.clone())
                .map_err(|e| format!("{at}.matches[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let filters = rule
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            serde_json::from_value::<RouteFilter>(f.clone()).map_err(|_| {
                let kind = f.get("type").and_then(|t| t.as_str()).unwrap_or("?");
                format!("{at}.filters[{i}]: filter type {kind} is not supported")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timeouts = match &rule.timeouts {
        None => None,
        Some(t) if t.backend_request.is_some() => {
            return Err(format!("{at}.timeouts.backendRequest is not supported"));
        }
        Some(t) => {
            if let Some(d) = &t.request {
                halo_crds::duration::parse(d).map_err(|e| format!("{at}.timeouts.request: {e}"))?;
            }
            Some(RouteTimeouts {
                request: t.request.clone().filter(|d| d != "0s"),
            })
        }
    };
    Ok(Rule {
        route: Route {
            name: String::new(),
            hostnames: Vec::new(),
            matches,
            filters,
            backend_refs: Vec::<BackendRef>::new(),
            fixed_response: None,
            timeouts,
        },
        backends: Vec::new(),
    })
}

/// The Service port a backend reference names, or (reason, message).
fn resolve(
    route: &HTTPRoute,
    b: &HttpBackendRef,
    services: &BTreeMap<(String, String), &Service>,
    grants: &[&ReferenceGrant],
) -> Result<BackendKey, (&'static str, String)> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err((
            "InvalidKind",
            format!("{group}/{kind} is not a backend kind Halo serves (Service is)"),
        ));
    }
    let own = route.namespace().unwrap_or_default();
    let ns = b.namespace.clone().unwrap_or_else(|| own.clone());
    if ns != own && !granted(grants, ("HTTPRoute", &own), ("", "Service", &ns, &b.name)) {
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in {ns} allows HTTPRoutes from {own} to Service {}",
                b.name
            ),
        ));
    }
    let Some(port) = b.port else {
        return Err(("BackendNotFound", "a Service backend needs a port".into()));
    };
    let Some(svc) = services.get(&(ns.clone(), b.name.clone())) else {
        return Err((
            "BackendNotFound",
            format!("Service {ns}/{} not found", b.name),
        ));
    };
    let has_port = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .any(|p| i64::from(p.port) == i64::from(port));
    if !has_port {
        return Err((
            "BackendNotFound",
            format!("Service {ns}/{} has no port {port}", b.name),
        ));
    }
    Ok((ns, b.name.clone(), port))
}
