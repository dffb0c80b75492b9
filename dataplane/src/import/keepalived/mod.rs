//! Import of keepalived.conf files (keepalived 2.x syntax), one per node, into VirtualIP
//! objects with per-node priorities and peers.

use std::path::PathBuf;

use halo_crds::VirtualIP;

use super::{NodeNameFrom, ParseError, Report, read_source};

#[derive(Debug, Clone, Default)]
pub struct KeepalivedImport {
    pub virtual_ips: Vec<VirtualIP>,
    pub report: Report,
}

pub fn import(paths: &[PathBuf], _names: NodeNameFrom) -> Result<KeepalivedImport, ParseError> {
    for path in paths {
        read_source(path)?;
    }
    let file = paths
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Err(ParseError::new(
        &file,
        0,
        "keepalived.conf import is not available in this build",
    ))
}
