//! HTTP/2 peers for the proxy tests: a gRPC-shaped h2c backend (hyper's HTTP/2 server)
//! that streams the request body back and ends with `grpc-status`/`grpc-message`
//! trailers, and a hyper HTTP/2 client connection with prior knowledge.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::backends::Backend;
use crate::server;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// h2c server: every request gets `200`, `content-type: application/grpc`, the header
/// `x-backend: <name>`, `x-te: <te field>`, its own body streamed back frame by frame,
/// then the trailers `grpc-status: 0`, `grpc-message: <name>` and `x-received: <body
/// bytes it read>`. Counts requests.
pub async fn grpc_echo(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let label = name.to_string();
    let server = server::serve(addr, move |stream| {
        let label = label.clone();
        let counter = counter.clone();
        async move {
            let svc = service_fn(move |req| {
                counter.fetch_add(1, Ordering::Relaxed);
                let label = label.clone();
                async move { Ok::<_, Infallible>(echo(&label, req)) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
    .await?;
    Ok(Backend::new(name, requests, server))
}

/// `grpc_echo` behind TLS (this chain and key) that accepts only ALPN `h2`.
pub async fn grpc_echo_tls(
    name: &str,
    addr: SocketAddr,
    cert_pem: &str,
    key_pem: &str,
) -> std::io::Result<Backend> {
    let acceptor = crate::backends::tls_acceptor(cert_pem, key_pem, "h2")?;
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let label = name.to_string();
    let server = server::serve(addr, move |stream| {
        let (label, counter, acceptor) = (label.clone(), counter.clone(), acceptor.clone());
        async move {
            let limit = std::time::Duration::from_secs(5);
            let Ok(Ok(tls)) = tokio::time::timeout(limit, acceptor.accept(stream)).await else {
                return;
            };
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return;
            }
            let svc = service_fn(move |req| {
                counter.fetch_add(1, Ordering::Relaxed);
                let label = label.clone();
                async move { Ok::<_, Infallible>(echo(&label, req)) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        }
    })
    .await?;
    Ok(Backend::new(name, requests, server))
}

fn echo(name: &str, req: Request<Incoming>) -> Response<Body> {
    let te = req
        .headers()
        .get("te")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    if let Ok(v) = hyper::header::HeaderValue::from_str(name) {
        trailers.insert("grpc-message", v);
    }
    let received = Arc::new(AtomicU64::new(0));
    let seen = received.clone();
    let data = BodyStream::new(req.into_body()).filter_map(move |frame| {
        let seen = seen.clone();
        async move {
            match frame {
                Ok(f) => f.into_data().ok().map(|d| {
                    seen.fetch_add(d.len() as u64, Ordering::Relaxed);
                    Ok(Frame::data(d))
                }),
                Err(e) => Some(Err(BoxError::from(e))),
            }
        }
    });
    let end = futures::stream::once(async move {
        let n = received.load(Ordering::Relaxed).to_string();
        if let Ok(v) = hyper::header::HeaderValue::from_str(&n) {
            trailers.insert("x-received", v);
        }
        Ok(Frame::trailers(trailers))
    });
    let body = StreamBody::new(data.chain(end)).boxed_unsync();
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(name) {
        h.insert("x-backend", v);
    }
    if let Ok(v) = hyper::header::HeaderValue::from_str(&te) {
        h.insert("x-te", v);
    }
    response
}

/// An HTTP/2 connection with prior knowledge to `addr`; its driver runs until the
/// returned sender and every response are dropped.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Body>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A whole body of bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// What a response brought: status, head, body and trailers.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// Reads a response to its end.
pub async fn read(response: Response<Incoming>) -> anyhow::Result<Reply> {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// Opens a WebSocket over an HTTP/2 extended CONNECT (RFC 8441) on `sender` to `uri`,
/// sends each message as text and returns the echoes. Err when the CONNECT is refused.
pub async fn ws_over_connect(
    sender: &mut SendRequest<Body>,
    uri: &str,
    messages: &[&str],
) -> anyhow::Result<Vec<String>> {
    use futures::SinkExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let limit = std::time::Duration::from_secs(5);
    let mut req = Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(uri)
        .header("sec-websocket-version", "13")
        .body(full(Bytes::new()))?;
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = tokio::time::timeout(limit, sender.send_request(req)).await??;
    if response.status() != hyper::StatusCode::OK {
        anyhow::bail!("extended CONNECT answered {}", response.status());
    }
    let upgraded = tokio::time::timeout(limit, hyper::upgrade::on(response)).await??;
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    let mut echoes = Vec::new();
    for m in messages {
        tokio::time::timeout(limit, ws.send(Message::text(*m))).await??;
        let reply = tokio::time::timeout(limit, ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
        echoes.push(reply.into_text()?.to_string());
    }
    let _ = tokio::time::timeout(limit, ws.close(None)).await;
    Ok(echoes)
}
