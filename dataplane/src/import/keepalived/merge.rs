//! Merges the nodes' keepalived files into VirtualIPs: one per VRID and address family,
//! with each node's priority and unicast address, and one report entry per directive.
//! Settings Halo holds once per VirtualIP (advert interval, addresses, version, password)
//! come from the first file that sets them; a different value in another file is
//! reported with both lines.

use std::collections::BTreeMap;

use halo_crds::duration::format_ms;
use halo_crds::virtual_ip::{
    GarpSpec, NodePriority, VrrpAuthType, VrrpAuthentication, VrrpMode, VrrpSpec,
};
use halo_crds::{VirtualIP, VirtualIPSpec};

use super::config::{Garp, Instance, Item, NodeConf, Vip};
use super::track;
use super::{peers, tracking};
use crate::import::Report;

/// One node: its name and its parsed file.
pub struct NodeFile {
    pub name: String,
    pub conf: NodeConf,
}

/// The instances of all nodes that share a VRID and family.
pub(super) struct Group<'a> {
    pub key: (u8, bool),
    pub members: Vec<(&'a NodeFile, &'a Instance)>,
}

/// keepalived's defaults where Halo's differ.
const DEFAULT_PRIORITY: u8 = 100;
const DEFAULT_ADVERT_MS: u64 = 1_000;

pub fn merge(nodes: &[NodeFile], report: &mut Report) -> Vec<VirtualIP> {
    for n in nodes {
        report_globals(n, report);
        report_scripts(n, report);
    }
    let groups = group(nodes, report);
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for g in &groups {
        let name = object_name(g, &names);
        names.push(name.clone());
        out.push(build(&name, g, nodes, report));
    }
    out
}

fn report_globals(n: &NodeFile, report: &mut Report) {
    let c = &n.conf;
    if let Some(r) = &c.router_id {
        let field = if r.value == n.name {
            "the node name".to_string()
        } else {
            format!(
                "nothing (the node is named {} after its file; --node-name-from router-id names it after router_id)",
                n.name
            )
        };
        report.mapped(r.at.clone(), &r.text, &field);
    }
    if let Some(v) = &c.version {
        report.mapped(
            v.at.clone(),
            &v.text,
            "spec.vrrp.version of this node's VirtualIPs without their own version",
        );
    }
    for g in &c.garp {
        report_garp(g, "of this node's VirtualIPs", report);
    }
}

fn report_garp(g: &Item<Garp>, whose: &str, report: &mut Report) {
    let at = g.at.clone();
    match g.value {
        Garp::MasterRepeat(n) if n > 100 => report.approximated(
            at,
            &g.text,
            &format!("spec.vrrp.garp.count {whose}"),
            "at most 100 in Halo",
        ),
        Garp::MasterRepeat(_) => {
            report.mapped(at, &g.text, &format!("spec.vrrp.garp.count {whose}"))
        }
        Garp::IntervalMs(_) => report.mapped(
            at,
            &g.text,
            &format!("spec.vrrp.garp.interval {whose} (IPv4 ones)"),
        ),
        Garp::NaIntervalMs(_) => report.mapped(
            at,
            &g.text,
            &format!("spec.vrrp.garp.interval {whose} (IPv6 ones)"),
        ),
        Garp::MasterRefreshMs(_) => {
            report.mapped(at, &g.text, &format!("spec.vrrp.garp.refresh {whose}"))
        }
        Garp::MasterDelayMs(_) => report.approximated(
            at,
            &g.text,
            "spec.vrrp.garp",
            "Halo announces right after the takeover and has no second burst later; set \
             spec.vrrp.garp.refresh for repeated announcements",
        ),
        Garp::MasterRefreshRepeat(_) => report.approximated(
            at,
            &g.text,
            "spec.vrrp.garp.refresh",
            "each Halo refresh sends one round of announcements",
        ),
    }
}

fn report_scripts(n: &NodeFile, report: &mut Report) {
    for s in &n.conf.scripts {
        let tracked = n
            .conf
            .instances
            .iter()
            .any(|i| i.track_scripts.iter().any(|t| t.value.name == s.name));
        track::report_script(s, tracked, report);
    }
}

fn family_v4(i: &Instance) -> Option<bool> {
    i.vips.first().map(|v| v.value.prefix.addr.is_ipv4())
}

fn group<'a>(nodes: &'a [NodeFile], report: &mut Report) -> Vec<Group<'a>> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    for n in nodes {
        for i in &n.conf.instances {
            let h = &i.header;
            let Some(vrid) = &i.vrid else {
                report.unsupported(
                    h.at.clone(),
                    &h.text,
                    "no virtual_router_id: keepalived refuses the instance",
                );
                continue;
            };
            let Some(v4) = family_v4(i) else {
                report.unsupported(
                    h.at.clone(),
                    &h.text,
                    "no virtual_ipaddress: nothing to hold",
                );
                continue;
            };
            let key = (vrid.value, v4);
            match groups.iter_mut().find(|g| g.key == key) {
                Some(g) if g.members.iter().any(|(m, _)| m.name == n.name) => {
                    report.unsupported(
                        h.at.clone(),
                        &h.text,
                        "a second instance with the same VRID and address family on this node",
                    );
                }
                Some(g) => g.members.push((n, i)),
                None => groups.push(Group {
                    key,
                    members: vec![(n, i)],
                }),
            }
        }
    }
    groups
}

/// A DNS-1123 name from the instance name (`VI_1` → `vi-1`), unique among `taken`.
fn object_name(g: &Group<'_>, taken: &[String]) -> String {
    let raw = &g.members[0].1.name;
    let mut name: String = raw
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let mut name = name.trim_matches('-').chars().take(50).collect::<String>();
    if name.is_empty() {
        name = format!("vrrp-{}", g.key.0);
    }
    if taken.contains(&name) {
        name = format!("{name}-vrid{}{}", g.key.0, if g.key.1 { "" } else { "-v6" });
    }
    name
}

/// `VirtualIP NAME FIELD`, the report's field names.
pub(super) fn at(name: &str, field: &str) -> String {
    format!("VirtualIP {name} {field}")
}

fn build(name: &str, g: &Group<'_>, nodes: &[NodeFile], report: &mut Report) -> VirtualIP {
    let mut vrrp = VrrpSpec {
        virtual_router_id: Some(g.key.0),
        ..VrrpSpec::default()
    };
    for (_, i) in &g.members {
        report.mapped(
            i.header.at.clone(),
            &i.header.text,
            &format!("VirtualIP {name}"),
        );
        if let Some(v) = &i.vrid {
            report.mapped(
                v.at.clone(),
                &v.text,
                &at(name, "spec.vrrp.virtualRouterId"),
            );
        }
    }
    let addresses = addresses(name, g, report);
    let interface = interface(name, g, report);
    vrrp.version = version(name, g, report);
    vrrp.advertisement_interval = Some(advert(name, g, vrrp.version, report));
    preempt(name, g, &mut vrrp, report);
    vrrp.authentication = auth(name, g, vrrp.version, report);
    let peers = peers::peers(name, g, report);
    if !peers.is_empty() {
        vrrp.mode = VrrpMode::Unicast;
    }
    let (track, bonus) = tracking::tracking(name, g, interface.as_deref(), report);
    vrrp.track = track;
    vrrp.garp = garp(name, g, report);
    vrrp.sync_group = sync_group(name, g, nodes, report);
    let priorities = priorities(name, g, &bonus, report);
    let spec = VirtualIPSpec {
        addresses,
        interface,
        node_selector: None,
        vrrp,
        priorities,
        peers,
        preferred_node: None,
    };
    VirtualIP::new(name, spec)
}

fn addresses(name: &str, g: &Group<'_>, report: &mut Report) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, i) in &g.members {
        let listed = i.vips.iter().map(|v| (false, v));
        for (excluded, v) in listed.chain(i.excluded.iter().map(|v| (true, v))) {
            let prefix = v.value.prefix;
            if prefix.addr.is_ipv4() != g.key.1 {
                report.unsupported(
                    v.at.clone(),
                    &v.text,
                    "a VRRP instance carries one address family (its first address's): give \
                     this address its own vrrp_instance",
                );
                continue;
            }
            let text = prefix.to_string();
            let index = match out.iter().position(|a| *a == text) {
                Some(k) => k,
                None if out.len() >= 16 => {
                    report.unsupported(
                        v.at.clone(),
                        &v.text,
                        "a VirtualIP holds at most 16 addresses: split the instance",
                    );
                    continue;
                }
                None => {
                    out.push(text);
                    out.len() - 1
                }
            };
            let field = at(name, &format!("spec.addresses[{index}]"));
            let how = address_notes(g, i, v, excluded);
            if how.is_empty() {
                report.mapped(v.at.clone(), &v.text, &field);
            } else {
                report.approximated(v.at.clone(), &v.text, &field, how.join("; "));
            }
        }
    }
    out
}

/// How one `virtual_ipaddress` line differs in Halo (empty: it does not).
fn address_notes(g: &Group<'_>, i: &Instance, v: &Item<Vip>, excluded: bool) -> Vec<String> {
    let mut how: Vec<String> = Vec::new();
    if excluded {
        how.push(
            "Halo advertises it with the others; keepalived left excluded addresses out of \
             its adverts"
                .into(),
        );
    }
    let prefix = v.value.prefix;
    let missing: Vec<&str> = g
        .members
        .iter()
        .filter(|(_, o)| {
            !o.vips
                .iter()
                .chain(&o.excluded)
                .any(|x| x.value.prefix == prefix)
        })
        .map(|(n, _)| n.name.as_str())
        .collect();
    if !missing.is_empty() {
        how.push(format!(
            "not in the list of {} for this VRID; Halo holds one address list on every node",
            missing.join(", ")
        ));
    }
    let own = i.interface.as_ref().map(|x| x.value.as_str());
    if let Some(dev) = &v.value.dev
        && Some(dev.as_str()) != own
    {
        how.push(format!(
            "Halo puts every address on the VirtualIP's interface, not on {dev}"
        ));
    }
    if let Some(label) = &v.value.label {
        how.push(format!(
            "added without the label {label} (only `ip addr` shows it, not `ifconfig`)"
        ));
    }
    if !v.value.other.is_empty() {
        how.push(format!("{} not carried over", v.value.other.join(", ")));
    }
    how
}

fn interface(name: &str, g: &Group<'_>, report: &mut Report) -> Option<String> {
    let values: Vec<&Item<String>> = g
        .members
        .iter()
        .filter_map(|(_, i)| i.interface.as_ref())
        .collect();
    let first = values.first()?;
    let same = values.iter().all(|v| v.value == first.value) && values.len() == g.members.len();
    for v in &values {
        if same {
            report.mapped(v.at.clone(), &v.text, &at(name, "spec.interface"));
        } else {
            report.approximated(
                v.at.clone(),
                &v.text,
                &at(name, "spec.interface"),
                "the nodes name different interfaces: left unset, so each node uses the one holding its address in the VirtualIP's subnet",
            );
        }
    }
    same.then(|| first.value.clone())
}

/// One value for every node: the first file's; others that differ are approximated.
fn single<T: PartialEq + Clone>(
    values: &[(&str, &Item<T>)],
    field: &str,
    report: &mut Report,
) -> Option<T> {
    let (_, first) = values.first()?;
    for (node, v) in values {
        if v.value == first.value {
            report.mapped(v.at.clone(), &v.text, field);
        } else {
            report.approximated(
                v.at.clone(),
                &v.text,
                field,
                format!(
                    "differs from {}:{} ({}); Halo keeps one value for all nodes, so node \
                     {node} gets that one too",
                    first.at.file, first.at.line, first.text
                ),
            );
        }
    }
    Some(first.value.clone())
}

fn version(name: &str, g: &Group<'_>, report: &mut Report) -> u8 {
    let values: Vec<(&str, &Item<u8>)> = g
        .members
        .iter()
        .filter_map(|(n, i)| i.version.as_ref().map(|v| (n.name.as_str(), v)))
        .collect();
    let own = single(&values, &at(name, "spec.vrrp.version"), report);
    let global = g
        .members
        .iter()
        .find_map(|(n, _)| n.conf.version.as_ref().map(|v| v.value));
    // keepalived speaks VRRPv2 unless told otherwise, and v3 for IPv6.
    let v = own.or(global).unwrap_or(2);
    if g.key.1 { v } else { 3 }
}

fn advert(name: &str, g: &Group<'_>, version: u8, report: &mut Report) -> String {
    let values: Vec<(&str, &Item<u64>)> = g
        .members
        .iter()
        .filter_map(|(n, i)| i.advert_ms.as_ref().map(|v| (n.name.as_str(), v)))
        .collect();
    let field = at(name, "spec.vrrp.advertisementInterval");
    let mut ms = single(&values, &field, report).unwrap_or(DEFAULT_ADVERT_MS);
    if version == 2 && !ms.is_multiple_of(1000) {
        ms = ms.div_ceil(1000).max(1) * 1000;
        if let Some((_, v)) = values.first() {
            report.approximated(
                v.at.clone(),
                &v.text,
                &field,
                "VRRPv2 advertises in whole seconds: rounded up",
            );
        }
    }
    if version == 3 {
        ms = (ms.div_ceil(10) * 10).clamp(10, 40_950);
    }
    format_ms(ms)
}

fn preempt(name: &str, g: &Group<'_>, vrrp: &mut VrrpSpec, report: &mut Report) {
    let all = g.members.iter().all(|(_, i)| i.nopreempt.is_some());
    for (_, i) in &g.members {
        let Some(n) = &i.nopreempt else { continue };
        vrrp.preempt = false;
        if all {
            report.mapped(n.at.clone(), &n.text, &at(name, "spec.vrrp.preempt"));
        } else {
            report.approximated(
                n.at.clone(),
                &n.text,
                &at(name, "spec.vrrp.preempt"),
                "preemption is one setting per VirtualIP in Halo: no node preempts (only this node's file says nopreempt)",
            );
        }
    }
    let delays: Vec<(&str, &Item<u64>)> = g
        .members
        .iter()
        .filter_map(|(n, i)| i.preempt_delay_ms.as_ref().map(|v| (n.name.as_str(), v)))
        .collect();
    vrrp.preempt_delay =
        single(&delays, &at(name, "spec.vrrp.preemptDelay"), report).map(format_ms);
}

fn auth(name: &str, g: &Group<'_>, version: u8, report: &mut Report) -> Option<VrrpAuthentication> {
    let mut passwords: Vec<(&str, &Item<String>)> = Vec::new();
    for (n, i) in &g.members {
        let kind = i.auth_type.as_ref();
        let pass = i.auth_pass.as_ref();
        let bad = |why: &str, report: &mut Report| {
            for x in [kind, pass].into_iter().flatten() {
                report.unsupported(x.at.clone(), &x.text, why);
            }
        };
        match kind.map(|k| k.value.as_str()) {
            None if pass.is_none() => continue,
            Some("AH") => {
                bad(
                    "IPsec AH authentication is not supported (RFC 3768 dropped it too); use PASS or none",
                    report,
                );
                continue;
            }
            Some("PASS") | None => {}
            Some(_) => {
                bad("unknown auth_type", report);
                continue;
            }
        }
        if version != 2 {
            bad(
                "VRRPv3 has no authentication (keepalived ignores it with version 3)",
                report,
            );
            continue;
        }
        if let Some(k) = kind {
            report.mapped(
                k.at.clone(),
                &k.text,
                &at(name, "spec.vrrp.authentication.type"),
            );
        }
        if let Some(p) = pass {
            passwords.push((n.name.as_str(), p));
        }
    }
    let field = at(name, "spec.vrrp.authentication.password");
    let first = single(&passwords, &field, report)?;
    let password: String = first.chars().take(8).collect();
    if password != first
        && let Some((_, p)) = passwords.first()
    {
        report.approximated(
            p.at.clone(),
            &p.text,
            &field,
            "VRRPv2 carries 8 bytes: cut to the first 8, as keepalived does",
        );
    }
    Some(VrrpAuthentication {
        kind: VrrpAuthType::Pass,
        password: Some(password),
        secret_ref: None,
    })
}

fn garp(name: &str, g: &Group<'_>, report: &mut Report) -> Option<GarpSpec> {
    let (node, first) = g.members[0];
    for (_, i) in &g.members {
        for x in &i.garp {
            report_garp(x, &format!("of VirtualIP {name}"), report);
        }
    }
    // The first node's settings: its instance's own, else its global ones.
    let effective: Vec<Garp> = node
        .conf
        .garp
        .iter()
        .chain(&first.garp)
        .map(|x| x.value)
        .collect();
    let mut spec = GarpSpec::default();
    for x in effective {
        match x {
            Garp::MasterRepeat(n) => spec.count = Some(n.clamp(1, 100)),
            Garp::IntervalMs(ms) if g.key.1 => spec.interval = Some(format_ms(ms)),
            Garp::NaIntervalMs(ms) if !g.key.1 => spec.interval = Some(format_ms(ms)),
            Garp::MasterRefreshMs(ms) if ms > 0 => spec.refresh = Some(format_ms(ms)),
            _ => {}
        }
    }
    (spec != GarpSpec::default()).then_some(spec)
}

fn sync_group(
    name: &str,
    g: &Group<'_>,
    _nodes: &[NodeFile],
    report: &mut Report,
) -> Option<String> {
    let mut chosen: Option<String> = None;
    for (n, i) in &g.members {
        for group in &n.conf.groups {
            let Some(m) = group.members.iter().find(|m| m.value == i.name) else {
                continue;
            };
            let group_name: String = group.name.chars().take(63).collect();
            let field = at(name, "spec.vrrp.syncGroup");
            match &chosen {
                Some(c) if *c != group_name => report.approximated(
                    m.at.clone(),
                    &m.text,
                    &field,
                    format!("another node puts this VRID in sync group {c}: that one is kept"),
                ),
                _ => {
                    report.mapped(m.at.clone(), &m.text, &field);
                    chosen = Some(group_name);
                }
            }
        }
    }
    chosen
}

/// Each node's priority: its base plus the positive weights it tracks; with equal top
/// priorities, the one node that says `state MASTER` is given one more.
fn priorities(
    name: &str,
    g: &Group<'_>,
    bonus: &BTreeMap<String, u8>,
    report: &mut Report,
) -> Vec<NodePriority> {
    let mut out: Vec<NodePriority> = Vec::new();
    for (k, (n, i)) in g.members.iter().enumerate() {
        let base = i.priority.as_ref().map_or(DEFAULT_PRIORITY, |p| p.value);
        let extra = bonus.get(&n.name).copied().unwrap_or(0);
        let priority = if base == 255 {
            255
        } else {
            base.saturating_add(extra).min(254)
        };
        let field = at(name, &format!("spec.priorities[{k}]"));
        if let Some(p) = &i.priority {
            if base != 255 && u16::from(base) + u16::from(extra) > 254 {
                report.approximated(p.at.clone(), &p.text, &field, "with its positive track weights it passes 254: capped at 254, as keepalived caps it");
            } else if extra > 0 {
                report.mapped(
                    p.at.clone(),
                    &p.text,
                    &format!("{field} ({base} + {extra} from positive track weights = {priority})"),
                );
            } else {
                report.mapped(p.at.clone(), &p.text, &field);
            }
        }
        out.push(NodePriority {
            node: n.name.clone(),
            priority,
        });
    }
    let levels: Vec<u8> = out.iter().map(|p| p.priority).collect();
    let masters: Vec<bool> = g
        .members
        .iter()
        .map(|(_, i)| i.state.as_ref().is_some_and(|s| s.value))
        .collect();
    let preferred = master_tie(&levels, &masters);
    if let Some(k) = preferred {
        out[k].priority += 1;
    }
    for (k, (_, i)) in g.members.iter().enumerate() {
        let Some(s) = &i.state else { continue };
        let field = at(name, &format!("spec.priorities[{k}]"));
        if preferred == Some(k) {
            let (node, p) = (&out[k].node, out[k].priority);
            let how = format!(
                "{node} shares the top priority {} with another node: keepalived only lets \
                 the MASTER hold the address first (after a failover the holder keeps it); \
                 Halo gives {node} priority {p} so it is the preferred master and takes the \
                 address back",
                p - 1
            );
            report.approximated(s.at.clone(), &s.text, &field, how);
        } else {
            let field = format!(
                "{field} (keepalived's state is only the initial state; both elect by priority)"
            );
            report.mapped(s.at.clone(), &s.text, &field);
        }
    }
    out
}

/// The node to raise by one: several share the top priority (below 255) and exactly one
/// of them says `state MASTER`.
fn master_tie(priorities: &[u8], masters: &[bool]) -> Option<usize> {
    let top = priorities.iter().copied().max()?;
    let at_top: Vec<usize> = (0..priorities.len())
        .filter(|k| priorities[*k] == top)
        .collect();
    let mut wanting = at_top.iter().copied().filter(|k| masters[*k]);
    match (wanting.next(), wanting.next()) {
        (Some(k), None) if at_top.len() > 1 && top < 255 => Some(k),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::config;
    use super::super::include::Located;
    use super::super::{lexer, tree};
    use super::*;
    use halo_crds::virtual_ip::TrackInterface;

    fn node(name: &str, text: &str) -> NodeFile {
        let file = format!("{name}.conf");
        let lines: Vec<Located> = lexer::lex(text, &file)
            .unwrap()
            .into_iter()
            .map(|line| Located {
                file: file.clone(),
                line,
            })
            .collect();
        let mut report = Report::default();
        let conf = config::read(&tree::parse(&lines).unwrap(), &mut report);
        NodeFile {
            name: name.into(),
            conf,
        }
    }

    fn instance(state: &str, priority: u8, extra: &str) -> String {
        format!(
            "vrrp_script chk {{\n script \"curl -f http://127.0.0.1/health\"\n interval 2\n weight 10\n}}\n\
             vrrp_instance VI_1 {{\n state {state}\n interface eth0\n virtual_router_id 51\n priority {priority}\n advert_int 1\n\
             virtual_ipaddress {{\n 192.0.2.10/24\n }}\n track_script {{\n chk\n }}\n{extra}}}\n"
        )
    }

    #[test]
    fn two_nodes_merge_into_one_virtual_ip() {
        let nodes = [
            node(
                "lb1",
                &instance(
                    "MASTER",
                    150,
                    " unicast_src_ip 10.0.0.1\n unicast_peer {\n 10.0.0.2\n }\n authentication {\n auth_type PASS\n auth_pass secret\n }\n",
                ),
            ),
            node(
                "lb2",
                &instance(
                    "BACKUP",
                    100,
                    " unicast_peer {\n 10.0.0.1\n }\n authentication {\n auth_type PASS\n auth_pass secret\n }\n",
                ),
            ),
        ];
        let mut report = Report::default();
        let vips = merge(&nodes, &mut report);
        assert_eq!(vips.len(), 1, "{report}");
        let v = &vips[0];
        assert_eq!(v.metadata.name.as_deref(), Some("vi-1"));
        assert_eq!(v.spec.addresses, ["192.0.2.10/24"]);
        assert_eq!(v.spec.interface.as_deref(), Some("eth0"));
        assert_eq!(v.spec.vrrp.version, 2);
        assert_eq!(v.spec.vrrp.virtual_router_id, Some(51));
        assert_eq!(v.spec.vrrp.advertisement_interval.as_deref(), Some("1s"));
        assert_eq!(v.spec.vrrp.mode, VrrpMode::Unicast);
        assert_eq!(
            v.spec
                .vrrp
                .authentication
                .as_ref()
                .unwrap()
                .password
                .as_deref(),
            Some("secret")
        );
        let prios: Vec<(&str, u8)> = v
            .spec
            .priorities
            .iter()
            .map(|p| (p.node.as_str(), p.priority))
            .collect();
        // Positive weight 10: both nodes start 10 higher.
        assert_eq!(prios, [("lb1", 160), ("lb2", 110)]);
        let peers: Vec<(&str, &str)> = v
            .spec
            .peers
            .iter()
            .map(|p| (p.node.as_str(), p.address.as_str()))
            .collect();
        // lb2's own address is the one lb1 lists and lb2 does not.
        assert_eq!(peers, [("lb1", "10.0.0.1"), ("lb2", "10.0.0.2")]);
        let check = &v.spec.vrrp.track.as_ref().unwrap().checks[0];
        assert_eq!(check.http.as_ref().unwrap().url, "http://127.0.0.1/health");
        assert_eq!(check.weight, Some(10));
        assert_eq!(report.exit_code(), 0, "{report}");
    }

    #[test]
    fn conflicts_and_ties_are_reported() {
        let nodes = [
            node("a", &instance("MASTER", 100, "")),
            node(
                "b",
                &instance("BACKUP", 100, " advert_int 2\n")
                    .replace(" advert_int 1\n", "")
                    .replace("192.0.2.10/24", "192.0.2.10/24\n 192.0.2.11/24"),
            ),
        ];
        let mut report = Report::default();
        let vips = merge(&nodes, &mut report);
        let v = &vips[0];
        let text = report.to_string();
        assert_eq!(
            v.spec.vrrp.advertisement_interval.as_deref(),
            Some("1s"),
            "{text}"
        );
        assert_eq!(v.spec.addresses, ["192.0.2.10/24", "192.0.2.11/24"]);
        assert!(text.contains("b.conf:18: advert_int 2: approximated as VirtualIP vi-1 spec.vrrp.advertisementInterval: differs from a.conf:11"), "{text}");
        assert!(text.contains("192.0.2.11/24: approximated as VirtualIP vi-1 spec.addresses[1]: not in the list of a"), "{text}");
        let prios: Vec<u8> = v.spec.priorities.iter().map(|p| p.priority).collect();
        assert_eq!(prios, [111, 110], "{text}");
        assert!(
            text.contains("a.conf:7: state MASTER: approximated"),
            "{text}"
        );
    }

    #[test]
    fn peers_without_a_file_and_tracking_on_one_node_only() {
        let a = instance(
            "BACKUP",
            150,
            " unicast_src_ip 10.0.0.1\n unicast_peer {\n 10.0.0.2\n 10.0.0.3\n }\n track_interface {\n eth1\n }\n",
        );
        let b = instance("BACKUP", 100, " unicast_peer {\n 10.0.0.1\n 10.0.0.3\n }\n")
            .replace(" track_script {\n chk\n }\n", "");
        let nodes = [node("a", &a), node("b", &b)];
        let mut report = Report::default();
        let v = &merge(&nodes, &mut report)[0];
        let text = report.to_string();
        let peers: Vec<(&str, &str)> = v
            .spec
            .peers
            .iter()
            .map(|p| (p.node.as_str(), p.address.as_str()))
            .collect();
        assert_eq!(
            peers,
            [
                ("a", "10.0.0.1"),
                ("b", "10.0.0.2"),
                ("peer-10-0-0-3", "10.0.0.3")
            ],
            "{text}"
        );
        assert!(text.contains("10.0.0.3: approximated as VirtualIP vi-1 spec.peers[2]: no file for the node at this address: listed as node peer-10-0-0-3"), "{text}");
        assert!(text.contains("a.conf:16: chk: approximated as VirtualIP vi-1 spec.vrrp.track.checks[chk]: weight: 10"), "{text}");
        assert!(text.contains("also on b whose file does not"), "{text}");
        assert!(
            text.contains(
                "eth1: approximated as VirtualIP vi-1 spec.vrrp.track.interfaces[eth1]: fault: true"
            ),
            "{text}"
        );
        // One entry per line even when a line is approximated.
        let mut lines: Vec<(String, usize)> = report
            .entries
            .iter()
            .map(|e| (e.source.file.clone(), e.source.line))
            .collect();
        let n = lines.len();
        lines.sort();
        lines.dedup();
        assert_eq!(lines.len(), n, "{text}");
    }

    #[test]
    fn state_master_breaks_only_a_tie_at_the_top() {
        let cases: &[(&[u8], &[bool], Option<usize>)] = &[
            (&[100, 100], &[true, false], Some(0)),
            (&[100, 100], &[false, true], Some(1)),
            (&[100, 100], &[true, true], None),
            (&[100, 100], &[false, false], None),
            (&[150, 100], &[false, true], None),
            (&[100, 150, 150], &[true, false, true], Some(2)),
            (&[255, 255], &[true, false], None),
            (&[100], &[true], None),
        ];
        for (p, m, want) in cases {
            assert_eq!(master_tie(p, m), *want, "{p:?} {m:?}");
        }
    }

    #[test]
    fn weights_zero_and_negative() {
        let text = instance(
            "BACKUP",
            100,
            " track_interface {\n eth1\n eth2 weight -5\n eth0 weight -30\n }\n",
        )
        .replace("weight 10", "weight -20");
        let nodes = [node("a", &text)];
        let mut report = Report::default();
        let v = &merge(&nodes, &mut report)[0];
        let t = v.spec.vrrp.track.as_ref().unwrap();
        assert_eq!(t.checks[0].weight, Some(20));
        assert_eq!(
            t.interfaces[0],
            TrackInterface {
                name: "eth1".into(),
                weight: None,
                fault: Some(true)
            }
        );
        assert_eq!(t.interfaces[1].weight, Some(5));
        assert_eq!(t.interface_down.as_ref().unwrap().weight, Some(30));
        assert_eq!(v.spec.priorities[0].priority, 100);
    }
}
