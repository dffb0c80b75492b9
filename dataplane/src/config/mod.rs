//! Where NodeConfigs come from: a manifest file (standalone mode).

pub mod file;
pub mod reload;
pub mod stream;
