//! Standalone mode: a multi-document YAML of VirtualIP / LoadBalancer objects, rendered
//! with the same function the controller uses, reloaded when the file changes or on SIGHUP.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use halo_crds::NodeConfig;
use halo_crds::manifest::{self, ManifestError};
use halo_crds::render::{
    Assignments, NodeInfo, Problem, RenderInput, SecretValues, ServiceEndpoints, render,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::runtime::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is invalid:{}", Listed(.errors))]
    Manifest {
        path: PathBuf,
        errors: Vec<ManifestError>,
    },
    #[error("{path} is invalid:{}", Listed(.problems))]
    Render {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

struct Listed<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for Listed<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in self.0 {
            write!(f, "\n  - {item}")?;
        }
        Ok(())
    }
}

/// Reads, parses and renders the file; any problem in any object rejects the whole file.
pub fn load(path: &Path, node: &NodeInfo) -> Result<NodeConfig, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    render_text(path, &text, node)
}

pub fn render_text(path: &Path, text: &str, node: &NodeInfo) -> Result<NodeConfig, FileError> {
    let objects = manifest::parse(text).map_err(|errors| FileError::Manifest {
        path: path.to_path_buf(),
        errors,
    })?;
    let rendered = render(&RenderInput {
        node,
        virtual_ips: &objects.virtual_ips,
        load_balancers: &objects.load_balancers,
        endpoints: &ServiceEndpoints::new(),
        assignments: &Assignments::new(),
        secrets: &SecretValues::new(),
    });
    if rendered.problems.is_empty() {
        Ok(rendered.config)
    } else {
        Err(FileError::Render {
            path: path.to_path_buf(),
            problems: rendered.problems,
        })
    }
}

/// Loads the file and applies it when its content changed. Returns whether it applied.
pub async fn reload(path: &Path, node: &NodeInfo, runtime: &Runtime) -> bool {
    let config = match load(path, node) {
        Ok(c) => c,
        Err(e) => {
            runtime.count_rejected();
            tracing::error!("config rejected, still serving the previous one: {e}");
            return false;
        }
    };
    if runtime.applied_hash().as_deref() == Some(config.hash.as_str()) {
        return false;
    }
    let version = runtime.applied_version().map_or(1, |(v, _)| v + 1);
    match runtime.apply(config.sealed(version)).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!("config rejected, still serving the previous one: {e}");
            false
        }
    }
}

/// Watches the file (polling, which also sees ConfigMap symlink swaps) and SIGHUP.
pub async fn watch(path: PathBuf, node: NodeInfo, runtime: Arc<Runtime>, poll: Duration) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP reload unavailable");
            None
        }
    };
    let mut last_seen = std::fs::read(&path).ok();
    loop {
        let hup = async {
            match hangup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hup => {
                tracing::info!(path = %path.display(), "SIGHUP: reloading");
                last_seen = std::fs::read(&path).ok();
                reload(&path, &node, &runtime).await;
            }
            () = tokio::time::sleep(poll) => {
                let now = std::fs::read(&path).ok();
                if now != last_seen {
                    last_seen = now;
                    tracing::info!(path = %path.display(), "file changed: reloading");
                    reload(&path, &node, &runtime).await;
                }
            }
        }
    }
}
