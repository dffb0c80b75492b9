//! Certificates named by `bind ... ssl crt FILE|DIR`: HAProxy's PEM bundles (chain and
//! key in one file, or the key in `FILE.key` next to it), split into chain and key.

use std::path::{Path, PathBuf};

use crate::import::Certificate;

/// The certificate chain and private key of one PEM text; the key is `None` if absent.
pub fn split_pem(text: &str) -> (String, Option<String>) {
    let (mut chain, mut key) = (String::new(), None::<String>);
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..].find("-----").map(|i| i + 11);
        let Some(label) = label_end.map(|e| &block[11..e]) else {
            break;
        };
        let end_marker = format!("-----END {label}-----");
        let Some(end) = block.find(&end_marker).map(|e| e + end_marker.len()) else {
            break;
        };
        let pem = format!("{}\n", &block[..end]);
        if label == "CERTIFICATE" {
            chain.push_str(&pem);
        } else if label.ends_with("PRIVATE KEY") && key.is_none() {
            key = Some(pem);
        }
        rest = &block[end..];
    }
    (chain, key)
}

/// A name usable for a file and a Secret (DNS label characters) from a file name.
pub fn name_of(path: &Path) -> String {
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = stem.strip_suffix(".pem").unwrap_or(&stem);
    super::values::dns_label_or(stem, "certificate")
}

/// Reads `crt PATH` (a file, or every certificate file of a directory, sorted by name).
pub fn load(path: &Path) -> Result<Vec<Certificate>, String> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("cannot read directory {}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && !is_side_file(p))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let (chain, key) = split_pem(&text);
        if chain.is_empty() {
            return Err(format!("{}: no certificate in it", file.display()));
        }
        let key = match key {
            Some(k) => k,
            None => side_key(&file)?,
        };
        out.push(Certificate {
            name: name_of(&file),
            cert_pem: chain,
            key_pem: key,
        });
    }
    if out.is_empty() {
        return Err(format!("{}: no certificate files", path.display()));
    }
    Ok(out)
}

/// Files HAProxy reads alongside a certificate rather than as one.
fn is_side_file(p: &Path) -> bool {
    let ext = p.extension().map(|e| e.to_string_lossy().to_string());
    matches!(ext.as_deref(), Some("key" | "ocsp" | "issuer" | "sctl"))
}

fn side_key(cert: &Path) -> Result<String, String> {
    let mut key_path = cert.as_os_str().to_owned();
    key_path.push(".key");
    let text = std::fs::read_to_string(&key_path).map_err(|_| {
        format!(
            "{}: no private key in it nor in a .key file",
            cert.display()
        )
    })?;
    split_pem(&text)
        .1
        .ok_or_else(|| format!("{}.key: no private key in it", cert.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----";

    #[test]
    fn a_bundle_splits_into_chain_and_key_in_any_order() {
        let cases = [
            (format!("{CERT}\n{KEY}\n"), 1, true),
            (format!("{KEY}\n{CERT}\n{CERT}\n"), 2, true),
            (
                format!(
                    "junk\n{CERT}\n-----BEGIN DH PARAMETERS-----\nx\n-----END DH PARAMETERS-----\n"
                ),
                1,
                false,
            ),
            ("no pem at all".to_string(), 0, false),
        ];
        for (text, certs, has_key) in cases {
            let (chain, key) = split_pem(&text);
            assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), certs, "{text}");
            assert_eq!(key.is_some(), has_key, "{text}");
        }
        let ec = "-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(split_pem(ec).1.as_deref(), Some(ec));
    }

    #[test]
    fn names_are_dns_labels() {
        for (path, name) in [
            ("/etc/ssl/Shop.Example.com.pem", "shop-example-com"),
            ("site_1.crt", "site-1-crt"),
            ("---.pem", "certificate"),
            // Cut at 63 characters, never ending in a dash.
            (&format!("{}-b.pem", "a".repeat(62)), &"a".repeat(62)),
        ] {
            assert_eq!(name_of(Path::new(path)), name);
        }
    }
}
