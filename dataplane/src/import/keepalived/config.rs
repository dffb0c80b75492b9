//! One keepalived.conf as typed values, each with the line it came from. Directives whose
//! fate does not depend on the other nodes' files (no Halo equivalent, bad values) are
//! reported here; the rest is reported when the files are merged.

use std::net::IpAddr;

use halo_crds::net::IpPrefix;

use super::tree::Node;
use crate::import::{Report, Source};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<T> {
    pub value: T,
    pub at: Source,
    pub text: String,
}

fn item<T>(node: &Node, value: T) -> Item<T> {
    Item {
        value,
        at: node.at.clone(),
        text: node.text(),
    }
}

/// Gratuitous ARP / unsolicited NA settings (global `vrrp_*` or per instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Garp {
    /// `garp_master_delay`: a second burst this long after the takeover.
    MasterDelayMs(u64),
    /// `garp_master_repeat`: announcements per burst.
    MasterRepeat(u32),
    /// `garp_master_refresh`: repeat while master.
    MasterRefreshMs(u64),
    /// `garp_master_refresh_repeat`: announcements per refresh.
    MasterRefreshRepeat(u32),
    /// `vrrp_garp_interval`: spacing of IPv4 announcements.
    IntervalMs(u64),
    /// `vrrp_gna_interval`: spacing of IPv6 announcements.
    NaIntervalMs(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub prefix: IpPrefix,
    pub dev: Option<String>,
    pub label: Option<String>,
    /// Options Halo has no equivalent for (`brd`, `scope`, `no_track`, ...).
    pub other: Vec<String>,
}

/// `name [weight N]` in `track_interface` / `track_script`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub name: String,
    pub weight: Option<i32>,
    pub reverse: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub header: Item<()>,
    /// `state MASTER` (true) or `BACKUP`.
    pub state: Option<Item<bool>>,
    pub interface: Option<Item<String>>,
    pub vrid: Option<Item<u8>>,
    pub priority: Option<Item<u8>>,
    pub advert_ms: Option<Item<u64>>,
    pub version: Option<Item<u8>>,
    pub nopreempt: Option<Item<()>>,
    pub preempt_delay_ms: Option<Item<u64>>,
    pub unicast_src: Option<Item<IpAddr>>,
    pub unicast_peers: Vec<Item<IpAddr>>,
    pub auth_type: Option<Item<String>>,
    pub auth_pass: Option<Item<String>>,
    pub vips: Vec<Item<Vip>>,
    pub excluded: Vec<Item<Vip>>,
    pub track_interfaces: Vec<Item<Tracked>>,
    pub track_scripts: Vec<Item<Tracked>>,
    pub garp: Vec<Item<Garp>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub name: String,
    pub header: Item<()>,
    pub script: Option<Item<String>>,
    pub interval_ms: Option<Item<u64>>,
    pub timeout_ms: Option<Item<u64>>,
    pub weight: Option<Item<i32>>,
    pub reverse: bool,
    pub rise: Option<Item<u32>>,
    pub fall: Option<Item<u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroup {
    pub name: String,
    pub header: Item<()>,
    pub members: Vec<Item<String>>,
}

/// One node's file, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeConf {
    pub router_id: Option<Item<String>>,
    pub version: Option<Item<u8>>,
    pub garp: Vec<Item<Garp>>,
    pub instances: Vec<Instance>,
    pub scripts: Vec<Script>,
    pub groups: Vec<SyncGroup>,
}

const NOTIFY_ALTERNATIVE: &str = "Halo runs no hooks on state changes; watch \
    halo_vrrp_transitions_total{vip,to} on /metrics, the VirtualIP status (and its Events \
    in a cluster) or `halo-dataplane status` instead";

/// keepalived seconds (`1`, `0.1`, `2.5`) in milliseconds.
pub fn seconds_ms(text: &str) -> Option<u64> {
    let v: f64 = text.parse().ok()?;
    (0.0..1e9).contains(&v).then(|| (v * 1000.0).round() as u64)
}

fn arg<'a>(node: &'a Node, report: &mut Report) -> Option<&'a str> {
    let a = node.args.first().map(String::as_str);
    if a.is_none() {
        report.unsupported(
            node.at.clone(),
            node.text(),
            "no value given; keepalived ignores it",
        );
    }
    a
}

fn number<T: std::str::FromStr + PartialOrd>(
    node: &Node,
    range: (T, T),
    report: &mut Report,
) -> Option<Item<T>> {
    let text = arg(node, report)?;
    match text.parse::<T>() {
        Ok(v) if v >= range.0 && v <= range.1 => Some(item(node, v)),
        _ => {
            report.unsupported(
                node.at.clone(),
                node.text(),
                "not a valid number here; keepalived ignores it and uses its default",
            );
            None
        }
    }
}

fn seconds(node: &Node, report: &mut Report) -> Option<Item<u64>> {
    let text = arg(node, report)?;
    match seconds_ms(text) {
        Some(ms) => Some(item(node, ms)),
        None => {
            report.unsupported(
                node.at.clone(),
                node.text(),
                "not a number of seconds; keepalived ignores it",
            );
            None
        }
    }
}

fn garp(node: &Node, report: &mut Report) -> Option<Option<Item<Garp>>> {
    let key = node.keyword.strip_prefix("vrrp_").unwrap_or(&node.keyword);
    let value = match key {
        "garp_master_delay" => seconds(node, report)
            .map(|i| i.value)
            .map(Garp::MasterDelayMs),
        "garp_master_repeat" => number(node, (1u32, 10_000), report)
            .map(|i| i.value)
            .map(Garp::MasterRepeat),
        "garp_master_refresh" => seconds(node, report)
            .map(|i| i.value)
            .map(Garp::MasterRefreshMs),
        "garp_master_refresh_repeat" => number(node, (1u32, 10_000), report)
            .map(|i| i.value)
            .map(Garp::MasterRefreshRepeat),
        "garp_interval" => seconds(node, report).map(|i| i.value).map(Garp::IntervalMs),
        "gna_interval" => seconds(node, report)
            .map(|i| i.value)
            .map(Garp::NaIntervalMs),
        _ => return None,
    };
    Some(value.map(|v| item(node, v)))
}

fn unsupported(node: &Node, why: &str, report: &mut Report) {
    report.unsupported(node.at.clone(), node.text(), why);
}

/// keepalived's `$NAME=value` definitions and `@id` conditional lines: reported, since
/// what they expand to depends on the machine keepalived runs on.
fn preprocessor(node: &Node, report: &mut Report) -> bool {
    let special = node.keyword.starts_with(['$', '@']);
    if special {
        unsupported(
            node,
            "keepalived parameter definitions ($NAME=...) and conditional lines (@id ...) are \
             not expanded: import the configuration as keepalived expands it on each node",
            report,
        );
    }
    special
}

/// Reads a parsed file. Directives with no Halo counterpart go to `report`.
pub fn read(nodes: &[Node], report: &mut Report) -> NodeConf {
    let mut conf = NodeConf::default();
    for node in nodes {
        if preprocessor(node, report) {
            continue;
        }
        match node.keyword.as_str() {
            "global_defs" => global(node.children(), &mut conf, report),
            "vrrp_instance" => {
                if let Some(i) = instance(node, report) {
                    conf.instances.push(i);
                }
            }
            "vrrp_script" => {
                if let Some(s) = script(node, report) {
                    conf.scripts.push(s);
                }
            }
            "vrrp_sync_group" => {
                if let Some(g) = sync_group(node, report) {
                    conf.groups.push(g);
                }
            }
            "virtual_server" | "virtual_server_group" => unsupported(
                node,
                "LVS load balancing is not imported: Halo proxies in user space; describe the \
                 service as a LoadBalancer (import the haproxy.cfg or write it)",
                report,
            ),
            "vrrp_track_process" | "track_process" | "vrrp_track_file" | "track_file" => {
                unsupported(
                    node,
                    "no process or file tracking in Halo: use a track.checks[] exec check \
                     (pidof NAME, test -f FILE)",
                    report,
                )
            }
            "static_ipaddress" | "static_routes" | "static_rules" => unsupported(
                node,
                "static addresses and routes belong to the host's network configuration",
                report,
            ),
            _ => unsupported(node, "not a keepalived directive Halo imports", report),
        }
    }
    conf
}

fn global(children: &[Node], conf: &mut NodeConf, report: &mut Report) {
    for node in children {
        if preprocessor(node, report) {
            continue;
        }
        if let Some(g) = garp(node, report) {
            conf.garp.extend(g);
            continue;
        }
        match node.keyword.as_str() {
            "router_id" => conf.router_id = arg(node, report).map(|a| item(node, a.to_string())),
            "vrrp_version" => conf.version = number(node, (2u8, 3), report),
            "vrrp_startup_delay" => unsupported(
                node,
                "Halo has no start-up delay: it starts in Backup and waits a full \
                 Master_Down_Interval before taking over; delay the service itself (e.g. \
                 systemd ExecStartPre=/bin/sleep N) if the network needs time",
                report,
            ),
            "enable_script_security" => report.mapped(
                node.at.clone(),
                node.text(),
                "nothing (note: Halo's exec checks never run through a shell and their \
                 command must be an absolute path; keep those programs writable by root only)",
            ),
            "script_user" => unsupported(
                node,
                "exec checks run as the data plane's user; drop privileges in the program",
                report,
            ),
            "notification_email"
            | "notification_email_from"
            | "smtp_server"
            | "smtp_connect_timeout"
            | "smtp_helo_name" => unsupported(
                node,
                "Halo sends no e-mail; alert on halo_vrrp_transitions_total from /metrics",
                report,
            ),
            _ => unsupported(node, "no Halo equivalent for this global setting", report),
        }
    }
}

fn named(node: &Node, report: &mut Report) -> Option<String> {
    match node.args.as_slice() {
        [name] => Some(name.clone()),
        _ => {
            unsupported(
                node,
                "needs exactly one name; keepalived refuses it",
                report,
            );
            None
        }
    }
}

fn instance(node: &Node, report: &mut Report) -> Option<Instance> {
    let name = named(node, report)?;
    let mut i = Instance {
        name,
        header: item(node, ()),
        state: None,
        interface: None,
        vrid: None,
        priority: None,
        advert_ms: None,
        version: None,
        nopreempt: None,
        preempt_delay_ms: None,
        unicast_src: None,
        unicast_peers: Vec::new(),
        auth_type: None,
        auth_pass: None,
        vips: Vec::new(),
        excluded: Vec::new(),
        track_interfaces: Vec::new(),
        track_scripts: Vec::new(),
        garp: Vec::new(),
    };
    for n in node.children() {
        instance_setting(n, &mut i, report);
    }
    Some(i)
}

fn instance_setting(n: &Node, i: &mut Instance, report: &mut Report) {
    if preprocessor(n, report) {
        return;
    }
    if let Some(g) = garp(n, report) {
        i.garp.extend(g);
        return;
    }
    match n.keyword.as_str() {
        "state" => match arg(n, report) {
            Some("MASTER") => i.state = Some(item(n, true)),
            Some("BACKUP") => i.state = Some(item(n, false)),
            Some(_) => unsupported(n, "not MASTER or BACKUP; keepalived uses BACKUP", report),
            None => {}
        },
        "interface" => i.interface = arg(n, report).map(|a| item(n, a.to_string())),
        "virtual_router_id" => i.vrid = number(n, (1u8, 255), report),
        "priority" => i.priority = number(n, (1u8, 255), report),
        "advert_int" => i.advert_ms = seconds(n, report),
        "version" => i.version = number(n, (2u8, 3), report),
        "nopreempt" => i.nopreempt = Some(item(n, ())),
        "preempt" => {}
        "preempt_delay" => i.preempt_delay_ms = seconds(n, report),
        "unicast_src_ip" => match arg(n, report).map(str::parse::<IpAddr>) {
            Some(Ok(a)) => i.unicast_src = Some(item(n, a)),
            Some(Err(_)) => unsupported(n, "not an IP address", report),
            None => {}
        },
        "unicast_peer" => {
            for p in n.children() {
                match p.keyword.parse::<IpAddr>() {
                    // Options (min_ttl/max_ttl) are reported when merging.
                    Ok(a) => i.unicast_peers.push(item(p, a)),
                    Err(_) => unsupported(p, "not an IP address", report),
                }
            }
        }
        "authentication" => {
            for a in n.children() {
                match a.keyword.as_str() {
                    "auth_type" => i.auth_type = arg(a, report).map(|v| item(a, v.to_string())),
                    "auth_pass" => {
                        i.auth_pass = arg(a, report).map(|v| Item {
                            // The report is printed and shared: it never shows the password.
                            text: "auth_pass ********".into(),
                            ..item(a, v.to_string())
                        })
                    }
                    _ => unsupported(a, "not an authentication setting", report),
                }
            }
        }
        "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
            for v in n.children() {
                match vip(v) {
                    Some(x) if n.keyword == "virtual_ipaddress" => i.vips.push(item(v, x)),
                    Some(x) => i.excluded.push(item(v, x)),
                    None => unsupported(v, "not an address[/prefix]", report),
                }
            }
        }
        "track_interface" => {
            for t in n.children() {
                i.track_interfaces.push(item(t, tracked(t)));
            }
        }
        "track_script" => {
            for t in n.children() {
                i.track_scripts.push(item(t, tracked(t)));
            }
        }
        k if k.starts_with("notify") => unsupported(n, NOTIFY_ALTERNATIVE, report),
        "use_vmac" | "vmac_xmit_base" => unsupported(
            n,
            "Halo has no virtual MAC: it moves the address with gratuitous ARP / unsolicited \
             NA from the interface's own MAC (spec.vrrp.garp), which switches and clients \
             follow; a network that pins the VRRP MAC 00:00:5e:00:01:VRID needs that changed",
            report,
        ),
        "dont_track_primary" => unsupported(
            n,
            "Halo always watches the VirtualIP's interface (track.interfaceDown); give it a \
             weight instead of a fault if a link flap must not move the address",
            report,
        ),
        "track_process" | "track_file" | "track_bfd" => unsupported(
            n,
            "no process/file/BFD tracking in Halo: use a track.checks[] exec check",
            report,
        ),
        "smtp_alert" => unsupported(n, "Halo sends no e-mail", report),
        _ => unsupported(
            n,
            "no Halo equivalent for this vrrp_instance setting",
            report,
        ),
    }
}

/// `ADDR[/LEN] [dev IF] [label L] [brd B] [scope S] [flags...]`.
fn vip(node: &Node) -> Option<Vip> {
    let prefix: IpPrefix = node.keyword.parse().ok()?;
    let mut v = Vip {
        prefix,
        dev: None,
        label: None,
        other: Vec::new(),
    };
    let mut args = node.args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "dev" => v.dev = args.next().cloned(),
            "label" => v.label = args.next().cloned(),
            "brd" | "scope" | "peer" | "track_group" => {
                let value = args.next().cloned().unwrap_or_default();
                v.other.push(format!("{a} {value}"));
            }
            _ => v.other.push(a.clone()),
        }
    }
    Some(v)
}

fn tracked(node: &Node) -> Tracked {
    let mut t = Tracked {
        name: node.keyword.clone(),
        weight: None,
        reverse: false,
    };
    let mut args = node.args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "weight" => t.weight = args.next().and_then(|w| w.parse().ok()),
            "reverse" => t.reverse = true,
            _ => {}
        }
    }
    t
}

fn script(node: &Node, report: &mut Report) -> Option<Script> {
    let name = named(node, report)?;
    let mut s = Script {
        name,
        header: item(node, ()),
        script: None,
        interval_ms: None,
        timeout_ms: None,
        weight: None,
        reverse: false,
        rise: None,
        fall: None,
    };
    for n in node.children() {
        match n.keyword.as_str() {
            // keepalived joins the words back into one command line.
            "script" if !n.args.is_empty() => s.script = Some(item(n, n.args.join(" "))),
            "interval" => s.interval_ms = seconds(n, report),
            "timeout" => s.timeout_ms = seconds(n, report),
            "weight" => {
                s.weight = number(n, (-254i32, 254), report);
                s.reverse = n.args.get(1).is_some_and(|a| a == "reverse");
            }
            "rise" => s.rise = number(n, (1u32, 1_000_000), report),
            "fall" => s.fall = number(n, (1u32, 1_000_000), report),
            "user" => unsupported(
                n,
                "exec checks run as the data plane's user; drop privileges in the program",
                report,
            ),
            "init_fail" => unsupported(
                n,
                "a Halo check starts passing and fails after `fall` failures; keepalived's \
                 init_fail starts it failed",
                report,
            ),
            _ => unsupported(n, "no Halo equivalent for this vrrp_script setting", report),
        }
    }
    Some(s)
}

fn sync_group(node: &Node, report: &mut Report) -> Option<SyncGroup> {
    let name = named(node, report)?;
    let mut g = SyncGroup {
        name,
        header: item(node, ()),
        members: Vec::new(),
    };
    for n in node.children() {
        match n.keyword.as_str() {
            "group" => {
                for m in n.children() {
                    g.members.push(item(m, m.keyword.clone()));
                }
            }
            k if k.starts_with("notify") => unsupported(n, NOTIFY_ALTERNATIVE, report),
            _ => unsupported(n, "no Halo equivalent for this sync group setting", report),
        }
    }
    Some(g)
}

#[cfg(test)]
mod tests {
    use super::super::include::Located;
    use super::super::{lexer, tree};
    use super::*;
    use crate::import::Outcome;

    pub(crate) fn conf(text: &str) -> (NodeConf, Report) {
        let lines: Vec<Located> = lexer::lex(text, "n1.conf")
            .unwrap()
            .into_iter()
            .map(|line| Located {
                file: "n1.conf".into(),
                line,
            })
            .collect();
        let mut report = Report::default();
        let c = read(&tree::parse(&lines).unwrap(), &mut report);
        (c, report)
    }

    #[test]
    fn seconds_are_decimal() {
        let cases = [
            ("1", Some(1000)),
            ("0.1", Some(100)),
            ("2.5", Some(2500)),
            ("x", None),
            ("-1", None),
        ];
        for (t, want) in cases {
            assert_eq!(seconds_ms(t), want, "{t}");
        }
    }

    #[test]
    fn reads_an_instance() {
        let (c, report) = conf(
            "global_defs {\n router_id lb1\n vrrp_garp_interval 0.01\n}\n\
             vrrp_instance VI_1 {\n state MASTER\n interface eth0\n virtual_router_id 51\n\
             priority 150\n advert_int 1\n nopreempt\n unicast_src_ip 10.0.0.1\n\
             unicast_peer {\n 10.0.0.2\n }\n authentication {\n auth_type PASS\n auth_pass s3cret\n }\n\
             virtual_ipaddress {\n 192.0.2.10/24 dev eth0 label eth0:1\n 192.0.2.11\n }\n\
             track_interface {\n eth1 weight -10\n }\n track_script {\n chk weight 5\n }\n\
             notify_master /x.sh\n}\n",
        );
        assert_eq!(c.router_id.unwrap().value, "lb1");
        assert_eq!(c.garp[0].value, Garp::IntervalMs(10));
        let i = &c.instances[0];
        assert_eq!(i.name, "VI_1");
        assert!(i.state.as_ref().unwrap().value);
        assert_eq!(i.vrid.as_ref().unwrap().value, 51);
        assert_eq!(i.vrid.as_ref().unwrap().at.line, 8);
        assert_eq!(i.priority.as_ref().unwrap().value, 150);
        assert_eq!(i.advert_ms.as_ref().unwrap().value, 1000);
        assert!(i.nopreempt.is_some());
        assert_eq!(i.unicast_peers[0].value.to_string(), "10.0.0.2");
        assert_eq!(i.auth_pass.as_ref().unwrap().value, "s3cret");
        assert_eq!(i.vips[0].value.prefix.to_string(), "192.0.2.10/24");
        assert_eq!(i.vips[0].value.label.as_deref(), Some("eth0:1"));
        assert_eq!(i.vips[1].value.prefix.to_string(), "192.0.2.11/32");
        assert_eq!(i.track_interfaces[0].value.weight, Some(-10));
        assert_eq!(i.track_scripts[0].value.name, "chk");
        assert_eq!(report.entries.len(), 1, "{report}");
        assert!(matches!(
            report.entries[0].outcome,
            Outcome::Unsupported { .. }
        ));
        assert_eq!(report.entries[0].directive, "notify_master /x.sh");
    }

    #[test]
    fn bad_values_and_unknown_directives_are_reported() {
        let (c, report) = conf(
            "vrrp_instance A {\n virtual_router_id 300\n priority x\n use_vmac\n}\n\
             virtual_server 10.0.0.1 80 {\n}\nvrrp_script s {\n script \"pidof haproxy\"\n weight -2\n user nobody\n}\n\
             $PRIO=150\nvrrp_instance B {\n @lb1 priority 150\n}\n",
        );
        assert!(c.instances[0].vrid.is_none());
        assert_eq!(c.scripts[0].weight.as_ref().unwrap().value, -2);
        let lines: Vec<usize> = report.entries.iter().map(|e| e.source.line).collect();
        assert_eq!(lines, [2, 3, 4, 6, 11, 13, 15], "{report}");
        assert!(report.entries[6].directive.starts_with("@lb1"), "{report}");
    }
}
