//! The status writer, leader only: kube-runtime Controllers for VirtualIP and
//! LoadBalancer and a loop for Services turn what the controller observed into `.status`
//! (computed by `compute`, written with server-side apply as `halo-controller` only when
//! it differs), the VirtualIP finalizer, and an Event whenever readiness changes.

pub mod compute;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use halo_crds::{LoadBalancer, VirtualIP};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use self::compute::{load_balancer_status, split_brain_masters, virtual_ip_status};
use crate::lease::Leader;
use crate::metrics::Metrics;
use crate::observed::Observed;
use crate::services::{IngressChange, ServiceId, ingress_changes};

pub const MANAGER: &str = "halo-controller";
pub const FINALIZER: &str = "halo.dev/release";
const RELEASE_GRACE: Duration = Duration::from_secs(30);

pub struct Context {
    pub client: Client,
    /// The index's VirtualIPs, read by LoadBalancer reconciles.
    pub virtual_ips: Store<VirtualIP>,
    /// The index's Services, whose addresses the Service loop writes.
    pub services: Store<Service>,
    pub observed: Arc<Observed>,
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
    let view = ctx.observed.view(Instant::now());
    let desired = virtual_ip_status(&vip, &view, Timestamp::now());
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
    let view = ctx.observed.view(Instant::now());
    let desired = load_balancer_status(&lb, &vips, &view, Timestamp::now());
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
        .observed
        .reports(Instant::now())
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

/// Services of type LoadBalancer: writes `status.loadBalancer.ingress` where it differs
/// from the last render's allocation, and raises an Event (once per reason) when no
/// address can be given. Runs on every observation change while leading.
pub async fn run_services(ctx: Arc<Context>, mut trigger: UnboundedReceiver<()>) {
    let mut said: BTreeMap<ServiceId, String> = BTreeMap::new();
    while trigger.next().await.is_some() {
        // A burst of changes is one look.
        while trigger.try_recv().is_ok() {}
        if !ctx.leader.is_leader() {
            said.clear();
            continue;
        }
        let services = ctx.services.state();
        let refs: Vec<&Service> = services.iter().map(AsRef::as_ref).collect();
        let allocations = ctx.observed.allocations();
        let changes = ingress_changes(&refs, &allocations);
        said.retain(|id, _| changes.iter().any(|(c, _)| c == id));
        for (id, change) in changes {
            let Some(svc) = refs
                .iter()
                .find(|s| s.namespace().as_ref() == Some(&id.0) && s.name_any() == id.1)
            else {
                continue;
            };
            match change {
                IngressChange::Assign(address) => write_ingress(&ctx, &id, address).await,
                IngressChange::Unavailable(why) => {
                    if said.get(&id) != Some(&why) {
                        tracing::warn!(namespace = %id.0, service = %id.1, reason = %why, "no address for Service");
                        let event = Event {
                            type_: EventType::Warning,
                            reason: "AddressUnavailable".into(),
                            note: Some(why.clone()),
                            action: "Allocate".into(),
                            secondary: None,
                        };
                        if let Err(e) = ctx.recorder.publish(&event, &svc.object_ref(&())).await {
                            tracing::warn!(error = %e, "cannot publish Event");
                        }
                        said.insert(id, why);
                    }
                }
            }
        }
    }
}

async fn write_ingress(ctx: &Context, id: &ServiceId, address: std::net::IpAddr) {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &id.0);
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": id.1, "namespace": id.0},
        "status": {"loadBalancer": {"ingress": [{"ip": address.to_string(), "ipMode": "VIP"}]}}
    });
    let params = PatchParams::apply(MANAGER).force();
    match api.patch_status(&id.1, &params, &Patch::Apply(patch)).await {
        Ok(_) => {
            tracing::info!(namespace = %id.0, service = %id.1, %address, "Service address assigned");
        }
        Err(e) => {
            tracing::warn!(namespace = %id.0, service = %id.1, error = %e, "cannot write Service status");
        }
    }
}
