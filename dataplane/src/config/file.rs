//! Standalone mode: a multi-document YAML of VirtualIP / LoadBalancer objects, rendered
//! with the same function the controller uses, reloaded on SIGHUP at once and on change
//! once the file has stayed unchanged for the settle period (so a file caught mid-write is
//! never read). Certificate, key and CA files the objects name are read with it (relative
//! paths from the manifest's directory) and watched like it, so replacing them rotates
//! the material without touching the manifest. The decisions are in `config::reload`.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use halo_crds::NodeConfig;
use halo_crds::manifest::{self, ManifestError, Manifests};
use halo_crds::render::{
    Assignments, Material, MaterialRef, NodeInfo, Problem, RenderInput, RenderOptions,
    SecretValues, ServiceEndpoints, material_refs, render,
};
use tokio::signal::unix::Signal;

use super::reload::{self, ALLOW_EMPTY_ANNOTATION, Content, Decision, Poll, Settle};
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
    load_candidate(path, node).map(|c| c.config)
}

/// A rendered file, and whether it says it may remove every listener or VirtualIP.
pub struct Candidate {
    pub config: NodeConfig,
    pub allow_empty: bool,
}

pub fn load_candidate(path: &Path, node: &NodeInfo) -> Result<Candidate, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let objects = parse(path, &text)?;
    Ok(Candidate {
        allow_empty: allows_empty(&objects),
        config: render_objects(path, &objects, node)?,
    })
}

pub fn render_text(path: &Path, text: &str, node: &NodeInfo) -> Result<NodeConfig, FileError> {
    render_objects(path, &parse(path, text)?, node)
}

fn parse(path: &Path, text: &str) -> Result<Manifests, FileError> {
    manifest::parse(text).map_err(|errors| FileError::Manifest {
        path: path.to_path_buf(),
        errors,
    })
}

fn render_objects(
    path: &Path,
    objects: &Manifests,
    node: &NodeInfo,
) -> Result<NodeConfig, FileError> {
    let rendered = render(&RenderInput {
        node,
        virtual_ips: &objects.virtual_ips.iter().collect::<Vec<_>>(),
        load_balancers: &objects.load_balancers.iter().collect::<Vec<_>>(),
        endpoints: &ServiceEndpoints::new(),
        assignments: &Assignments::new(),
        secrets: &SecretValues::new(),
        material: &read_material(path, objects),
        // The manifest's author runs this node: its exec checks are theirs to run.
        options: RenderOptions {
            allow_track_exec: true,
        },
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

/// Every file the objects reference, read whole under the key `""`; a read error becomes
/// the reason render reports on the referencing field. There are no Secrets here: a
/// Secret reference gets a reason that says what to use instead.
fn read_material(manifest: &Path, objects: &Manifests) -> Material {
    material_refs(&objects.load_balancers)
        .into_iter()
        .map(|r| {
            let value = match &r {
                MaterialRef::File(name) => {
                    let full = resolve(manifest, name);
                    std::fs::read_to_string(&full)
                        .map(|text| std::collections::BTreeMap::from([(String::new(), text)]))
                        .map_err(|e| format!("cannot read {}: {e}", full.display()))
                }
                MaterialRef::Secret { namespace, name } => Err(format!(
                    "Secret {namespace}/{name}: a manifest file has no Secrets, use certFile and keyFile (or caFile)"
                )),
            };
            (r, value)
        })
        .collect()
}

/// A referenced file's path: absolute as written, else from the manifest's directory.
fn resolve(manifest: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        manifest.parent().unwrap_or(Path::new("")).join(p)
    }
}

/// Any object annotated `halo.dev/allow-empty: "true"`.
fn allows_empty(objects: &Manifests) -> bool {
    let marked = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(ALLOW_EMPTY_ANNOTATION))
            .is_some_and(|v| v == "true")
    };
    objects.virtual_ips.iter().any(|v| marked(&v.metadata))
        || objects.load_balancers.iter().any(|l| marked(&l.metadata))
}

/// How the file is watched.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// How often the file is read.
    pub poll: Duration,
    /// How long a changed file must stay unchanged before it is loaded.
    pub settle: Duration,
    /// Apply a file that removes every listener or VirtualIP without its annotation.
    pub allow_empty: bool,
}

/// Loads the file and applies it when it differs from the running config and the reload
/// decision allows it. Returns whether it applied.
pub async fn reload(path: &Path, node: &NodeInfo, runtime: &Runtime, allow_empty: bool) -> bool {
    let candidate = match load_candidate(path, node) {
        Ok(c) => c,
        Err(e) => {
            runtime.count_rejected();
            tracing::error!("config rejected, still serving the previous one: {e}");
            return false;
        }
    };
    let running = runtime.config();
    let allow = allow_empty || candidate.allow_empty;
    match reload::decide(running.as_ref(), &candidate.config, allow) {
        Decision::Unchanged => false,
        Decision::Refuse(reason) => {
            runtime.count_rejected();
            tracing::error!(path = %path.display(), "config refused, still serving the previous one: {reason}");
            false
        }
        Decision::Apply(diff) => {
            let old_hash = running.as_ref().map_or("none", |c| c.hash.as_str());
            tracing::info!(old_hash, new_hash = %candidate.config.hash, changes = %diff, "reloading config");
            let version = running.as_ref().map_or(1, |c| c.version + 1);
            match runtime.apply(candidate.config.sealed(version)).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!("config rejected, still serving the previous one: {e}");
                    false
                }
            }
        }
    }
}

/// What the poll loop compares: the manifest and every file it references (the list is
/// worked out again only when the manifest itself changes).
#[derive(Default)]
struct Watched {
    manifest: Option<u64>,
    files: Vec<PathBuf>,
}

impl Watched {
    fn content(&mut self, path: &Path) -> Content {
        let bytes = std::fs::read(path).ok()?;
        let manifest = hash_of(&bytes);
        if self.manifest != Some(manifest) {
            self.manifest = Some(manifest);
            self.files = referenced_files(path, &bytes);
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        manifest.hash(&mut hasher);
        for file in &self.files {
            // An unreadable file hashes as such, so its return is a change too.
            std::fs::read(file)
                .ok()
                .map(|b| hash_of(&b))
                .hash(&mut hasher);
        }
        Some(hasher.finish())
    }
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// The referenced files of a manifest that parses; none for one that does not (its
/// reload is refused anyway).
fn referenced_files(path: &Path, bytes: &[u8]) -> Vec<PathBuf> {
    let Ok(objects) = manifest::parse_unvalidated(&String::from_utf8_lossy(bytes)) else {
        return Vec::new();
    };
    material_refs(&objects.load_balancers)
        .iter()
        .filter_map(|r| match r {
            MaterialRef::File(name) => Some(resolve(path, name)),
            MaterialRef::Secret { .. } => None,
        })
        .collect()
}

/// Watches the file (polling, which also sees ConfigMap symlink swaps) and SIGHUP (whose
/// handler the caller installed before start-up).
pub async fn watch(
    path: PathBuf,
    node: NodeInfo,
    runtime: Arc<Runtime>,
    options: WatchOptions,
    mut hangup: Option<Signal>,
) {
    // Nothing counts as handled yet: a change between the first load and now is still seen
    // (a file equal to the running config reloads as a no-op).
    let mut settle = Settle::default();
    let mut watched = Watched::default();
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
                crate::proxy::accesslog::reopen();
                settle = Settle::loaded(watched.content(&path));
                reload(&path, &node, &runtime, options.allow_empty).await;
            }
            () = tokio::time::sleep(options.poll) => {
                match settle.poll(watched.content(&path), Instant::now(), options.settle) {
                    Poll::Unchanged | Poll::Settling { just_changed: false } => {}
                    Poll::Settling { just_changed: true } => {
                        tracing::debug!(path = %path.display(), settle = ?options.settle, "file changed: waiting for it to settle");
                    }
                    Poll::Load => {
                        tracing::info!(path = %path.display(), "file changed: reloading");
                        reload(&path, &node, &runtime, options.allow_empty).await;
                    }
                }
            }
        }
    }
}
