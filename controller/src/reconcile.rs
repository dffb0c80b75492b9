//! The render loop: on any change, assign VRIDs and priorities, render every node's
//! NodeConfig with the shared pure render, hand changed ones to the hub, and record the
//! render's conclusions (see `observed`), which the status writer turns into status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use halo_crds::render::{
    Assignments, Material, ObjectRef, RenderInput, RenderMemo, RenderOptions, VipAssignment,
    render_with, virtual_ip_ref,
};
use halo_crds::{LoadBalancer, VirtualIP};
use kube::ResourceExt;

use crate::assign::{self, Plan};
use crate::gateway::api::{Gateway, GatewayClass, HTTPRoute, ReferenceGrant, TLSRoute};
use crate::index::GatewayStores;
use crate::index::Index;
use crate::material::{self, Resolver, SecretKey};
use crate::metrics::Metrics;
use crate::observed::{Observed, RenderResult};
use crate::services::Allocations;
use crate::stream::Hub;
use crate::world;
use kube::runtime::reflector::Store;

pub struct Renderer {
    pub index: Index,
    pub hub: Arc<Hub>,
    pub observed: Arc<Observed>,
    pub metrics: Arc<Metrics>,
    pub vrid_range: (u8, u8),
    pub options: RenderOptions,
    /// The last valid contents of every referenced Secret.
    pub resolver: Mutex<Resolver>,
    /// Renders and endpoints kept between passes: a change redoes only the objects
    /// whose inputs it touched.
    pub memo: Mutex<RenderCache>,
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
        let mut wanted: BTreeSet<SecretKey> = material::references(&lbs)
            .into_iter()
            .map(|r| r.secret)
            .collect();
        if let Some(g) = &self.index.gateway {
            let gateways = g.gateways.state();
            let refs: Vec<&crate::gateway::api::Gateway> =
                gateways.iter().map(AsRef::as_ref).collect();
            wanted.extend(
                crate::gateway::certificate_secrets(&refs)
                    .into_iter()
                    .map(|(namespace, name)| SecretKey { namespace, name }),
            );
        }
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
        self.observed.record_secret_problems(resolved.problems);
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
        let gateway_objects = self.index.gateway.as_ref().map(GatewayObjects::of);
        let gateway_refs = gateway_objects.as_ref().map(GatewayRefs::of);
        let empty = Allocations::new();
        let claims = gateway_refs
            .as_ref()
            .map(|g| crate::gateway::claims(&g.input(&service_refs, &empty)))
            .unwrap_or_default();
        let claimants: Vec<&k8s_openapi::api::core::v1::Service> =
            service_refs.iter().copied().chain(claims.iter()).collect();
        let allocations = crate::services::allocate(
            &claimants,
            &pools.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
        );
        let (service_vips, service_lbs) = crate::services::synthesize(&service_refs, &allocations);
        let translation = gateway_refs
            .as_ref()
            .map(|g| crate::gateway::translate(&g.input(&service_refs, &allocations)));
        let mut vips = vips;
        vips.extend(service_vips.into_iter().map(Arc::new));
        let mut lbs = lbs;
        let gateway_reports = match translation {
            Some(t) => {
                vips.extend(t.virtual_ips.into_iter().map(Arc::new));
                lbs.extend(t.load_balancers.into_iter().map(Arc::new));
                t.reports
            }
            None => Default::default(),
        };
        let material = self.resolve_material(&lbs);
        lbs.extend(service_lbs.into_iter().map(Arc::new));
        let mut memo = self
            .memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcome = render_world_with(
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
            &mut memo,
        );
        drop(memo);
        for (node, config) in outcome.configs {
            self.hub.publish(&node, config);
        }
        let names: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.hub.retain(&names);
        self.metrics.renders.inc();
        self.metrics
            .render_seconds
            .observe(started.elapsed().as_secs_f64());
        self.observed.record_render(RenderResult {
            plan: outcome.plan,
            problems: outcome.problems,
            allocations,
            nodes: names,
            gateway: gateway_reports,
        });
    }
}

/// The Gateway API objects of one render pass.
struct GatewayObjects {
    classes: Vec<Arc<GatewayClass>>,
    gateways: Vec<Arc<Gateway>>,
    routes: Vec<Arc<HTTPRoute>>,
    tls_routes: Vec<Arc<TLSRoute>>,
    grants: Vec<Arc<ReferenceGrant>>,
    namespaces: Vec<Arc<k8s_openapi::api::core::v1::Namespace>>,
}

impl GatewayObjects {
    fn of(stores: &GatewayStores) -> Self {
        Self {
            classes: stores.classes.state(),
            gateways: stores.gateways.state(),
            routes: stores.http_routes.state(),
            tls_routes: stores
                .tls_routes
                .as_ref()
                .map(Store::state)
                .unwrap_or_default(),
            grants: stores.grants.state(),
            namespaces: stores.namespaces.state(),
        }
    }
}

/// [`GatewayObjects`] as the slices the translation takes.
struct GatewayRefs<'a> {
    classes: Vec<&'a GatewayClass>,
    gateways: Vec<&'a Gateway>,
    routes: Vec<&'a HTTPRoute>,
    tls_routes: Vec<&'a TLSRoute>,
    grants: Vec<&'a ReferenceGrant>,
    namespaces: Vec<&'a k8s_openapi::api::core::v1::Namespace>,
}

impl<'a> GatewayRefs<'a> {
    fn of(objects: &'a GatewayObjects) -> Self {
        Self {
            classes: objects.classes.iter().map(AsRef::as_ref).collect(),
            gateways: objects.gateways.iter().map(AsRef::as_ref).collect(),
            routes: objects.routes.iter().map(AsRef::as_ref).collect(),
            tls_routes: objects.tls_routes.iter().map(AsRef::as_ref).collect(),
            grants: objects.grants.iter().map(AsRef::as_ref).collect(),
            namespaces: objects.namespaces.iter().map(AsRef::as_ref).collect(),
        }
    }

    fn input<'b>(
        &'b self,
        services: &'b [&'b k8s_openapi::api::core::v1::Service],
        allocations: &'b Allocations,
    ) -> crate::gateway::Input<'b> {
        crate::gateway::Input {
            classes: &self.classes,
            gateways: &self.gateways,
            routes: &self.routes,
            tls_routes: &self.tls_routes,
            grants: &self.grants,
            services,
            namespaces: &self.namespaces,
            allocations,
        }
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
    render_world_with(world, vrid_range, &mut RenderCache::default())
}

/// What one pass keeps for the next (the output is the same with or without it).
#[derive(Default)]
pub struct RenderCache {
    pub memo: RenderMemo,
    pub endpoints: world::EndpointsCache,
}

/// [`render_world`], reusing the LoadBalancer renders and Service endpoints `cache` kept
/// from earlier passes where their inputs are unchanged.
pub fn render_world_with(
    world: &World<'_>,
    vrid_range: (u8, u8),
    cache: &mut RenderCache,
) -> Outcome {
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
    let RenderCache {
        memo,
        endpoints: kept_endpoints,
    } = cache;
    let endpoints = world::resolve_endpoints_with(services, slices, kept_endpoints);
    let secret_values = world::secret_values(secrets);
    let facts: Vec<_> = vips.iter().map(|v| world::vip_facts(v, nodes)).collect();
    let plan = assign::plan(&facts, vrid_range);
    let vip_objects: Vec<&VirtualIP> = vips.iter().map(AsRef::as_ref).collect();
    let lb_objects: Vec<&LoadBalancer> = lbs.iter().map(AsRef::as_ref).collect();

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
        let rendered = render_with(
            &RenderInput {
                node: &info,
                virtual_ips: &vip_objects,
                load_balancers: &lb_objects,
                endpoints: &endpoints,
                assignments: &assignments,
                secrets: &secret_values,
                material,
                options,
            },
            memo,
        );
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
    memo.end_pass();
    Outcome {
        plan,
        configs,
        problems: problems
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect(),
    }
}
