//! The unicast peer list of a merged VirtualIP: every node's own address (its
//! `unicast_src_ip`, or the one address the other nodes list that it does not), then the
//! addresses no file owns, under a placeholder node name the report asks to fix.

use std::net::IpAddr;

use halo_crds::virtual_ip::Peer;

use super::config::Instance;
use super::merge::{Group, NodeFile, at};
use crate::import::Report;

/// The unicast peer list: every node's own address (its `unicast_src_ip`, or the one
/// address the other nodes list that it does not), then addresses no file owns.
pub(super) fn peers(name: &str, g: &Group<'_>, report: &mut Report) -> Vec<Peer> {
    if g.members.iter().all(|(_, i)| i.unicast_peers.is_empty()) {
        return Vec::new();
    }
    let (all, own) = own_addresses(g);
    let mut peers: Vec<Peer> = Vec::new();
    for (k, (n, _)) in g.members.iter().enumerate() {
        if let Some(a) = own[k] {
            peers.push(Peer {
                node: n.name.clone(),
                address: a.to_string(),
            });
        }
    }
    for a in &all {
        if !own.contains(&Some(*a)) {
            let node = format!("peer-{}", a.to_string().replace(['.', ':'], "-"));
            peers.push(Peer {
                node,
                address: a.to_string(),
            });
        }
    }
    for (k, (n, i)) in g.members.iter().enumerate() {
        report_peers(name, n, i, own[k], &own, &peers, report);
    }
    peers
}

/// Every address the files name, and each member's own address where it is known.
fn own_addresses(g: &Group<'_>) -> (Vec<IpAddr>, Vec<Option<IpAddr>>) {
    let mut all: Vec<IpAddr> = Vec::new();
    for (_, i) in &g.members {
        let src = i.unicast_src.iter().map(|s| s.value);
        for a in src.chain(i.unicast_peers.iter().map(|p| p.value)) {
            if !all.contains(&a) {
                all.push(a);
            }
        }
    }
    let mut own: Vec<Option<IpAddr>> = g
        .members
        .iter()
        .map(|(_, i)| i.unicast_src.as_ref().map(|s| s.value))
        .collect();
    for (k, (_, i)) in g.members.iter().enumerate() {
        if own[k].is_some() {
            continue;
        }
        let candidates: Vec<IpAddr> = all
            .iter()
            .copied()
            .filter(|a| !i.unicast_peers.iter().any(|p| p.value == *a) && !own.contains(&Some(*a)))
            .collect();
        if let [one] = candidates.as_slice() {
            own[k] = Some(*one);
        }
    }
    (all, own)
}

fn report_peers(
    name: &str,
    n: &NodeFile,
    i: &Instance,
    mine: Option<IpAddr>,
    own: &[Option<IpAddr>],
    peers: &[Peer],
    report: &mut Report,
) {
    let index = |a: &IpAddr| {
        peers
            .iter()
            .position(|p| p.address == a.to_string())
            .unwrap_or(0)
    };
    let h = &i.header;
    if let Some(s) = &i.unicast_src {
        let field = format!("spec.peers[{}] (this node's own address)", index(&s.value));
        report.mapped(s.at.clone(), &s.text, &at(name, &field));
    } else if mine.is_none() {
        report.approximated(
            h.at.clone(),
            &h.text,
            &at(name, "spec.peers"),
            format!(
                "node {}'s own address is unknown (no unicast_src_ip, and the other files do \
                 not tell it apart): add {{node: {}, address: ...}} to spec.peers so the others \
                 send to it",
                n.name, n.name
            ),
        );
    }
    if i.unicast_peers.is_empty() {
        report.approximated(
            h.at.clone(),
            &h.text,
            &at(name, "spec.vrrp.mode"),
            format!(
                "node {} used multicast; Halo uses unicast for every node of the VirtualIP",
                n.name
            ),
        );
    }
    for p in &i.unicast_peers {
        let j = index(&p.value);
        let owner = &peers[j].node;
        let field = at(name, &format!("spec.peers[{j}]"));
        if !own.contains(&Some(p.value)) || mine == Some(p.value) {
            let how = format!(
                "no file for the node at this address: listed as node {owner}; rename it to \
                 that node's name"
            );
            report.approximated(p.at.clone(), &p.text, &field, how);
        } else if p.text.split_whitespace().count() > 1 {
            let how = "the peer's min_ttl/max_ttl checks are not carried over";
            report.approximated(p.at.clone(), &p.text, &field, how);
        } else {
            report.mapped(p.at.clone(), &p.text, &format!("{field} (node {owner})"));
        }
    }
}
