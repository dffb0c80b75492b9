//! A listener's routes on the wire: hostnames, matches, filters and the action (forward to
//! weighted groups, redirect, fixed response), in spec order and closed by the `default`
//! route. The data plane applies Gateway API precedence itself.

use std::collections::BTreeSet;

use super::{Checker, DEFAULT_GROUP, syntax};
use crate::load_balancer::{
    self as api, Listener, PathMatchType, PathModifierType, Protocol, Route, RouteFilterType,
    ValueMatchType,
};
use crate::node_config::{
    FilterConfig, GroupConfig, HeaderModifier, HeaderValue, NamedMatch, PathMatch, PathModifier,
    RouteAction, RouteConfig, RouteMatch, StringMatch, WeightedGroup,
};

/// Statuses a redirect may use (Gateway API's set); 302 is its default.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];
pub const DEFAULT_REDIRECT_STATUS: u16 = 302;

/// A listener's groups as routes pick them: its own group first, then each backend group
/// at its first reference.
pub(super) struct ListenerGroups<'a> {
    available: &'a [GroupConfig],
    pub used: Vec<GroupConfig>,
}

impl<'a> ListenerGroups<'a> {
    pub fn new(own: GroupConfig, available: &'a [GroupConfig]) -> Self {
        Self {
            available,
            used: vec![own],
        }
    }

    /// The index of the named backend group, adding it on first use.
    fn index_of(&mut self, name: &str) -> Option<usize> {
        if let Some(i) = self.used.iter().skip(1).position(|g| g.name == name) {
            return Some(i + 1);
        }
        let group = self.available.iter().find(|g| g.name == name)?;
        self.used.push(group.clone());
        Some(self.used.len() - 1)
    }
}

/// The wire routes of listener `l` at spec path `at`, the `default` route last.
pub(super) fn render_routes(
    l: &Listener,
    at: &str,
    groups: &mut ListenerGroups<'_>,
    c: &mut Checker,
) -> Vec<RouteConfig> {
    let mut out = Vec::new();
    if l.protocol == Protocol::Tcp && !l.routes.is_empty() {
        c.report(
            format!("{at}.routes"),
            "a TCP listener has no routes: it forwards to its own backends",
        );
    } else {
        let mut names = BTreeSet::new();
        for (j, route) in l.routes.iter().enumerate() {
            let field = format!("{at}.routes[{j}]");
            if route.name == DEFAULT_GROUP {
                c.report(
                    format!("{field}.name"),
                    "the name default is reserved for the route to the listener's own backends",
                );
            }
            if !names.insert(route.name.as_str()) {
                c.report(
                    format!("{field}.name"),
                    format!("duplicate route name {:?}", route.name),
                );
            }
            out.push(render_route(l.protocol, &field, route, groups, c));
        }
    }
    out.push(default_route(
        !l.routes.is_empty() && l.upstream.backends.is_empty(),
    ));
    out
}

/// The last route: everything to the listener's own backends, or a 404 when the listener
/// has routes and no backends of its own.
pub(super) fn default_route(not_found: bool) -> RouteConfig {
    let action = if not_found {
        RouteAction::Fixed {
            status: 404,
            body: "no route\n".into(),
            content_type: None,
        }
    } else {
        RouteAction::Forward {
            groups: vec![WeightedGroup {
                group: 0,
                weight: 1,
            }],
        }
    };
    RouteConfig {
        name: DEFAULT_GROUP.to_string(),
        hostnames: Vec::new(),
        matches: Vec::new(),
        filters: Vec::new(),
        action,
        timeout_ms: None,
    }
}

fn render_route(
    protocol: Protocol,
    at: &str,
    route: &Route,
    groups: &mut ListenerGroups<'_>,
    c: &mut Checker,
) -> RouteConfig {
    if protocol == Protocol::Tls {
        passthrough_only(at, route, c);
    }
    let hostnames = route
        .hostnames
        .iter()
        .enumerate()
        .filter_map(|(h, text)| match syntax::route_hostname(text) {
            Ok(name) => Some(name),
            Err(e) => {
                c.report(format!("{at}.hostnames[{h}]"), e);
                None
            }
        })
        .collect();
    let matches = route
        .matches
        .iter()
        .enumerate()
        .map(|(m, rm)| route_match(&format!("{at}.matches[{m}]"), rm, c))
        .collect();
    let (filters, redirect) = render_filters(at, route, c);
    let action = action(at, route, redirect, groups, c);
    let timeout_ms = route
        .timeouts
        .as_ref()
        .and_then(|t| t.request.as_ref())
        .map(|text| {
            let field = format!("{at}.timeouts.request");
            let ms = c.duration_ms(&field, Some(text), 1);
            if ms == 0 {
                c.report(field, "must be greater than zero");
            }
            ms
        });
    RouteConfig {
        name: route.name.clone(),
        hostnames,
        matches,
        filters,
        action,
        timeout_ms,
    }
}

/// A TLS passthrough route sees only the ClientHello: its SNI name picks backend groups.
fn passthrough_only(at: &str, route: &Route, c: &mut Checker) {
    let why = "a TLS passthrough route has only hostnames and backendRefs";
    if !route.matches.is_empty() {
        c.report(format!("{at}.matches"), why);
    }
    if !route.filters.is_empty() {
        c.report(format!("{at}.filters"), why);
    }
    if route.fixed_response.is_some() {
        c.report(format!("{at}.fixedResponse"), why);
    }
    if route.timeouts.is_some() {
        c.report(format!("{at}.timeouts"), why);
    }
}

fn route_match(at: &str, m: &api::RouteMatch, c: &mut Checker) -> RouteMatch {
    let path = m.path.as_ref().and_then(|p| {
        let field = format!("{at}.path.value");
        let kind = p.kind.unwrap_or(PathMatchType::PathPrefix);
        let checked = match kind {
            PathMatchType::RegularExpression => syntax::whole_match_regex(&p.value),
            PathMatchType::Exact | PathMatchType::PathPrefix => syntax::absolute_path(&p.value),
        };
        match checked {
            Ok(v) => Some(match kind {
                PathMatchType::Exact => PathMatch::Exact(v),
                PathMatchType::PathPrefix => PathMatch::Prefix(v),
                PathMatchType::RegularExpression => PathMatch::Regex(v),
            }),
            Err(e) => {
                c.report(field, e);
                None
            }
        }
    });
    let method = m
        .method
        .as_ref()
        .and_then(|text| match syntax::method(text) {
            Ok(v) => Some(v),
            Err(e) => {
                c.report(format!("{at}.method"), e);
                None
            }
        });
    RouteMatch {
        path,
        method,
        headers: named_matches(&format!("{at}.headers"), &m.headers, true, c),
        query: named_matches(&format!("{at}.queryParams"), &m.query_params, false, c),
    }
}

/// Header matches (names lowercased, tokens) or query parameter matches (names as given).
fn named_matches(
    at: &str,
    list: &[api::ValueMatch],
    header: bool,
    c: &mut Checker,
) -> Vec<NamedMatch> {
    let mut out = Vec::new();
    for (k, vm) in list.iter().enumerate() {
        let field = format!("{at}[{k}]");
        let name = if header {
            syntax::header_name(&vm.name)
        } else if vm.name.is_empty() {
            Err("must not be empty".to_string())
        } else {
            Ok(vm.name.clone())
        };
        let value = match vm.kind.unwrap_or(ValueMatchType::Exact) {
            ValueMatchType::Exact => {
                syntax::header_value(&vm.value).map(|()| StringMatch::Exact(vm.value.clone()))
            }
            ValueMatchType::RegularExpression => {
                syntax::whole_match_regex(&vm.value).map(StringMatch::Regex)
            }
        };
        match (name, value) {
            (Ok(name), Ok(value)) => out.push(NamedMatch { name, value }),
            (name, value) => {
                if let Err(e) = name {
                    c.report(format!("{field}.name"), e);
                }
                if let Err(e) = value {
                    c.report(format!("{field}.value"), e);
                }
            }
        }
    }
    out
}

/// The redirect a route answers with, taken out of its filters (it is the route's action).
struct Redirect {
    at: String,
    action: RouteAction,
}

/// A filter turned into what it does: a wire filter, or the route's redirect action.
enum FilterOutcome {
    Filter(FilterConfig),
    Redirect(RouteAction),
}

fn render_filters(
    at: &str,
    route: &Route,
    c: &mut Checker,
) -> (Vec<FilterConfig>, Option<Redirect>) {
    let prefix_ok = every_match_is_a_prefix(route);
    let mut seen = BTreeSet::new();
    let mut filters = Vec::new();
    let mut redirect = None;
    let mut rewrite_at = None;
    for (f, filter) in route.filters.iter().enumerate() {
        let field = format!("{at}.filters[{f}]");
        let name = filter_type_name(filter.kind);
        if !seen.insert(name) {
            c.report(
                format!("{field}.type"),
                format!("{name} may appear once per route"),
            );
        }
        if !filter_fields_match(filter) {
            let own = filter_field_name(filter.kind);
            c.report(
                field,
                format!("type {name} needs its own field ({own}) and no other"),
            );
            continue;
        }
        if filter.kind == RouteFilterType::URLRewrite {
            rewrite_at = Some(field.clone());
        }
        match one_filter(&field, filter, prefix_ok, c) {
            Some(FilterOutcome::Filter(f)) => filters.push(f),
            Some(FilterOutcome::Redirect(action)) => {
                redirect = Some(Redirect { at: field, action })
            }
            None => {}
        }
    }
    if let (Some(_), Some(field)) = (&redirect, rewrite_at) {
        c.report(field, "URLRewrite cannot be combined with RequestRedirect");
    }
    (filters, redirect)
}

/// ReplacePrefixMatch needs a prefix to replace: every match has a PathPrefix path.
fn every_match_is_a_prefix(route: &Route) -> bool {
    !route.matches.is_empty()
        && route.matches.iter().all(|m| {
            m.path.as_ref().is_some_and(|p| {
                p.kind.unwrap_or(PathMatchType::PathPrefix) == PathMatchType::PathPrefix
            })
        })
}

/// One filter whose type and field agree (checked by the caller).
fn one_filter(
    field: &str,
    filter: &api::RouteFilter,
    prefix_ok: bool,
    c: &mut Checker,
) -> Option<FilterOutcome> {
    let key = filter_field_name(filter.kind);
    let at = format!("{field}.{key}");
    Some(match filter.kind {
        RouteFilterType::RequestHeaderModifier => {
            FilterOutcome::Filter(FilterConfig::RequestHeaders(header_modifier(
                &at,
                filter.request_header_modifier.as_ref()?,
                c,
            )))
        }
        RouteFilterType::ResponseHeaderModifier => {
            FilterOutcome::Filter(FilterConfig::ResponseHeaders(header_modifier(
                &at,
                filter.response_header_modifier.as_ref()?,
                c,
            )))
        }
        RouteFilterType::URLRewrite => {
            FilterOutcome::Filter(url_rewrite(&at, filter.url_rewrite.as_ref()?, prefix_ok, c))
        }
        RouteFilterType::RequestRedirect => FilterOutcome::Redirect(request_redirect(
            &at,
            filter.request_redirect.as_ref()?,
            prefix_ok,
            c,
        )),
    })
}

fn filter_type_name(kind: RouteFilterType) -> &'static str {
    match kind {
        RouteFilterType::RequestHeaderModifier => "RequestHeaderModifier",
        RouteFilterType::ResponseHeaderModifier => "ResponseHeaderModifier",
        RouteFilterType::RequestRedirect => "RequestRedirect",
        RouteFilterType::URLRewrite => "URLRewrite",
    }
}

fn filter_field_name(kind: RouteFilterType) -> &'static str {
    match kind {
        RouteFilterType::RequestHeaderModifier => "requestHeaderModifier",
        RouteFilterType::ResponseHeaderModifier => "responseHeaderModifier",
        RouteFilterType::RequestRedirect => "requestRedirect",
        RouteFilterType::URLRewrite => "urlRewrite",
    }
}

/// The field named by the filter's type is set and no other is.
fn filter_fields_match(f: &api::RouteFilter) -> bool {
    let present = [
        (
            RouteFilterType::RequestHeaderModifier,
            f.request_header_modifier.is_some(),
        ),
        (
            RouteFilterType::ResponseHeaderModifier,
            f.response_header_modifier.is_some(),
        ),
        (
            RouteFilterType::RequestRedirect,
            f.request_redirect.is_some(),
        ),
        (RouteFilterType::URLRewrite, f.url_rewrite.is_some()),
    ];
    present.iter().all(|(kind, set)| *set == (*kind == f.kind))
}

fn header_modifier(at: &str, m: &api::HeaderModifier, c: &mut Checker) -> HeaderModifier {
    let values = |list: &[api::HeaderValue], key: &str, c: &mut Checker| {
        let mut out = Vec::new();
        for (k, hv) in list.iter().enumerate() {
            let field = format!("{at}.{key}[{k}]");
            let name_ok = syntax::header_name(&hv.name)
                .map_err(|e| c.report(format!("{field}.name"), e))
                .is_ok();
            let value_ok = syntax::header_value(&hv.value)
                .map_err(|e| c.report(format!("{field}.value"), e))
                .is_ok();
            if name_ok && value_ok {
                out.push(HeaderValue {
                    name: hv.name.clone(),
                    value: hv.value.clone(),
                });
            }
        }
        out
    };
    let set = values(&m.set, "set", c);
    let add = values(&m.add, "add", c);
    let remove = m
        .remove
        .iter()
        .enumerate()
        .filter_map(|(k, name)| match syntax::header_name(name) {
            Ok(n) => Some(n),
            Err(e) => {
                c.report(format!("{at}.remove[{k}]"), e);
                None
            }
        })
        .collect();
    HeaderModifier { set, add, remove }
}

fn url_rewrite(at: &str, r: &api::UrlRewrite, prefix_ok: bool, c: &mut Checker) -> FilterConfig {
    FilterConfig::UrlRewrite {
        hostname: r
            .hostname
            .as_ref()
            .and_then(|h| checked(c, &format!("{at}.hostname"), syntax::exact_hostname(h))),
        path: r
            .path
            .as_ref()
            .and_then(|p| path_modifier(&format!("{at}.path"), p, prefix_ok, c)),
    }
}

fn request_redirect(
    at: &str,
    r: &api::RequestRedirect,
    prefix_ok: bool,
    c: &mut Checker,
) -> RouteAction {
    let scheme = r.scheme.as_ref().and_then(|s| match s.as_str() {
        "http" | "https" => Some(s.clone()),
        _ => {
            c.report(
                format!("{at}.scheme"),
                format!("{s:?} must be http or https"),
            );
            None
        }
    });
    let status = r.status_code.unwrap_or(DEFAULT_REDIRECT_STATUS);
    if !REDIRECT_STATUSES.contains(&status) {
        c.report(
            format!("{at}.statusCode"),
            format!("{status} must be one of 301, 302, 303, 307, 308"),
        );
    }
    if r.port == Some(0) {
        c.report(format!("{at}.port"), "must be 1-65535");
    }
    RouteAction::Redirect {
        scheme,
        hostname: r
            .hostname
            .as_ref()
            .and_then(|h| checked(c, &format!("{at}.hostname"), syntax::exact_hostname(h))),
        port: r.port,
        path: r
            .path
            .as_ref()
            .and_then(|p| path_modifier(&format!("{at}.path"), p, prefix_ok, c)),
        status,
    }
}

fn path_modifier(
    at: &str,
    p: &api::PathModifier,
    prefix_ok: bool,
    c: &mut Checker,
) -> Option<PathModifier> {
    let (value, other, key) = match p.kind {
        PathModifierType::ReplaceFullPath => (
            &p.replace_full_path,
            &p.replace_prefix_match,
            "replaceFullPath",
        ),
        PathModifierType::ReplacePrefixMatch => (
            &p.replace_prefix_match,
            &p.replace_full_path,
            "replacePrefixMatch",
        ),
    };
    let (Some(value), None) = (value, other) else {
        c.report(at, format!("set {key}, and only it, for this type"));
        return None;
    };
    let value = checked(c, &format!("{at}.{key}"), syntax::absolute_path(value))?;
    match p.kind {
        PathModifierType::ReplaceFullPath => Some(PathModifier::ReplaceFull(value)),
        PathModifierType::ReplacePrefixMatch if prefix_ok => {
            Some(PathModifier::ReplacePrefix(value))
        }
        PathModifierType::ReplacePrefixMatch => {
            c.report(
                format!("{at}.type"),
                "ReplacePrefixMatch needs every match of the route to have a PathPrefix path",
            );
            None
        }
    }
}

fn action(
    at: &str,
    route: &Route,
    redirect: Option<Redirect>,
    groups: &mut ListenerGroups<'_>,
    c: &mut Checker,
) -> RouteAction {
    check_one_action(at, route, redirect.as_ref(), c);
    if let Some(r) = redirect {
        return r.action;
    }
    if let Some(f) = &route.fixed_response {
        return fixed(&format!("{at}.fixedResponse"), f, c);
    }
    if route.backend_refs.is_empty() {
        return RouteAction::Forward {
            groups: vec![WeightedGroup {
                group: 0,
                weight: 1,
            }],
        };
    }
    let mut weighted = Vec::new();
    for (k, r) in route.backend_refs.iter().enumerate() {
        let weight = r.weight.unwrap_or(1);
        if weight > 1_000_000 {
            c.report(format!("{at}.backendRefs[{k}].weight"), "must be 0-1000000");
        }
        match groups.index_of(&r.name) {
            Some(group) => weighted.push(WeightedGroup { group, weight }),
            None => c.report(
                format!("{at}.backendRefs[{k}].name"),
                format!("no backend group named {:?} in spec.backendGroups", r.name),
            ),
        }
    }
    RouteAction::Forward { groups: weighted }
}

/// A route does one thing: redirect, answer itself, or forward.
fn check_one_action(at: &str, route: &Route, redirect: Option<&Redirect>, c: &mut Checker) {
    if let Some(r) = redirect {
        if !route.backend_refs.is_empty() {
            c.report(&r.at, "RequestRedirect cannot be combined with backendRefs");
        }
        if route.fixed_response.is_some() {
            c.report(
                &r.at,
                "RequestRedirect cannot be combined with fixedResponse",
            );
        }
    }
    if route.fixed_response.is_some() && !route.backend_refs.is_empty() {
        c.report(
            format!("{at}.fixedResponse"),
            "cannot be combined with backendRefs",
        );
    }
}

fn fixed(at: &str, f: &api::FixedResponse, c: &mut Checker) -> RouteAction {
    if !(200..=599).contains(&f.status_code) {
        c.report(format!("{at}.statusCode"), "must be 200-599");
    }
    if let Some(t) = &f.content_type
        && let Err(e) = syntax::header_value(t)
    {
        c.report(format!("{at}.contentType"), e);
    }
    RouteAction::Fixed {
        status: f.status_code,
        body: f.body.clone().unwrap_or_default(),
        content_type: f.content_type.clone(),
    }
}

fn checked<T>(c: &mut Checker, field: &str, result: Result<T, String>) -> Option<T> {
    result.map_err(|e| c.report(field, e)).ok()
}
