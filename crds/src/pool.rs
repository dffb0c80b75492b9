//! `VirtualIPPool` (cluster-scoped): addresses that `Service type: LoadBalancer` draws from.

// Each `printcolumn(...)` repeats `type_ =`, which this lint mistakes for a repeated attribute.
#![allow(clippy::duplicated_attributes)]

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
pub struct VirtualIPPoolSpec {
    #[schemars(length(min = 1, max = 64), inner(length(max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("every entry must be a CIDR"))]
    pub cidrs: Vec<String>,
    /// Serve Services that name no loadBalancerClass.
    #[serde(default)]
    pub default_class: bool,
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
