//! TLS for the config stream, from PEM files or PEM text.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("read {}", p.display()));
    acceptor_from_pem(&read(cert)?, &read(key)?)
        .with_context(|| format!("{} and {}", cert.display(), key.display()))
}

pub fn acceptor_from_pem(cert: &[u8], key: &[u8]) -> Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .context("parse the certificate chain")?;
    if chain.is_empty() {
        anyhow::bail!("no certificate in the chain");
    }
    let key = PrivateKeyDer::from_pem_slice(key).context("parse the private key")?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
