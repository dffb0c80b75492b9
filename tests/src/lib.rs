//! The Halo lab: real backends, real data plane processes, and (for the lab tests)
//! network namespaces and a real control plane.

pub mod backends;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod control_plane;
pub mod curl;
pub mod differential;
pub mod fault_lab;
pub mod h2;
pub mod haproxy;
pub mod import;
pub mod keepalived;
pub mod lab;
pub mod migration;
pub mod netns;
pub mod pki;
pub mod probe;
pub mod process;
pub mod raw;
pub mod reference;
pub mod server;
pub mod site;
pub mod standalone;
pub mod vrrp_forge;
