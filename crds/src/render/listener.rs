//! A LoadBalancer's listeners on the wire: addresses, listener basics, timeouts,
//! forwarding headers, PROXY protocol, access logging, and the groups and routes each
//! listener uses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kube::ResourceExt;

use super::group::{GroupSource, render_backend_groups, render_group};
use super::route::{ListenerGroups, render_routes};
use super::{Checker, DEFAULT_GROUP, LbSources, Problem, load_balancer_ref, tls};
use crate::load_balancer::{self as api, AccessLogTarget, Listener, LoadBalancer, Protocol};
use crate::net::IpPrefix;
use crate::node_config::{
    AccessLogConfig, ForwardedConfig, ForwardedMode, GroupConfig, ListenerConfig, LogTarget,
    PersistenceConfig, ServerTlsConfig, TimeoutsConfig, UpstreamProtocol, VipConfig,
};

pub(super) fn render_load_balancer(
    input: &LbSources<'_>,
    lb: &LoadBalancer,
    vips: &BTreeMap<String, VipConfig>,
    invalid_vips: &BTreeSet<String>,
) -> Result<Vec<ListenerConfig>, Vec<Problem>> {
    let mut c = Checker::new(load_balancer_ref(lb));
    let spec = &lb.spec;
    let namespace = lb.namespace().unwrap_or_default();
    let Some(addresses) = addresses(input, lb, vips, invalid_vips, &mut c) else {
        // The VirtualIP does not include this node: nothing to serve here.
        return Ok(Vec::new());
    };
    check_listener_identities(&spec.listeners, &mut c);
    let backend_groups = render_backend_groups(input, &namespace, &spec.backend_groups, &mut c);
    let ctx = LbContext {
        input,
        namespace: &namespace,
        lb_name: lb.name_any(),
        vip: spec.virtual_ip.clone(),
        addresses,
        backend_groups: &backend_groups,
    };
    let listeners: Vec<ListenerConfig> = spec
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| render_listener(&ctx, i, l, &mut c))
        .collect();
    if c.problems.is_empty() {
        Ok(listeners)
    } else {
        Err(c.problems)
    }
}

struct LbContext<'a> {
    input: &'a LbSources<'a>,
    namespace: &'a str,
    lb_name: String,
    vip: Option<String>,
    addresses: Vec<IpAddr>,
    backend_groups: &'a [GroupConfig],
}

/// The listen addresses; `None` when the VirtualIP exists but not on this node.
fn addresses(
    input: &LbSources<'_>,
    lb: &LoadBalancer,
    vips: &BTreeMap<String, VipConfig>,
    invalid_vips: &BTreeSet<String>,
    c: &mut Checker,
) -> Option<Vec<IpAddr>> {
    match (&lb.spec.virtual_ip, &lb.spec.addresses) {
        (Some(vip_name), None) => match vips.get(vip_name) {
            Some(vip) => Some(vip.addresses.iter().map(|p| p.addr).collect()),
            None if invalid_vips.contains(vip_name) => {
                c.report("spec.virtualIP", format!("VirtualIP {vip_name} is invalid"));
                Some(Vec::new())
            }
            None if input.vip_exists => None,
            None => {
                c.report("spec.virtualIP", format!("VirtualIP {vip_name} not found"));
                Some(Vec::new())
            }
        },
        (None, Some(list)) => {
            if list.is_empty() {
                c.report("spec.addresses", "at least one address is required");
            }
            Some(
                list.iter()
                    .enumerate()
                    .filter_map(|(i, a)| c.ip(&format!("spec.addresses[{i}]"), a))
                    .collect(),
            )
        }
        _ => {
            c.report("spec", "set exactly one of virtualIP or addresses");
            Some(Vec::new())
        }
    }
}

/// Names and ports: present and unique.
fn check_listener_identities(listeners: &[Listener], c: &mut Checker) {
    if listeners.is_empty() {
        c.report("spec.listeners", "at least one listener is required");
    }
    let mut names = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for (i, l) in listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        if l.name.is_empty() {
            c.report(format!("{at}.name"), "must not be empty");
        }
        if !names.insert(l.name.as_str()) {
            c.report(
                format!("{at}.name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        if l.port == 0 {
            c.report(format!("{at}.port"), "must be 1-65535");
        }
        if !ports.insert(l.port) {
            c.report(
                format!("{at}.port"),
                format!("duplicate listener port {}", l.port),
            );
        }
        if l.max_connections == Some(0) {
            c.report(format!("{at}.maxConnections"), "must be at least 1");
        }
    }
}

fn render_listener(ctx: &LbContext<'_>, i: usize, l: &Listener, c: &mut Checker) -> ListenerConfig {
    let at = format!("spec.listeners[{i}]");
    let src = GroupSource {
        input: ctx.input,
        namespace: ctx.namespace,
        at: &at,
    };
    let own = render_group(&src, DEFAULT_GROUP, &l.upstream, c);
    let mut groups = ListenerGroups::new(own, ctx.backend_groups);
    let routes = render_routes(l, &at, &mut groups, c);
    check_groups_fit(l, &at, &groups.used, c);
    let h2c = l.http2_prior_knowledge;
    if h2c && l.protocol != Protocol::Http {
        c.report(
            format!("{at}.http2PriorKnowledge"),
            "applies to protocol HTTP (HTTPS negotiates HTTP/2 with ALPN)",
        );
    }
    ListenerConfig {
        name: format!("{}/{}/{}", ctx.namespace, ctx.lb_name, l.name),
        vip: ctx.vip.clone(),
        addresses: ctx.addresses.clone(),
        port: l.port,
        protocol: l.protocol,
        timeouts: timeouts(&at, l.timeouts.as_ref(), c),
        max_connections: l.max_connections,
        forwarded: forwarded(&at, l, c),
        tls: server_tls(ctx, &at, l, c),
        h2c,
        proxy_protocol_from: prefixes(
            &format!("{at}.acceptProxyProtocol"),
            &l.accept_proxy_protocol,
            c,
        ),
        routes,
        groups: groups.used,
        access_log: l
            .access_log
            .as_ref()
            .map(|a| access_log(&format!("{at}.accessLog"), a, c)),
    }
}

/// TLS termination: required by HTTPS and refused elsewhere (TLS passes through).
fn server_tls(
    ctx: &LbContext<'_>,
    at: &str,
    l: &Listener,
    c: &mut Checker,
) -> Option<ServerTlsConfig> {
    match (l.protocol, &l.tls) {
        (Protocol::Https, Some(t)) => Some(tls::server_tls(
            &format!("{at}.tls"),
            t,
            ctx.namespace,
            ctx.input.material,
            c,
        )),
        (Protocol::Https, None) => {
            c.report(format!("{at}.tls"), "required for protocol HTTPS");
            None
        }
        (_, Some(_)) => {
            c.report(
                format!("{at}.tls"),
                "applies to protocol HTTPS only (TLS passes the connection through)",
            );
            None
        }
        (_, None) => None,
    }
}

/// A group setting this listener's protocol cannot use: its field on an upstream, and why.
fn misfit(protocol: Protocol, g: &GroupConfig) -> Option<(&'static str, &'static str)> {
    let http = matches!(protocol, Protocol::Http | Protocol::Https);
    if !http && matches!(g.persistence, Some(PersistenceConfig::Cookie { .. })) {
        return Some((
            "sessionPersistence",
            "cookie persistence needs an HTTP or HTTPS listener",
        ));
    }
    if !http && g.protocol == UpstreamProtocol::Http2 {
        return Some((
            "backendProtocol",
            "backendProtocol HTTP2 needs an HTTP or HTTPS listener",
        ));
    }
    if protocol == Protocol::Tls && g.tls.is_some() {
        return Some((
            "backendTls",
            "backendTls cannot wrap a TLS passthrough connection (the client's TLS goes through untouched)",
        ));
    }
    None
}

/// Reported on the listener's own field, or on the first backendRef naming the group.
fn check_groups_fit(l: &Listener, at: &str, groups: &[GroupConfig], c: &mut Checker) {
    for (index, g) in groups.iter().enumerate() {
        let Some((field, why)) = misfit(l.protocol, g) else {
            continue;
        };
        if index == 0 {
            c.report(format!("{at}.{field}"), why);
        } else {
            let at_ref = first_ref(l, at, &g.name).unwrap_or_else(|| format!("{at}.routes"));
            c.report(at_ref, format!("backend group {}: {why}", g.name));
        }
    }
}

fn first_ref(l: &Listener, at: &str, name: &str) -> Option<String> {
    l.routes.iter().enumerate().find_map(|(j, r)| {
        r.backend_refs
            .iter()
            .position(|b| b.name == name)
            .map(|k| format!("{at}.routes[{j}].backendRefs[{k}].name"))
    })
}

fn timeouts(at: &str, t: Option<&api::Timeouts>, c: &mut Checker) -> TimeoutsConfig {
    let d = TimeoutsConfig::default();
    let t = t.cloned().unwrap_or_default();
    let mut ms = |name: &str, value: Option<&String>, default_ms: u64| {
        let field = format!("{at}.timeouts.{name}");
        let v = c.duration_ms(&field, value, default_ms);
        if v == 0 {
            c.report(field, "must be greater than zero");
        }
        v
    };
    TimeoutsConfig {
        connect_ms: ms("connect", t.connect.as_ref(), d.connect_ms),
        client_ms: ms("client", t.client.as_ref(), d.client_ms),
        server_ms: ms("server", t.server.as_ref(), d.server_ms),
        http_request_ms: ms("httpRequest", t.http_request.as_ref(), d.http_request_ms),
        idle_ms: ms("idle", t.idle.as_ref(), d.idle_ms),
        queue_ms: ms("queue", t.queue.as_ref(), d.queue_ms),
    }
}

fn forwarded(at: &str, l: &Listener, c: &mut Checker) -> ForwardedConfig {
    let http = matches!(l.protocol, Protocol::Http | Protocol::Https);
    let off = ForwardedConfig {
        mode: ForwardedMode::Off,
        trusted: Vec::new(),
    };
    match (&l.forwarded, l.forwarded_headers) {
        (Some(_), Some(_)) => {
            c.report(
                format!("{at}.forwarded"),
                "set forwarded or forwardedHeaders, not both",
            );
            ForwardedConfig::default()
        }
        (Some(_), None) if !http => {
            c.report(
                format!("{at}.forwarded"),
                "applies to protocols HTTP and HTTPS",
            );
            ForwardedConfig::default()
        }
        (Some(f), None) => ForwardedConfig {
            mode: match f.mode {
                None | Some(api::ForwardedMode::Append) => ForwardedMode::Append,
                Some(api::ForwardedMode::Replace) => ForwardedMode::Replace,
                Some(api::ForwardedMode::Off) => ForwardedMode::Off,
            },
            trusted: prefixes(
                &format!("{at}.forwarded.trustedProxies"),
                &f.trusted_proxies,
                c,
            ),
        },
        (None, Some(true)) if !http => {
            c.report(
                format!("{at}.forwardedHeaders"),
                "applies to protocols HTTP and HTTPS",
            );
            ForwardedConfig::default()
        }
        (None, Some(false)) if http => off,
        (None, _) => ForwardedConfig::default(),
    }
}

/// Addresses or CIDRs, each reported at its index.
fn prefixes(at: &str, list: &[String], c: &mut Checker) -> Vec<IpPrefix> {
    list.iter()
        .enumerate()
        .filter_map(|(k, text)| match text.parse::<IpPrefix>() {
            Ok(p) => Some(p),
            Err(e) => {
                c.report(format!("{at}[{k}]"), e.to_string());
                None
            }
        })
        .collect()
}

fn access_log(at: &str, a: &api::AccessLog, c: &mut Checker) -> AccessLogConfig {
    let target = match (a.target.unwrap_or(AccessLogTarget::Stdout), &a.path) {
        (AccessLogTarget::File, Some(path)) if !path.is_empty() => LogTarget::File(path.clone()),
        (AccessLogTarget::File, _) => {
            c.report(format!("{at}.path"), "required for target File");
            LogTarget::Stdout
        }
        (_, Some(_)) => {
            c.report(format!("{at}.path"), "applies to target File only");
            LogTarget::Stdout
        }
        (AccessLogTarget::Stdout, None) => LogTarget::Stdout,
        (AccessLogTarget::Stderr, None) => LogTarget::Stderr,
    };
    let sample_percent = a.sample_percent.unwrap_or(100);
    if !(1..=100).contains(&sample_percent) {
        c.report(format!("{at}.samplePercent"), "must be 1-100");
    }
    AccessLogConfig {
        target,
        sample_percent,
    }
}
