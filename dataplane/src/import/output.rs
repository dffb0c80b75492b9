//! Writes an import's result: the multi-document YAML manifest and the report.

use std::path::Path;

use serde::Serialize;

use super::Imported;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot serialize {what}: {message}")]
    Serialize { what: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportFormat {
    #[default]
    Text,
    Json,
}

/// VirtualIPs first, then LoadBalancers, each as its own YAML document.
pub fn manifest_yaml(imported: &Imported) -> Result<String, OutputError> {
    let mut out = String::new();
    for vip in &imported.virtual_ips {
        push_document(&mut out, vip, "VirtualIP")?;
    }
    for lb in &imported.load_balancers {
        push_document(&mut out, lb, "LoadBalancer")?;
    }
    Ok(out)
}

fn push_document<T: Serialize>(
    out: &mut String,
    object: &T,
    what: &str,
) -> Result<(), OutputError> {
    let yaml = serde_saphyr::to_string(object).map_err(|e| OutputError::Serialize {
        what: what.to_string(),
        message: e.to_string(),
    })?;
    out.push_str("---\n");
    out.push_str(&yaml);
    if !yaml.ends_with('\n') {
        out.push('\n');
    }
    Ok(())
}

pub fn write_file(path: &Path, contents: &str) -> Result<(), OutputError> {
    std::fs::write(path, contents).map_err(|source| OutputError::Write {
        path: path.display().to_string(),
        source,
    })
}
