//! Status computed from what the controller observed and the time: pure functions, one
//! per kind, so every condition and reason has a table test. The writer (`super`) only
//! compares and patches.

use std::sync::Arc;

use halo_crds::load_balancer::{ListenerStatus, LoadBalancerStatus};
use halo_crds::net::IpPrefix;
use halo_crds::pool::VirtualIPPoolStatus;
use halo_crds::protocol::{NodeReport, VrrpState};
use halo_crds::render::{load_balancer_ref, virtual_ip_ref};
use halo_crds::virtual_ip::{NodeVrrpStatus, VirtualIPStatus};
use halo_crds::{LoadBalancer, VirtualIP, VirtualIPPool};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::observed::View;
use crate::services::PoolUsage;

pub(crate) fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status stays the same.
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    }
}

pub fn virtual_ip_status(vip: &VirtualIP, view: &View, now: Timestamp) -> VirtualIPStatus {
    let name = vip.name_any();
    let previous = vip.status.clone().unwrap_or_default();
    let plan = &view.plan;
    let problems = view
        .problems
        .get(&virtual_ip_ref(vip))
        .cloned()
        .unwrap_or_default();
    let conflict = plan.conflicts.get(&name).cloned();
    let mut nodes: Vec<NodeVrrpStatus> = view
        .reports
        .iter()
        .filter_map(|(node, r)| {
            r.vrrp.iter().find(|v| v.vip == name).map(|v| {
                // Keep the recorded time while the state holds: recomputing it from a
                // relative age would change the status on every reconcile.
                let kept = previous
                    .nodes
                    .iter()
                    .find(|p| &p.node == node && p.state == v.state)
                    .and_then(|p| p.since.clone());
                let since = kept.unwrap_or_else(|| {
                    now.checked_sub(SignedDuration::from_millis(
                        i64::try_from(v.since_ms_ago).unwrap_or(0),
                    ))
                    .unwrap_or(now)
                    .to_string()
                });
                NodeVrrpStatus {
                    node: node.clone(),
                    state: v.state,
                    priority: v.priority,
                    since: Some(since),
                }
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let masters: Vec<&NodeVrrpStatus> = nodes
        .iter()
        .filter(|n| n.state == VrrpState::Master)
        .collect();
    let master = masters.first().map(|n| n.node.clone());
    let last_transition_time = if master == previous.master {
        previous.last_transition_time.clone()
    } else {
        masters
            .first()
            .and_then(|n| n.since.clone())
            .or_else(|| Some(now.to_string()))
    };
    let generation = vip.metadata.generation;
    let (ok, reason, message) = if let Some(why) = &conflict {
        (false, "VRIDConflict", why.clone())
    } else if !problems.is_empty() {
        (false, "InvalidSpec", problems.join("; "))
    } else if masters.len() > 1 {
        (
            false,
            "SplitBrain",
            format!(
                "several nodes report Master: {}",
                masters
                    .iter()
                    .map(|n| n.node.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else if let Some(m) = &master {
        (
            true,
            "MasterElected",
            format!("node {m} holds the addresses"),
        )
    } else {
        (false, "NoMaster", "no node reports Master yet".to_string())
    };
    let master_names: Vec<&str> = masters.iter().map(|n| n.node.as_str()).collect();
    let conditions = vec![
        condition(
            "Ready",
            ok,
            reason,
            message,
            &previous.conditions,
            generation,
            now,
        ),
        split_brain_condition(&master_names, &previous.conditions, generation, now),
        condition(
            "Conflict",
            conflict.is_some(),
            if conflict.is_some() {
                "VRIDConflict"
            } else {
                "NoConflict"
            },
            conflict.unwrap_or_default(),
            &previous.conditions,
            generation,
            now,
        ),
    ];
    // Only an object without problems gets a VRID in status: it is what makes it stable.
    VirtualIPStatus {
        vrid: plan.vrids.get(&name).copied(),
        master,
        nodes,
        last_transition_time,
        conditions,
    }
}

pub fn load_balancer_status(
    lb: &LoadBalancer,
    vips: &[Arc<VirtualIP>],
    view: &View,
    now: Timestamp,
) -> LoadBalancerStatus {
    let reports = &view.reports;
    let previous = lb.status.clone().unwrap_or_default();
    let object = load_balancer_ref(lb);
    let secret_problems = view
        .secret_problems
        .get(&object)
        .cloned()
        .unwrap_or_default();
    // Render reports a Secret that never was valid too; say it once, with its reason.
    let problems: Vec<String> = view
        .problems
        .get(&object)
        .into_iter()
        .flatten()
        .filter(|p| {
            !secret_problems
                .iter()
                .any(|s| p.starts_with(&format!("{}: ", s.field)))
        })
        .cloned()
        .collect();
    let vip = lb
        .spec
        .virtual_ip
        .as_ref()
        .and_then(|n| vips.iter().find(|v| &v.name_any() == n));
    let addresses: Vec<String> = match (&lb.spec.virtual_ip, &lb.spec.addresses) {
        (Some(_), _) => vip
            .map(|v| {
                v.spec
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpPrefix>().ok())
                    .map(|p| p.addr.to_string())
                    .collect()
            })
            .unwrap_or_default(),
        (None, Some(list)) => list.clone(),
        _ => Vec::new(),
    };
    // Prefer what the VIP's master reports; it is the node taking the traffic.
    let master = vip
        .and_then(|v| v.status.as_ref())
        .and_then(|s| s.master.clone());
    let prefix = format!("{}/{}/", lb.namespace().unwrap_or_default(), lb.name_any());
    let listeners: Vec<ListenerStatus> = lb
        .spec
        .listeners
        .iter()
        .map(|l| {
            let full = format!("{prefix}{}", l.name);
            let pick = |r: &NodeReport| r.listeners.iter().find(|x| x.name == full).cloned();
            let from_master = master.as_ref().and_then(|m| reports.get(m)).and_then(pick);
            let best = from_master.or_else(|| {
                reports
                    .values()
                    .filter_map(pick)
                    .max_by_key(|x| x.ready_backends)
            });
            ListenerStatus {
                name: l.name.clone(),
                ready_backends: best.as_ref().map_or(0, |b| b.ready_backends),
                total_backends: best.as_ref().map_or(0, |b| b.total_backends),
            }
        })
        .collect();
    let generation = lb.metadata.generation;
    let reported = reports
        .values()
        .any(|r| r.listeners.iter().any(|x| x.name.starts_with(&prefix)));
    let (ok, reason, message) = if let Some(first) = secret_problems.first() {
        let all: Vec<String> = secret_problems
            .iter()
            .map(ToString::to_string)
            .chain(problems)
            .collect();
        (false, first.reason.as_str(), all.join("; "))
    } else if !problems.is_empty() {
        (false, "InvalidSpec", problems.join("; "))
    } else if !reported {
        (false, "Pending", "no data plane serves it yet".to_string())
    } else if let Some(l) = listeners.iter().find(|l| l.ready_backends == 0) {
        (
            false,
            "NoReadyBackends",
            format!("listener {} has no ready backend", l.name),
        )
    } else {
        (
            true,
            "Serving",
            format!("{} listener(s) serving", listeners.len()),
        )
    };
    LoadBalancerStatus {
        addresses,
        listeners,
        conditions: vec![condition(
            "Ready",
            ok,
            reason,
            message,
            &previous.conditions,
            generation,
            now,
        )],
    }
}

/// A pool's status: what it holds and has left, `Ready=False` (`Exhausted`) while it has
/// no free address.
pub fn pool_status(pool: &VirtualIPPool, usage: PoolUsage, now: Timestamp) -> VirtualIPPoolStatus {
    let previous = pool.status.clone().unwrap_or_default();
    let free = usage.usable.saturating_sub(usage.allocated);
    let (ok, reason, message) = if free == 0 {
        (
            false,
            "Exhausted",
            format!(
                "all {} addresses are held; {} Service(s) wait for one",
                usage.usable, usage.waiting
            ),
        )
    } else {
        (
            true,
            "AddressesFree",
            format!("{} of {} addresses held", usage.allocated, usage.usable),
        )
    };
    VirtualIPPoolStatus {
        allocated: usage.allocated,
        free,
        conditions: vec![condition(
            "Ready",
            ok,
            reason,
            message,
            &previous.conditions,
            pool.metadata.generation,
            now,
        )],
    }
}

/// `SplitBrain`: True, naming the nodes, while more than one reports Master (each
/// believes it holds the addresses: the network between them is cut or drops VRRP).
fn split_brain_condition(
    masters: &[&str],
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let split = masters.len() > 1;
    let (reason, message) = if split {
        (
            "SeveralMasters",
            format!(
                "{} nodes report Master: {}",
                masters.len(),
                masters.join(", ")
            ),
        )
    } else {
        ("OneMaster", "at most one node reports Master".to_string())
    };
    condition(
        "SplitBrain",
        split,
        reason,
        message,
        previous,
        generation,
        now,
    )
}

/// Masters of a VirtualIP's status while it is split (0 otherwise): the metric.
pub fn split_brain_masters(status: &VirtualIPStatus) -> i64 {
    let masters = status
        .nodes
        .iter()
        .filter(|n| n.state == VrrpState::Master)
        .count();
    if masters > 1 {
        i64::try_from(masters).unwrap_or(i64::MAX)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use halo_crds::protocol::{ListenerReport, VrrpReport};
    use halo_crds::render::ObjectRef;

    use super::*;
    use crate::assign::Plan;
    use crate::material::{Reason, SecretProblem};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn vip(name: &str) -> VirtualIP {
        let mut v = VirtualIP::new(
            name,
            serde_json::from_value(serde_json::json!({"addresses": ["192.0.2.10/24"]}))
                .unwrap_or_else(|e| panic!("spec: {e}")),
        );
        v.metadata.generation = Some(2);
        v
    }

    fn report(vip: &str, states: &[VrrpState], listeners: &[(&str, u32, u32)]) -> NodeReport {
        NodeReport {
            vrrp: states
                .iter()
                .map(|s| VrrpReport {
                    vip: vip.into(),
                    state: *s,
                    priority: 100,
                    since_ms_ago: 1_000,
                })
                .collect(),
            listeners: listeners
                .iter()
                .map(|(name, ready, total)| ListenerReport {
                    name: (*name).into(),
                    ready_backends: *ready,
                    total_backends: *total,
                })
                .collect(),
            ..NodeReport::default()
        }
    }

    fn reports(list: &[(&str, NodeReport)]) -> BTreeMap<String, NodeReport> {
        list.iter()
            .map(|(n, r)| (n.to_string(), r.clone()))
            .collect()
    }

    fn ready(conditions: &[Condition]) -> (String, String) {
        conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status.clone(), c.reason.clone()))
            .unwrap_or_default()
    }

    /// (plan, problems, reports) → (Ready, reason, master)
    type VipCase<'a> = (
        Plan,
        BTreeMap<ObjectRef, Vec<String>>,
        Vec<(&'a str, NodeReport)>,
        (&'a str, &'a str, Option<&'a str>),
    );

    #[test]
    fn virtual_ip_ready_reasons() {
        use VrrpState::{Backup, Master};
        let object = virtual_ip_ref(&vip("web"));
        let conflict = Plan {
            conflicts: BTreeMap::from([("web".into(), "VRID 7 is taken".into())]),
            ..Plan::default()
        };
        let problems = BTreeMap::from([(object, vec!["spec.addresses: bad".to_string()])]);
        let cases: Vec<VipCase<'_>> = vec![
            (
                Plan::default(),
                BTreeMap::new(),
                vec![],
                ("False", "NoMaster", None),
            ),
            (
                Plan::default(),
                BTreeMap::new(),
                vec![
                    ("a", report("web", &[Backup], &[])),
                    ("b", report("web", &[Master], &[])),
                ],
                ("True", "MasterElected", Some("b")),
            ),
            (
                Plan::default(),
                BTreeMap::new(),
                vec![
                    ("a", report("web", &[Master], &[])),
                    ("b", report("web", &[Master], &[])),
                ],
                ("False", "SplitBrain", Some("a")),
            ),
            (
                Plan::default(),
                BTreeMap::new(),
                vec![("a", report("other", &[Master], &[]))],
                ("False", "NoMaster", None),
            ),
            (
                conflict,
                BTreeMap::new(),
                vec![("a", report("web", &[Master], &[]))],
                ("False", "VRIDConflict", Some("a")),
            ),
            (
                Plan::default(),
                problems,
                vec![("a", report("web", &[Master], &[]))],
                ("False", "InvalidSpec", Some("a")),
            ),
        ];
        for (plan, problems, list, (status, reason, master)) in cases {
            let view = View {
                plan: Arc::new(plan),
                problems: Arc::new(problems),
                reports: reports(&list),
                ..View::default()
            };
            let got = virtual_ip_status(&vip("web"), &view, at(0));
            assert_eq!(
                ready(&got.conditions),
                (status.into(), reason.into()),
                "{list:?}"
            );
            assert_eq!(got.master.as_deref(), master, "{list:?}");
            let generation = got
                .conditions
                .iter()
                .map(|c| c.observed_generation)
                .collect::<Vec<_>>();
            assert!(generation.iter().all(|g| *g == Some(2)), "{generation:?}");
        }
    }

    #[test]
    fn virtual_ip_times_come_from_now_and_hold_while_nothing_changes() {
        let view = View {
            reports: reports(&[("a", report("web", &[VrrpState::Master], &[]))]),
            ..View::default()
        };
        let first = virtual_ip_status(&vip("web"), &view, at(10));
        // The node's state began since_ms_ago (1 s) before now.
        assert_eq!(
            first.nodes[0].since.as_deref(),
            Some(at(9).to_string().as_str())
        );
        let mut again = vip("web");
        again.status = Some(first.clone());
        let later = virtual_ip_status(&again, &view, at(500));
        assert_eq!(later.nodes, first.nodes);
        assert_eq!(later.last_transition_time, first.last_transition_time);
        assert_eq!(later.conditions, first.conditions);
    }

    fn lb(listeners: &[&str]) -> LoadBalancer {
        let listeners: Vec<serde_json::Value> = listeners
            .iter()
            .map(|l| serde_json::json!({"name": l, "port": 80, "protocol": "HTTP", "backends": []}))
            .collect();
        let mut lb = LoadBalancer::new(
            "web",
            serde_json::from_value(serde_json::json!({"virtualIP": "web", "listeners": listeners}))
                .unwrap_or_else(|e| panic!("spec: {e}")),
        );
        lb.metadata.namespace = Some("shop".into());
        lb
    }

    #[test]
    fn load_balancer_ready_reasons() {
        let object = load_balancer_ref(&lb(&["http"]));
        let secret = SecretProblem {
            field: "spec.listeners[0].tls.certificates[0].secretName".into(),
            secret: crate::material::SecretKey {
                namespace: "shop".into(),
                name: "site".into(),
            },
            reason: Reason::SecretNotFound,
            message: "Secret shop/site not found".into(),
            kept_previous: false,
        };
        let serving = report("web", &[], &[("shop/web/http", 2, 2)]);
        let no_ready = report("web", &[], &[("shop/web/http", 0, 2)]);
        // (problems, secret problems, reports) → (Ready, reason)
        let cases = vec![
            (vec![], vec![], vec![], ("False", "Pending")),
            (
                vec![],
                vec![],
                vec![("a", serving.clone())],
                ("True", "Serving"),
            ),
            (
                vec![],
                vec![],
                vec![("a", no_ready)],
                ("False", "NoReadyBackends"),
            ),
            (
                vec!["spec.listeners[0].port: taken".to_string()],
                vec![],
                vec![("a", serving.clone())],
                ("False", "InvalidSpec"),
            ),
            (
                vec![],
                vec![secret],
                vec![("a", serving)],
                ("False", "SecretNotFound"),
            ),
        ];
        for (problems, secrets, list, (status, reason)) in cases {
            let view = View {
                problems: Arc::new(BTreeMap::from([(object.clone(), problems)])),
                secret_problems: Arc::new(BTreeMap::from([(object.clone(), secrets)])),
                reports: reports(&list),
                ..View::default()
            };
            let got = load_balancer_status(&lb(&["http"]), &[], &view, at(0));
            assert_eq!(
                ready(&got.conditions),
                (status.into(), reason.into()),
                "{list:?}"
            );
        }
    }

    #[test]
    fn a_listener_counts_the_masters_report_first() {
        let mut v = vip("web");
        v.status = Some(VirtualIPStatus {
            master: Some("b".into()),
            ..VirtualIPStatus::default()
        });
        let view = View {
            reports: reports(&[
                ("a", report("web", &[], &[("shop/web/http", 3, 3)])),
                ("b", report("web", &[], &[("shop/web/http", 1, 3)])),
            ]),
            ..View::default()
        };
        let got = load_balancer_status(&lb(&["http"]), &[Arc::new(v)], &view, at(0));
        assert_eq!(got.listeners[0].ready_backends, 1);
        assert_eq!(got.addresses, vec!["192.0.2.10".to_string()]);
    }

    fn node(name: &str, state: VrrpState) -> NodeVrrpStatus {
        NodeVrrpStatus {
            node: name.into(),
            state,
            priority: 100,
            since: None,
        }
    }

    #[test]
    fn split_brain_is_true_naming_the_nodes_only_with_several_masters() {
        for (masters, status, reason, names) in [
            (vec![], "False", "OneMaster", ""),
            (vec!["node-a"], "False", "OneMaster", ""),
            (
                vec!["node-a", "node-b"],
                "True",
                "SeveralMasters",
                "2 nodes report Master: node-a, node-b",
            ),
        ] {
            let c = split_brain_condition(&masters, &[], Some(3), at(0));
            assert_eq!(
                (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
                ("SplitBrain", status, reason)
            );
            assert!(c.message.contains(names), "{}", c.message);
            assert_eq!(c.observed_generation, Some(3));
        }
    }

    #[test]
    fn split_brain_keeps_its_transition_time_while_it_holds() {
        let first = split_brain_condition(&["a", "b"], &[], None, at(0));
        let again =
            split_brain_condition(&["a", "b", "c"], std::slice::from_ref(&first), None, at(60));
        assert_eq!(again.last_transition_time, first.last_transition_time);
        let healed = split_brain_condition(&["a"], std::slice::from_ref(&first), None, at(90));
        assert_eq!(healed.last_transition_time, Time(at(90)));
    }

    #[test]
    fn split_brain_metric_counts_masters_only_when_split() {
        for (states, want) in [
            (vec![VrrpState::Master, VrrpState::Backup], 0),
            (
                vec![VrrpState::Master, VrrpState::Master, VrrpState::Backup],
                2,
            ),
            (vec![VrrpState::Master; 3], 3),
            (vec![], 0),
        ] {
            let status = VirtualIPStatus {
                nodes: states
                    .iter()
                    .enumerate()
                    .map(|(i, s)| node(&format!("n{i}"), *s))
                    .collect(),
                ..VirtualIPStatus::default()
            };
            assert_eq!(split_brain_masters(&status), want);
        }
    }

    #[test]
    fn a_pool_is_exhausted_when_nothing_is_free() {
        let pool = VirtualIPPool::new(
            "lan",
            serde_json::from_value(serde_json::json!({"cidrs": ["192.0.2.0/30"]}))
                .unwrap_or_else(|e| panic!("spec: {e}")),
        );
        for (allocated, waiting, (status, reason), free) in [
            (0, 0, ("True", "AddressesFree"), 2),
            (1, 0, ("True", "AddressesFree"), 1),
            (2, 3, ("False", "Exhausted"), 0),
        ] {
            let usage = PoolUsage {
                allocated,
                usable: 2,
                waiting,
            };
            let got = pool_status(&pool, usage, at(0));
            assert_eq!(ready(&got.conditions), (status.into(), reason.into()));
            assert_eq!((got.allocated, got.free), (allocated, free));
        }
    }
}
