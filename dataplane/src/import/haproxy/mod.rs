//! Import of haproxy.cfg (HAProxy 2.x syntax) into LoadBalancer objects.

use std::path::Path;

use halo_crds::LoadBalancer;

use super::{Certificate, ParseError, Report, read_source};

#[derive(Debug, Clone, Default)]
pub struct HaproxyImport {
    pub load_balancers: Vec<LoadBalancer>,
    pub certificates: Vec<Certificate>,
    pub report: Report,
}

pub fn import(path: &Path) -> Result<HaproxyImport, ParseError> {
    let _text = read_source(path)?;
    Err(ParseError::new(
        &path.display().to_string(),
        0,
        "haproxy.cfg import is not available in this build",
    ))
}
