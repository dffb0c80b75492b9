//! A Gateway's listeners checked one by one and against each other (protocol, TLS
//! references, route kinds, port and hostname conflicts), with the conditions the spec
//! gives each. Pure.

use std::collections::BTreeMap;

use halo_crds::load_balancer::Protocol;

use super::api::{Gateway, GatewayListener, ReferenceGrant, RouteGroupKind};
use super::{Fact, GROUP, RouteKind, granted};

/// One listener as the translation uses it.
pub struct Prepared<'g> {
    pub spec: &'g GatewayListener,
    pub protocol: Option<Protocol>,
    /// Route kinds it takes (the status's supportedKinds).
    pub kinds: Vec<RouteGroupKind>,
    /// Accepted, ResolvedRefs and Conflicted, in that order.
    pub conditions: Vec<Fact>,
}

impl Prepared<'_> {
    /// Whether routes may attach and traffic is served.
    pub fn usable(&self) -> bool {
        self.protocol.is_some() && self.conditions.iter().all(Fact::healthy)
    }
}

/// The route kind a protocol serves.
fn kind_for(protocol: Protocol) -> RouteKind {
    match protocol {
        Protocol::Tls => RouteKind::Tls,
        _ => RouteKind::Http,
    }
}

/// The route kinds a listener asks for, split into the ones it can take and the others.
fn route_kinds(
    l: &GatewayListener,
    protocol: Option<Protocol>,
) -> (Vec<RouteGroupKind>, Vec<String>) {
    let Some(served) = protocol.map(kind_for) else {
        return (Vec::new(), Vec::new());
    };
    let own = RouteGroupKind {
        group: Some(GROUP.into()),
        kind: served.name().into(),
    };
    let asked = l
        .allowed_routes
        .as_ref()
        .map(|a| a.kinds.clone())
        .unwrap_or_default();
    if asked.is_empty() {
        return (vec![own], Vec::new());
    }
    let (ok, bad): (Vec<_>, Vec<_>) = asked
        .into_iter()
        .partition(|k| k.kind == served.name() && k.group.as_deref().unwrap_or(GROUP) == GROUP);
    let ok = if ok.is_empty() { Vec::new() } else { vec![own] };
    (ok, bad.into_iter().map(|k| k.kind).collect())
}

/// The protocol a listener is served with, or why it cannot be.
fn protocol_of(l: &GatewayListener) -> Result<Protocol, String> {
    let mode = l.tls.as_ref().and_then(|t| t.mode.as_deref());
    match (l.protocol.as_str(), mode) {
        ("HTTP", _) => Ok(Protocol::Http),
        ("HTTPS", _) => Ok(Protocol::Https),
        ("TLS", Some("Passthrough")) => Ok(Protocol::Tls),
        ("TLS", _) => {
            Err("protocol TLS is served with tls.mode Passthrough (terminate with HTTPS)".into())
        }
        (other, _) => Err(format!(
            "protocol {other} is not supported (HTTP, HTTPS and TLS passthrough are)"
        )),
    }
}

/// Whether an HTTPS listener's certificates can be used, and why not.
fn certificates_ok(
    gw: &Gateway,
    l: &GatewayListener,
    grants: &[&ReferenceGrant],
) -> Result<(), (&'static str, String)> {
    let Some(tls) = &l.tls else {
        return Err((
            "InvalidCertificateRef",
            "HTTPS needs tls.certificateRefs".into(),
        ));
    };
    if tls.mode.as_deref().unwrap_or("Terminate") != "Terminate" {
        return Err((
            "InvalidCertificateRef",
            "tls.mode Passthrough needs protocol TLS, which is not supported".into(),
        ));
    }
    if tls.certificate_refs.is_empty() {
        return Err((
            "InvalidCertificateRef",
            "HTTPS needs at least one certificateRef".into(),
        ));
    }
    let own = gw.metadata.namespace.clone().unwrap_or_default();
    for (i, r) in tls.certificate_refs.iter().enumerate() {
        let kind = r.kind.as_deref().unwrap_or("Secret");
        if kind != "Secret" || !r.group.as_deref().unwrap_or("").is_empty() {
            return Err((
                "InvalidCertificateRef",
                format!("certificateRefs[{i}]: only core Secrets hold certificates"),
            ));
        }
        let ns = r.namespace.clone().unwrap_or_else(|| own.clone());
        if ns != own && !granted(grants, ("Gateway", &own), ("", "Secret", &ns, &r.name)) {
            return Err((
                "RefNotPermitted",
                format!(
                    "certificateRefs[{i}]: no ReferenceGrant in {ns} allows this Gateway's Secret reference"
                ),
            ));
        }
    }
    Ok(())
}

/// A listener checked on its own: protocol, certificates and route kinds.
fn check<'g>(gw: &Gateway, l: &'g GatewayListener, grants: &[&ReferenceGrant]) -> Prepared<'g> {
    let mut conditions = Vec::new();
    let protocol = match protocol_of(l) {
        Ok(p) => {
            conditions.push(Fact::yes("Accepted", "Accepted", "the listener is valid"));
            Some(p)
        }
        Err(why) => {
            conditions.push(Fact::no("Accepted", "UnsupportedProtocol", why));
            None
        }
    };
    let (kinds, bad_kinds) = route_kinds(l, protocol);
    let refs = match (protocol, bad_kinds.is_empty()) {
        (_, false) => Err((
            "InvalidRouteKinds",
            format!(
                "route kinds {} are not supported here ({} is)",
                bad_kinds.join(", "),
                protocol.map_or("none", |p| kind_for(p).name())
            ),
        )),
        (Some(Protocol::Https), true) => certificates_ok(gw, l, grants),
        _ => Ok(()),
    };
    conditions.push(match refs {
        Ok(()) => Fact::yes(
            "ResolvedRefs",
            "ResolvedRefs",
            "every reference is resolved",
        ),
        Err((reason, why)) => Fact::no("ResolvedRefs", reason, why),
    });
    Prepared {
        spec: l,
        protocol,
        kinds,
        conditions,
    }
}

/// Every listener of `gw`, checked, with conflicts between listeners on one port: a
/// port serves one protocol, and a hostname once.
pub fn prepare<'g>(gw: &'g Gateway, grants: &[&ReferenceGrant]) -> Vec<Prepared<'g>> {
    let mut out: Vec<Prepared<'g>> = gw
        .spec
        .listeners
        .iter()
        .map(|l| check(gw, l, grants))
        .collect();
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, p) in out.iter().enumerate() {
        by_port.entry(p.spec.port).or_default().push(i);
    }
    let mut conflicts: Vec<Option<(&'static str, String)>> = vec![None; out.len()];
    for members in by_port.values() {
        for &i in members {
            let me = out[i].spec;
            let other_protocol = members.iter().any(|&j| out[j].spec.protocol != me.protocol);
            let same_host = members.iter().any(|&j| {
                j != i && out[j].spec.protocol == me.protocol && same_hostname(out[j].spec, me)
            });
            conflicts[i] = if other_protocol {
                Some((
                    "ProtocolConflict",
                    format!("port {} is also used with another protocol", me.port),
                ))
            } else if same_host {
                Some((
                    "HostnameConflict",
                    format!("another listener on port {} has the same hostname", me.port),
                ))
            } else {
                None
            };
        }
    }
    for (p, conflict) in out.iter_mut().zip(conflicts) {
        p.conditions.push(match conflict {
            Some((reason, why)) => Fact::conflict(reason, why),
            None => Fact::no(
                "Conflicted",
                "NoConflicts",
                "no conflict with other listeners".into(),
            ),
        });
    }
    out
}

fn same_hostname(a: &GatewayListener, b: &GatewayListener) -> bool {
    a.hostname.as_deref().map(str::to_ascii_lowercase)
        == b.hostname.as_deref().map(str::to_ascii_lowercase)
}
