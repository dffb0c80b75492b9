//! TLS on the wire: a listener's certificates, versions, cipher suites and ALPN, and a
//! group's backend TLS. Certificates, keys and CAs come from `RenderInput.material`
//! (Secrets in the controller, files in standalone mode); each reference is checked here
//! so a bad or missing one is refused at its field.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{Checker, Material, MaterialRef, syntax};
use crate::load_balancer::{self as api, CertificateRef, ListenerTls, LoadBalancer};
use crate::node_config::{CertificateConfig, ServerTlsConfig, TlsVersion, UpstreamTlsConfig};

/// Cipher suites the data plane's TLS library (rustls with its ring provider) implements,
/// by the names it uses; a TLS 1.3 suite may also be written with its IANA name
/// (`TLS_AES_128_GCM_SHA256`). Keep in step with that provider's list.
pub const CIPHER_SUITES: &[&str] = &[
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// The ALPN protocols a listener can speak, in the default preference order.
pub const ALPN_PROTOCOLS: [&str; 2] = ["h2", "http/1.1"];

pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";
pub const CA_KEY: &str = "ca.crt";

/// Every certificate, key and CA source the LoadBalancers reference: what the controller
/// must fetch and the file source must read (and watch).
pub fn material_refs(lbs: &[LoadBalancer]) -> BTreeSet<MaterialRef> {
    let mut out = BTreeSet::new();
    for lb in lbs {
        let ns = lb.metadata.namespace.clone().unwrap_or_default();
        let secret = |name: &String| MaterialRef::Secret {
            namespace: ns.clone(),
            name: name.clone(),
        };
        for l in &lb.spec.listeners {
            for cert in l.tls.iter().flat_map(|t| &t.certificates) {
                out.extend(cert.secret_name.iter().map(|name| MaterialRef::Secret {
                    namespace: cert.secret_namespace.clone().unwrap_or_else(|| ns.clone()),
                    name: name.clone(),
                }));
                out.extend(cert.cert_file.iter().cloned().map(MaterialRef::File));
                out.extend(cert.key_file.iter().cloned().map(MaterialRef::File));
            }
        }
        for tls in lb.spec.upstreams().filter_map(|u| u.backend_tls.as_ref()) {
            out.extend(tls.ca_secret_name.iter().map(secret));
            out.extend(tls.ca_file.iter().cloned().map(MaterialRef::File));
        }
    }
    out
}

/// One text out of the material: a Secret's key, or a whole file (key `""`).
fn fetch(material: &Material, r: &MaterialRef, key: &str) -> Result<String, String> {
    let what = describe(r);
    match material.get(r) {
        None => Err(format!("{what} not found")),
        Some(Err(reason)) => Err(reason.clone()),
        Some(Ok(keys)) => keys
            .get(key)
            .cloned()
            .ok_or_else(|| format!("{what} has no key {key}")),
    }
}

fn describe(r: &MaterialRef) -> String {
    match r {
        MaterialRef::Secret { namespace, name } => format!("Secret {namespace}/{name}"),
        MaterialRef::File(path) => format!("file {path}"),
    }
}

fn where_from(r: &MaterialRef, key: &str) -> String {
    match r {
        MaterialRef::Secret { .. } => format!("{} key {key}", describe(r)),
        MaterialRef::File(_) => describe(r),
    }
}

/// A light check that the text is PEM of the expected kind (the data plane parses it).
fn pem_check(text: &str, r: &MaterialRef, key: &str, private_key: bool) -> Result<(), String> {
    let found = text.lines().any(|line| {
        let line = line.trim();
        if private_key {
            line.starts_with("-----BEGIN ") && line.ends_with("PRIVATE KEY-----")
        } else {
            line == "-----BEGIN CERTIFICATE-----"
        }
    });
    if found {
        Ok(())
    } else {
        let kind = if private_key {
            "PRIVATE KEY"
        } else {
            "CERTIFICATE"
        };
        Err(format!("{} holds no PEM {kind} block", where_from(r, key)))
    }
}

fn pem(
    material: &Material,
    r: &MaterialRef,
    key: &str,
    private_key: bool,
) -> Result<String, String> {
    let text = fetch(material, r, key)?;
    pem_check(&text, r, key, private_key)?;
    Ok(text)
}

pub(super) fn server_tls(
    at: &str,
    tls: &ListenerTls,
    namespace: &str,
    material: &Material,
    c: &mut Checker,
) -> ServerTlsConfig {
    if tls.certificates.is_empty() {
        c.report(
            format!("{at}.certificates"),
            "at least one certificate is required",
        );
    }
    let certificates = tls
        .certificates
        .iter()
        .enumerate()
        .filter_map(|(k, cert)| {
            let field = format!("{at}.certificates[{k}]");
            certificate(cert, namespace, material)
                .map_err(|e| c.report(field, e))
                .ok()
        })
        .collect();
    let min_version = match tls.min_version {
        None | Some(api::TlsVersion::Tls12) => TlsVersion::Tls12,
        Some(api::TlsVersion::Tls13) => TlsVersion::Tls13,
    };
    ServerTlsConfig {
        certificates,
        min_version,
        cipher_suites: cipher_suites(
            &format!("{at}.cipherSuites"),
            &tls.cipher_suites,
            min_version,
            c,
        ),
        alpn: alpn(&format!("{at}.alpn"), &tls.alpn, c),
    }
}

fn certificate(
    cert: &CertificateRef,
    namespace: &str,
    material: &Material,
) -> Result<CertificateConfig, String> {
    let namespace = cert.secret_namespace.as_deref().unwrap_or(namespace);
    match (&cert.secret_name, &cert.cert_file, &cert.key_file) {
        (Some(name), None, None) => {
            let r = MaterialRef::Secret {
                namespace: namespace.to_string(),
                name: name.clone(),
            };
            Ok(CertificateConfig {
                source: format!("secret {namespace}/{name}"),
                cert_pem: pem(material, &r, TLS_CERT_KEY, false)?,
                key_pem: pem(material, &r, TLS_KEY_KEY, true)?,
            })
        }
        (None, Some(cert_file), Some(key_file)) => {
            let cert_ref = MaterialRef::File(cert_file.clone());
            let key_ref = MaterialRef::File(key_file.clone());
            Ok(CertificateConfig {
                source: cert_file.clone(),
                cert_pem: pem(material, &cert_ref, "", false)?,
                key_pem: pem(material, &key_ref, "", true)?,
            })
        }
        _ => Err("set secretName, or certFile and keyFile".into()),
    }
}

/// The rustls name of a supported suite, accepting the IANA names of TLS 1.3 suites.
fn suite_name(text: &str) -> Option<&'static str> {
    let upper = text.to_ascii_uppercase();
    let tls13 = upper
        .strip_prefix("TLS_")
        .filter(|rest| !rest.contains("_WITH_"))
        .map(|rest| format!("TLS13_{rest}"));
    CIPHER_SUITES
        .iter()
        .copied()
        .find(|s| *s == upper || Some(*s) == tls13.as_deref())
}

fn cipher_suites(
    at: &str,
    list: &[String],
    min_version: TlsVersion,
    c: &mut Checker,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (k, text) in list.iter().enumerate() {
        match suite_name(text) {
            Some(name) if out.iter().any(|s| s == name) => {
                c.report(
                    format!("{at}[{k}]"),
                    format!("duplicate cipher suite {text}"),
                );
            }
            Some(name) => out.push(name.to_string()),
            None => c.report(
                format!("{at}[{k}]"),
                format!(
                    "{text:?} is not a supported cipher suite (one of {})",
                    CIPHER_SUITES.join(", ")
                ),
            ),
        }
    }
    if min_version == TlsVersion::Tls13
        && !out.is_empty()
        && !out.iter().any(|s| s.starts_with("TLS13_"))
    {
        c.report(at, "minVersion 1.3 needs at least one TLS13_ cipher suite");
    }
    out
}

fn alpn(at: &str, list: &[String], c: &mut Checker) -> Vec<String> {
    if list.is_empty() {
        return ALPN_PROTOCOLS.iter().map(ToString::to_string).collect();
    }
    let mut out: Vec<String> = Vec::new();
    for (k, p) in list.iter().enumerate() {
        if !ALPN_PROTOCOLS.contains(&p.as_str()) {
            c.report(
                format!("{at}[{k}]"),
                format!("{p:?} must be h2 or http/1.1"),
            );
        } else if out.contains(p) {
            c.report(format!("{at}[{k}]"), format!("duplicate protocol {p}"));
        } else {
            out.push(p.clone());
        }
    }
    out
}

pub(super) fn upstream_tls(
    at: &str,
    tls: &api::BackendTls,
    namespace: &str,
    material: &Material,
    c: &mut Checker,
) -> UpstreamTlsConfig {
    let ca_pem = ca_source(at, tls, namespace, c).and_then(|(field, r, key)| {
        pem(material, &r, key, false)
            .map_err(|e| c.report(field, e))
            .ok()
    });
    let server_name = tls.server_name.as_ref().and_then(|name| {
        if name.parse::<IpAddr>().is_ok() {
            return Some(name.clone());
        }
        syntax::exact_hostname(name)
            .map_err(|e| c.report(format!("{at}.serverName"), e))
            .ok()
    });
    UpstreamTlsConfig {
        ca_pem,
        insecure_skip_verify: tls.insecure_skip_verify,
        server_name,
    }
}

/// Where the backend CA comes from (the field, the source, its key), if anywhere: one
/// of caSecretName or caFile, or neither with verification explicitly skipped.
fn ca_source(
    at: &str,
    tls: &api::BackendTls,
    namespace: &str,
    c: &mut Checker,
) -> Option<(String, MaterialRef, &'static str)> {
    let source = match (&tls.ca_secret_name, &tls.ca_file) {
        (Some(_), Some(_)) => {
            c.report(at, "set caSecretName or caFile, not both");
            return None;
        }
        (Some(name), None) => (
            format!("{at}.caSecretName"),
            MaterialRef::Secret {
                namespace: namespace.to_string(),
                name: name.clone(),
            },
            CA_KEY,
        ),
        (None, Some(path)) => (format!("{at}.caFile"), MaterialRef::File(path.clone()), ""),
        (None, None) => {
            if !tls.insecure_skip_verify {
                c.report(
                    at,
                    "set caSecretName or caFile to verify backends, or insecureSkipVerify",
                );
            }
            return None;
        }
    };
    if tls.insecure_skip_verify {
        c.report(
            format!("{at}.insecureSkipVerify"),
            "a CA is given: verification cannot also be skipped",
        );
    }
    Some(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_names_accept_iana_tls13_forms() {
        assert_eq!(
            suite_name("TLS_AES_128_GCM_SHA256"),
            Some("TLS13_AES_128_GCM_SHA256")
        );
        assert_eq!(
            suite_name("tls13_aes_256_gcm_sha384"),
            Some("TLS13_AES_256_GCM_SHA384")
        );
        assert_eq!(
            suite_name("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
        );
        assert_eq!(suite_name("TLS_RSA_WITH_AES_128_CBC_SHA"), None);
        assert_eq!(suite_name("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"), None);
    }

    #[test]
    fn pem_kinds() {
        let r = MaterialRef::File("x.pem".into());
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n";
        assert!(pem_check(cert, &r, "", false).is_ok());
        assert!(pem_check(key, &r, "", true).is_ok());
        assert_eq!(
            pem_check(key, &r, "", false),
            Err("file x.pem holds no PEM CERTIFICATE block".into())
        );
        assert!(pem_check(cert, &r, "", true).is_err());
    }
}
