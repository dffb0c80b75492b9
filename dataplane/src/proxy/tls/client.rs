//! TLS towards the backends of a group with `tls`: verified against the group's CA (no
//! system roots: a backend's certificate comes from a private CA), or not at all when
//! `insecureSkipVerify` asks so; SNI is `serverName` or the backend's address, ALPN
//! follows the group's HTTP version.

use std::net::IpAddr;
use std::sync::Arc;

use halo_crds::node_config::{UpstreamProtocol, UpstreamTlsConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore};

use super::{TlsError, err};

/// A group's backend TLS, ready to wrap connections.
pub struct UpstreamTls {
    pub config: UpstreamTlsConfig,
    pub protocol: UpstreamProtocol,
    connector: TlsConnector,
    name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Builds the client side of `tls` for backends speaking `protocol`.
    pub fn new(tls: &UpstreamTlsConfig, protocol: UpstreamProtocol) -> Result<Self, TlsError> {
        let provider = Arc::new(super::provider(&[], "tls")?);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("tls", e))?;
        let mut config = if tls.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(roots(tls.ca_pem.as_deref())?)
                .with_no_client_auth()
        };
        config.alpn_protocols = vec![match protocol {
            UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
            UpstreamProtocol::Http2 => b"h2".to_vec(),
        }];
        let name = tls
            .server_name
            .as_ref()
            .map(|n| {
                ServerName::try_from(n.clone())
                    .map_err(|e| err("tls.serverName", format!("{n:?}: {e}")))
            })
            .transpose()?;
        Ok(Self {
            config: tls.clone(),
            protocol,
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The handshake over a fresh connection to the backend at `addr`.
    pub async fn connect(
        &self,
        stream: TcpStream,
        addr: IpAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.into()));
        self.connector.connect(name, stream).await
    }
}

fn roots(ca_pem: Option<&str>) -> Result<RootCertStore, TlsError> {
    let Some(pem) = ca_pem else {
        return Err(err("tls.caPem", "no CA to verify backends against"));
    };
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| err("tls.caPem", format!("CA PEM: {e}")))?;
        store
            .add(cert)
            .map_err(|e| err("tls.caPem", format!("CA certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(err("tls.caPem", "no CA certificate"));
    }
    Ok(store)
}

/// Accepts any certificate (still checking the handshake signatures): `insecureSkipVerify`.
#[derive(Debug)]
struct NoVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}
