//! TLS: a listener's rustls server config (certificates chosen by SNI, versions, cipher
//! suites, ALPN) built with its Service, the client config of backend groups that
//! speak TLS, and SNI passthrough. A certificate or key that rustls cannot use refuses
//! the config at its field before anything is swapped.

pub mod client;
pub mod names;
pub mod passthrough;

use std::sync::Arc;

use halo_crds::load_balancer::Protocol;
use halo_crds::node_config::{CertificateConfig, ListenerConfig, ServerTlsConfig, TlsVersion};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig, SupportedProtocolVersion, version};

use self::names::NameIndex;

/// A TLS setting the data plane cannot serve; `field` is relative to the listener or
/// group (`tls.certificates[1]`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct TlsError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        field: field.into(),
        message: message.to_string(),
    }
}

/// The ring provider with only the listed suites (rustls names; empty: its defaults).
pub(crate) fn provider(suites: &[String], field: &str) -> Result<CryptoProvider, TlsError> {
    let mut provider = ring::default_provider();
    if suites.is_empty() {
        return Ok(provider);
    }
    let all = std::mem::take(&mut provider.cipher_suites);
    for (i, name) in suites.iter().enumerate() {
        let found = all
            .iter()
            .find(|s| s.suite().as_str() == Some(name.as_str()))
            .ok_or_else(|| {
                err(
                    format!("{field}[{i}]"),
                    format!("unknown cipher suite {name}"),
                )
            })?;
        provider.cipher_suites.push(*found);
    }
    Ok(provider)
}

/// The versions from `min` up that the provider has a suite for.
fn versions(min: TlsVersion, provider: &CryptoProvider) -> Vec<&'static SupportedProtocolVersion> {
    let mut out = Vec::new();
    let has = |v: &SupportedProtocolVersion| {
        provider
            .cipher_suites
            .iter()
            .any(|s| s.version().version == v.version)
    };
    if min == TlsVersion::Tls12 && has(&version::TLS12) {
        out.push(&version::TLS12);
    }
    if has(&version::TLS13) {
        out.push(&version::TLS13);
    }
    out
}

/// One certificate: its chain and key checked to belong together, and its DNS names.
fn certified(
    c: &CertificateConfig,
    provider: &CryptoProvider,
    field: &str,
) -> Result<(Arc<CertifiedKey>, Vec<String>), TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| err(field, format!("{}: certificate PEM: {e}", c.source)))?;
    let Some(leaf) = chain.first() else {
        return Err(err(field, format!("{}: no certificate", c.source)));
    };
    let names = dns_names(leaf).map_err(|e| err(field, format!("{}: {e}", c.source)))?;
    let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())
        .map_err(|e| err(field, format!("{}: private key PEM: {e}", c.source)))?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        let why = match e {
            rustls::Error::InconsistentKeys(_) => {
                "the private key does not belong to the certificate".to_string()
            }
            other => other.to_string(),
        };
        err(field, format!("{}: {why}", c.source))
    })?;
    Ok((Arc::new(key), names))
}

/// The DNS names a certificate is for: its SAN DNS entries, or its CN without a SAN.
/// x509-parser reads the extension; rustls keeps the parsed certificate to itself.
pub fn dns_names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("subjectAltName: {e}"))?;
    if let Some(san) = san {
        return Ok(san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_string()),
                _ => None,
            })
            .collect());
    }
    Ok(cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect())
}

/// Picks the certificate for each handshake by its SNI name.
#[derive(Debug)]
struct SniResolver {
    index: NameIndex,
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys
            .get(self.index.select(hello.server_name()))
            .cloned()
    }
}

/// The rustls config of a listener's `tls`.
pub fn server_config(tls: &ServerTlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider(&tls.cipher_suites, "tls.cipherSuites")?;
    let mut keys = Vec::with_capacity(tls.certificates.len());
    let mut names = Vec::with_capacity(tls.certificates.len());
    for (i, c) in tls.certificates.iter().enumerate() {
        let (key, n) = certified(c, &provider, &format!("tls.certificates[{i}]"))?;
        keys.push(key);
        names.push(n);
    }
    if keys.is_empty() {
        return Err(err("tls.certificates", "no certificate"));
    }
    let versions = versions(tls.min_version, &provider);
    if versions.is_empty() {
        return Err(err("tls.cipherSuites", "no suite for the allowed versions"));
    }
    let resolver = SniResolver {
        index: NameIndex::new(&names),
        keys,
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e: rustls::Error| err("tls", e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// What TLS a listener needs: its server config (HTTPS) and each group's backend TLS
/// (by group index), all built or the first error with its field.
pub struct ListenerTls {
    pub server: Option<Arc<ServerConfig>>,
    pub upstream: Vec<Option<Arc<client::UpstreamTls>>>,
}

impl ListenerTls {
    pub fn build(config: &ListenerConfig) -> Result<Self, TlsError> {
        let server = match (&config.tls, config.protocol) {
            (Some(tls), Protocol::Https) => Some(server_config(tls)?),
            _ => None,
        };
        let upstream = config
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                g.tls
                    .as_ref()
                    .map(|t| {
                        client::UpstreamTls::new(t, g.protocol)
                            .map(Arc::new)
                            .map_err(|e| err(format!("groups[{i}].{}", e.field), e.message))
                    })
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { server, upstream })
    }
}

/// Why a handshake failed, as the `reason` label of the handshake-error metric.
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    if e.kind() == std::io::ErrorKind::TimedOut {
        return "timeout";
    }
    match e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        Some(E::PeerIncompatible(_)) => "incompatible",
        Some(E::NoApplicationProtocol) => "alpn",
        Some(E::InvalidMessage(_) | E::InappropriateMessage { .. }) => "not_tls",
        Some(E::AlertReceived(_)) => "alert",
        Some(_) => "other",
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => "closed",
        None => "io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_min_and_suites() {
        let all = provider(&[], "s").expect("defaults");
        let v = |min, p: &CryptoProvider| -> Vec<u16> {
            versions(min, p)
                .iter()
                .map(|v| u16::from(v.version))
                .collect()
        };
        assert_eq!(v(TlsVersion::Tls12, &all), vec![0x0303, 0x0304]);
        assert_eq!(v(TlsVersion::Tls13, &all), vec![0x0304]);
        let only12 =
            provider(&["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()], "s").expect("suite");
        assert_eq!(v(TlsVersion::Tls12, &only12), vec![0x0303]);
        assert!(v(TlsVersion::Tls13, &only12).is_empty());
        assert_eq!(
            provider(&["NOPE".into()], "tls.cipherSuites").err(),
            Some(err("tls.cipherSuites[0]", "unknown cipher suite NOPE"))
        );
    }

    #[test]
    fn bad_material_names_the_certificate() {
        let tls = ServerTlsConfig {
            certificates: vec![CertificateConfig {
                source: "site.crt".into(),
                cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                key_pem: String::new(),
            }],
            min_version: TlsVersion::Tls12,
            cipher_suites: Vec::new(),
            alpn: Vec::new(),
        };
        let e = server_config(&tls).expect_err("refused");
        assert_eq!(e.field, "tls.certificates[0]");
        assert!(e.message.starts_with("site.crt: "), "{e}");
    }
}
