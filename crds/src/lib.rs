//! Halo's API (`halo.dev/v1alpha1`), the NodeConfig wire model and the shared render.

pub mod duration;
pub mod generate;
pub mod load_balancer;
pub mod manifest;
pub mod net;
pub mod node_config;
pub mod pool;
pub mod protocol;
pub mod render;
pub mod throttle;
pub mod validate;
pub mod virtual_ip;

pub use load_balancer::{LoadBalancer, LoadBalancerSpec};
pub use node_config::NodeConfig;
pub use pool::{VirtualIPPool, VirtualIPPoolSpec};
pub use virtual_ip::{VirtualIP, VirtualIPSpec};

/// The API group and version of every Halo kind.
pub const API_VERSION: &str = "halo.dev/v1alpha1";
