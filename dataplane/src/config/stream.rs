//! Controller mode: hold `GET /v1/nodes/{node}/config` open on the controller, apply each
//! snapshot atomically, persist the last good one, report status (or a NACK with the
//! reason). At start-up the last good config is served before the controller answers,
//! so a node keeps working when the controller or the API server is gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use halo_crds::NodeConfig;
use halo_crds::protocol::{
    ListenerReport, NodeReport, Rejection, StreamMessage, VrrpReport, VrrpState,
};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

use crate::runtime::Runtime;

const LAST_GOOD: &str = "last-good.json";
/// A stream silent for this long is considered dead (the controller sends heartbeats).
const SILENCE_LIMIT: Duration = Duration::from_secs(20);
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// An unchanged report is sent again after this long, so the controller keeps hearing
/// from the node.
const REFRESH_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("controller URL {0}: expected https://host:port")]
    Url(String),
    #[error("CA file {path}: {message}")]
    Ca { path: PathBuf, message: String },
    #[error("token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connect {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("controller answered {0}: {1}")]
    Status(StatusCode, String),
    #[error("request: {0}")]
    Request(#[from] http::Error),
    #[error("the stream went silent")]
    Silent,
}

pub struct ControllerClient {
    host: String,
    port: u16,
    node: String,
    token_file: PathBuf,
    tls: TlsConnector,
    state_dir: PathBuf,
}

impl ControllerClient {
    pub fn new(
        url: &str,
        node: &str,
        token_file: &Path,
        ca_file: &Path,
        state_dir: &Path,
    ) -> Result<Self, ClientError> {
        let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.into()))?;
        if uri.scheme_str() != Some("https") {
            return Err(ClientError::Url(url.into()));
        }
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Url(url.into()))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let ca = |message: String| ClientError::Ca {
            path: ca_file.to_path_buf(),
            message,
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| ca(e.to_string()))? {
            roots
                .add(cert.map_err(|e| ca(e.to_string()))?)
                .map_err(|e| ca(e.to_string()))?;
        }
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ca(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            host,
            port,
            node: node.to_string(),
            token_file: token_file.to_path_buf(),
            tls: TlsConnector::from(Arc::new(config)),
            state_dir: state_dir.to_path_buf(),
        })
    }

    fn token(&self) -> Result<String, ClientError> {
        // Re-read every time: projected tokens are rotated by the kubelet.
        std::fs::read_to_string(&self.token_file)
            .map(|t| t.trim().to_string())
            .map_err(|source| ClientError::Token {
                path: self.token_file.clone(),
                source,
            })
    }

    async fn connect(
        &self,
    ) -> Result<
        hyper::client::conn::http1::SendRequest<
            http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>,
        >,
        ClientError,
    > {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr))
            .await
            .map_err(|_| ClientError::Connect(addr.clone(), std::io::ErrorKind::TimedOut.into()))?
            .map_err(|e| ClientError::Connect(addr.clone(), e))?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| ClientError::Url(self.host.clone()))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(ClientError::Tls)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    pub fn last_good(&self) -> Option<NodeConfig> {
        let text = std::fs::read(self.state_dir.join(LAST_GOOD)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn save_last_good(&self, config: &NodeConfig) {
        let path = self.state_dir.join(LAST_GOOD);
        let tmp = self.state_dir.join(format!("{LAST_GOOD}.tmp"));
        let result = serde_json::to_vec(config)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                std::fs::create_dir_all(&self.state_dir).and_then(|()| std::fs::write(&tmp, bytes))
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot persist the last good config");
        }
    }

    /// Serves the persisted config, then follows the controller for ever.
    pub async fn run(self, runtime: Arc<Runtime>) {
        if let Some(config) = self.last_good() {
            let version = config.version;
            match runtime.apply(config).await {
                Ok(()) => tracing::info!(
                    version,
                    "serving the last good config until the controller answers"
                ),
                Err(e) => tracing::error!(error = %e, "the persisted config no longer applies"),
            }
        }
        let this = Arc::new(self);
        tokio::spawn(this.clone().report_loop(runtime.clone()));
        let mut backoff = Duration::from_millis(200);
        loop {
            match this.follow(&runtime).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "config stream interrupted")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn follow(&self, runtime: &Runtime) -> Result<(), ClientError> {
        let (version, hash) = runtime.applied_version().unwrap_or((0, String::new()));
        let mut sender = self.connect().await?;
        let request = Request::get(format!(
            "/v1/nodes/{}/config?version={version}&hash={hash}",
            self.node
        ))
        .header(header::HOST, &self.host)
        .header(header::AUTHORIZATION, format!("Bearer {}", self.token()?))
        .body(Empty::new().boxed())?;
        let response = sender.send_request(request).await?;
        if response.status() != StatusCode::OK {
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(ClientError::Status(
                status,
                String::from_utf8_lossy(&body).trim().to_string(),
            ));
        }
        tracing::info!(node = %self.node, "following the controller");
        let mut body = response.into_body();
        let mut buffer = BytesMut::new();
        loop {
            let frame = match tokio::time::timeout(SILENCE_LIMIT, body.frame()).await {
                Err(_) => return Err(ClientError::Silent),
                Ok(None) => return Ok(()),
                Ok(Some(frame)) => frame?,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line = buffer.split_to(end + 1);
                self.handle(&line[..end], runtime).await;
            }
            if buffer.remaining() > 64 << 20 {
                buffer.clear();
            }
        }
    }

    async fn handle(&self, line: &[u8], runtime: &Runtime) {
        let message: StreamMessage = match serde_json::from_slice(line) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable message from the controller");
                return;
            }
        };
        let StreamMessage::Config { config } = message else {
            return;
        };
        let (version, hash) = (config.version, config.hash.clone());
        if runtime.applied_hash().as_deref() == Some(hash.as_str())
            && runtime.applied_version().is_some_and(|(v, _)| v == version)
        {
            return;
        }
        if config.content_hash() != hash {
            self.report(
                runtime,
                Some(Rejection {
                    version,
                    hash,
                    reason: "content does not match its hash".into(),
                }),
            )
            .await;
            return;
        }
        let snapshot = config.clone();
        match runtime.apply(config).await {
            Ok(()) => {
                self.save_last_good(&snapshot);
                self.report(runtime, None).await;
            }
            Err(e) => {
                tracing::error!(version, error = %e, "config refused; still serving the previous one");
                self.report(
                    runtime,
                    Some(Rejection {
                        version,
                        hash,
                        reason: e.to_string(),
                    }),
                )
                .await;
            }
        }
    }

    /// Reports what changed: a VRRP state change at once (the VirtualIP status follows
    /// the master within the report's round trip), health and config every
    /// `REPORT_EVERY`, and everything again after `REFRESH_EVERY` of silence.
    async fn report_loop(self: Arc<Self>, runtime: Arc<Runtime>) {
        let mut last = String::new();
        let mut last_sent = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(REPORT_EVERY) => {}
                () = runtime.vrrp_state_changed() => {}
            }
            let report = build_report(&runtime, None);
            let key = report_key(&report);
            if report_due(&key, &last, last_sent.elapsed()) && self.post(&report).await.is_ok() {
                last = key;
                last_sent = tokio::time::Instant::now();
            }
        }
    }

    async fn report(&self, runtime: &Runtime, rejected: Option<Rejection>) {
        if let Err(e) = self.post(&build_report(runtime, rejected)).await {
            tracing::warn!(error = %e, "cannot report status");
        }
    }

    /// Posts a report, retrying on the standby's 503 (each try is a new connection).
    async fn post(&self, report: &NodeReport) -> Result<(), ClientError> {
        let mut result = self.post_once(report).await;
        for _ in 0..8 {
            match &result {
                Err(ClientError::Status(StatusCode::SERVICE_UNAVAILABLE, _)) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    result = self.post_once(report).await;
                }
                _ => break,
            }
        }
        result
    }

    async fn post_once(&self, report: &NodeReport) -> Result<(), ClientError> {
        let body = serde_json::to_vec(report).unwrap_or_default();
        let mut sender = self.connect().await?;
        let request = Request::post(format!("/v1/nodes/{}/status", self.node))
            .header(header::HOST, &self.host)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token()?))
            .header(header::CONTENT_TYPE, "application/json")
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )?;
        let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
            .await
            .map_err(|_| ClientError::Silent)??;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(ClientError::Status(response.status(), String::new()))
        }
    }
}

/// What a report is compared on: the applied config, VRRP states and priorities, and
/// listener health (not the ever-growing "since" times).
fn report_key(report: &NodeReport) -> String {
    serde_json::to_string(&(
        &report.applied_hash,
        &report
            .vrrp
            .iter()
            .map(|v| (&v.state, v.priority))
            .collect::<Vec<_>>(),
        &report.listeners,
    ))
    .unwrap_or_default()
}

/// Whether a report with `key` goes out: when it differs from the last one sent, or
/// when nothing was sent for `REFRESH_EVERY`.
fn report_due(key: &str, last: &str, since_sent: Duration) -> bool {
    key != last || since_sent >= REFRESH_EVERY
}

pub fn build_report(runtime: &Runtime, rejected: Option<Rejection>) -> NodeReport {
    let status = runtime.status();
    NodeReport {
        applied_version: status.version,
        applied_hash: status.hash,
        rejected,
        vrrp: status
            .vrrp
            .iter()
            .map(|v| VrrpReport {
                vip: v.name.clone(),
                state: v.state,
                priority: v.priority,
                since_ms_ago: v.since_ms_ago,
            })
            .chain(status.vips.iter().map(|v| VrrpReport {
                // Held without election: this node is its only master.
                vip: v.name.clone(),
                state: if v.error.is_some() {
                    VrrpState::Fault
                } else {
                    VrrpState::Master
                },
                priority: 255,
                since_ms_ago: 0,
            }))
            .collect(),
        listeners: status
            .listeners
            .iter()
            .map(|l| ListenerReport {
                name: l.name.clone(),
                ready_backends: u32::try_from(l.ready_backends).unwrap_or(u32::MAX),
                total_backends: u32::try_from(l.backends.len()).unwrap_or(u32::MAX),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_goes_out_when_it_changed_or_has_been_silent_too_long() {
        let s = Duration::from_secs;
        for (key, last, since, due) in [
            ("a", "", s(0), true),
            ("a", "a", s(0), false),
            ("a", "a", s(29), false),
            ("a", "a", s(30), true),
            ("b", "a", s(0), true),
        ] {
            assert_eq!(report_due(key, last, since), due, "{key} {last} {since:?}");
        }
    }

    #[test]
    fn the_key_ignores_how_long_a_state_has_lasted() {
        let report = |state: VrrpState, since_ms_ago| NodeReport {
            vrrp: vec![VrrpReport {
                vip: "web".into(),
                state,
                priority: 100,
                since_ms_ago,
            }],
            ..NodeReport::default()
        };
        assert_eq!(
            report_key(&report(VrrpState::Master, 10)),
            report_key(&report(VrrpState::Master, 5000))
        );
        assert_ne!(
            report_key(&report(VrrpState::Master, 10)),
            report_key(&report(VrrpState::Backup, 10))
        );
    }
}
