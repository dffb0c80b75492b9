//! Backend groups on the wire: a listener's own backends and every `backendGroups` entry
//! are rendered by the same functions (servers, health check, persistence, queue, PROXY
//! protocol, backend protocol).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use super::{Checker, DEFAULT_GROUP, DEFAULT_RETRIES, LbSources, ServiceKey, syntax, tls};
use crate::load_balancer::{
    self as api, BackendProtocol, HealthCheck, HealthCheckType, PersistenceType,
    SessionPersistence, Upstream,
};
use crate::node_config::{
    BackendConfig, DEFAULT_MAX_QUEUE, GroupConfig, HealthCheckConfig, PersistenceConfig, Probe,
    ProxyProtocolVersion, UpstreamProtocol,
};

/// The cookie HAProxy users would call SERVERID.
pub const DEFAULT_COOKIE: &str = "HALO_SERVER";

/// Where a group is rendered from: the LoadBalancer's namespace and the spec path of the
/// upstream (`spec.listeners[0]` or `spec.backendGroups[2]`).
pub(super) struct GroupSource<'a> {
    pub input: &'a LbSources<'a>,
    pub namespace: &'a str,
    pub at: &'a str,
}

pub(super) fn render_group(
    src: &GroupSource<'_>,
    name: &str,
    up: &Upstream,
    c: &mut Checker,
) -> GroupConfig {
    let at = src.at;
    let retries = up.retries.unwrap_or(DEFAULT_RETRIES);
    if retries > 16 {
        c.report(format!("{at}.retries"), "must be 0-16");
    }
    let max_queue = up.max_queue.unwrap_or(DEFAULT_MAX_QUEUE);
    if max_queue > 1_000_000 {
        c.report(format!("{at}.maxQueue"), "must be 0-1000000");
    }
    GroupConfig {
        name: name.to_string(),
        algorithm: up.algorithm,
        backends: render_backends(src, up, c),
        health_check: up
            .health_check
            .as_ref()
            .map(|hc| health_check(&format!("{at}.healthCheck"), hc, c)),
        retries,
        persistence: up
            .session_persistence
            .as_ref()
            .and_then(|p| persistence(&format!("{at}.sessionPersistence"), p, c)),
        slow_start_ms: c.duration_ms(&format!("{at}.slowStart"), up.slow_start.as_ref(), 0),
        max_queue,
        proxy_protocol: up.send_proxy_protocol.map(|v| match v {
            api::ProxyProtocolVersion::V1 => ProxyProtocolVersion::V1,
            api::ProxyProtocolVersion::V2 => ProxyProtocolVersion::V2,
        }),
        tls: up.backend_tls.as_ref().map(|t| {
            let field = format!("{at}.backendTls");
            tls::upstream_tls(&field, t, src.namespace, src.input.material, c)
        }),
        protocol: match up.backend_protocol {
            None | Some(BackendProtocol::Http1) => UpstreamProtocol::Http1,
            Some(BackendProtocol::Http2) => UpstreamProtocol::Http2,
        },
    }
}

/// Every `spec.backendGroups` entry, in spec order, checked once whether or not a route
/// uses it.
pub(super) fn render_backend_groups(
    input: &LbSources<'_>,
    namespace: &str,
    groups: &[api::BackendGroup],
    c: &mut Checker,
) -> Vec<GroupConfig> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let at = format!("spec.backendGroups[{g}]");
        if group.name == DEFAULT_GROUP {
            c.report(
                format!("{at}.name"),
                "the name default is reserved for a listener's own backends",
            );
        }
        if !names.insert(group.name.as_str()) {
            c.report(
                format!("{at}.name"),
                format!("duplicate backend group name {:?}", group.name),
            );
        }
        let src = GroupSource {
            input,
            namespace,
            at: &at,
        };
        out.push(render_group(&src, &group.name, &group.upstream, c));
    }
    out
}

fn persistence(field: &str, p: &SessionPersistence, c: &mut Checker) -> Option<PersistenceConfig> {
    match p.kind {
        PersistenceType::SourceIP => {
            if p.cookie.is_some() {
                c.report(format!("{field}.cookie"), "applies to type Cookie");
            }
            Some(PersistenceConfig::SourceIp)
        }
        PersistenceType::Cookie => {
            let cookie = p.cookie.clone().unwrap_or(api::CookiePersistence {
                name: None,
                indirect: None,
                nocache: None,
                max_age: None,
            });
            let name = cookie.name.unwrap_or_else(|| DEFAULT_COOKIE.to_string());
            if !syntax::is_token(&name) {
                c.report(
                    format!("{field}.cookie.name"),
                    format!("{name:?} is not a valid cookie name"),
                );
            }
            let max_age_s = cookie.max_age.as_ref().map(|text| {
                let at = format!("{field}.cookie.maxAge");
                let ms = c.duration_ms(&at, Some(text), 1_000);
                if ms < 1_000 {
                    c.report(at, "must be at least 1s");
                }
                ms / 1_000
            });
            Some(PersistenceConfig::Cookie {
                name,
                indirect: cookie.indirect.unwrap_or(true),
                nocache: cookie.nocache.unwrap_or(true),
                max_age_s,
            })
        }
    }
}

fn health_check(field: &str, hc: &HealthCheck, c: &mut Checker) -> HealthCheckConfig {
    let interval_ms = c.duration_ms(&format!("{field}.interval"), hc.interval.as_ref(), 2_000);
    let down_interval_ms = c.duration_ms(
        &format!("{field}.downInterval"),
        hc.down_interval.as_ref(),
        interval_ms,
    );
    let timeout_ms = c.duration_ms(&format!("{field}.timeout"), hc.timeout.as_ref(), 1_000);
    for (name, v) in [
        ("interval", interval_ms),
        ("downInterval", down_interval_ms),
        ("timeout", timeout_ms),
    ] {
        if v == 0 {
            c.report(format!("{field}.{name}"), "must be greater than zero");
        }
    }
    let probe = match hc.kind {
        HealthCheckType::Tcp => {
            if hc.path.is_some() || hc.expect_status.is_some() {
                c.report(field, "path and expectStatus apply to type HTTP");
            }
            Probe::Tcp
        }
        HealthCheckType::Http => {
            let path = hc.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                c.report(format!("{field}.path"), "must start with /");
            }
            if let Some(s) = hc.expect_status
                && !(100..=599).contains(&s)
            {
                c.report(format!("{field}.expectStatus"), "must be 100-599");
            }
            Probe::Http {
                path,
                expect_status: hc.expect_status,
            }
        }
    };
    let rise = hc.rise.unwrap_or(2);
    let fall = hc.fall.unwrap_or(3);
    if rise == 0 {
        c.report(format!("{field}.rise"), "must be at least 1");
    }
    if fall == 0 {
        c.report(format!("{field}.fall"), "must be at least 1");
    }
    if hc.port == Some(0) {
        c.report(format!("{field}.port"), "must be 1-65535");
    }
    HealthCheckConfig {
        probe,
        port: hc.port,
        interval_ms,
        down_interval_ms,
        timeout_ms,
        rise,
        fall,
    }
}

fn render_backends(src: &GroupSource<'_>, up: &Upstream, c: &mut Checker) -> Vec<BackendConfig> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (j, b) in up.backends.iter().enumerate() {
        let field = format!("{}.backends[{j}]", src.at);
        let weight = b.weight.unwrap_or(1);
        if weight > 256 {
            c.report(format!("{field}.weight"), "must be 0-256");
        }
        if b.max_connections == Some(0) {
            c.report(format!("{field}.maxConnections"), "must be at least 1");
        }
        let mut push = |c: &mut Checker, name: String, address: IpAddr, port: u16| {
            if !names.insert(name.clone()) {
                c.report(
                    format!("{field}.name"),
                    format!("duplicate backend name {name:?}"),
                );
            }
            out.push(BackendConfig {
                name,
                address,
                port,
                weight,
                backup: b.backup,
                max_connections: b.max_connections,
            });
        };
        match (&b.address, &b.service) {
            (Some(addr), None) => {
                let Some(port) = b.port.filter(|p| *p != 0) else {
                    c.report(
                        format!("{field}.port"),
                        "a static address needs a port 1-65535",
                    );
                    continue;
                };
                let Some(ip) = c.ip(&format!("{field}.address"), addr) else {
                    continue;
                };
                let name = b
                    .name
                    .clone()
                    .unwrap_or_else(|| SocketAddr::new(ip, port).to_string());
                push(c, name, ip, port);
            }
            (None, Some(svc)) => {
                if b.port.is_some() {
                    c.report(format!("{field}.port"), "set the port in service.port");
                }
                let key = ServiceKey {
                    namespace: svc
                        .namespace
                        .as_deref()
                        .unwrap_or(src.namespace)
                        .to_string(),
                    name: svc.name.clone(),
                    port: svc.port,
                };
                // Endpoints that are not ready get no traffic; a Service with none is
                // still valid, it just has no backend for now.
                for ep in src
                    .input
                    .endpoints
                    .get(&key)
                    .into_iter()
                    .flat_map(|eps| eps.iter())
                    .filter(|e| e.ready)
                {
                    let prefix = b.name.as_deref().unwrap_or(&svc.name);
                    push(c, format!("{prefix}/{}", ep.name), ep.address, ep.port);
                }
            }
            _ => c.report(field.clone(), "set exactly one of address or service"),
        }
    }
    out
}
