//! HTTP/1.1 reverse proxy: keep-alive to clients, pooled keep-alive connections to
//! backends, forwarding headers, retries on connect failure.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::Service;
use super::backend::{ActiveGuard, Backend};
use super::io::IdleTimeout;

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Answers one request with 503 and closes: the client learns why, instead of seeing a
/// reset while it is still sending.
async fn refuse(stream: TcpStream, timeout: Duration) {
    let handler = service_fn(|_req: Request<Incoming>| async {
        Ok::<_, Infallible>(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "listener at capacity".into(),
        ))
    });
    let serve = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), handler);
    let _ = tokio::time::timeout(timeout, serve).await;
}

pub async fn serve(stream: TcpStream, peer: SocketAddr, slot: Arc<ArcSwap<Service>>) {
    let service = slot.load_full();
    let Some(admitted) = service.admit() else {
        refuse(
            stream,
            Duration::from_millis(service.config.timeouts.http_request_ms.min(5_000)),
        )
        .await;
        return;
    };
    let t = service.config.timeouts;
    let io = TokioIo::new(IdleTimeout::new(stream, Duration::from_millis(t.client_ms)));
    let handler_slot = slot.clone();
    let handler = service_fn(move |req| {
        let slot = handler_slot.clone();
        async move { Ok::<_, Infallible>(handle(req, peer, &slot.load_full()).await) }
    });
    // hyper starts this clock when it waits for a request head, also between keep-alive
    // requests, so it bounds both.
    let head_timeout = Duration::from_millis(t.http_request_ms.min(t.idle_ms));
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .keep_alive(true)
        .serve_connection(io, handler)
        .await;
    if let Err(e) = result {
        if e.is_parse() || e.is_parse_too_large() {
            service.count_response(400);
            tracing::info!(%peer, listener = %service.config.name, error = %e, "malformed request rejected with 400");
        } else {
            tracing::debug!(%peer, error = %e, "client connection ended");
        }
    }
    drop(admitted);
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    service: &Arc<Service>,
) -> Response<ProxyBody> {
    let response = match forward(service, req, peer).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%peer, listener = %service.config.name, error = %e.message, "request failed");
            plain(e.status, e.message)
        }
    };
    service.count_response(response.status().as_u16());
    response
}

struct Failure {
    status: StatusCode,
    message: String,
}

fn failure(status: StatusCode, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

async fn forward(
    service: &Arc<Service>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, Failure> {
    prepare_request(&mut req, peer, service.config.forwarded_headers);
    let server_timeout = Duration::from_millis(service.config.timeouts.server_ms);
    let mut excluded = vec![false; service.backends.len()];
    let mut pending = Some(req);
    let mut attempts_left = service.config.retries + 1;
    while attempts_left > 0 {
        let Some(i) = service.pick(peer.ip(), &excluded) else {
            break;
        };
        excluded[i] = true;
        attempts_left -= 1;
        let backend = service.backends[i].clone();
        let guard = backend.track();
        // A pooled connection the backend closed in the meantime is not a failure of the
        // backend: fall back to one fresh connection to the same server.
        let mut tried_fresh = false;
        loop {
            let mut sender = match (tried_fresh, backend.take_idle()) {
                (false, Some(s)) => s,
                _ => {
                    tried_fresh = true;
                    match open(&backend, service.connect_timeout()).await {
                        Ok(s) => s,
                        Err(e) => {
                            backend.count_error("connect");
                            tracing::warn!(listener = %service.config.name, backend = backend.name(), error = %e, "backend connect failed, trying another");
                            break;
                        }
                    }
                }
            };
            let Some(request) = pending.take() else {
                return Err(failure(
                    StatusCode::BAD_GATEWAY,
                    "request could not be replayed",
                ));
            };
            match tokio::time::timeout(server_timeout, sender.try_send_request(request)).await {
                Err(_) => {
                    backend.count_error("timeout");
                    return Err(failure(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "backend {} sent no response within {server_timeout:?}",
                            backend.name()
                        ),
                    ));
                }
                Ok(Ok(response)) => {
                    recycle(sender, backend.clone());
                    return Ok(relay(response, guard));
                }
                Ok(Err(mut e)) => match e.take_message() {
                    Some(unsent) if !tried_fresh => pending = Some(unsent),
                    Some(unsent) => {
                        pending = Some(unsent);
                        backend.count_error("connect");
                        break;
                    }
                    None => {
                        backend.count_error("response");
                        return Err(failure(
                            StatusCode::BAD_GATEWAY,
                            format!("backend {} failed: {}", backend.name(), e.into_error()),
                        ));
                    }
                },
            }
        }
    }
    Err(failure(
        StatusCode::SERVICE_UNAVAILABLE,
        service.no_backend().to_string(),
    ))
}

async fn open(backend: &Backend, timeout: Duration) -> Result<SendRequest<Incoming>, String> {
    let stream = backend.connect(timeout).await.map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "backend connection closed");
        }
    });
    Ok(sender)
}

/// Returns the connection to the pool once the response body has been read through.
fn recycle(mut sender: SendRequest<Incoming>, backend: Arc<Backend>) {
    tokio::spawn(async move {
        if sender.ready().await.is_ok() {
            backend.put_idle(sender);
        }
    });
}

/// Hop-by-hop headers belong to one connection, not to the message (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

fn prepare_request(req: &mut Request<Incoming>, peer: SocketAddr, forwarded_headers: bool) {
    if let Some(pq) = req.uri().path_and_query().cloned()
        && req.uri().scheme().is_some()
    {
        // Absolute-form from a client that thinks we are a forward proxy: send origin-form.
        if let Ok(uri) = pq.as_str().parse() {
            *req.uri_mut() = uri;
        }
    }
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if !forwarded_headers {
        return;
    }
    let client = peer.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client}"),
        None => client.clone(),
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let for_node = if peer.is_ipv6() {
        format!("\"[{client}]\"")
    } else {
        client
    };
    let mut forwarded = format!("for={for_node};proto=http");
    if let Some(h) = host.filter(|h| h.bytes().all(|b| b.is_ascii_graphic())) {
        forwarded.push_str(&format!(";host=\"{h}\""));
    }
    if let Some(prior) = headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        forwarded = format!("{prior}, {forwarded}");
    }
    for (name, value) in [
        ("x-forwarded-for", xff),
        ("x-forwarded-proto", "http".to_string()),
        ("forwarded", forwarded),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

fn relay(mut response: Response<Incoming>, guard: ActiveGuard) -> Response<ProxyBody> {
    strip_hop_by_hop(response.headers_mut());
    response.map(|body| {
        Tracked {
            inner: body,
            _guard: guard,
        }
        .boxed()
    })
}

fn plain(status: StatusCode, message: String) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(format!("{message}\n")))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response body that keeps its backend counted as busy until the body is done.
struct Tracked {
    inner: Incoming,
    _guard: ActiveGuard,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
