//! The controller's view of the cluster: reflector stores for every input kind, and one
//! notification whenever any of them changes.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use halo_crds::{LoadBalancer, VirtualIP, VirtualIPPool};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

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
    pub changed: Arc<Notify>,
}

fn watch<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!(kind = %K::kind(&K::DynamicType::default()), error = %e, "watch error; retrying");
            }
            changed.notify_one();
        }
    });
    reader
}

impl Index {
    pub fn start(client: &Client, namespace: &str) -> Self {
        let changed = Arc::new(Notify::new());
        Self {
            virtual_ips: watch(Api::all(client.clone()), changed.clone()),
            load_balancers: watch(Api::all(client.clone()), changed.clone()),
            pools: watch(Api::all(client.clone()), changed.clone()),
            services: watch(Api::all(client.clone()), changed.clone()),
            endpoint_slices: watch(Api::all(client.clone()), changed.clone()),
            nodes: watch(Api::all(client.clone()), changed.clone()),
            secrets: watch(Api::namespaced(client.clone(), namespace), changed.clone()),
            changed,
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
        Ok(())
    }
}
