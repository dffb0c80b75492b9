//! One request of an HTTP/2 client: pick its backend group and a backend, send the
//! rewritten request over an HTTP/1.1 or HTTP/2 backend connection, stream the response
//! back. Connect failures move on to another backend; the rest is answered 502/503/504.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::Either;
use halo_crds::load_balancer::Protocol;
use halo_crds::node_config::UpstreamProtocol;
use http::{Method, Request, Response, StatusCode, Version, request};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;

use super::body::{self, Body};
use super::headers::{self, BadRequest, Origin};
use super::upstream::{self, OpenError};
use super::{Stream, direct, tunnel};
use crate::proxy::backend::{ActiveGuard, Backend};
use crate::proxy::dispatch::Refused;
use crate::proxy::filter::{self, Action, HeaderEdits, RedirectFrom, RoutePlan, Scheme};
use crate::proxy::h1::throttle;
use crate::proxy::route::{Headers, Matched, RequestView};
use crate::proxy::trace::{Served, Trace};
use crate::proxy::{Group, Service, sticky};

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Answers one client request; the status is counted once here.
pub async fn handle(stream: Stream, mut req: Request<Incoming>) -> Response<Body> {
    let service = stream.conn.slot.load_full();
    let (peer, mut trace) = (stream.conn.peer, Trace::http2(&service, &req));
    let received = stream.received.clone();
    let response = if stream.conn.refusing {
        local(503, "listener at capacity")
    } else {
        let upgrade = Upgrade::of(&req);
        let on_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        match prepare(&service, stream.conn.peer, req, upgrade.as_ref()) {
            Err(e) => client_error(&service, stream.conn.peer, &e),
            Ok(Prepared::Local(response)) => response,
            Ok(Prepared::Own { route, response }) => {
                trace.answered_by(route);
                response
            }
            Ok(Prepared::Forward(p)) => {
                let Forwarded {
                    plan,
                    group,
                    peer,
                    parts,
                    body,
                } = *p;
                if let Some(g) = group {
                    trace.routed(&plan.name, &g.config.name);
                }
                let edits = &plan.response_headers;
                let exchange = async {
                    match (on_upgrade, upgrade) {
                        (Some(client), Some(kind)) => {
                            // Boxed: a tunnel's state would enlarge every request's future.
                            let tunnel = tunnel::upgrade(
                                &service, group, stream, parts, client, kind, edits,
                            );
                            Box::pin(tunnel).await
                        }
                        _ => forward(&service, group, stream, parts, body, edits).await,
                    }
                };
                // One future either way: a second copy of the exchange's state would
                // double the size of every request's task.
                let limited = match plan.timeout {
                    None => Either::Left(exchange.map(Ok)),
                    Some(limit) => Either::Right(tokio::time::timeout(limit, exchange)),
                };
                match limited.await {
                    Ok(r) => r,
                    Err(_) => gateway_error(
                        &service,
                        peer,
                        504,
                        "no response within the route's timeout",
                    ),
                }
            }
        }
    };
    service.count_response(response.status().as_u16());
    trace.answered(&response);
    // The trace ends with the body: its bytes and how it ended are logged then.
    let ending = body::Ending {
        trace,
        service,
        client: peer,
        received,
    };
    response.map(|b| body::traced(b, ending))
}

/// A protocol switch the client asks for.
#[derive(Clone, Debug)]
pub enum Upgrade {
    /// RFC 8441 extended CONNECT with `:protocol websocket` (HTTP/2 clients).
    Websocket,
    /// HTTP/1.1 `Connection: upgrade` with this `Upgrade` value.
    Http1(http::HeaderValue),
}

impl Upgrade {
    fn of<B>(req: &Request<B>) -> Option<Self> {
        if is_websocket(req) {
            return Some(Self::Websocket);
        }
        if req.version() != Version::HTTP_11 {
            return None;
        }
        let asks = req
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        let to = req.headers().get(http::header::UPGRADE)?;
        asks.then(|| Self::Http1(to.clone()))
    }
}

fn is_websocket<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// A request routed to a backend group, its head rewritten for the backend.
struct Forwarded<'s> {
    plan: &'s RoutePlan,
    group: Option<&'s Group>,
    peer: SocketAddr,
    parts: request::Parts,
    body: Incoming,
}

enum Prepared<'s> {
    Forward(Box<Forwarded<'s>>),
    /// The proxy's answer: 404 without a route, 503 without a group.
    Local(Response<Body>),
    /// A route's own answer (redirect, fixed response).
    Own {
        route: &'s str,
        response: Response<Body>,
    },
}

/// Header lookup of a request for the router.
struct Fields<'a>(&'a http::HeaderMap);

impl Headers for Fields<'_> {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(http::HeaderValue::as_bytes)
    }
}

/// What route the request takes and what it becomes: the rewritten head for a
/// forwarded one, else the proxy's answer.
fn prepare<'s>(
    service: &'s Service,
    peer: SocketAddr,
    req: Request<Incoming>,
    upgrade: Option<&Upgrade>,
) -> Result<Prepared<'s>, BadRequest> {
    let (mut parts, body) = req.into_parts();
    if parts.method == Method::CONNECT && !matches!(upgrade, Some(Upgrade::Websocket)) {
        return Err(BadRequest::Connect);
    }
    let authority = headers::authority(&parts)?;
    // A cheap copy (shared bytes): the head is rewritten while the view still reads it.
    let uri = parts.uri.clone();
    let (path, query) = (uri.path(), uri.query().unwrap_or(""));
    let fields = Fields(&parts.headers);
    let view = RequestView {
        method: parts.method.as_str().as_bytes(),
        host: Some(authority.as_str().as_bytes()),
        path: path.as_bytes(),
        query: query.as_bytes(),
        headers: &fields,
    };
    let Some((matched, plan)) = service.routes.find(&view) else {
        return Ok(Prepared::Local(local(404, "no route for this request")));
    };
    let scheme = scheme(service);
    if let Some(response) = own_answer(service, plan, &view, matched, scheme) {
        let route = plan.name.as_str();
        return Ok(Prepared::Own { route, response });
    }
    let Some(group) = service.route_group(plan) else {
        return Ok(Prepared::Local(local(
            503,
            "no backend group can take the request",
        )));
    };
    let target = plan.path.as_ref().map(|m| {
        let path = filter::rewrite_path(m, path.as_bytes(), matched.prefix_len);
        filter::with_query(path, query.as_bytes())
    });
    let protocol = group.config.protocol;
    let origin = Origin {
        peer,
        scheme: scheme.as_str(),
        forwarded: &service.config.forwarded,
    };
    headers::to_backend(&mut parts, &origin, protocol)?;
    headers::routed(
        &mut parts,
        target.as_deref(),
        plan.host.as_deref(),
        &plan.request_headers,
    );
    if let Some(Upgrade::Http1(to)) = upgrade {
        headers::http1_upgrade(&mut parts, to.clone());
    }
    Ok(Prepared::Forward(Box::new(Forwarded {
        plan,
        group: Some(group),
        peer,
        parts,
        body,
    })))
}

/// A redirect's or fixed response's answer; None for a forwarding route.
fn own_answer(
    service: &Service,
    plan: &RoutePlan,
    view: &RequestView<'_>,
    matched: Matched,
    scheme: Scheme,
) -> Option<Response<Body>> {
    match &plan.action {
        Action::Forward { .. } => None,
        Action::Redirect(r) => {
            let from = RedirectFrom {
                scheme,
                host: view.host,
                listener_port: service.config.port,
                path: view.path,
                query: view.query,
                prefix_len: matched.prefix_len,
            };
            let mut response = exact(r.status, "", None);
            if let Ok(v) = http::HeaderValue::from_str(&filter::location(r, &from)) {
                response.headers_mut().insert(http::header::LOCATION, v);
            }
            Some(response)
        }
        Action::Fixed {
            status,
            body,
            content_type,
        } => Some(exact(*status, body, Some(content_type))),
    }
}

fn scheme(service: &Service) -> Scheme {
    match service.config.protocol {
        Protocol::Https => Scheme::Https,
        _ => Scheme::Http,
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

/// A route's own answer: exactly `body`, typed when it has one.
fn exact(status: u16, body: &str, content_type: Option<&str>) -> Response<Body> {
    let mut r = Response::new(body::exact(body.as_bytes()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some(v) = content_type
        .filter(|_| !body.is_empty())
        .and_then(|t| http::HeaderValue::from_str(t).ok())
    {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
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
    /// A response of the in-task HTTP/1.1 exchange ([`direct`]).
    Direct(Response<direct::DirectBody>),
    /// Not sent (no connection could be opened): another backend may take it.
    Unsent(Request<Body>, OpenError),
    Timeout,
    Failed(body::BoxError),
}

/// [`send`] for a request [`direct::eligible`] for the in-task exchange.
async fn send_direct(
    backend: &Arc<Backend>,
    req: Request<Body>,
    connect: Duration,
    server: Duration,
) -> Sent {
    let outgoing = direct::Outgoing::of(&req);
    match direct::exchange(backend, outgoing, connect, server).await {
        Ok(response) => Sent::Direct(response),
        Err(direct::Failed::Connect(e)) => Sent::Unsent(req, OpenError::Connect(e)),
        Err(direct::Failed::Timeout(_)) => Sent::Timeout,
        Err(direct::Failed::Broken(message)) => Sent::Failed(message.into()),
    }
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
            None => Try::Done(Sent::Failed(e.into_error().into())),
        },
    }
}

async fn forward(
    service: &Service,
    group: Option<&Group>,
    stream: Stream,
    mut parts: request::Parts,
    body: Incoming,
    edits: &HeaderEdits,
) -> Response<Body> {
    let peer = stream.conn.peer;
    let Some(group) = group else {
        return gateway_error(service, peer, 503, &service.no_backend().to_string());
    };
    let cookie = sticky::request(group, &mut parts.headers);
    let t = service.config.timeouts;
    let counted = stream.received.clone();
    let received = body::timed_counting(body, ms(t.client_ms), counted);
    let mut req = Request::from_parts(parts, received);
    let mut excluded = vec![false; group.backends.len()];
    let mut tls_failed = false;
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
        let sent = if group.config.protocol == UpstreamProtocol::Http1
            && direct::eligible(backend, &req)
        {
            send_direct(backend, req, ms(t.connect_ms), ms(t.server_ms)).await
        } else {
            let origin = stream.conn.origin();
            send(service, backend, group.config.protocol, req, origin).await
        };
        match sent {
            Sent::Unsent(back, e @ OpenError::Tls { .. }) => {
                // Reachable but not trusted (or not speaking TLS): a gateway error.
                backend.count_error("tls");
                tracing::warn!(listener = %service.config.name, backend = backend.name(), error = %e, "backend TLS failed, trying another");
                tls_failed = true;
                req = back;
            }
            Sent::Response(mut response, pooled) => {
                sticky::response(group, cookie, backend, response.headers_mut());
                return relay(service, peer, guard, response, pooled, stream, edits);
            }
            Sent::Direct(mut response) => {
                sticky::response(group, cookie, backend, response.headers_mut());
                let (parts, direct) = response.into_parts();
                let body = body::timed(direct, ms(t.server_ms));
                return relay_parts(service, peer, guard, parts, body, None, stream, edits);
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
    if tls_failed {
        return gateway_error(service, peer, 502, "no backend completed a TLS handshake");
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
    origin: upstream::Origin,
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
        UpstreamProtocol::Http2 => match upstream::shared_http2(backend, connect, origin).await {
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
        // Boxed: opening a connection is the rare path, and its large state would
        // otherwise sit in every request's future.
        UpstreamProtocol::Http1 => {
            match Box::pin(upstream::open_http1(backend, connect, origin)).await {
                Ok(mut sender) => {
                    let sent = sender.try_send_request(req);
                    exchange(server, sent, Some(sender)).await
                }
                Err(e) => return Sent::Unsent(req, e),
            }
        }
        UpstreamProtocol::Http2 => {
            upstream::drop_http2(backend);
            match upstream::shared_http2(backend, connect, origin).await {
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
    edits: &HeaderEdits,
) -> Response<Body> {
    let (parts, incoming) = response.into_parts();
    let body = body::timed(incoming, ms(service.config.timeouts.server_ms));
    relay_parts(service, peer, guard, parts, body, pooled, stream, edits)
}

/// [`relay`] of a response head and its (timed) body.
#[allow(clippy::too_many_arguments)]
fn relay_parts(
    service: &Service,
    peer: SocketAddr,
    guard: ActiveGuard,
    mut parts: http::response::Parts,
    body: Body,
    pooled: Option<upstream::Http1>,
    stream: Stream,
    edits: &HeaderEdits,
) -> Response<Body> {
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
    headers::edit(&mut parts.headers, edits);
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
