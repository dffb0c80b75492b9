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

/// Where standalone certificates go: `<stem>-certs/` next to the manifest.
pub fn certificate_dir(output: &Path) -> std::path::PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "halo".into());
    output.with_file_name(format!("{stem}-certs"))
}

/// Standalone mode: writes each certificate as `NAME.crt` and `NAME.key` under
/// [`certificate_dir`] and points the listeners at them, relative to the manifest (which
/// is how the data plane resolves them).
pub fn write_certificates(imported: &mut Imported, output: &Path) -> Result<(), OutputError> {
    if imported.certificates.is_empty() {
        return Ok(());
    }
    let dir = certificate_dir(output);
    let dir_name = dir
        .file_name()
        .map(|d| d.to_string_lossy().to_string())
        .unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|source| OutputError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    for c in &imported.certificates {
        write_file(&dir.join(format!("{}.crt", c.name)), &c.cert_pem)?;
        write_file(&dir.join(format!("{}.key", c.name)), &c.key_pem)?;
    }
    let listeners = imported
        .load_balancers
        .iter_mut()
        .flat_map(|lb| lb.spec.listeners.iter_mut());
    for tls in listeners.filter_map(|l| l.tls.as_mut()) {
        for r in &mut tls.certificates {
            if let Some(name) = r.secret_name.take() {
                r.cert_file = Some(format!("{dir_name}/{name}.crt"));
                r.key_file = Some(format!("{dir_name}/{name}.key"));
            }
        }
    }
    Ok(())
}

/// Cluster mode: one `kubernetes.io/tls` Secret document per certificate.
pub fn secrets_yaml(imported: &Imported, namespace: &str) -> Result<String, OutputError> {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let mut out = String::new();
    for c in &imported.certificates {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(c.name.clone()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            string_data: Some(
                [
                    ("tls.crt".to_string(), c.cert_pem.clone()),
                    ("tls.key".to_string(), c.key_pem.clone()),
                ]
                .into(),
            ),
            ..Secret::default()
        };
        let mut value = serde_json::to_value(&secret).map_err(|e| OutputError::Serialize {
            what: "Secret".into(),
            message: e.to_string(),
        })?;
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".into(), "v1".into());
            map.insert("kind".into(), "Secret".into());
        }
        push_document(&mut out, &value, "Secret")?;
    }
    Ok(out)
}
