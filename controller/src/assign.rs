//! VRID, priority and peer assignment: pure, deterministic, stable across restarts.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// What the assigner needs to know of one VirtualIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipFacts {
    pub name: String,
    /// Sorts older objects first, so they keep their VRIDs in a conflict.
    pub created: String,
    pub explicit_vrid: Option<u8>,
    /// The VRID recorded in status by an earlier run.
    pub recorded_vrid: Option<u8>,
    pub ipv6: bool,
    pub unicast: bool,
    /// Eligible nodes (already filtered by nodeSelector), with their addresses.
    pub nodes: Vec<NodeFacts>,
    /// spec.priorities.
    pub priorities: BTreeMap<String, u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub internal_ips: Vec<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub vrids: BTreeMap<String, u8>,
    /// VirtualIPs that got no VRID, with why.
    pub conflicts: BTreeMap<String, String>,
    /// (vip, node) → priority.
    pub priorities: BTreeMap<(String, String), u8>,
    /// (vip, node) → unicast peers of that node.
    pub peers: BTreeMap<(String, String), Vec<IpAddr>>,
}

/// Highest priority handed out by the spread; lower nodes step down by this much.
pub const SPREAD_TOP: u8 = 150;
pub const SPREAD_STEP: u8 = 10;

pub fn plan(vips: &[VipFacts], range: (u8, u8)) -> Plan {
    let mut out = Plan::default();
    let mut ordered: Vec<&VipFacts> = vips.iter().collect();
    ordered.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));

    // Explicit VRIDs first (oldest wins), then recorded ones, then fresh allocations.
    let mut used: BTreeMap<u8, String> = BTreeMap::new();
    for v in &ordered {
        if let Some(id) = v.explicit_vrid {
            match used.get(&id) {
                Some(owner) => {
                    out.conflicts.insert(
                        v.name.clone(),
                        format!("VRID {id} is already used by VirtualIP {owner}"),
                    );
                }
                None => {
                    used.insert(id, v.name.clone());
                    out.vrids.insert(v.name.clone(), id);
                }
            }
        }
    }
    for v in &ordered {
        if v.explicit_vrid.is_some() {
            continue;
        }
        if let Some(id) = v.recorded_vrid
            && (range.0..=range.1).contains(&id)
            && !used.contains_key(&id)
        {
            used.insert(id, v.name.clone());
            out.vrids.insert(v.name.clone(), id);
        }
    }
    for v in &ordered {
        if v.explicit_vrid.is_some() || out.vrids.contains_key(&v.name) {
            continue;
        }
        match (range.0..=range.1).find(|id| *id != 0 && !used.contains_key(id)) {
            Some(id) => {
                used.insert(id, v.name.clone());
                out.vrids.insert(v.name.clone(), id);
            }
            None => {
                out.conflicts.insert(
                    v.name.clone(),
                    format!("no free VRID in {}-{}", range.0, range.1),
                );
            }
        }
    }

    for v in vips {
        for (rank, node) in spread(v).iter().enumerate() {
            let priority = v.priorities.get(&node.name).copied().unwrap_or_else(|| {
                let step = u8::try_from(rank)
                    .unwrap_or(u8::MAX)
                    .saturating_mul(SPREAD_STEP);
                SPREAD_TOP.saturating_sub(step).max(1)
            });
            out.priorities
                .insert((v.name.clone(), node.name.clone()), priority);
            if v.unicast {
                let peers = v
                    .nodes
                    .iter()
                    .filter(|n| n.name != node.name)
                    .filter_map(|n| {
                        n.internal_ips
                            .iter()
                            .find(|ip| ip.is_ipv6() == v.ipv6)
                            .copied()
                    })
                    .collect();
                out.peers.insert((v.name.clone(), node.name.clone()), peers);
            }
        }
    }
    out
}

/// The VIP's nodes in preference order: a rendezvous hash of (vip, node), so each VIP
/// prefers a different node and adding a node reorders nobody else.
fn spread(v: &VipFacts) -> Vec<&NodeFacts> {
    let mut nodes: Vec<&NodeFacts> = v.nodes.iter().collect();
    let key =
        |n: &NodeFacts| std::cmp::Reverse((mix(hash(&v.name) ^ hash(&n.name)), n.name.clone()));
    nodes.sort_by_key(|n| key(n));
    nodes
}

fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn node(name: &str, ip: [u8; 4]) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            internal_ips: vec![IpAddr::from(ip)],
        }
    }

    fn vip(name: &str, created: &str) -> VipFacts {
        VipFacts {
            name: name.into(),
            created: created.into(),
            explicit_vrid: None,
            recorded_vrid: None,
            ipv6: false,
            unicast: false,
            nodes: vec![
                node("n1", [10, 0, 0, 1]),
                node("n2", [10, 0, 0, 2]),
                node("n3", [10, 0, 0, 3]),
            ],
            priorities: BTreeMap::new(),
        }
    }

    #[test]
    fn allocates_lowest_free_and_honours_explicit_and_recorded() {
        let mut a = vip("a", "1");
        a.explicit_vrid = Some(1);
        let mut b = vip("b", "2");
        b.recorded_vrid = Some(7);
        let c = vip("c", "3");
        let p = plan(&[c, b, a], (1, 255));
        assert_eq!(p.vrids.get("a"), Some(&1));
        assert_eq!(p.vrids.get("b"), Some(&7));
        assert_eq!(p.vrids.get("c"), Some(&2));
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn explicit_conflict_goes_to_the_younger_object() {
        let mut a = vip("a", "1");
        a.explicit_vrid = Some(5);
        let mut b = vip("b", "2");
        b.explicit_vrid = Some(5);
        let p = plan(&[b, a], (1, 255));
        assert_eq!(p.vrids.get("a"), Some(&5));
        assert_eq!(
            p.conflicts.get("b").map(String::as_str),
            Some("VRID 5 is already used by VirtualIP a")
        );
    }

    #[test]
    fn recorded_vrid_survives_a_restart_even_when_a_lower_one_frees_up() {
        let mut b = vip("b", "2");
        b.recorded_vrid = Some(9);
        let p = plan(&[b], (1, 255));
        assert_eq!(p.vrids.get("b"), Some(&9));
    }

    #[test]
    fn exhausted_range_is_reported() {
        let p = plan(&[vip("a", "1"), vip("b", "2")], (10, 10));
        assert_eq!(p.vrids.get("a"), Some(&10));
        assert_eq!(
            p.conflicts.get("b").map(String::as_str),
            Some("no free VRID in 10-10")
        );
    }

    #[test]
    fn spread_gives_distinct_priorities_and_different_vips_prefer_different_nodes() {
        let vips: Vec<VipFacts> = (0..12)
            .map(|i| vip(&format!("vip-{i}"), &i.to_string()))
            .collect();
        let p = plan(&vips, (1, 255));
        let mut preferred = BTreeSet::new();
        for v in &vips {
            let mut prios: Vec<u8> = ["n1", "n2", "n3"]
                .iter()
                .map(|n| p.priorities[&(v.name.clone(), (*n).to_string())])
                .collect();
            let top = ["n1", "n2", "n3"]
                .iter()
                .max_by_key(|n| p.priorities[&(v.name.clone(), (**n).to_string())])
                .map(|n| (*n).to_string());
            preferred.extend(top);
            prios.sort_unstable();
            assert_eq!(prios, vec![130, 140, 150]);
        }
        assert_eq!(
            preferred.len(),
            3,
            "12 VIPs should not all prefer the same node"
        );
        // Deterministic.
        assert_eq!(plan(&vips, (1, 255)), p);
    }

    #[test]
    fn explicit_priorities_and_unicast_peers() {
        let mut v = vip("a", "1");
        v.unicast = true;
        v.priorities.insert("n2".into(), 250);
        let p = plan(&[v], (1, 255));
        assert_eq!(p.priorities[&("a".into(), "n2".into())], 250);
        assert_eq!(
            p.peers[&("a".into(), "n1".into())],
            vec![IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3])]
        );
    }
}
