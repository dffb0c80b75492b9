//! Keeps each LoadBalancer's render between renders, keyed by exactly what it read.
//!
//! A LoadBalancer's listeners depend on its own spec, how its VirtualIP stands on the
//! node, and the endpoints and TLS material it names; nothing else reaches its render
//! ([`LbSources`] is all it is given). So a render is made from copies of just those
//! entries and kept with them: a later render whose entries are all equal reuses it,
//! across nodes and across passes. A name the enumeration below missed would render as
//! absent, which the tests comparing memoised against fresh renders catch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use kube::ResourceExt;

use super::listener::render_load_balancer;
use super::tls::material_refs;
use super::{
    Endpoints, LbSources, Material, MaterialEntry, MaterialRef, Problem, ServiceEndpoints,
    ServiceKey,
};
use crate::load_balancer::{LoadBalancer, LoadBalancerSpec};
use crate::net::IpPrefix;
use crate::node_config::{ListenerConfig, VipConfig};

/// Listeners are shared with every node config that serves them.
pub(super) type LbRender = Result<Vec<Arc<ListenerConfig>>, Vec<Problem>>;

/// (namespace, name, the VirtualIP's addresses on this node, whether it is invalid).
type Standing = (String, String, Option<Vec<IpPrefix>>, bool);

/// One kept render and the inputs it was made from.
struct Entry {
    spec: LoadBalancerSpec,
    vip_exists: bool,
    /// Every Service the spec names, with what the input held for it.
    endpoints: Vec<(ServiceKey, Option<Endpoints>)>,
    material: Vec<(MaterialRef, Option<MaterialEntry>)>,
    render: LbRender,
    /// The content hash of each listener in `render` (see `NodeConfig::sealed_with`).
    hashes: Vec<u64>,
    /// The pass that last used it: entries a pass did not use are dropped after it.
    pass: u64,
}

impl Entry {
    fn matches(&self, lb: &LoadBalancer, src: &LbSources<'_>) -> bool {
        self.spec == lb.spec
            && self.vip_exists == src.vip_exists
            && self
                .endpoints
                .iter()
                .all(|(k, v)| src.endpoints.get(k) == v.as_ref())
            && self
                .material
                .iter()
                .all(|(k, v)| src.material.get(k) == v.as_ref())
    }
}

/// LoadBalancer renders kept across nodes and passes (see the module doc). One per
/// renderer; call [`RenderMemo::end_pass`] after each whole render of the cluster.
#[derive(Default)]
pub struct RenderMemo {
    entries: HashMap<Standing, Entry>,
    pass: u64,
    hits: u64,
    misses: u64,
}

/// The Services a LoadBalancer's backends name, as its render looks them up.
fn service_keys(lb: &LoadBalancer) -> BTreeSet<ServiceKey> {
    let namespace = lb.namespace().unwrap_or_default();
    lb.spec
        .upstreams()
        .flat_map(|u| &u.backends)
        .filter_map(|b| b.service.as_ref())
        .map(|svc| ServiceKey {
            namespace: svc.namespace.clone().unwrap_or_else(|| namespace.clone()),
            name: svc.name.clone(),
            port: svc.port,
        })
        .collect()
}

impl RenderMemo {
    /// The render of `lb` on a node where its VirtualIP stands as `vips`/`invalid` say.
    pub(super) fn render(
        &mut self,
        lb: &LoadBalancer,
        src: &LbSources<'_>,
        vips: &BTreeMap<String, VipConfig>,
        invalid: &BTreeSet<String>,
    ) -> (&LbRender, &[u64]) {
        let vip = lb.spec.virtual_ip.as_ref();
        let key = (
            lb.namespace().unwrap_or_default(),
            lb.name_any(),
            vip.and_then(|v| vips.get(v)).map(|v| v.addresses.clone()),
            vip.is_some_and(|v| invalid.contains(v)),
        );
        let pass = self.pass;
        let entry = match self.entries.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) if o.get().matches(lb, src) => {
                self.hits += 1;
                o.into_mut()
            }
            other => {
                self.misses += 1;
                let fresh = fresh_entry(lb, src, vips, invalid);
                match other {
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        o.insert(fresh);
                        o.into_mut()
                    }
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(fresh),
                }
            }
        };
        entry.pass = pass;
        (&entry.render, &entry.hashes)
    }

    /// Ends a whole render: what it did not use is forgotten.
    pub fn end_pass(&mut self) {
        let pass = self.pass;
        self.entries.retain(|_, e| e.pass == pass);
        self.pass += 1;
    }

    /// (renders reused, renders made) since this memo was made.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

/// Renders `lb` from copies of exactly the entries it names.
fn fresh_entry(
    lb: &LoadBalancer,
    src: &LbSources<'_>,
    vips: &BTreeMap<String, VipConfig>,
    invalid: &BTreeSet<String>,
) -> Entry {
    let endpoints: Vec<(ServiceKey, Option<Endpoints>)> = service_keys(lb)
        .into_iter()
        .map(|k| {
            let v = src.endpoints.get(&k).cloned();
            (k, v)
        })
        .collect();
    let material: Vec<_> = material_refs(std::slice::from_ref(lb))
        .into_iter()
        .map(|k| {
            let v = src.material.get(&k).cloned();
            (k, v)
        })
        .collect();
    let own_endpoints: ServiceEndpoints = endpoints
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();
    let own_material: Material = material
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();
    let own = LbSources {
        endpoints: &own_endpoints,
        material: &own_material,
        vip_exists: src.vip_exists,
    };
    let render = render_load_balancer(&own, lb, vips, invalid)
        .map(|listeners| listeners.into_iter().map(Arc::new).collect::<Vec<_>>());
    let hashes = match &render {
        Ok(listeners) => listeners.iter().map(|l| l.content_hash()).collect(),
        Err(_) => Vec::new(),
    };
    Entry {
        spec: lb.spec.clone(),
        vip_exists: src.vip_exists,
        endpoints,
        material,
        render,
        hashes,
        pass: 0,
    }
}
