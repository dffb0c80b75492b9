//! One request of an HTTP/2 client: pick its backend group and a backend, send the
//! rewritten request over an HTTP/1.1 or HTTP/2 backend connection, stream the response
//! back. Connect failures move on to another backend; the rest is answered 502/503/504.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use halo_crds::load_balancer::Protocol;
use halo_crds::node_config::UpstreamProtocol;
use http::{Method, Request, Response, StatusCode, request};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;

use super::body::{self, Body};
use super::headers::{self, BadRequest, Origin};
use super::upstream::{self, OpenError};
use super::{Stream, tunnel};
use crate::proxy::backend::{ActiveGuard, Backend};
use crate::proxy::dispatch::Refused;
use crate::proxy::h1::throttle;
use crate::proxy::trace::{Served, Trace};
use crate::proxy::{Group, Service, sticky};

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Answers one client request; the status is counted once here.
pub async fn handle(stream: Stream, mut req: Request<Incoming>) -> Response<Body> {
    let service = stream.conn.slot.load_full();
    let (peer, trace) = (stream.conn.peer, Trace::http2(&service, &req));
    let response = if stream.conn.refusing {
        local(503, "listener at capacity")
    } else {
        let websocket = is_websocket(&req);
        let upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        match prepare(&service, stream.conn.peer, req) {
            Err(e) => client_error(&service, stream.conn.peer, &e),
            Ok((group, parts, body)) => match upgrade {
                Some(upgrade) => tunnel::websocket(&service, group, stream, parts, upgrade).await,
                None => forward(&service, group, stream, parts, body).await,
            },
        }
    };
    service.count_response(response.status().as_u16());
    trace.answered(&service, peer, &response);
    response
}

fn is_websocket<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// The group a request goes to. The listener's first route until routing lands here.
fn route<'s>(service: &'s Service, _parts: &request::Parts) -> Option<&'s Group> {
    service.stream_group()
}

type Prepared<'s> = (Option<&'s Group>, request::Parts, Incoming);

fn prepare(
    service: &Service,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Prepared<'_>, BadRequest> {
    let websocket = is_websocket(&req);
    let (mut parts, body) = req.into_parts();
    if parts.method == Method::CONNECT && !websocket {
        return Err(BadRequest::Connect);
    }
    let group = route(service, &parts);
    let protocol = group.map_or(UpstreamProtocol::Http1, |g| g.config.protocol);
    let origin = Origin {
        peer,
        scheme: scheme(service),
        forwarded: &service.config.forwarded,
    };
    headers::to_backend(&mut parts, &origin, protocol)?;
    Ok((group, parts, body))
}

fn scheme(service: &Service) -> &'static str {
    match service.config.protocol {
        Protocol::Https => "https",
        _ => "http",
    }
}

/// A response of the proxy's own.
pub fn local(status: u16, message: &str) -> Response<Body> {
    let mut r = Response::new(body::text(message));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn client_error(service: &Service, peer: SocketAddr, e: &BadRequest) -> Response<Body> {
    service.count_client_error(e.reason());
    let message = e.to_string();
    throttle::info_client(peer, &service.config.name, e.status(), &message);
    local(e.status(), &message)
}

pub fn gateway_error(
    service: &Service,
    peer: SocketAddr,
    status: u16,
    message: &str,
) -> Response<Body> {
    tracing::warn!(%peer, listener = %service.config.name, %message, "request failed");
    local(status, message)
}

/// What sending a request to one backend came to.
pub enum Sent {
    Response(Response<Incoming>, Option<upstream::Http1>),
    /// Not sent (no connection could be opened): another backend may take it.
    Unsent(Request<Body>, OpenError),
    Timeout,
    Failed(hyper::Error),
}

/// One try on one connection; `Back` returns a request the connection never took.
enum Try {
    Done(Sent),
    Back(Request<Body>),
}

async fn exchange<F>(server: Duration, sent: F, pooled: Option<upstream::Http1>) -> Try
where
    F: Future<Output = Result<Response<Incoming>, TrySendError<Request<Body>>>>,
{
    match tokio::time::timeout(server, sent).await {
        Err(_) => Try::Done(Sent::Timeout),
        Ok(Ok(response)) => Try::Done(Sent::Response(response, pooled)),
        Ok(Err(mut e)) => match e.take_message() {
            Some(back) => Try::Back(back),
            None => Try::Done(Sent::Failed(e.into_error())),
        },
    }
}

async fn forward(
    service: &Service,
    group: Option<&Group>,
    stream: Stream,
    mut parts: request::Parts,
    body: Incoming,
) -> Response<Body> {
    let peer = stream.conn.peer;
    let Some(group) = group else {
        return gateway_error(service, peer, 503, &service.no_backend().to_string());
    };
    let cookie = sticky::request(group, &mut parts.headers);
    let t = service.config.timeouts;
    let mut req = Request::from_parts(parts, body::timed(body, ms(t.client_ms)));
    let mut excluded = vec![false; group.backends.len()];
    for _ in 0..=group.config.retries {
        let acquired = group.acquire(peer.ip(), cookie, &excluded, service.queue_timeout());
        let guard = match acquired.await {
            Ok(guard) => guard,
            Err(Refused::NoBackend) => break,
            Err(refused) => {
                return gateway_error(service, peer, 503, &service.refused(refused).to_string());
            }
        };
        let backend = &guard.backend().clone();
        if let Some(i) = group.index_of(backend) {
            excluded[i] = true;
        }
        match send(service, backend, group.config.protocol, req).await {
            Sent::Response(mut response, pooled) => {
                sticky::response(group, cookie, backend, response.headers_mut());
                return relay(service, peer, guard, response, pooled, stream);
            }
            Sent::Unsent(back, e) => {
                backend.count_error("connect");
                tracing::warn!(listener = %service.config.name, backend = backend.name(), error = %e, "backend connect failed, trying another");
                req = back;
            }
            Sent::Timeout => {
                backend.count_error("timeout");
                let message = format!(
                    "backend {} sent no response within {:?}",
                    backend.name(),
                    ms(t.server_ms)
                );
                return gateway_error(service, peer, 504, &message);
            }
            Sent::Failed(e) => {
                backend.count_error("response");
                throttle::warn_backend(backend, &e);
                let message = format!("backend {}: {e}", backend.name());
                return gateway_error(service, peer, 502, &message);
            }
        }
    }
    gateway_error(service, peer, 503, &service.no_backend().to_string())
}

/// Sends `req` to `backend`: on a pooled HTTP/1.1 connection (a fresh one if the pooled
/// one turns out closed) or on the shared HTTP/2 one (opened again if it closed).
pub async fn send(
    service: &Service,
    backend: &Arc<Backend>,
    protocol: UpstreamProtocol,
    req: Request<Body>,
) -> Sent {
    let t = service.config.timeouts;
    let (connect, server) = (ms(t.connect_ms), ms(t.server_ms));
    let first = match protocol {
        UpstreamProtocol::Http1 => match upstream::idle_http1(backend).await {
            Some(mut sender) => {
                let sent = sender.try_send_request(req);
                exchange(server, sent, Some(sender)).await
            }
            None => Try::Back(req),
        },
        UpstreamProtocol::Http2 => match upstream::shared_http2(backend, connect).await {
            Ok(mut sender) => exchange(server, sender.try_send_request(req), None).await,
            Err(e) => return Sent::Unsent(req, e),
        },
    };
    // A reused connection can have been closed by the backend meanwhile; the request
    // then comes back unsent and goes on a fresh connection.
    let req = match first {
        Try::Done(sent) => return sent,
        Try::Back(req) => req,
    };
    let second = match protocol {
        UpstreamProtocol::Http1 => match upstream::open_http1(backend, connect).await {
            Ok(mut sender) => {
                let sent = sender.try_send_request(req);
                exchange(server, sent, Some(sender)).await
            }
            Err(e) => return Sent::Unsent(req, e),
        },
        UpstreamProtocol::Http2 => {
            upstream::drop_http2(backend);
            match upstream::shared_http2(backend, connect).await {
                Ok(mut sender) => exchange(server, sender.try_send_request(req), None).await,
                Err(e) => return Sent::Unsent(req, e),
            }
        }
    };
    match second {
        Try::Done(sent) => sent,
        Try::Back(req) => Sent::Unsent(req, OpenError::Closed),
    }
}

/// Passes the backend's response on; the backend stays counted busy, and its HTTP/1.1
/// connection out of the pool, until the body has been sent.
pub(super) fn relay(
    service: &Service,
    peer: SocketAddr,
    guard: ActiveGuard,
    response: Response<Incoming>,
    pooled: Option<upstream::Http1>,
    stream: Stream,
) -> Response<Body> {
    let (mut parts, incoming) = response.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        guard.backend().count_error("response");
        let message = format!(
            "backend {} switched protocols unasked",
            guard.backend().name()
        );
        return gateway_error(service, peer, 502, &message);
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.extensions.insert(Served(guard.backend().clone()));
    let server = ms(service.config.timeouts.server_ms);
    let body = body::timed(incoming, server);
    let held = Held {
        guard,
        pooled,
        _stream: stream,
    };
    Response::from_parts(parts, body::holding(body, held))
}

/// What a response body keeps until it is done: the backend's load count and the
/// HTTP/1.1 connection, which goes back to the pool then.
struct Held {
    guard: ActiveGuard,
    pooled: Option<upstream::Http1>,
    _stream: Stream,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(sender) = self.pooled.take() {
            upstream::put_http1(self.guard.backend(), sender);
        }
    }
}
