//! Real backend servers for tests and the demo: an HTTP server that names itself and a
//! TCP echo server, both on loopback ports picked by the kernel.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::{self, Server};

/// A server that stops when dropped (its listening socket closes, so connects are refused).
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    _server: Server,
}

impl Backend {
    pub(crate) fn new(name: &str, requests: Arc<AtomicU64>, server: Server) -> Self {
        Self {
            name: name.to_string(),
            addr: server.addr(),
            requests,
            _server: server,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn served(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// HTTP/1.1 keep-alive server. `GET /headers` echoes the request headers; `/health`
/// answers 200; `/slow?ms=N` waits N ms; `/cacheable` answers with `Cache-Control:
/// max-age=60` (a response shared caches may store); `POST` echoes the body; everything
/// else answers `<name>\n` with header `x-backend: <name>`.
pub async fn http(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let label = name.to_string();
    let server = server::serve(addr, move |stream| {
        let label = label.clone();
        let counter = counter.clone();
        async move {
            let svc = service_fn(move |req| {
                let label = label.clone();
                let counter = counter.clone();
                async move { Ok::<_, Infallible>(respond(&label, &counter, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
    .await?;
    Ok(Backend::new(name, requests, server))
}

/// Requests a backend is handling right now, and the most it ever handled at once.
#[derive(Debug, Default)]
pub struct Concurrency {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Concurrency {
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }

    fn enter(self: &Arc<Self>) -> InFlight {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

struct InFlight(Arc<Concurrency>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `http` that also records how many requests it handled at once (a request counts
/// from the moment its head was read until its response is ready).
pub async fn http_counted(
    name: &str,
    addr: SocketAddr,
) -> std::io::Result<(Backend, Arc<Concurrency>)> {
    let requests = Arc::new(AtomicU64::new(0));
    let concurrency = Arc::new(Concurrency::default());
    let (counter, gauge) = (requests.clone(), concurrency.clone());
    let label = name.to_string();
    let server = server::serve(addr, move |stream| {
        let (label, counter, gauge) = (label.clone(), counter.clone(), gauge.clone());
        async move {
            let svc = service_fn(move |req| {
                let (label, counter, gauge) = (label.clone(), counter.clone(), gauge.clone());
                async move {
                    let _in_flight = gauge.enter();
                    Ok::<_, Infallible>(respond(&label, &counter, req).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
    .await?;
    Ok((Backend::new(name, requests, server), concurrency))
}

async fn respond(name: &str, counter: &AtomicU64, req: Request<Incoming>) -> Response<Full<Bytes>> {
    counter.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let body = match (req.method().as_str(), path.as_str()) {
        (_, "/headers") => {
            let mut text = String::new();
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            text
        }
        (_, "/slow") => {
            let ms: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("{name}\n")
        }
        ("POST", _) => match req.into_body().collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        },
        _ => format!("{name}\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    if let Ok(v) = hyper::header::HeaderValue::from_str(name) {
        response.headers_mut().insert("x-backend", v);
    }
    if path == "/cacheable" {
        response.headers_mut().insert(
            hyper::header::CACHE_CONTROL,
            hyper::header::HeaderValue::from_static("max-age=60"),
        );
    }
    response
}

/// TCP server that first writes `<name>\n`, then echoes what it receives.
pub async fn tcp_echo(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let greeting = format!("{name}\n");
    let server = server::serve(addr, move |mut stream| {
        // Counted on accept: a connection is one "request" for a TCP backend.
        counter.fetch_add(1, Ordering::Relaxed);
        let greeting = greeting.clone();
        async move {
            if stream.write_all(greeting.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    })
    .await?;
    Ok(Backend::new(name, requests, server))
}

/// A loopback address with a free port: bind port 0, read it back, release it.
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Counter for names unique within a test process.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// WebSocket server (tungstenite, an implementation independent of the proxy) that
/// echoes every text and binary message; counts upgraded connections.
pub async fn ws_echo(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
    use futures::{SinkExt, StreamExt};
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let server = server::serve(addr, move |stream| {
        let counter = counter.clone();
        async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            // Bounded by the client: the loop ends when it closes.
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        }
    })
    .await?;
    Ok(Backend::new(name, requests, server))
}

/// The `http` server behind TLS with the PEM certificate chain and key given (ALPN
/// `http/1.1`): a backend for the proxy's backend TLS.
pub async fn https(
    name: &str,
    addr: SocketAddr,
    cert_pem: &str,
    key_pem: &str,
) -> std::io::Result<Backend> {
    let acceptor = tls_acceptor(cert_pem, key_pem, "http/1.1")?;
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let label = name.to_string();
    let server = server::serve(addr, move |stream| {
        let (label, counter, acceptor) = (label.clone(), counter.clone(), acceptor.clone());
        async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await
            else {
                return;
            };
            let svc = service_fn(move |req| {
                let (label, counter) = (label.clone(), counter.clone());
                async move { Ok::<_, Infallible>(respond(&label, &counter, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        }
    })
    .await?;
    Ok(Backend::new(name, requests, server))
}

/// A TLS server side for a test backend: this chain and key, ALPN `alpn` only.
pub(crate) fn tls_acceptor(
    cert_pem: &str,
    key_pem: &str,
    alpn: &str,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(&e))?;
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
