//! The status writer, leader only, and the only one: on every change of what the
//! controller observed it computes the status of every VirtualIP, LoadBalancer,
//! VirtualIPPool and Service of type LoadBalancer (`compute`, pure), and patches, with server-side apply as
//! `halo-controller`, only those that differ from what it last wrote; it also keeps the
//! VirtualIP finalizer and raises an Event whenever readiness changes. Objects come from
//! the render's own watch caches, so status adds no watch of its own.

pub mod compute;
pub mod gateway;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use halo_crds::load_balancer::LoadBalancerStatus;
use halo_crds::pool::VirtualIPPoolStatus;
use halo_crds::virtual_ip::VirtualIPStatus;
use halo_crds::{LoadBalancer, VirtualIP, VirtualIPPool};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::Value;

use self::compute::split_brain_masters;
use crate::gateway::RouteKind;
use crate::gateway::api::{
    Gateway, GatewayClass, GatewayClassStatus, GatewayStatus, HTTPRoute, RouteStatus, TLSRoute,
};
use crate::index::GatewayStores;
use crate::lease::Leader;
use crate::metrics::Metrics;
use crate::observed::{Observed, View};
use crate::services::{Allocations, IngressChange, ServiceId, ingress_changes, pool_usage};

pub const MANAGER: &str = "halo-controller";
pub const FINALIZER: &str = "halo.dev/release";
const RELEASE_GRACE: Duration = Duration::from_secs(30);
/// Status patches in flight at once (a first pass at scale writes every object).
const CONCURRENT_WRITES: usize = 16;
/// A look with nothing pending waits this long for a change before looking again.
const IDLE_LOOK: Duration = Duration::from_secs(30);
/// A look with a failed write or a deletion waiting for its nodes comes back after this.
const RETRY_LOOK: Duration = Duration::from_secs(1);

pub struct Context {
    pub client: Client,
    pub virtual_ips: Store<VirtualIP>,
    pub load_balancers: Store<LoadBalancer>,
    pub pools: Store<VirtualIPPool>,
    pub services: Store<Service>,
    /// Gateway API objects, when the cluster has them.
    pub gateway: Option<GatewayStores>,
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

/// The kinds status is written for, as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    VirtualIP,
    LoadBalancer,
    VirtualIPPool,
    Service,
    GatewayClass,
    Gateway,
    HTTPRoute,
    TLSRoute,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::VirtualIP => "VirtualIP",
            Self::LoadBalancer => "LoadBalancer",
            Self::VirtualIPPool => "VirtualIPPool",
            Self::Service => "Service",
            Self::GatewayClass => "GatewayClass",
            Self::Gateway => "Gateway",
            Self::HTTPRoute => "HTTPRoute",
            Self::TLSRoute => "TLSRoute",
        }
    }
}

/// (kind, namespace, name).
type Key = (Kind, String, String);

fn key_of<K: Resource>(kind: Kind, obj: &K) -> Key {
    (kind, obj.namespace().unwrap_or_default(), obj.name_any())
}

fn ready_of(conditions: &[Condition]) -> Option<(bool, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()))
}

/// What the writer remembers between looks.
#[derive(Default)]
struct Memory {
    /// The status last written per object: a watch cache that has not caught up yet
    /// gets no second patch and no second Event.
    written: BTreeMap<Key, Value>,
    /// Services told that no address can be given, with the reason told.
    unavailable: BTreeMap<Key, String>,
}

/// One patch to make: the object, its new status and whether readiness changed.
struct Write {
    key: Key,
    /// The status as remembered once written (`Null`: nothing to remember).
    remember: Value,
    /// The server-side apply body (`Null`: only the Event).
    status: Value,
    event: Option<Event>,
    object: k8s_openapi::api::core::v1::ObjectReference,
}

/// Runs until the process ends: one look per burst of changes (and a slow periodic one),
/// writing only while this replica leads.
pub async fn run(ctx: Arc<Context>, mut trigger: UnboundedReceiver<()>) {
    let mut memory = Memory::default();
    let mut wait = IDLE_LOOK;
    loop {
        let _ = tokio::time::timeout(wait, trigger.next()).await;
        while trigger.try_recv().is_ok() {}
        if !ctx.leader.is_leader() {
            memory = Memory::default();
            wait = IDLE_LOOK;
            continue;
        }
        wait = if look(&ctx, &mut memory).await {
            RETRY_LOOK
        } else {
            IDLE_LOOK
        };
    }
}

/// One pass over every object; true when something is left to do soon (a failed write,
/// a deletion waiting for its nodes).
async fn look(ctx: &Context, memory: &mut Memory) -> bool {
    let view = ctx.observed.view(Instant::now());
    let now = Timestamp::now();
    let vips = ctx.virtual_ips.state();
    let lbs = ctx.load_balancers.state();
    let services = ctx.services.state();
    let (mut writes, waiting) = plan_virtual_ips(ctx, memory, &vips, &view, now).await;
    for lb in &lbs {
        count(ctx, Kind::LoadBalancer);
        let desired = compute::load_balancer_status(lb, &vips, &view, now);
        let current = lb.status.clone().unwrap_or_default();
        writes.extend(plan_write(
            memory,
            Kind::LoadBalancer,
            lb.as_ref(),
            &current,
            &desired,
        ));
    }
    let pools = ctx.pools.state();
    let allocations = ctx.observed.allocations();
    for pool in &pools {
        count(ctx, Kind::VirtualIPPool);
        let desired = compute::pool_status(pool, pool_usage(pool, &allocations), now);
        let current = pool.status.clone().unwrap_or_default();
        writes.extend(plan_write(
            memory,
            Kind::VirtualIPPool,
            pool.as_ref(),
            &current,
            &desired,
        ));
    }
    writes.extend(plan_services(ctx, memory, &services, &allocations));
    let mut live: std::collections::BTreeSet<Key> = Default::default();
    if let Some(stores) = &ctx.gateway {
        writes.extend(plan_gateway_api(ctx, memory, stores, &view, now, &mut live));
    }
    let failed = write_all(ctx, memory, writes).await;
    live.extend(
        vips.iter()
            .map(|v| key_of(Kind::VirtualIP, v.as_ref()))
            .chain(lbs.iter().map(|l| key_of(Kind::LoadBalancer, l.as_ref())))
            .chain(
                pools
                    .iter()
                    .map(|p| key_of(Kind::VirtualIPPool, p.as_ref())),
            )
            .chain(services.iter().map(|s| key_of(Kind::Service, s.as_ref()))),
    );
    memory.written.retain(|k, _| live.contains(k));
    waiting || failed
}

/// The VirtualIPs' writes, after their finalizers; true when a deletion waits for its
/// nodes or a finalizer patch failed.
async fn plan_virtual_ips(
    ctx: &Context,
    memory: &Memory,
    vips: &[Arc<VirtualIP>],
    view: &View,
    now: Timestamp,
) -> (Vec<Write>, bool) {
    let mut writes = Vec::new();
    let mut pending = false;
    for vip in vips {
        count(ctx, Kind::VirtualIP);
        match release_finalizer(vip, ctx, view).await {
            Ok(Finalizer::Kept) => {}
            Ok(Finalizer::Deleting { waiting }) => {
                pending |= waiting;
                continue;
            }
            Err(e) => {
                failed(ctx, Kind::VirtualIP, &e);
                pending = true;
                continue;
            }
        }
        let desired = compute::virtual_ip_status(vip, view, now);
        ctx.metrics
            .split_brain
            .get_or_create(&vec![("virtual_ip", vip.name_any())])
            .set(split_brain_masters(&desired));
        let current = vip.status.clone().unwrap_or_default();
        writes.extend(plan_write(
            memory,
            Kind::VirtualIP,
            vip.as_ref(),
            &current,
            &desired,
        ));
    }
    (writes, pending)
}

/// The Services' address writes and Events.
fn plan_services(
    ctx: &Context,
    memory: &mut Memory,
    services: &[Arc<Service>],
    allocations: &Allocations,
) -> Vec<Write> {
    let refs: Vec<&Service> = services.iter().map(AsRef::as_ref).collect();
    let changes = ingress_changes(&refs, allocations);
    let keys: std::collections::BTreeSet<Key> = changes
        .iter()
        .map(|(id, _)| (Kind::Service, id.0.clone(), id.1.clone()))
        .collect();
    memory.unavailable.retain(|k, _| keys.contains(k));
    let mut writes = Vec::new();
    for (id, change) in changes {
        count(ctx, Kind::Service);
        let found = refs
            .iter()
            .find(|s| s.namespace().as_ref() == Some(&id.0) && s.name_any() == id.1);
        if let Some(svc) = found {
            writes.extend(plan_service(memory, svc, &id, change));
        }
    }
    writes
}

/// The Gateway API objects' writes (only those the translation reported on: other
/// controllers' classes, Gateways and routes are left alone); their keys go to `live`.
fn plan_gateway_api(
    ctx: &Context,
    memory: &Memory,
    stores: &GatewayStores,
    view: &View,
    now: Timestamp,
    live: &mut std::collections::BTreeSet<Key>,
) -> Vec<Write> {
    let reports = ctx.observed.gateway_reports();
    let mut writes = Vec::new();
    for class in stores.classes.state() {
        let Some((generation, accepted)) = reports.classes.get(&class.name_any()) else {
            continue;
        };
        count(ctx, Kind::GatewayClass);
        live.insert(key_of(Kind::GatewayClass, class.as_ref()));
        let desired = gateway::class_status(&class, *generation, accepted, now);
        let current = class.status.clone().unwrap_or_default();
        writes.extend(plan_write(
            memory,
            Kind::GatewayClass,
            class.as_ref(),
            &current,
            &desired,
        ));
    }
    for gw in stores.gateways.state() {
        let id = (gw.namespace().unwrap_or_default(), gw.name_any());
        let Some(report) = reports.gateways.get(&id) else {
            continue;
        };
        count(ctx, Kind::Gateway);
        live.insert(key_of(Kind::Gateway, gw.as_ref()));
        let desired = gateway::gateway_status(&gw, report, view, now);
        let current = gw.status.clone().unwrap_or_default();
        writes.extend(plan_write(
            memory,
            Kind::Gateway,
            gw.as_ref(),
            &current,
            &desired,
        ));
    }
    for route in stores.http_routes.state() {
        writes.extend(plan_route(
            ctx,
            memory,
            &reports,
            live,
            route.as_ref(),
            route.status.as_ref(),
            now,
        ));
    }
    for route in stores.tls_routes.iter().flat_map(Store::state) {
        writes.extend(plan_route(
            ctx,
            memory,
            &reports,
            live,
            route.as_ref(),
            route.status.as_ref(),
            now,
        ));
    }
    writes
}

/// The status write of one route of any kind Halo attaches.
fn plan_route<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    memory: &Memory,
    reports: &crate::gateway::Reports,
    live: &mut std::collections::BTreeSet<Key>,
    route: &K,
    status: Option<&RouteStatus>,
    now: Timestamp,
) -> Option<Write> {
    let (kind, route_kind) = match K::kind(&()).as_ref() {
        "TLSRoute" => (Kind::TLSRoute, RouteKind::Tls),
        _ => (Kind::HTTPRoute, RouteKind::Http),
    };
    let id = (
        route_kind,
        route.namespace().unwrap_or_default(),
        route.name_any(),
    );
    let (generation, parents) = reports.routes.get(&id)?;
    count(ctx, kind);
    live.insert(key_of(kind, route));
    let desired = gateway::route_status(status, *generation, parents, now);
    let current = status.cloned().unwrap_or_default();
    plan_write(memory, kind, route, &current, &desired)
}

/// Makes the writes, a few at a time, and remembers what was written; true when one
/// failed (it is tried again on the next look).
async fn write_all(ctx: &Context, memory: &mut Memory, writes: Vec<Write>) -> bool {
    let done: Vec<(Key, Value, bool)> = futures::stream::iter(writes)
        .map(|w| async move {
            let ok = execute(ctx, &w).await;
            (w.key, w.remember, ok)
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    let mut failed = false;
    for (key, status, ok) in done {
        match (ok, status.is_null()) {
            (true, false) => {
                memory.written.insert(key, status);
            }
            (true, true) => {}
            (false, _) => failed = true,
        }
    }
    failed
}

fn count(ctx: &Context, kind: Kind) {
    ctx.metrics
        .reconciles
        .get_or_create(&vec![("kind", kind.label().to_string())])
        .inc();
}

fn failed(ctx: &Context, kind: Kind, error: &StatusError) {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&vec![("kind", kind.label().to_string())])
        .inc();
    tracing::warn!(kind = kind.label(), error = %error, "status write failed; retrying");
}

/// A status with conditions, as every kind written here has.
trait WithConditions: serde::Serialize {
    fn conditions(&self) -> &[Condition];
}

impl WithConditions for VirtualIPStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl WithConditions for LoadBalancerStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl WithConditions for GatewayClassStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl WithConditions for GatewayStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// A route's conditions are per parent; it has no Ready for an Event.
impl WithConditions for RouteStatus {
    fn conditions(&self) -> &[Condition] {
        &[]
    }
}

impl WithConditions for VirtualIPPoolStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// The patch that makes `obj`'s status `desired`, unless it has it or was last given it;
/// with an Event when readiness changes.
fn plan_write<K, S>(memory: &Memory, kind: Kind, obj: &K, current: &S, desired: &S) -> Option<Write>
where
    K: Resource<DynamicType = ()>,
    S: WithConditions,
{
    let key = key_of(kind, obj);
    let status = serde_json::to_value(desired).ok()?;
    let now_there = serde_json::to_value(current).ok();
    let last = memory.written.get(&key);
    if now_there.as_ref() == Some(&status) || last == Some(&status) {
        return None;
    }
    // Readiness as last written, or as the object shows it.
    let before = last
        .and_then(|v| serde_json::from_value::<Vec<Condition>>(v["conditions"].clone()).ok())
        .map_or_else(|| ready_of(current.conditions()), |c| ready_of(&c));
    let event = ready_event(before, desired.conditions());
    let body = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    Some(Write {
        key,
        remember: status,
        status: body,
        event,
        object: obj.object_ref(&()),
    })
}

/// The Event for a readiness change (none when the condition and reason stay).
fn ready_event(before: Option<(bool, String, String)>, after: &[Condition]) -> Option<Event> {
    let (ok, reason, message) = ready_of(after)?;
    if before
        .as_ref()
        .is_some_and(|(b, r, _)| *b == ok && *r == reason)
    {
        return None;
    }
    Some(Event {
        type_: if ok {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason,
        note: Some(message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    })
}

/// A Service's address to write, or the Event saying there is none (once per reason).
fn plan_service(
    memory: &mut Memory,
    svc: &Service,
    id: &ServiceId,
    change: IngressChange,
) -> Option<Write> {
    let key = (Kind::Service, id.0.clone(), id.1.clone());
    match change {
        IngressChange::Assign(address) => {
            let status = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": id.1, "namespace": id.0},
                "status": {"loadBalancer": {"ingress": [{"ip": address.to_string(), "ipMode": "VIP"}]}}
            });
            if memory.written.get(&key) == Some(&status) {
                return None;
            }
            Some(Write {
                key,
                remember: status.clone(),
                status,
                event: None,
                object: svc.object_ref(&()),
            })
        }
        IngressChange::Unavailable(why) => {
            // An address it held and may no longer (its request changed): nothing announces
            // it any more, so the status must not show it. Applying an empty loadBalancer
            // releases the ingress this manager owned.
            let status = if crate::services::current_ingress(svc).is_some() {
                serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": id.1, "namespace": id.0},
                    "status": {"loadBalancer": {}}
                })
            } else {
                Value::Null
            };
            let said = memory.unavailable.get(&key) == Some(&why);
            if said && (status.is_null() || memory.written.get(&key) == Some(&status)) {
                return None;
            }
            tracing::warn!(namespace = %id.0, service = %id.1, reason = %why, "no address for Service");
            memory.unavailable.insert(key.clone(), why.clone());
            Some(Write {
                key,
                remember: status.clone(),
                status,
                event: Some(Event {
                    type_: EventType::Warning,
                    reason: "AddressUnavailable".into(),
                    note: Some(why),
                    action: "Allocate".into(),
                    secondary: None,
                }),
                object: svc.object_ref(&()),
            })
        }
    }
}

/// Server-side apply of `status` on the status subresource, as the one status writer.
async fn patch_status<K>(api: Api<K>, name: &str, status: &Value) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams::apply(MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(status))
        .await
        .map(|_| ())
}

/// Patches the status (a `Null` status: only the Event) and publishes the Event.
async fn execute(ctx: &Context, w: &Write) -> bool {
    let (kind, namespace, name) = &w.key;
    if !w.status.is_null() {
        let (client, ns) = (ctx.client.clone(), namespace.as_str());
        let result = match kind {
            Kind::VirtualIP => patch_status(Api::<VirtualIP>::all(client), name, &w.status).await,
            Kind::VirtualIPPool => {
                patch_status(Api::<VirtualIPPool>::all(client), name, &w.status).await
            }
            Kind::LoadBalancer => {
                patch_status(Api::<LoadBalancer>::namespaced(client, ns), name, &w.status).await
            }
            Kind::Service => {
                patch_status(Api::<Service>::namespaced(client, ns), name, &w.status).await
            }
            Kind::GatewayClass => {
                patch_status(Api::<GatewayClass>::all(client), name, &w.status).await
            }
            Kind::Gateway => {
                patch_status(Api::<Gateway>::namespaced(client, ns), name, &w.status).await
            }
            Kind::HTTPRoute => {
                patch_status(Api::<HTTPRoute>::namespaced(client, ns), name, &w.status).await
            }
            Kind::TLSRoute => {
                patch_status(Api::<TLSRoute>::namespaced(client, ns), name, &w.status).await
            }
        };
        match result {
            Ok(()) => {}
            // Deleted meanwhile: nothing left to write.
            Err(kube::Error::Api(e)) if e.code == 404 => return true,
            Err(e) => {
                failed(ctx, *kind, &StatusError::Patch(e));
                return false;
            }
        }
        ctx.metrics
            .status_patches
            .get_or_create(&vec![("kind", kind.label().to_string())])
            .inc();
        if *kind == Kind::Service {
            tracing::info!(%namespace, service = %name, "Service address assigned");
        }
    }
    if let Some(event) = &w.event
        && let Err(e) = ctx.recorder.publish(event, &w.object).await
    {
        tracing::warn!(error = %e, "cannot publish Event");
    }
    true
}

/// Where a VirtualIP's finalizer stands.
enum Finalizer {
    /// Not being deleted (the finalizer is in place).
    Kept,
    /// Being deleted; `waiting` while data planes still report it.
    Deleting { waiting: bool },
}

/// Deleting a VirtualIP waits until no data plane reports it any more (they released the
/// addresses), or at most `RELEASE_GRACE`, so an address never outlives its object
/// unnoticed.
async fn release_finalizer(
    vip: &VirtualIP,
    ctx: &Context,
    view: &View,
) -> Result<Finalizer, StatusError> {
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
        return Ok(Finalizer::Kept);
    };
    if !has {
        return Ok(Finalizer::Deleting { waiting: false });
    }
    let name = vip.name_any();
    let still_held: Vec<&String> = view
        .reports
        .iter()
        .filter(|(_, r)| r.vrrp.iter().any(|v| v.vip == name))
        .map(|(node, _)| node)
        .collect();
    let waited = Timestamp::now().duration_since(deleted.0);
    if !still_held.is_empty() && waited.as_secs_f64() < RELEASE_GRACE.as_secs_f64() {
        tracing::info!(vip = %name, nodes = ?still_held, "waiting for data planes to release the addresses");
        return Ok(Finalizer::Deleting { waiting: true });
    }
    let rest: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
    let patch = serde_json::json!({"metadata": {"finalizers": rest, "resourceVersion": vip.metadata.resource_version}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(Finalizer::Deleting { waiting: false }),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Finalizer::Deleting { waiting: false }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use halo_crds::virtual_ip::VirtualIPStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn ready(ok: bool, reason: &str) -> Vec<Condition> {
        vec![Condition {
            type_: "Ready".into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: format!("{reason} message"),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }]
    }

    fn status(ok: bool, reason: &str, master: &str) -> VirtualIPStatus {
        VirtualIPStatus {
            master: Some(master.into()),
            conditions: ready(ok, reason),
            ..VirtualIPStatus::default()
        }
    }

    fn vip() -> VirtualIP {
        VirtualIP::new(
            "web",
            serde_json::from_value(serde_json::json!({"addresses": ["192.0.2.10/24"]}))
                .unwrap_or_else(|e| panic!("spec: {e}")),
        )
    }

    #[test]
    fn a_status_is_written_once_and_readiness_changes_raise_one_event() {
        let mut memory = Memory::default();
        let obj = vip();
        let plan = |memory: &Memory, current: &VirtualIPStatus, desired: &VirtualIPStatus| {
            plan_write(memory, Kind::VirtualIP, &obj, current, desired)
        };
        let elected = status(true, "MasterElected", "a");
        let moved = status(true, "MasterElected", "b");
        let none = status(false, "NoMaster", "a");
        // The object has it already: nothing.
        assert!(plan(&memory, &elected, &elected).is_none());
        // A new master, same readiness: a patch, no Event.
        let w = plan(&memory, &elected, &moved).unwrap_or_else(|| panic!("a write"));
        assert!(w.event.is_none());
        assert_eq!(w.status["status"]["master"], "b");
        memory.written.insert(w.key, w.remember);
        // The cache still shows the old status: the write is not repeated.
        assert!(plan(&memory, &elected, &moved).is_none());
        // Readiness changes against what was last written: one Event with the reason.
        let w = plan(&memory, &elected, &none).unwrap_or_else(|| panic!("a write"));
        let event = w.event.unwrap_or_else(|| panic!("an Event"));
        assert_eq!(
            (event.reason.as_str(), event.type_),
            ("NoMaster", EventType::Warning)
        );
    }

    #[test]
    fn an_unavailable_service_address_is_told_once_per_reason() {
        let mut memory = Memory::default();
        let svc = Service {
            metadata: kube::api::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            ..Service::default()
        };
        let id = ("shop".to_string(), "web".to_string());
        let full = || IngressChange::Unavailable("every VirtualIPPool address is in use".into());
        assert!(plan_service(&mut memory, &svc, &id, full()).is_some_and(|w| w.event.is_some()));
        assert!(plan_service(&mut memory, &svc, &id, full()).is_none());
        let other = IngressChange::Unavailable("no VirtualIPPool to allocate from".into());
        assert!(plan_service(&mut memory, &svc, &id, other).is_some());
        let assign = IngressChange::Assign(std::net::IpAddr::from([192, 0, 2, 1]));
        let w = plan_service(&mut memory, &svc, &id, assign).unwrap_or_else(|| panic!("a write"));
        assert_eq!(
            w.status["status"]["loadBalancer"]["ingress"][0]["ip"],
            "192.0.2.1"
        );
    }
}
