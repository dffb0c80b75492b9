//! `spec.vrrp.track` on the wire: the conditions, tracked interfaces and periodic checks,
//! validated with their field paths.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{Checker, RenderOptions};
use crate::node_config::{CheckKind, TrackCheckConfig, TrackConfig, TrackEffect, TrackedInterface};
use crate::virtual_ip::{TrackAction, TrackCheck, TrackInterface, TrackSpec};

const DEFAULT_INTERVAL_MS: u64 = 2_000;
const DEFAULT_TIMEOUT_MS: u64 = 1_000;
const FIELD: &str = "spec.vrrp.track";

pub(super) fn render_track(
    c: &mut Checker,
    track: Option<&TrackSpec>,
    options: RenderOptions,
) -> TrackConfig {
    let Some(t) = track else {
        return TrackConfig::default();
    };
    let condition = |c: &mut Checker, name: &str, a: Option<&TrackAction>| {
        let a = a?;
        effect(c, &format!("{FIELD}.{name}"), a.weight, a.fault)
    };
    TrackConfig {
        backends_down: condition(c, "backendsDown", t.backends_down.as_ref()),
        bind_failure: condition(c, "bindFailure", t.bind_failure.as_ref()),
        // Unspecified keeps the default (fault), as the API documents.
        interface_down: match &t.interface_down {
            Some(a) => condition(c, "interfaceDown", Some(a)),
            None => TrackConfig::default().interface_down,
        },
        interfaces: interfaces(c, &t.interfaces),
        checks: checks(c, &t.checks, options),
    }
}

/// `weight` (1-254) or `fault: true`, not both.
fn effect(
    c: &mut Checker,
    field: &str,
    weight: Option<u8>,
    fault: Option<bool>,
) -> Option<TrackEffect> {
    match (weight, fault.unwrap_or(false)) {
        (Some(w), false) if (1..=254).contains(&w) => Some(TrackEffect::Weight(w)),
        (None, true) => Some(TrackEffect::Fault),
        _ => {
            c.report(field, "set either weight (1-254) or fault: true");
            None
        }
    }
}

fn interfaces(c: &mut Checker, list: &[TrackInterface]) -> Vec<TrackedInterface> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let field = format!("{FIELD}.interfaces[{i}]");
        if let Err(why) = interface_name(&t.name) {
            c.report(format!("{field}.name"), why);
        } else if !seen.insert(t.name.as_str()) {
            c.report(
                format!("{field}.name"),
                format!("{:?} is listed twice", t.name),
            );
        }
        if let Some(effect) = effect(c, &field, t.weight, t.fault) {
            out.push(TrackedInterface {
                name: t.name.clone(),
                effect,
            });
        }
    }
    out
}

/// A Linux interface name: 1-15 bytes, no `/`, whitespace, or `.`/`..`.
pub fn interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err("an interface name has 1-15 characters".into());
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|ch| ch == '/' || ch.is_whitespace() || ch.is_control())
    {
        return Err(format!("{name:?} is not an interface name"));
    }
    Ok(())
}

fn checks(c: &mut Checker, list: &[TrackCheck], options: RenderOptions) -> Vec<TrackCheckConfig> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, check) in list.iter().enumerate() {
        let field = format!("{FIELD}.checks[{i}]");
        if !seen.insert(check.name.as_str()) {
            c.report(
                format!("{field}.name"),
                format!("{:?} is used by another check", check.name),
            );
        }
        // A check with a problem refuses its whole VirtualIP.
        out.extend(one_check(c, &field, check, options));
    }
    out
}

fn one_check(
    c: &mut Checker,
    field: &str,
    check: &TrackCheck,
    options: RenderOptions,
) -> Option<TrackCheckConfig> {
    if check.name.is_empty() || check.name.len() > 63 {
        c.report(format!("{field}.name"), "a check name has 1-63 characters");
    }
    let interval_ms = c.duration_ms(
        &format!("{field}.interval"),
        check.interval.as_ref(),
        DEFAULT_INTERVAL_MS,
    );
    let timeout_ms = c.duration_ms(
        &format!("{field}.timeout"),
        check.timeout.as_ref(),
        DEFAULT_TIMEOUT_MS,
    );
    if interval_ms == 0 {
        c.report(format!("{field}.interval"), "must be more than 0");
    }
    if timeout_ms == 0 {
        c.report(format!("{field}.timeout"), "must be more than 0");
    } else if timeout_ms > interval_ms {
        c.report(
            format!("{field}.timeout"),
            format!("{timeout_ms}ms is longer than the interval ({interval_ms}ms)"),
        );
    }
    let mut count = |name: &str, value: Option<u8>| {
        let v = value.unwrap_or(1);
        if !(1..=100).contains(&v) {
            c.report(format!("{field}.{name}"), "must be 1-100");
        }
        u32::from(v)
    };
    let rise = count("rise", check.rise);
    let fall = count("fall", check.fall);
    let effect = effect(c, field, check.weight, check.fault);
    let kind = kind(c, field, check, options);
    Some(TrackCheckConfig {
        name: check.name.clone(),
        kind: kind?,
        interval_ms,
        timeout_ms,
        rise,
        fall,
        effect: effect?,
    })
}

fn kind(
    c: &mut Checker,
    field: &str,
    check: &TrackCheck,
    options: RenderOptions,
) -> Option<CheckKind> {
    match (&check.http, &check.tcp, &check.exec) {
        (Some(http), None, None) => match parse_url(&http.url) {
            Ok((address, host, path)) => {
                if let Some(s) = http.expect_status
                    && !(100..=599).contains(&s)
                {
                    c.report(format!("{field}.http.expectStatus"), "must be 100-599");
                }
                Some(CheckKind::Http {
                    address,
                    host,
                    path,
                    expect_status: http.expect_status,
                })
            }
            Err(why) => {
                c.report(format!("{field}.http.url"), why);
                None
            }
        },
        (None, Some(tcp), None) => match tcp.address.parse::<SocketAddr>() {
            Ok(address) if address.port() != 0 => Some(CheckKind::Tcp { address }),
            _ => {
                c.report(
                    format!("{field}.tcp.address"),
                    format!("{:?} is not ip:port or [ipv6]:port", tcp.address),
                );
                None
            }
        },
        (None, None, Some(exec)) => {
            if !options.allow_track_exec {
                c.report(
                    format!("{field}.exec"),
                    "exec checks are not allowed here (the controller runs them only with --allow-track-exec)",
                );
                return None;
            }
            if !exec.command.starts_with('/') {
                c.report(format!("{field}.exec.command"), "must be an absolute path");
            }
            if exec.command.contains('\0') || exec.args.iter().any(|a| a.contains('\0')) {
                c.report(format!("{field}.exec"), "must not contain NUL bytes");
            }
            Some(CheckKind::Exec {
                command: exec.command.clone(),
                args: exec.args.clone(),
            })
        }
        _ => {
            c.report(field, "set exactly one of http, tcp or exec");
            None
        }
    }
}

/// `http://host[:port][/path]` with an IP literal or `localhost` as host: the address to
/// connect to, the Host header (the authority as written) and the request target.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let bad = |why: &str| format!("{url:?}: {why}");
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if path.contains('#') || path.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return Err(bad(
            "the path must not contain spaces, control characters or a fragment",
        ));
    }
    if authority.contains('@') {
        return Err(bad("user information is not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let ip: std::net::Ipv6Addr = host.parse().map_err(|_| bad("not an IPv6 address"))?;
        (
            IpAddr::V6(ip),
            port_of(after.strip_prefix(':'), after.is_empty()).map_err(|w| bad(&w))?,
        )
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let ip = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| bad("the host must be an IP address or localhost"))?
        };
        (ip, port_of(port, port.is_none()).map_err(|w| bad(&w))?)
    };
    Ok((
        SocketAddr::new(host, port),
        authority.to_string(),
        path.to_string(),
    ))
}

/// The port after the host: absent means 80.
fn port_of(text: Option<&str>, absent: bool) -> Result<u16, String> {
    match text {
        None if absent => Ok(80),
        None => Err("unexpected text after the host".into()),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 => Ok(n),
            _ => Err(format!("port {p:?} is not 1-65535")),
        },
    }
}
