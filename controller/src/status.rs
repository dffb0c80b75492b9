//! Status reconcilers (kube-runtime Controllers for VirtualIP and LoadBalancer): turn
//! render problems, VRID assignments and data plane reports into `.status`, with
//! Ready/Conflict conditions and an Event whenever readiness changes. Leader only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use halo_crds::load_balancer::{ListenerStatus, LoadBalancerStatus};
use halo_crds::net::IpPrefix;
use halo_crds::protocol::{NodeReport, VrrpState};
use halo_crds::render::{load_balancer_ref, virtual_ip_ref};
use halo_crds::virtual_ip::{NodeVrrpStatus, VirtualIPStatus};
use halo_crds::{LoadBalancer, VirtualIP};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use crate::lease::Leader;
use crate::metrics::Metrics;
use crate::reconcile::Shared;

pub const MANAGER: &str = "halo-controller";
pub const FINALIZER: &str = "halo.dev/release";
const RELEASE_GRACE: Duration = Duration::from_secs(30);

pub struct Context {
    pub client: Client,
    /// The index's VirtualIPs, read by LoadBalancer reconciles.
    pub virtual_ips: kube::runtime::reflector::Store<VirtualIP>,
    pub shared: Arc<Shared>,
    pub leader: Arc<Leader>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("status patch failed: {0}")]
    Patch(#[from] kube::Error),
    #[error("serialising status: {0}")]
    Json(#[from] serde_json::Error),
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    previous: &[Condition],
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status stays the same.
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(
            || Time(Timestamp::now()),
            |c| c.last_transition_time.clone(),
        );
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    }
}

fn ready_of(conditions: &[Condition]) -> Option<(bool, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()))
}

/// Equal apart from timestamps that only move when something else moved.
fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

pub fn virtual_ip_status(
    vip: &VirtualIP,
    shared: &Shared,
    reports: &BTreeMap<String, NodeReport>,
) -> VirtualIPStatus {
    let name = vip.name_any();
    let previous = vip.status.clone().unwrap_or_default();
    let plan = shared.plan.load();
    let problems = shared
        .problems
        .load()
        .get(&virtual_ip_ref(vip))
        .cloned()
        .unwrap_or_default();
    let conflict = plan.conflicts.get(&name).cloned();
    let mut nodes: Vec<NodeVrrpStatus> = reports
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
                    Timestamp::now()
                        .checked_sub(SignedDuration::from_millis(
                            i64::try_from(v.since_ms_ago).unwrap_or(0),
                        ))
                        .unwrap_or_else(|_| Timestamp::now())
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
            .or_else(|| Some(Timestamp::now().to_string()))
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
        ),
        split_brain_condition(&master_names, &previous.conditions, generation),
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
    shared: &Shared,
    reports: &BTreeMap<String, NodeReport>,
) -> LoadBalancerStatus {
    let previous = lb.status.clone().unwrap_or_default();
    let object = load_balancer_ref(lb);
    let secret_problems = shared
        .secret_problems
        .load()
        .get(&object)
        .cloned()
        .unwrap_or_default();
    // Render reports a Secret that never was valid too; say it once, with its reason.
    let problems: Vec<String> = shared
        .problems
        .load()
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
        )],
    }
}

/// `SplitBrain`: True, naming the nodes, while more than one reports Master (each
/// believes it holds the addresses: the network between them is cut or drops VRRP).
fn split_brain_condition(
    masters: &[&str],
    previous: &[Condition],
    generation: Option<i64>,
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
    condition("SplitBrain", split, reason, message, previous, generation)
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

async fn publish_ready_change<K>(
    ctx: &Context,
    obj: &K,
    before: Option<(bool, String, String)>,
    after: &[Condition],
) where
    K: Resource<DynamicType = ()>,
{
    let Some((ok, reason, message)) = ready_of(after) else {
        return;
    };
    if before
        .as_ref()
        .is_some_and(|(b, r, _)| *b == ok && *r == reason)
    {
        return;
    }
    let event = Event {
        type_: if ok {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason,
        note: Some(message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish Event");
    }
}

/// Counts the reconcile; returns an action when this replica is not the one to write.
fn standby(ctx: &Context, kind: &str) -> Option<Action> {
    if !ctx.leader.is_leader() {
        return Some(Action::requeue(Duration::from_secs(5)));
    }
    ctx.metrics
        .reconciles
        .get_or_create(&vec![("kind", kind.to_string())])
        .inc();
    None
}

/// Writes `desired` as the object's status (server-side apply) when it differs from
/// `current`, and publishes an Event when readiness changed.
async fn write_status<K, S>(
    ctx: &Context,
    api: Api<K>,
    obj: &K,
    (current, current_conditions): (&S, &[Condition]),
    (desired, desired_conditions): (&S, &[Condition]),
) -> Result<(), StatusError>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    if same(desired, current) {
        return Ok(());
    }
    let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": desired});
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    publish_ready_change(ctx, obj, ready_of(current_conditions), desired_conditions).await;
    Ok(())
}

async fn reconcile_vip(vip: Arc<VirtualIP>, ctx: Arc<Context>) -> Result<Action, StatusError> {
    if let Some(action) = standby(&ctx, "VirtualIP") {
        return Ok(action);
    }
    if let Some(action) = release_finalizer(&vip, &ctx).await? {
        return Ok(action);
    }
    let desired = virtual_ip_status(&vip, &ctx.shared, &ctx.shared.reports());
    ctx.metrics
        .split_brain
        .get_or_create(&vec![("virtual_ip", vip.name_any())])
        .set(split_brain_masters(&desired));
    let current = vip.status.clone().unwrap_or_default();
    let api: Api<VirtualIP> = Api::all(ctx.client.clone());
    write_status(
        &ctx,
        api,
        vip.as_ref(),
        (&current, &current.conditions),
        (&desired, &desired.conditions),
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(60)))
}

async fn reconcile_lb(lb: Arc<LoadBalancer>, ctx: Arc<Context>) -> Result<Action, StatusError> {
    if let Some(action) = standby(&ctx, "LoadBalancer") {
        return Ok(action);
    }
    let vips: Vec<Arc<VirtualIP>> = ctx.virtual_ips.state();
    let desired = load_balancer_status(&lb, &vips, &ctx.shared, &ctx.shared.reports());
    let current = lb.status.clone().unwrap_or_default();
    let api: Api<LoadBalancer> =
        Api::namespaced(ctx.client.clone(), &lb.namespace().unwrap_or_default());
    write_status(
        &ctx,
        api,
        lb.as_ref(),
        (&current, &current.conditions),
        (&desired, &desired.conditions),
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// Deleting a VirtualIP waits until no data plane reports it any more (they released the
/// addresses), or at most `RELEASE_GRACE`, so an address never outlives its object
/// unnoticed. Returns an action when the object is being deleted.
async fn release_finalizer(vip: &VirtualIP, ctx: &Context) -> Result<Option<Action>, StatusError> {
    let api: Api<VirtualIP> = Api::all(ctx.client.clone());
    let finalizers = vip.metadata.finalizers.clone().unwrap_or_default();
    let has = finalizers.iter().any(|f| f == FINALIZER);
    let Some(deleted) = &vip.metadata.deletion_timestamp else {
        if !has {
            let mut list = finalizers;
            list.push(FINALIZER.to_string());
            let patch = serde_json::json!({"metadata": {"finalizers": list, "resourceVersion": vip.metadata.resource_version}});
            api.patch(
                &vip.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        }
        return Ok(None);
    };
    if !has {
        return Ok(Some(Action::await_change()));
    }
    let name = vip.name_any();
    let still_held: Vec<String> = ctx
        .shared
        .reports()
        .iter()
        .filter(|(_, r)| r.vrrp.iter().any(|v| v.vip == name))
        .map(|(node, _)| node.clone())
        .collect();
    let waited = Timestamp::now().duration_since(deleted.0);
    if !still_held.is_empty() && waited.as_secs_f64() < RELEASE_GRACE.as_secs_f64() {
        tracing::info!(vip = %name, nodes = ?still_held, "waiting for data planes to release the addresses");
        return Ok(Some(Action::requeue(Duration::from_secs(1))));
    }
    let rest: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
    let patch = serde_json::json!({"metadata": {"finalizers": rest, "resourceVersion": vip.metadata.resource_version}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(Some(Action::await_change()))
}

fn retry<K>(_obj: Arc<K>, error: &StatusError, ctx: Arc<Context>) -> Action {
    // Deleted while we were reconciling it: nothing left to do.
    if let StatusError::Patch(kube::Error::Api(e)) = error
        && e.code == 404
    {
        return Action::await_change();
    }
    ctx.metrics
        .reconcile_errors
        .get_or_create(&vec![("kind", std::any::type_name::<K>().into())])
        .inc();
    tracing::warn!(error = %error, "status reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

pub async fn run_virtual_ips(ctx: Arc<Context>, trigger: UnboundedReceiver<()>) {
    Controller::new(
        Api::<VirtualIP>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(trigger)
    .run(reconcile_vip, retry, ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}

pub async fn run_load_balancers(ctx: Arc<Context>, trigger: UnboundedReceiver<()>) {
    Controller::new(
        Api::<LoadBalancer>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(trigger)
    .run(reconcile_lb, retry, ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let c = split_brain_condition(&masters, &[], Some(3));
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
        let first = split_brain_condition(&["a", "b"], &[], None);
        let again = split_brain_condition(&["a", "b", "c"], std::slice::from_ref(&first), None);
        assert_eq!(again.last_transition_time, first.last_transition_time);
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
            assert_eq!(split_brain_masters(&status), want, "{states:?}");
        }
    }
}
