//! The render loop: on any change, assign VRIDs and priorities, render every node's
//! NodeConfig with the shared pure render, hand changed ones to the hub, and record the
//! problems that status reconciles turn into conditions and Events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use futures::channel::mpsc::UnboundedSender;
use halo_crds::protocol::NodeReport;
use halo_crds::render::{
    Assignments, Material, ObjectRef, RenderInput, RenderOptions, VipAssignment, render,
    virtual_ip_ref,
};
use halo_crds::{LoadBalancer, VirtualIP};
use kube::ResourceExt;

use crate::assign::{self, Plan};
use crate::index::Index;
use crate::material::{self, Resolver, SecretKey, SecretProblem};
use crate::metrics::Metrics;
use crate::stream::Hub;
use crate::world;

/// What render found, shared with the status reconcilers and the stream server.
#[derive(Default)]
pub struct Shared {
    pub plan: ArcSwap<Plan>,
    /// Problems per object, as "field: message", deduplicated across nodes.
    pub problems: ArcSwap<BTreeMap<ObjectRef, Vec<String>>>,
    /// Referenced Secrets that are missing or invalid now, per LoadBalancer. Render may
    /// not see them: it gets the last valid contents while there are some.
    pub secret_problems: ArcSwap<BTreeMap<ObjectRef, Vec<SecretProblem>>>,
    /// Latest report of each node, with when it came.
    pub reports: Mutex<BTreeMap<String, (NodeReport, Instant)>>,
    /// The Node objects at the last render (`None` before it): a deleted node's reports
    /// stop counting at once.
    pub nodes: ArcSwapOption<BTreeSet<String>>,
    /// Each node's config streams to this replica.
    streams: Mutex<BTreeMap<String, Presence>>,
    triggers: Mutex<Vec<UnboundedSender<()>>>,
}

/// How long a node's report still counts after its last config stream closed: long
/// enough for a reconnect, short enough that a dead master leaves the status quickly.
pub const CLOSED_STREAM_GRACE: Duration = Duration::from_millis(500);

/// How long a report counts without a newer one: data planes send one at least every
/// 30 s, so two missed refreshes. It bounds a report whose stream never looked broken
/// (a node cut off without a reset, a stream this replica ended itself).
pub const REPORT_TTL: Duration = Duration::from_secs(65);

/// A node's config streams: how many are open, and when the last one closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Presence {
    pub open: usize,
    pub closed_at: Option<Instant>,
}

/// Whether a node's report, received at `received`, counts at `now`: for `REPORT_TTL`,
/// and meanwhile while the node holds a stream, when its stream never broke (reports
/// may come first; this replica may have ended it), and for `CLOSED_STREAM_GRACE`
/// after its last stream broke. A data plane that died keeps no `Master` in status.
pub fn report_counts(presence: Option<&Presence>, received: Instant, now: Instant) -> bool {
    if now.saturating_duration_since(received) >= REPORT_TTL {
        return false;
    }
    match presence {
        Some(Presence {
            open: 0,
            closed_at: Some(at),
        }) => now.saturating_duration_since(*at) < CLOSED_STREAM_GRACE,
        _ => true,
    }
}

impl Shared {
    pub fn add_trigger(&self, tx: UnboundedSender<()>) {
        if let Ok(mut t) = self.triggers.lock() {
            t.push(tx);
        }
    }

    /// Asks every status reconciler to look at all its objects again.
    pub fn trigger(&self) {
        if let Ok(t) = self.triggers.lock() {
            for tx in t.iter() {
                let _ = tx.unbounded_send(());
            }
        }
    }

    /// The reports that count (see [`report_counts`]) of nodes that exist.
    pub fn reports(&self) -> BTreeMap<String, NodeReport> {
        let streams = self.streams.lock().map(|s| s.clone()).unwrap_or_default();
        let nodes = self.nodes.load();
        let now = Instant::now();
        self.reports
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(k, _)| nodes.as_ref().is_none_or(|n| n.contains(*k)))
                    .filter(|(k, (_, at))| report_counts(streams.get(*k), *at, now))
                    .map(|(k, (v, _))| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn stream_opened(&self, node: &str) {
        if let Ok(mut s) = self.streams.lock() {
            s.entry(node.to_string()).or_default().open += 1;
        }
        self.trigger();
    }

    /// A config stream of `node` ended; `gone`: the data plane went away (the stream
    /// broke), rather than this replica ending it (leadership lost, shutdown), which
    /// says nothing about the node.
    pub fn stream_closed(&self, node: &str, gone: bool) {
        if let Ok(mut s) = self.streams.lock() {
            let p = s.entry(node.to_string()).or_default();
            p.open = p.open.saturating_sub(1);
            p.closed_at = gone.then(Instant::now);
        }
    }

    pub fn record_report(&self, node: &str, report: NodeReport) {
        if let Ok(mut r) = self.reports.lock() {
            r.insert(node.to_string(), (report, Instant::now()));
        }
        self.trigger();
    }
}

pub struct Renderer {
    pub index: Index,
    pub hub: Arc<Hub>,
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    pub vrid_range: (u8, u8),
    pub options: RenderOptions,
    /// Writes Services' `status.loadBalancer` while this replica leads.
    pub service_status: Option<(kube::Client, Arc<crate::lease::Leader>)>,
    /// The last valid contents of every referenced Secret.
    pub resolver: Mutex<Resolver>,
}

/// How long reading newly referenced Secrets may hold up a render.
const SECRET_READ_LIMIT: Duration = Duration::from_secs(10);

impl Renderer {
    pub async fn run(self) {
        loop {
            self.index.changed.notified().await;
            // Coalesce a burst of watch events into one render.
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.load_material().await;
            // A large render takes a while: let the runtime move other tasks off this
            // worker meanwhile.
            tokio::task::block_in_place(|| self.render_once());
        }
    }

    /// Reads the referenced Secrets whose contents the watches dropped (they were not
    /// referenced before); call before `render_once`.
    pub async fn load_material(&self) {
        let lbs = self.index.load_balancers.state();
        let wanted: BTreeSet<SecretKey> = material::references(&lbs)
            .into_iter()
            .map(|r| r.secret)
            .collect();
        let read = async {
            self.index.tls_secrets.want(wanted.clone()).await;
            self.index.ca_secrets.want(wanted).await;
        };
        if tokio::time::timeout(SECRET_READ_LIMIT, read).await.is_err() {
            tracing::warn!("reading referenced Secrets took too long; rendering without them");
        }
        self.metrics.secrets_held.set(
            i64::try_from(self.index.tls_secrets.held() + self.index.ca_secrets.held())
                .unwrap_or(i64::MAX),
        );
    }

    /// Validates the referenced Secrets; the material render gets, and what status reports.
    fn resolve_material(&self, lbs: &[Arc<LoadBalancer>]) -> Material {
        let refs = material::references(lbs);
        let resolved = match self.resolver.lock() {
            Ok(mut r) => r.resolve(&refs, |k, u| self.index.secret_data(k, u)),
            Err(_) => return Material::new(),
        };
        for (secret, usage, problem) in &resolved.changes {
            match problem {
                Some(p) => {
                    tracing::warn!(%secret, ?usage, reason = p.reason.as_str(), message = %p.message, "Secret unusable")
                }
                None => tracing::info!(%secret, ?usage, "Secret usable"),
            }
        }
        let count: usize = resolved.problems.values().map(Vec::len).sum();
        self.metrics
            .secret_problems
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.shared
            .secret_problems
            .store(Arc::new(resolved.problems));
        resolved.material
    }

    pub fn render_once(&self) {
        let started = Instant::now();
        // A VirtualIP being deleted is rendered nowhere: data planes release it, then
        // the finalizer lets it go.
        let vips: Vec<Arc<VirtualIP>> = self
            .index
            .virtual_ips
            .state()
            .into_iter()
            .filter(|v| v.metadata.deletion_timestamp.is_none())
            .collect();
        let lbs: Vec<Arc<LoadBalancer>> = self.index.load_balancers.state();
        let services = self.index.services.state();
        let slices = self.index.endpoint_slices.state();
        let nodes = self.index.nodes.state();
        let secrets = self.index.secrets.state();
        let pools = self.index.pools.state();
        let service_refs: Vec<&k8s_openapi::api::core::v1::Service> =
            services.iter().map(AsRef::as_ref).collect();
        let allocations = crate::services::allocate(
            &service_refs,
            &pools.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
        );
        let (service_vips, service_lbs) = crate::services::synthesize(&service_refs, &allocations);
        let mut vips = vips;
        vips.extend(service_vips.into_iter().map(Arc::new));
        let material = self.resolve_material(&lbs);
        let mut lbs = lbs;
        lbs.extend(service_lbs.into_iter().map(Arc::new));
        if let Some((client, leader)) = &self.service_status
            && leader.is_leader()
        {
            crate::services::publish_status(client.clone(), &service_refs, &allocations);
        }
        let outcome = render_world(
            &World {
                vips: &vips,
                lbs: &lbs,
                services: &services.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                slices: &slices.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                nodes: &nodes.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                secrets: &secrets.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                material: &material,
                options: self.options,
            },
            self.vrid_range,
        );
        for (node, config) in outcome.configs {
            self.hub.publish(&node, config);
        }
        let names: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.hub.retain(&names);
        self.shared.nodes.store(Some(Arc::new(names)));
        self.shared.plan.store(Arc::new(outcome.plan));
        self.shared.problems.store(Arc::new(outcome.problems));
        self.metrics.renders.inc();
        self.metrics
            .render_seconds
            .observe(started.elapsed().as_secs_f64());
        self.shared.trigger();
    }
}

pub struct Outcome {
    pub plan: Plan,
    pub configs: BTreeMap<String, halo_crds::NodeConfig>,
    pub problems: BTreeMap<ObjectRef, Vec<String>>,
}

/// Everything one render of the cluster reads.
#[derive(Clone, Copy)]
pub struct World<'a> {
    pub vips: &'a [Arc<VirtualIP>],
    pub lbs: &'a [Arc<LoadBalancer>],
    pub services: &'a [&'a k8s_openapi::api::core::v1::Service],
    pub slices: &'a [&'a k8s_openapi::api::discovery::v1::EndpointSlice],
    pub nodes: &'a [&'a k8s_openapi::api::core::v1::Node],
    /// The controller namespace's Secrets (VRRP passwords).
    pub secrets: &'a [&'a k8s_openapi::api::core::v1::Secret],
    /// The referenced TLS Secrets' contents, validated (see `material`).
    pub material: &'a Material,
    /// What this controller permits (`--allow-track-exec`).
    pub options: RenderOptions,
}

/// The whole cluster's render: pure, so it is tested and benchmarked without a cluster.
pub fn render_world(world: &World<'_>, vrid_range: (u8, u8)) -> Outcome {
    let World {
        vips,
        lbs,
        services,
        slices,
        nodes,
        secrets,
        material,
        options,
    } = *world;
    let endpoints = world::resolve_endpoints(services, slices);
    let secret_values = world::secret_values(secrets);
    let facts: Vec<_> = vips.iter().map(|v| world::vip_facts(v, nodes)).collect();
    let plan = assign::plan(&facts, vrid_range);
    let vip_objects: Vec<VirtualIP> = vips.iter().map(|v| (**v).clone()).collect();
    let lb_objects: Vec<LoadBalancer> = lbs.iter().map(|l| (**l).clone()).collect();

    let mut problems: BTreeMap<ObjectRef, BTreeSet<String>> = BTreeMap::new();
    for v in vips {
        if let Some(why) = plan.conflicts.get(&v.name_any()) {
            problems
                .entry(virtual_ip_ref(v))
                .or_default()
                .insert(format!("spec.vrrp.virtualRouterId: {why}"));
        }
    }
    let mut configs = BTreeMap::new();
    for node in nodes {
        let info = world::node_info(node);
        let mut assignments = Assignments::new();
        for v in vips {
            let name = v.name_any();
            let key = (name.clone(), info.name.clone());
            // A VirtualIP without a VRID gets 0, which render refuses: its
            // LoadBalancers then report it as invalid rather than missing.
            let vrid = plan.vrids.get(&name).copied().unwrap_or(0);
            let priority = plan
                .priorities
                .get(&key)
                .copied()
                .unwrap_or(crate::assign::SPREAD_TOP);
            let peers = plan.peers.get(&key).cloned().unwrap_or_default();
            assignments.insert(
                name,
                VipAssignment {
                    vrid,
                    priority,
                    peers,
                },
            );
        }
        let rendered = render(&RenderInput {
            node: &info,
            virtual_ips: &vip_objects,
            load_balancers: &lb_objects,
            endpoints: &endpoints,
            assignments: &assignments,
            secrets: &secret_values,
            material,
            options,
        });
        for p in rendered.problems {
            let conflicting =
                p.object.kind == "VirtualIP" && plan.conflicts.contains_key(&p.object.name);
            if conflicting && p.field == "spec.vrrp.virtualRouterId" {
                continue;
            }
            problems
                .entry(p.object.clone())
                .or_default()
                .insert(format!("{}: {}", p.field, p.message));
        }
        configs.insert(info.name.clone(), rendered.config);
    }
    Outcome {
        plan,
        configs,
        problems: problems
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_until_its_broken_stream_is_past_the_grace_or_it_is_too_old() {
        let now = Instant::now();
        let ago = |d: Duration| now.checked_sub(d).unwrap_or(now);
        let broke = |d: Duration| Presence {
            open: 0,
            closed_at: now.checked_sub(d),
        };
        let open = Presence {
            open: 1,
            closed_at: now.checked_sub(Duration::from_secs(60)),
        };
        let fresh = Duration::from_secs(1);
        for (presence, age, counts) in [
            (None, fresh, true),
            (Some(Presence::default()), fresh, true),
            (Some(open), fresh, true),
            (Some(broke(Duration::ZERO)), fresh, true),
            (Some(broke(CLOSED_STREAM_GRACE / 2)), fresh, true),
            (Some(broke(CLOSED_STREAM_GRACE)), fresh, false),
            (Some(broke(Duration::from_secs(60))), fresh, false),
            // Too old counts nowhere, not even on a stream that looks open.
            (Some(open), REPORT_TTL, false),
            (Some(Presence::default()), REPORT_TTL, false),
            (None, REPORT_TTL - fresh, true),
        ] {
            assert_eq!(
                report_counts(presence.as_ref(), ago(age), now),
                counts,
                "{presence:?} {age:?}"
            );
        }
    }

    #[test]
    fn a_deleted_node_leaves_the_reports() {
        let shared = Shared::default();
        shared.record_report("node-a", NodeReport::default());
        shared.record_report("node-b", NodeReport::default());
        assert_eq!(shared.reports().len(), 2, "before any render all count");
        shared
            .nodes
            .store(Some(Arc::new(BTreeSet::from(["node-b".to_string()]))));
        assert_eq!(shared.reports().keys().collect::<Vec<_>>(), vec!["node-b"]);
    }

    #[test]
    fn a_dead_data_plane_leaves_the_reports_a_reconnected_one_returns() {
        let shared = Shared::default();
        shared.record_report("node-a", NodeReport::default());
        shared.stream_opened("node-a");
        shared.stream_closed("node-a", true);
        if let Ok(mut s) = shared.streams.lock()
            && let Some(p) = s.get_mut("node-a")
        {
            p.closed_at = Instant::now().checked_sub(CLOSED_STREAM_GRACE * 2);
        }
        assert!(shared.reports().is_empty());
        shared.stream_opened("node-a");
        assert_eq!(shared.reports().len(), 1);
        // Ended by this replica (it lost the leadership): the report still counts.
        shared.stream_closed("node-a", false);
        assert_eq!(shared.reports().len(), 1);
    }
}
