//! The Halo controller: from Kubernetes objects to per-node NodeConfigs pushed over an
//! authenticated stream, and status back.

pub mod assign;
pub mod gateway;
pub mod index;
pub mod lease;
pub mod material;
pub mod metrics;
pub mod observed;
pub mod pools;
pub mod reconcile;
pub mod secrets;
pub mod services;
pub mod serving_cert;
pub mod status;
pub mod stream;
pub mod tls;
pub mod world;
