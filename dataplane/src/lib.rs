//! Halo's per-node data plane: the L4/L7 proxy, VIP handling and the admin endpoint,
//! fed by NodeConfigs from a manifest file or (later) the controller.

pub mod admin;
pub mod cli;
pub mod config;
pub mod import;
pub mod metrics;
pub mod netlink;
pub mod proxy;
pub mod runtime;
pub mod signals;
pub mod vip;
pub mod vrrp;
