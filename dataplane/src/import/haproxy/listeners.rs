//! Builds listeners from frontends: protocol and TLS from the bind, routes from the rules
//! decided for that listener (`ssl_fc` is known), backend groups on demand, and a note for
//! every line that reached (or failed to reach) the listener.

use halo_crds::load_balancer::{
    AccessLog, BackendGroup, BackendRef, CertificateRef, Listener, ListenerTls, PathMatchType,
    Protocol, Route, RouteFilter, RouteFilterType, Timeouts, Upstream,
};

use super::acl::{self, Selector};
use super::backend::{Mapped, SideTimeouts, Timed};
use super::frontend::{Action, Frontend, Rule};
use super::notes::Notes;
use super::values::dns_label;

/// A LoadBalancer being assembled: its listeners and the groups they route to.
#[derive(Debug, Clone, Default)]
pub struct Site {
    pub name: String,
    pub listeners: Vec<Listener>,
    pub groups: Vec<BackendGroup>,
    /// `crt` paths of each listener's certificates, resolved later.
    pub crts: Vec<(usize, Vec<String>)>,
    /// Backend-side timeouts of the listener being built (its default backend's).
    pub side: SideTimeouts,
}

/// Maps a backend by name for one field prefix; `None` when no such backend exists.
pub type Backends<'a> = dyn FnMut(&str, &str, &mut Notes) -> Option<Mapped> + 'a;

pub struct Bound<'a> {
    pub fe: &'a Frontend,
    pub name: String,
    pub port: u16,
    pub tls: Option<&'a super::frontend::BindTls>,
    pub bind_line: (usize, String),
    pub accept_proxy: bool,
    /// A `listen` section's own servers: the listener's default.
    pub own: Option<Mapped>,
}

/// Adds one listener to `site`.
pub fn add(site: &mut Site, b: Bound<'_>, backends: &mut Backends<'_>, notes: &mut Notes) {
    let index = site.listeners.len();
    let at = format!("LoadBalancer/{} spec.listeners[{index}]", site.name);
    let fe = b.fe;
    let protocol = match (fe.http, b.tls.is_some()) {
        (true, true) if b.tls.is_some_and(|t| t.crt.is_empty()) => {
            notes.unsupported(
                b.bind_line.0,
                &b.bind_line.1,
                "ssl without crt: a TLS listener needs a certificate",
            );
            return;
        }
        (true, true) => Protocol::Https,
        (true, false) => Protocol::Http,
        (false, false) => Protocol::Tcp,
        (false, true) => {
            notes.unsupported(b.bind_line.0, &b.bind_line.1, "TLS termination in mode tcp: Halo terminates TLS for HTTP only (protocol TLS passes it through)");
            return;
        }
    };
    notes.mapped(b.bind_line.0, &b.bind_line.1, format!("{at}.port"));
    if let Some((n, text)) = &fe.mode_line {
        notes.mapped(*n, text, format!("{at}.protocol"));
    }
    let mut l = Listener::new(b.name.clone(), b.port, protocol, Upstream::default());
    if let Some(tls) = b.tls {
        l.tls = Some(ListenerTls {
            certificates: Vec::new(),
            min_version: tls.min_version,
            cipher_suites: tls.cipher_suites.clone(),
            alpn: tls
                .alpn
                .iter()
                .filter(|p| matches!(p.as_str(), "h2" | "http/1.1"))
                .cloned()
                .collect(),
        });
        site.crts.push((index, tls.crt.clone()));
        let dropped: Vec<&String> = tls
            .alpn
            .iter()
            .filter(|p| !matches!(p.as_str(), "h2" | "http/1.1"))
            .collect();
        if !dropped.is_empty() {
            let how = format!("Halo offers h2 and http/1.1 only; {dropped:?} left out");
            notes.approximated(b.bind_line.0, &b.bind_line.1, format!("{at}.tls.alpn"), how);
        }
        notes.mapped(b.bind_line.0, &b.bind_line.1, format!("{at}.tls"));
    }
    if b.accept_proxy {
        l.accept_proxy_protocol = vec!["0.0.0.0/0".into(), "::/0".into()];
        notes.mapped(
            b.bind_line.0,
            &b.bind_line.1,
            format!("{at}.acceptProxyProtocol"),
        );
    }
    frontend_settings(&mut l, fe, &at, notes);
    let default = default_upstream(fe, b.own, &at, backends, notes);
    let side = default
        .as_ref()
        .map(|m| m.timeouts.clone())
        .unwrap_or_else(|| fe.side.clone());
    site.side = side.clone();
    if fe.http {
        let routes = routes(site, fe, b.tls.is_some(), &at, backends, notes);
        let shadowed = routes.1;
        l.routes = routes.0;
        if let Some((_, n, text)) = fe.default_backend.as_ref().filter(|_| default.is_some()) {
            let field = match shadowed {
                false => format!("{at}.backends"),
                true => format!("{at} (not used here: an earlier rule takes every request)"),
            };
            notes.mapped(*n, text, field);
        }
        if !shadowed {
            let up = default.map(|m| m.upstream).unwrap_or_default();
            attach_default(site, &mut l, fe, up, &at, notes);
        }
    } else {
        if let Some((_, n, text)) = fe.default_backend.as_ref().filter(|_| default.is_some()) {
            notes.mapped(*n, text, format!("{at}.backends"));
        }
        l.upstream = default.map(|m| m.upstream).unwrap_or_default();
        for r in &fe.rules {
            notes.unsupported(
                r.line,
                &r.text,
                "a TCP listener has no routes; its default backend takes every connection",
            );
        }
    }
    l.timeouts = timeouts(fe, &side, fe.http, &at, notes);
    site.listeners.push(l);
}

fn frontend_settings(l: &mut Listener, fe: &Frontend, at: &str, notes: &mut Notes) {
    if let Some((m, n, text)) = &fe.max_connections {
        l.max_connections = Some(*m);
        notes.approximated(*n, text, format!("{at}.maxConnections"), "HAProxy leaves connections over the limit waiting in the accept queue; Halo refuses them");
    }
    if fe.http {
        l.forwarded_headers = Some(fe.forwardfor.is_some());
        if let Some((n, text)) = &fe.forwardfor {
            notes.approximated(
                *n,
                text,
                format!("{at}.forwardedHeaders"),
                "Halo adds X-Forwarded-Proto and Forwarded as well as X-Forwarded-For",
            );
        }
    }
    if let Some((n, text)) = &fe.log {
        l.access_log = Some(AccessLog {
            target: None,
            path: None,
            sample_percent: None,
        });
        notes.approximated(*n, text, format!("{at}.accessLog"), "Halo writes one JSON line per request or connection to stdout, not HAProxy's log format to syslog");
    }
}

/// The default backend (`default_backend`, or a listen's own servers) mapped for the
/// listener.
fn default_upstream(
    fe: &Frontend,
    own: Option<Mapped>,
    at: &str,
    backends: &mut Backends<'_>,
    notes: &mut Notes,
) -> Option<Mapped> {
    if let Some((name, n, text)) = &fe.default_backend {
        match backends(name, at, notes) {
            Some(m) => return Some(m),
            None => notes.unsupported(*n, text, format!("no backend named {name:?}")),
        }
    }
    own
}

/// The routes of an HTTP listener in HAProxy's rule order; `true` when an unconditional
/// rule takes every request, so the default backend is never used.
fn routes(
    site: &mut Site,
    fe: &Frontend,
    tls: bool,
    at: &str,
    backends: &mut Backends<'_>,
    notes: &mut Notes,
) -> (Vec<Route>, bool) {
    let mut out: Vec<(Route, usize, String)> = Vec::new();
    let mut redirects_first: Vec<&Rule> = fe
        .rules
        .iter()
        .filter(|r| matches!(r.action, Action::Redirect(_)))
        .collect();
    redirects_first.extend(
        fe.rules
            .iter()
            .filter(|r| matches!(r.action, Action::Backend(_))),
    );
    for rule in redirects_first {
        let selectors = match &rule.cond {
            None => Some(vec![Selector::default()]),
            Some((cond, negate)) => match acl::resolve(cond, *negate, tls) {
                Ok(s) => s,
                Err(e) => {
                    notes.unsupported(rule.line, &rule.text, e);
                    continue;
                }
            },
        };
        let Some(selectors) = selectors else {
            // Never true on this listener (ssl_fc): nothing to route, as HAProxy.
            notes.mapped(
                rule.line,
                &rule.text,
                format!("{at} (does not apply on this listener)"),
            );
            continue;
        };
        let Some(template) = route_for(site, rule, at, backends, notes) else {
            continue;
        };
        let named = rule
            .cond
            .iter()
            .flat_map(|(c, _)| c.iter().flatten())
            .filter(|t| !t.acl.text.is_empty());
        for t in named {
            notes.mapped(
                t.acl.line,
                &t.acl.text,
                format!("{at}.routes (condition of line {})", rule.line),
            );
        }
        let mut every = false;
        for s in selectors {
            let k = out.len();
            let field = format!("{at}.routes[{k}]");
            for how in &s.approximations {
                notes.approximated(rule.line, &rule.text, field.clone(), how.clone());
            }
            every |= s.hostnames.is_empty() && s.matches.is_empty();
            let mut r = template.clone();
            r.name = dns_label(&format!("{}-{k}", r.name));
            (r.hostnames, r.matches) = (s.hostnames, s.matches);
            notes.mapped(rule.line, &rule.text, field);
            out.push((r, rule.line, rule.text.clone()));
        }
        if every {
            // HAProxy stops at the first rule that takes everything; later ones never run.
            add_header_filters(&mut out, fe, at, notes);
            precedence(&out, at, notes);
            return (out.into_iter().map(|r| r.0).collect(), true);
        }
    }
    add_header_filters(&mut out, fe, at, notes);
    precedence(&out, at, notes);
    (out.into_iter().map(|r| r.0).collect(), false)
}

/// The route a rule becomes, before its hostnames and matches are filled in.
fn route_for(
    site: &mut Site,
    rule: &Rule,
    at: &str,
    backends: &mut Backends<'_>,
    notes: &mut Notes,
) -> Option<Route> {
    match &rule.action {
        Action::Redirect(r) => Some(Route {
            name: "redirect".into(),
            filters: vec![RouteFilter {
                kind: RouteFilterType::RequestRedirect,
                request_header_modifier: None,
                response_header_modifier: None,
                request_redirect: Some(r.clone()),
                url_rewrite: None,
            }],
            ..Route::default()
        }),
        Action::Backend(name) => {
            let group = group(site, name, backends, notes);
            if group.is_none() {
                notes.unsupported(rule.line, &rule.text, format!("no backend named {name:?}"));
            }
            let _ = at;
            group.map(|g| Route {
                name: g.clone(),
                backend_refs: vec![BackendRef {
                    name: g,
                    weight: None,
                }],
                ..Route::default()
            })
        }
    }
}

/// The group for backend `name` in this site, mapped the first time it is used.
fn group(
    site: &mut Site,
    name: &str,
    backends: &mut Backends<'_>,
    notes: &mut Notes,
) -> Option<String> {
    let label = dns_label(name);
    if site.groups.iter().any(|g| g.name == label) {
        return Some(label);
    }
    let at = format!(
        "LoadBalancer/{} spec.backendGroups[{}]",
        site.name,
        site.groups.len()
    );
    let mapped = backends(name, &at, notes)?;
    let (t, d) = (&mapped.timeouts, &site.side);
    let pairs = [
        (&t.connect, &d.connect),
        (&t.server, &d.server),
        (&t.queue, &d.queue),
        (&t.tunnel, &d.tunnel),
    ];
    for (mine, default) in pairs {
        let Some(timed) = mine else { continue };
        let field = format!("LoadBalancer/{} spec.listeners[*].timeouts", site.name);
        if default.as_ref().map(|d| &d.value) == Some(&timed.value) {
            notes.mapped(timed.line, &timed.text, field);
        } else {
            let how =
                "Halo sets backend timeouts per listener; the listener has its default backend's";
            notes.approximated(timed.line, &timed.text, field, how);
        }
    }
    site.groups.push(BackendGroup {
        name: label.clone(),
        upstream: mapped.upstream,
    });
    Some(label)
}

/// The default backend: the listener's own servers, or (when header rules must apply to
/// its requests too) a catch-all route to it as a group.
fn attach_default(
    site: &mut Site,
    l: &mut Listener,
    fe: &Frontend,
    up: Upstream,
    at: &str,
    notes: &mut Notes,
) {
    let has_headers = !fe.header_lines.is_empty();
    if !has_headers || up.backends.is_empty() {
        l.upstream = up;
        if has_headers {
            note_headers(fe, at, notes);
        }
        return;
    }
    let name = dns_label(&format!("{}-default", l.name));
    site.groups.push(BackendGroup {
        name: name.clone(),
        upstream: up,
    });
    let mut routes = vec![(
        Route {
            name: name.clone(),
            backend_refs: vec![BackendRef { name, weight: None }],
            ..Route::default()
        },
        0,
        String::new(),
    )];
    add_header_filters(&mut routes, fe, at, notes);
    l.routes.extend(routes.into_iter().map(|r| r.0));
}

fn note_headers(fe: &Frontend, at: &str, notes: &mut Notes) {
    for (n, text) in &fe.header_lines {
        notes.mapped(*n, text, format!("{at}.routes[*].filters"));
    }
}

/// Header rules become filters on every forwarding route.
fn add_header_filters(
    routes: &mut [(Route, usize, String)],
    fe: &Frontend,
    at: &str,
    notes: &mut Notes,
) {
    if fe.header_lines.is_empty() {
        return;
    }
    let empty = |m: &halo_crds::load_balancer::HeaderModifier| {
        m.set.is_empty() && m.add.is_empty() && m.remove.is_empty()
    };
    for (r, _, _) in routes.iter_mut().filter(|r| !r.0.backend_refs.is_empty()) {
        if !empty(&fe.request_headers) {
            r.filters.push(RouteFilter {
                kind: RouteFilterType::RequestHeaderModifier,
                request_header_modifier: Some(fe.request_headers.clone()),
                response_header_modifier: None,
                request_redirect: None,
                url_rewrite: None,
            });
        }
        if !empty(&fe.response_headers) {
            r.filters.push(RouteFilter {
                kind: RouteFilterType::ResponseHeaderModifier,
                request_header_modifier: None,
                response_header_modifier: Some(fe.response_headers.clone()),
                request_redirect: None,
                url_rewrite: None,
            });
        }
    }
    note_headers(fe, at, notes);
}

/// Halo tries routes by Gateway API precedence, HAProxy in order: a later rule that
/// Halo ranks higher may take requests an earlier one took in HAProxy.
fn precedence(routes: &[(Route, usize, String)], at: &str, notes: &mut Notes) {
    let rank = |r: &Route| -> (u8, u8) {
        let host = if r.hostnames.iter().any(|h| !h.starts_with('*')) {
            0
        } else if r.hostnames.is_empty() {
            2
        } else {
            1
        };
        let path = r
            .matches
            .iter()
            .filter_map(|m| m.path.as_ref())
            .map(|p| match p.kind {
                Some(PathMatchType::Exact) => 0,
                Some(PathMatchType::RegularExpression) => 2,
                _ => 1,
            })
            .min()
            .unwrap_or(3);
        (host, path)
    };
    for (i, (r, line, text)) in routes.iter().enumerate() {
        let earlier = routes[..i]
            .iter()
            .find(|(e, eline, _)| eline != line && rank(r) < rank(e));
        if let Some((e, _, _)) = earlier {
            let how = format!(
                "Halo ranks this route above the earlier {:?} (more specific host or path first); HAProxy tried that one first",
                e.name
            );
            notes.approximated(*line, text, format!("{at}.routes[{i}]"), how);
        }
    }
}

/// Client-side timeouts from the frontend, backend-side from the default backend.
fn timeouts(
    fe: &Frontend,
    side: &SideTimeouts,
    http: bool,
    at: &str,
    notes: &mut Notes,
) -> Option<Timeouts> {
    let mut t = Timeouts::default();
    let set = |slot: &mut Option<String>, timed: &Option<Timed>, name: &str, notes: &mut Notes| {
        if let Some(x) = timed {
            *slot = Some(x.value.clone());
            notes.mapped(x.line, &x.text, format!("{at}.timeouts.{name}"));
        }
    };
    set(&mut t.client, &fe.client, "client", notes);
    set(&mut t.connect, &side.connect, "connect", notes);
    set(&mut t.server, &side.server, "server", notes);
    set(&mut t.queue, &side.queue, "queue", notes);
    if http {
        set(&mut t.http_request, &fe.http_request, "httpRequest", notes);
        set(&mut t.idle, &fe.idle, "idle", notes);
    }
    if let Some(tunnel) = &side.tunnel {
        if http {
            notes.unsupported(tunnel.line, &tunnel.text, "Halo applies the client and server timeouts to upgraded (WebSocket) connections too");
        } else {
            t.client = Some(tunnel.value.clone());
            t.server = Some(tunnel.value.clone());
            notes.approximated(
                tunnel.line,
                &tunnel.text,
                format!("{at}.timeouts.client, {at}.timeouts.server"),
                "Halo has one inactivity timeout per side; the tunnel value is used for both",
            );
        }
    }
    (t != Timeouts::default()).then_some(t)
}

/// Certificates for one listener from the `crt` names' loaded certificates.
pub fn certificate_refs(names: &[String]) -> Vec<CertificateRef> {
    names
        .iter()
        .map(|n| CertificateRef {
            secret_name: Some(n.clone()),
            cert_file: None,
            key_file: None,
            secret_namespace: None,
        })
        .collect()
}
