//! `VirtualIPPool` (cluster-scoped): addresses that `Service type: LoadBalancer` draws from.

// Each `printcolumn(...)` repeats `type_ =`, which this lint mistakes for a repeated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "halo.dev",
    version = "v1alpha1",
    kind = "VirtualIPPool",
    plural = "virtualippools",
    shortname = "vippool",
    category = "halo",
    status = "VirtualIPPoolStatus",
    doc = "Addresses handed out to Services of type LoadBalancer",
    printcolumn(name = "CIDRs", type_ = "string", json_path = ".spec.cidrs"),
    printcolumn(name = "Allocated", type_ = "integer", json_path = ".status.allocated"),
    printcolumn(name = "Free", type_ = "integer", json_path = ".status.free"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.cidrs) + (has(self.ranges) ? size(self.ranges) : 0) > 0").message("a pool needs cidrs or ranges"))]
pub struct VirtualIPPoolSpec {
    /// Subnets to hand out (their network and broadcast addresses are not), each address
    /// with the subnet's prefix length.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("every entry must be a CIDR"))]
    pub cidrs: Vec<String>,
    /// Inclusive address ranges `FIRST-LAST` of one family (e.g. `192.0.2.10-192.0.2.20`),
    /// each address handed out as a /32 (/128).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 91)))]
    #[x_kube(validation = Rule::new("self.all(r, r.indexOf('-') > 0 && isIP(r.substring(0, r.indexOf('-'))) && isIP(r.substring(r.indexOf('-') + 1)) && ip(r.substring(0, r.indexOf('-'))).family() == ip(r.substring(r.indexOf('-') + 1)).family())").message("every range must be FIRST-LAST, two addresses of one family"))]
    pub ranges: Vec<String>,
    /// Addresses never handed out: single addresses, CIDRs or `FIRST-LAST` ranges (gateways,
    /// hosts already using them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 91)))]
    #[x_kube(validation = Rule::new("self.all(r, isIP(r) || isCIDR(r) || (r.indexOf('-') > 0 && isIP(r.substring(0, r.indexOf('-'))) && isIP(r.substring(r.indexOf('-') + 1))))").message("every reserved entry must be an address, a CIDR or FIRST-LAST"))]
    pub reserved: Vec<String>,
    /// false: only Services that ask for this pool (annotation `halo.dev/pool`) or for one
    /// of its addresses (`spec.loadBalancerIP`, annotation `halo.dev/addresses`) get one.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    #[schemars(default = "yes")]
    pub auto_assign: bool,
    /// Only Services in these namespaces may draw from the pool (empty: every namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub namespaces: Vec<String>,
    /// Only Services with these labels may draw from the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<BTreeMap<String, String>>,
    /// Serve Services that name no loadBalancerClass.
    #[serde(default)]
    pub default_class: bool,
}

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualIPPoolStatus {
    /// Addresses of the pool held by Services.
    #[serde(default)]
    pub allocated: u64,
    /// Addresses still free (of the first 65,536 of each CIDR).
    #[serde(default)]
    pub free: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
