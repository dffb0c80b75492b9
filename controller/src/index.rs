//! The controller's view of the cluster: reflector stores for every input kind, and one
//! notification whenever any of them changes.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use halo_crds::{LoadBalancer, VirtualIP, VirtualIPPool};
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::gateway::api::{Gateway, GatewayClass, HTTPRoute, ReferenceGrant, TLSRoute};
use crate::material::{CA_BUNDLE_LABEL, SecretData, SecretKey, TLS_SECRET_TYPE, Usage};
use crate::secrets::SecretWatch;

#[derive(Clone)]
pub struct Index {
    pub virtual_ips: Store<VirtualIP>,
    pub load_balancers: Store<LoadBalancer>,
    pub pools: Store<VirtualIPPool>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub nodes: Store<Node>,
    /// Secrets in the controller's own namespace (VRRP passwords by secretRef).
    pub secrets: Store<Secret>,
    /// `kubernetes.io/tls` Secrets of every namespace (certificates, and CAs in `ca.crt`).
    pub tls_secrets: Arc<SecretWatch>,
    /// Secrets labelled as CA bundles, of any type, in every namespace.
    pub ca_secrets: Arc<SecretWatch>,
    /// Gateway API objects, when the cluster has their CRDs.
    pub gateway: Option<GatewayStores>,
    pub changed: Arc<Notify>,
}

/// What Gateway API translation reads (Namespaces for `allowedRoutes` selectors).
#[derive(Clone)]
pub struct GatewayStores {
    pub classes: Store<GatewayClass>,
    pub gateways: Store<Gateway>,
    pub http_routes: Store<HTTPRoute>,
    /// When the API server serves TLSRoute v1 (Gateway API v1.5 and later).
    pub tls_routes: Option<Store<TLSRoute>>,
    pub grants: Store<ReferenceGrant>,
    pub namespaces: Store<Namespace>,
}

impl GatewayStores {
    fn start(client: &Client, changed: &Arc<Notify>, served: GatewayApi) -> Self {
        Self {
            tls_routes: served
                .tls_routes
                .then(|| watch(Api::all(client.clone()), changed.clone(), spec_fingerprint)),
            classes: watch(Api::all(client.clone()), changed.clone(), spec_fingerprint),
            gateways: watch(
                Api::all(client.clone()),
                changed.clone(),
                gateway_fingerprint,
            ),
            http_routes: watch(Api::all(client.clone()), changed.clone(), spec_fingerprint),
            grants: watch(Api::all(client.clone()), changed.clone(), any_change),
            namespaces: watch(
                Api::all(client.clone()),
                changed.clone(),
                labels_fingerprint,
            ),
        }
    }

    async fn ready(&self) -> anyhow::Result<()> {
        self.classes.wait_until_ready().await?;
        self.gateways.wait_until_ready().await?;
        self.http_routes.wait_until_ready().await?;
        if let Some(s) = &self.tls_routes {
            s.wait_until_ready().await?;
        }
        self.grants.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        Ok(())
    }
}

/// A Gateway's spec and the pool annotation count (its address in status is read
/// only when it is allocated, which a spec change triggers anyway).
fn gateway_fingerprint(gw: &Gateway) -> u64 {
    hash_of(&(
        spec_fingerprint(gw),
        gw.annotations().get(crate::services::POOL_ANNOTATION),
    ))
}

fn labels_fingerprint<K: Resource>(obj: &K) -> u64 {
    hash_of(&obj.meta().labels)
}

/// Which Gateway API kinds the API server serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayApi {
    /// GatewayClass, Gateway, HTTPRoute (v1) and ReferenceGrant (v1beta1): needed for any.
    pub core: bool,
    /// TLSRoute v1.
    pub tls_routes: bool,
}

/// Which Gateway API kinds the API server serves.
pub async fn gateway_api(client: &Client) -> GatewayApi {
    let served = |version: &str| {
        let client = client.clone();
        let version = version.to_string();
        async move { client.list_api_group_resources(&version).await.ok() }
    };
    let v1 = served(&format!("{}/v1", crate::gateway::GROUP)).await;
    let v1beta1 = served(&format!("{}/v1beta1", crate::gateway::GROUP)).await;
    let has = |list: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList>,
               name: &str| {
        list.as_ref()
            .is_some_and(|l| l.resources.iter().any(|r| r.name == name))
    };
    let core = ["gatewayclasses", "gateways", "httproutes"]
        .iter()
        .all(|n| has(&v1, n))
        && has(&v1beta1, "referencegrants");
    GatewayApi {
        core,
        tls_routes: core && has(&v1, "tlsroutes"),
    }
}

/// What about an object matters to the render; events that leave it unchanged (status
/// writes, kubelet heartbeats) do not wake the render loop.
type Fingerprint<K> = fn(&K) -> u64;

fn hash_of(value: &impl std::hash::Hash) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Spec changes bump the generation; labels and deletion do not, so they count too.
fn spec_fingerprint<K: Resource>(obj: &K) -> u64 {
    let m = obj.meta();
    hash_of(&(
        m.generation,
        &m.labels,
        m.deletion_timestamp.as_ref().map(|t| t.0.to_string()),
    ))
}

/// A Service has no generation: its spec, labels and the annotations that ask for an
/// address or a pool count.
fn service_fingerprint(svc: &Service) -> u64 {
    let wanted = |k: &&String| {
        k.as_str() == crate::services::POOL_ANNOTATION
            || k.as_str() == crate::services::ADDRESSES_ANNOTATION
    };
    let annotations: Vec<(&String, &String)> = svc
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| wanted(k))
        .collect();
    hash_of(&(
        serde_json::to_string(&svc.spec).unwrap_or_default(),
        &svc.metadata.labels,
        annotations,
        svc.metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
    ))
}

fn any_change<K: Resource>(obj: &K) -> u64 {
    hash_of(&obj.meta().resource_version)
}

fn node_fingerprint(node: &Node) -> u64 {
    hash_of(&(
        &node.metadata.labels,
        crate::world::internal_ips(node),
        crate::world::node_info(node).draining,
    ))
}

/// What `kubectl apply` keeps in an annotation: a second copy of the spec.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what the controller never reads before an object enters a store: the
/// managedFields and the last-applied copy are often larger than the object itself, and
/// every watched object is held for the controller's lifetime.
pub fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

fn watch<K>(api: Api<K>, changed: Arc<Notify>, fingerprint: Fingerprint<K>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(slim::<K>),
    )
    .default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        while let Some(item) = stream.next().await {
            let relevant = match item {
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&K::DynamicType::default()), error = %e, "watch error; retrying");
                    false
                }
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    let key = obj.meta().uid.clone().unwrap_or_default();
                    seen.insert(key, fingerprint(&obj)) != Some(fingerprint(&obj))
                }
                Ok(watcher::Event::Delete(obj)) => {
                    seen.remove(&obj.meta().uid.clone().unwrap_or_default());
                    true
                }
                Ok(watcher::Event::Init) => false,
                Ok(watcher::Event::InitDone) => true,
            };
            if relevant {
                changed.notify_one();
            }
        }
    });
    reader
}

fn is_tls_secret(s: &Secret) -> bool {
    s.type_.as_deref() == Some(TLS_SECRET_TYPE)
}

fn is_ca_bundle(s: &Secret) -> bool {
    s.labels().get(CA_BUNDLE_LABEL).map(String::as_str) == Some("true")
}

impl Index {
    pub fn start(client: &Client, namespace: &str, gateway_api: GatewayApi) -> Self {
        let changed = Arc::new(Notify::new());
        Self {
            gateway: gateway_api
                .core
                .then(|| GatewayStores::start(client, &changed, gateway_api)),
            virtual_ips: watch(Api::all(client.clone()), changed.clone(), spec_fingerprint),
            load_balancers: watch(Api::all(client.clone()), changed.clone(), spec_fingerprint),
            pools: watch(Api::all(client.clone()), changed.clone(), spec_fingerprint),
            services: watch(
                Api::all(client.clone()),
                changed.clone(),
                service_fingerprint,
            ),
            endpoint_slices: watch(Api::all(client.clone()), changed.clone(), any_change),
            nodes: watch(Api::all(client.clone()), changed.clone(), node_fingerprint),
            secrets: watch(
                Api::namespaced(client.clone(), namespace),
                changed.clone(),
                any_change,
            ),
            tls_secrets: SecretWatch::start(
                client,
                watcher::Config::default().fields(&format!("type={TLS_SECRET_TYPE}")),
                is_tls_secret,
                changed.clone(),
            ),
            ca_secrets: SecretWatch::start(
                client,
                watcher::Config::default().labels(&format!("{CA_BUNDLE_LABEL}=true")),
                is_ca_bundle,
                changed.clone(),
            ),
            changed,
        }
    }

    /// A referenced Secret's data: certificates only from `kubernetes.io/tls` Secrets,
    /// CAs from those or from labelled CA bundles.
    pub fn secret_data(&self, key: &SecretKey, usage: Usage) -> Option<Arc<SecretData>> {
        match usage {
            Usage::Certificate => self.tls_secrets.get(key),
            Usage::Ca => self
                .tls_secrets
                .get(key)
                .or_else(|| self.ca_secrets.get(key)),
        }
    }

    /// Waits until every store has its initial list.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.virtual_ips.wait_until_ready().await?;
        self.load_balancers.wait_until_ready().await?;
        self.pools.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.endpoint_slices.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.tls_secrets.ready().await?;
        self.ca_secrets.ready().await?;
        if let Some(g) = &self.gateway {
            g.ready().await?;
        }
        Ok(())
    }
}
