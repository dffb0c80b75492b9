//! One HTTP/1.1 client connection: waits for a request without holding a buffer, then
//! forwards it to a pooled backend connection and relays the response, with strict
//! framing, inactivity timeouts on both sides and bounded buffering (backpressure).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use halo_crds::load_balancer::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use super::body::Cursor;
use super::head::{
    self, BadResponse, Limits, Method, Reject, RequestBody, RequestHead, ResponseBody, ResponseHead,
};
use super::rewrite::{self, ClientConnection, Origin, RequestEdits, SetCookie};
use super::{routed, throttle};
use crate::proxy::accesslog::{By, Phase, Termination};
use crate::proxy::backend::Backend;
use crate::proxy::dispatch::Refused;
use crate::proxy::filter::{Action, DEFAULT_CONTENT_TYPE, HeaderEdits, RoutePlan, Scheme};
use crate::proxy::h2::{self, preface, preface::Start};
use crate::proxy::trace::Trace;
use crate::proxy::{Group, Service, bufpool, persist, proxy_protocol, pump};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// How long a refused client gets to finish sending before the socket closes, so the
/// error response is not lost to a reset.
const LINGER: Duration = Duration::from_secs(1);

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Writes all of `data` unless the peer stops taking bytes for `limit` (or fails).
async fn send(stream: &mut TcpStream, data: &[u8], limit: Duration) -> bool {
    matches!(timeout(limit, stream.write_all(data)).await, Ok(Ok(())))
}

struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes of the next request that arrived with the previous one (pipelining).
    carry: Option<Vec<u8>>,
    /// The exchange in progress, for statistics and the access log.
    trace: Trace,
}

enum Next {
    KeepAlive,
    Close,
}

/// What ends an exchange early, answered by the proxy itself.
enum Failure {
    /// Close without a word: the client went away or never started a request.
    Silent,
    Client(Reject),
    Timeout,
    /// A problem on the backend side: 502, 503 or 504 with a message, and who ended it
    /// in which phase.
    Gateway(Termination, u16, String),
}

/// Serves one accepted client connection until it closes.
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<ArcSwap<Service>>,
) -> impl Future<Output = ()> + Send {
    // Built here, not inside the async fn: its arguments would otherwise be stored in
    // the task twice (as arguments and as the moved-into local).
    run(
        Client {
            stream,
            peer,
            carry: None,
            trace: Trace::default(),
        },
        slot,
    )
}

async fn run(mut client: Client, slot: Arc<ArcSwap<Service>>) {
    let admitted = slot.load().admit();
    let Some(admitted) = admitted else {
        // Boxed: the refusal's state must not make every connection's task larger.
        Box::pin(refuse(client, slot.load_full())).await;
        return;
    };
    if slot.load().config.h2c {
        // Boxed like the exchange: an idle HTTP/1.1 connection must stay small.
        let wait = ms(slot.load().config.timeouts.http_request_ms);
        match Box::pin(preface::read_start(&mut client.stream, wait)).await {
            Start::Http2(head) => {
                let (stream, peer) = (client.stream, client.peer);
                Box::pin(h2::serve_h2c(stream, head, peer, slot, admitted)).await;
                return;
            }
            Start::Http1(head) => client.carry = Some(head),
            Start::Gone => return,
        }
    }
    let mut first = true;
    loop {
        if client.carry.is_none() {
            let t = slot.load().config.timeouts;
            let wait = ms(if first { t.http_request_ms } else { t.idle_ms });
            if !wait_readable(&client.stream, wait).await {
                break;
            }
        }
        first = false;
        // The service is read per request (a reload applies to the next one), and
        // lives in the boxed exchange, not in the idle task.
        match Box::pin(exchange(&mut client, slot.load_full())).await {
            Next::KeepAlive => {}
            Next::Close => break,
        }
    }
    drop(admitted);
}

/// Waits until the client sends something, holding no buffer and no waiter node of its
/// own (the socket's readiness slot is used): an idle keep-alive connection is small.
async fn wait_readable(stream: &TcpStream, wait: Duration) -> bool {
    let timer = tokio::time::sleep(wait);
    tokio::pin!(timer);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = stream.poll_read_ready(cx) {
            return Poll::Ready(r.is_ok());
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

async fn exchange(client: &mut Client, service: Arc<Service>) -> Next {
    let service = &service;
    let mut cbuf = client
        .carry
        .take()
        .unwrap_or_else(|| bufpool::take(bufpool::HEAD));
    let limits = head::limits();
    client.trace = Trace::begin(service);
    let next = match read_head(client, service, &mut cbuf, &limits).await {
        Ok(head) => forward(client, service, &mut cbuf, head).await,
        Err(Failure::Client(_)) if proxy_protocol::opens_like_header(&cbuf) => {
            unlisted_header(client, service).await
        }
        Err(failure) => fail(client, service, failure).await,
    };
    std::mem::take(&mut client.trace).finish(service, client.peer);
    match next {
        Next::KeepAlive if !cbuf.is_empty() => client.carry = Some(cbuf),
        _ => bufpool::give(cbuf),
    }
    next
}

/// Reads until a whole request head is in `cbuf`, within `timeouts.httpRequest`.
async fn read_head(
    client: &mut Client,
    service: &Service,
    cbuf: &mut Vec<u8>,
    limits: &Limits,
) -> Result<RequestHead, Failure> {
    let deadline = Instant::now() + ms(service.config.timeouts.http_request_ms);
    loop {
        if !cbuf.is_empty()
            && let Some(head) = head::parse_request(cbuf, limits).map_err(Failure::Client)?
        {
            return Ok(head);
        }
        if cbuf.len() >= cbuf.capacity() {
            if cbuf.len() >= limits.max_head {
                return Err(Failure::Client(Reject::HeadTooLarge));
            }
            // A rare large head: grow to the limit (this buffer is then not pooled).
            cbuf.reserve_exact(limits.max_head - cbuf.len());
        }
        match timeout_at(deadline, client.stream.read_buf(cbuf)).await {
            Err(_) if cbuf.is_empty() => return Err(Failure::Silent),
            Err(_) => return Err(Failure::Timeout),
            Ok(Ok(0) | Err(_)) => return Err(Failure::Silent),
            Ok(Ok(n)) => client.trace.bytes(n as u64, 0),
        }
    }
}

/// Everything about one request that the attempts on backends share.
struct Exchange<'a> {
    head: &'a RequestHead,
    /// The backend group the route chose.
    group: &'a Group,
    /// The route's response header filters.
    response_headers: &'a HeaderEdits,
    /// The route's timeout: the response head must have come by then.
    deadline: Option<Instant>,
    /// The backend the request's persistence cookie names (a valid one).
    cookie: Option<usize>,
    /// The request head for the backend, followed by the body bytes read so far.
    out: Vec<u8>,
    body: Cursor,
    /// `out` holds the whole request, so it can be sent again.
    replayable: bool,
    sent_continue: bool,
}

async fn forward(
    client: &mut Client,
    service: &Arc<Service>,
    cbuf: &mut Vec<u8>,
    head: RequestHead,
) -> Next {
    let origin = Origin {
        peer: client.peer,
        local: head
            .host
            .is_none()
            .then(|| client.stream.local_addr().ok())
            .flatten(),
        scheme: match service.config.protocol {
            Protocol::Https => Scheme::Https,
            _ => Scheme::Http,
        },
        forwarding: rewrite::forwarding(&service.config.forwarded, client.peer.ip()),
    };
    let mut out = bufpool::take(bufpool::SMALL);
    client
        .trace
        .request(head.method_span.get(cbuf), head.path.get(cbuf));
    let (plan, group) = match route(service, cbuf, &head, &origin, &mut out) {
        Ok(chosen) => {
            client.trace.routed(&chosen.0.name, &chosen.1.config.name);
            chosen
        }
        Err(local) => {
            bufpool::give(out);
            if let Some(route) = local.route {
                client.trace.answered_by(route);
            }
            return answer(client, service, cbuf, &head, local).await;
        }
    };
    let cookie = cookie_backend(group, cbuf, &head);
    cbuf.drain(..head.len);
    let mut body = Cursor::request(head.body);
    let used = match body.advance(cbuf, &mut out) {
        Ok(n) => n,
        Err(e) => {
            bufpool::give(out);
            let failure = Failure::Client(Reject::Malformed(e.0));
            return fail(client, service, failure).await;
        }
    };
    cbuf.drain(..used);
    let mut ex = Exchange {
        replayable: body.is_done(),
        head: &head,
        group,
        response_headers: &plan.response_headers,
        deadline: plan.timeout.map(|t| Instant::now() + t),
        cookie,
        out,
        body,
        sent_continue: false,
    };
    let next = attempts(client, service, cbuf, &mut ex).await;
    bufpool::give(ex.out);
    next
}

/// An answer of the proxy's own instead of forwarding.
struct Local<'s> {
    status: u16,
    /// A redirect's target.
    location: Option<String>,
    content_type: &'s str,
    body: &'s [u8],
    /// The route whose own answer this is.
    route: Option<&'s str>,
}

impl Local<'static> {
    fn text(status: u16, message: &'static str) -> Self {
        Self {
            status,
            route: None,
            location: None,
            content_type: DEFAULT_CONTENT_TYPE,
            body: message.as_bytes(),
        }
    }
}

/// Routes the request: the route's plan and backend group, with the head for the
/// backend (rewritten by the route) in `out`; or the proxy's own answer.
fn route<'s>(
    service: &'s Service,
    cbuf: &[u8],
    head: &RequestHead,
    origin: &Origin,
    out: &mut Vec<u8>,
) -> Result<(&'s RoutePlan, &'s Group), Local<'s>> {
    let fields = routed::HeadFields::new(cbuf, head);
    let view = fields.view();
    let Some((matched, plan)) = service.routes.find(&view) else {
        return Err(Local::text(404, "no route for this request\n"));
    };
    match &plan.action {
        Action::Forward { .. } => {}
        Action::Redirect(r) => {
            let port = service.config.port;
            let location = routed::location(r, &view, matched, origin.scheme, port, origin.local);
            return Err(Local {
                location: Some(location),
                route: Some(&plan.name),
                ..Local::text(r.status, "")
            });
        }
        Action::Fixed {
            status,
            body,
            content_type,
        } => {
            return Err(Local {
                status: *status,
                location: None,
                content_type,
                body: body.as_bytes(),
                route: Some(&plan.name),
            });
        }
    }
    let Some(group) = service.route_group(plan) else {
        return Err(Local::text(503, "no backend group can take the request\n"));
    };
    let target = routed::target(plan, &view, matched);
    let edits = RequestEdits {
        target: target.as_deref(),
        host: plan.host.as_deref(),
        headers: &plan.request_headers,
        strip_cookie: group
            .cookie
            .as_ref()
            .filter(|c| c.indirect)
            .map(|c| c.name.as_str()),
    };
    rewrite::request(cbuf, head, origin, &edits, out);
    Ok((plan, group))
}

/// The group backend the request's persistence cookie names, if any.
fn cookie_backend(group: &Group, cbuf: &[u8], head: &RequestHead) -> Option<usize> {
    let rule = group.cookie.as_ref()?;
    let values = head
        .fields
        .iter()
        .filter(|f| f.name.get(cbuf).eq_ignore_ascii_case(b"cookie"))
        .map(|f| f.value.get(cbuf));
    group.cookie_backend(persist::find(values, &rule.name)?)
}

/// Sends a route's own answer (or 404). The connection stays open when the request
/// has no body to skip and the client wants it kept.
async fn answer(
    client: &mut Client,
    service: &Service,
    cbuf: &mut Vec<u8>,
    head: &RequestHead,
    local: Local<'_>,
) -> Next {
    let keep = head.keep_alive && matches!(head.body, RequestBody::None | RequestBody::Length(0));
    cbuf.drain(..head.len);
    let mut fields = Vec::with_capacity(3);
    if let Some(l) = &local.location {
        fields.push(("Location", l.as_str()));
    }
    if !local.body.is_empty() || local.location.is_none() {
        fields.push(("Content-Type", local.content_type));
    }
    if keep && head.minor == 0 {
        fields.push(("Connection", "keep-alive"));
    }
    let mut out = Vec::new();
    let head_only = head.method == Method::Head;
    rewrite::answer(
        local.status,
        &fields,
        local.body,
        head_only,
        !keep,
        &mut out,
    );
    count(client, service, local.status);
    client.trace.end(By::Local, Phase::Request);
    let sent = send(
        &mut client.stream,
        &out,
        ms(service.config.timeouts.client_ms),
    )
    .await;
    if sent {
        client.trace.bytes(0, out.len() as u64);
    }
    if sent && keep {
        return Next::KeepAlive;
    }
    linger(&mut client.stream).await;
    Next::Close
}

/// What one attempt on one backend came to.
enum Attempt {
    Done(Next),
    /// Nothing came back and the request can be sent again (see `may_retry`).
    NothingBack {
        reused: bool,
    },
}

/// Tries backends in balancing order. A connect failure moves on to another backend
/// (up to `retries`); a request that was sent is sent again only when it is
/// idempotent, whole in memory and nothing at all came back.
async fn attempts(
    client: &mut Client,
    service: &Arc<Service>,
    cbuf: &mut Vec<u8>,
    ex: &mut Exchange<'_>,
) -> Next {
    let group = ex.group;
    let mut excluded = vec![false; group.backends.len()];
    let mut left = group.config.retries + 1;
    // Where the last backend tried failed, for the access log.
    let mut failed_in = Phase::Connect;
    while left > 0 {
        let wait = ex.bounded(service.queue_timeout());
        let acquired = group.acquire(client.peer.ip(), ex.cookie, &excluded, wait);
        let guard = match acquired.await {
            Ok(guard) => guard,
            Err(Refused::NoBackend) => break,
            Err(refused) => {
                let failure = queue_failure(service, refused);
                return fail(client, service, failure).await;
            }
        };
        let backend = guard.backend().clone();
        if let Some(i) = group.index_of(&backend) {
            excluded[i] = true;
        }
        left -= 1;
        client.trace.picked(&backend);
        // A pooled connection the backend closed meanwhile is not the backend's fault:
        // one fresh connection to the same server follows.
        let mut pooled = backend.take_idle();
        loop {
            let reused = pooled.is_some();
            if ex.expired() {
                return fail(client, service, route_timeout()).await;
            }
            let began = Instant::now();
            let stream = match pooled.take() {
                Some(s) => s,
                None => match backend
                    .open(
                        ex.bounded(service.connect_timeout()),
                        client.peer,
                        &client.stream,
                    )
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        backend.count_error("connect");
                        tracing::warn!(listener = %service.config.name, backend = backend.name(), error = %e, "backend connect failed, trying another");
                        failed_in = Phase::Connect;
                        break;
                    }
                },
            };
            client.trace.connected(began.elapsed());
            match attempt(client, service, &backend, (stream, reused), cbuf, ex).await {
                Attempt::Done(next) => return next,
                Attempt::NothingBack { reused: true } if may_retry(ex) => continue,
                Attempt::NothingBack { .. } if may_retry(ex) => {
                    backend.count_error("response");
                    failed_in = Phase::Headers;
                    break;
                }
                Attempt::NothingBack { .. } => {
                    backend.count_error("response");
                    let message = format!("backend {} closed without a response", backend.name());
                    let failure = gateway(By::Server, Phase::Headers, 502, message);
                    return fail(client, service, failure).await;
                }
            }
        }
    }
    let message = service.no_backend().to_string();
    let failure = gateway(By::Server, failed_in, 503, message);
    fail(client, service, failure).await
}

fn may_retry(ex: &Exchange<'_>) -> bool {
    ex.replayable && ex.head.method.idempotent()
}

impl Exchange<'_> {
    /// `limit`, or less when the route's deadline comes first.
    fn bounded(&self, limit: Duration) -> Duration {
        self.deadline.map_or(limit, |d| {
            limit.min(d.saturating_duration_since(Instant::now()))
        })
    }

    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// A request no backend slot was found for: HAProxy's sQ when the queue wait ran
/// out, PQ when the queue was full.
fn queue_failure(service: &Service, refused: Refused) -> Failure {
    let (by, phase) = match refused {
        Refused::QueueTimeout => (By::ServerTimeout, Phase::Queue),
        Refused::QueueFull | Refused::NoBackend => (By::Proxy, Phase::Queue),
    };
    gateway(by, phase, 503, service.refused(refused).to_string())
}

fn gateway(by: By, phase: Phase, status: u16, message: String) -> Failure {
    Failure::Gateway(Termination::new(by, phase), status, message)
}

fn route_timeout() -> Failure {
    let message = "no response within the route's timeout".into();
    gateway(By::ServerTimeout, Phase::Headers, 504, message)
}

/// One backend connection: send the request, stream the rest of its body, relay the
/// response.
async fn attempt(
    client: &mut Client,
    service: &Arc<Service>,
    backend: &Arc<Backend>,
    (mut upstream, reused): (TcpStream, bool),
    cbuf: &mut Vec<u8>,
    ex: &mut Exchange<'_>,
) -> Attempt {
    let t = service.config.timeouts;
    let server = ms(t.server_ms);
    if !ex.body.is_done() && ex.head.expect_continue && !ex.sent_continue {
        ex.sent_continue = true;
        if !send(&mut client.stream, CONTINUE, ms(t.client_ms)).await {
            client.trace.end(By::Client, Phase::Data);
            return Attempt::Done(Next::Close);
        }
    }
    if !send(&mut upstream, &ex.out, server).await {
        return Attempt::NothingBack { reused };
    }
    if !ex.body.is_done() {
        ex.replayable = false;
        if let Err(failure) = upload(client, service, &mut upstream, cbuf, ex).await {
            return Attempt::Done(fail(client, service, failure).await);
        }
    }
    client.trace.sent();
    let mut bbuf = bufpool::take(bufpool::SMALL);
    let outcome = respond(
        client,
        service,
        backend,
        (upstream, reused),
        &mut bbuf,
        cbuf,
        ex,
    )
    .await;
    bufpool::give(bbuf);
    outcome
}

/// Streams the rest of a request body from the client to the backend.
async fn upload(
    client: &mut Client,
    service: &Service,
    upstream: &mut TcpStream,
    cbuf: &mut Vec<u8>,
    ex: &mut Exchange<'_>,
) -> Result<(), Failure> {
    let t = service.config.timeouts;
    // The head and the first body bytes in `out` have been written already.
    ex.out.clear();
    let mut moved = Moved::default();
    let streamed = relay_body(
        &mut client.stream,
        upstream,
        cbuf,
        &mut ex.out,
        &mut ex.body,
        (t.client_ms, t.server_ms),
        &mut moved,
    )
    .await;
    client.trace.bytes(moved.read, 0);
    match streamed {
        Ok(()) => Ok(()),
        Err(BodyEnd::SourceTimeout) => {
            client.trace.end(By::ClientTimeout, Phase::Data);
            Err(Failure::Timeout)
        }
        Err(BodyEnd::SourceClosed) => {
            client.trace.end(By::Client, Phase::Data);
            Err(Failure::Silent)
        }
        Err(BodyEnd::Malformed(e)) => Err(Failure::Client(Reject::Malformed(e.0))),
        Err(BodyEnd::DestinationTimeout) => Err(gateway(
            By::ServerTimeout,
            Phase::Data,
            504,
            "backend stopped reading the request".into(),
        )),
        Err(BodyEnd::DestinationFailed(e)) => Err(gateway(
            By::Server,
            Phase::Data,
            502,
            format!("sending the request body: {e}"),
        )),
    }
}

/// Reads the backend's response head (forwarding interim 1xx ones) and relays it.
async fn respond(
    client: &mut Client,
    service: &Arc<Service>,
    backend: &Arc<Backend>,
    (mut upstream, reused): (TcpStream, bool),
    bbuf: &mut Vec<u8>,
    cbuf: &mut Vec<u8>,
    ex: &mut Exchange<'_>,
) -> Attempt {
    let limits = head::limits();
    let server = ms(service.config.timeouts.server_ms);
    loop {
        let wait = ex.bounded(server);
        let head =
            match read_response_head(&mut upstream, bbuf, ex.head.method, &limits, wait).await {
                Ok(h) => h,
                Err(ResponseFailure::NothingBack) => return Attempt::NothingBack { reused },
                Err(ResponseFailure::Timeout) if ex.expired() => {
                    backend.count_error("timeout");
                    return Attempt::Done(fail(client, service, route_timeout()).await);
                }
                Err(ResponseFailure::Timeout) => {
                    backend.count_error("timeout");
                    let message = format!(
                        "backend {} sent no response within {server:?}",
                        backend.name()
                    );
                    let failure = gateway(By::ServerTimeout, Phase::Headers, 504, message);
                    return Attempt::Done(fail(client, service, failure).await);
                }
                Err(ResponseFailure::Bad(e)) => {
                    backend.count_error("response");
                    throttle::warn_backend(backend, &e);
                    let message = format!("backend {}: {e}", backend.name());
                    let failure = gateway(By::Proxy, Phase::Headers, 502, message);
                    return Attempt::Done(fail(client, service, failure).await);
                }
            };
        match head.status {
            101 if ex.head.upgrade => {
                return Attempt::Done(tunnel(client, service, upstream, bbuf, cbuf, &head).await);
            }
            101 => {
                backend.count_error("response");
                let message = format!("backend {} switched protocols unasked", backend.name());
                let failure = gateway(By::Proxy, Phase::Headers, 502, message);
                return Attempt::Done(fail(client, service, failure).await);
            }
            100..=199 => {
                let interim = head.status == 100 && ex.sent_continue;
                if !interim && ex.head.minor >= 1 {
                    let mut out = Vec::new();
                    rewrite::response(bbuf, &head, ClientConnection::KeepAlive, false, &mut out);
                    let limit = ms(service.config.timeouts.client_ms);
                    if !send(&mut client.stream, &out, limit).await {
                        client.trace.end(By::Client, Phase::Headers);
                        return Attempt::Done(Next::Close);
                    }
                    client.trace.bytes(0, out.len() as u64);
                }
                bbuf.drain(..head.len);
            }
            _ => {
                return Attempt::Done(
                    relay_response(client, service, backend, upstream, bbuf, ex, head).await,
                );
            }
        }
    }
}

enum ResponseFailure {
    NothingBack,
    Timeout,
    Bad(BadResponse),
}

async fn read_response_head(
    upstream: &mut TcpStream,
    bbuf: &mut Vec<u8>,
    method: Method,
    limits: &Limits,
    server: Duration,
) -> Result<ResponseHead, ResponseFailure> {
    loop {
        if !bbuf.is_empty()
            && let Some(head) =
                head::parse_response(bbuf, method, limits).map_err(ResponseFailure::Bad)?
        {
            return Ok(head);
        }
        if bbuf.len() >= bbuf.capacity() {
            return Err(ResponseFailure::Bad(BadResponse::TooLarge));
        }
        match timeout(server, upstream.read_buf(bbuf)).await {
            Err(_) => return Err(ResponseFailure::Timeout),
            Ok(Ok(0) | Err(_)) if bbuf.is_empty() => return Err(ResponseFailure::NothingBack),
            Ok(Ok(0) | Err(_)) => {
                return Err(ResponseFailure::Bad(BadResponse::Malformed(
                    "truncated_head",
                )));
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends the final response to the client, then its body; pools the backend
/// connection when the response ended cleanly and the backend keeps it open.
async fn relay_response(
    client: &mut Client,
    service: &Arc<Service>,
    backend: &Arc<Backend>,
    mut upstream: TcpStream,
    bbuf: &mut Vec<u8>,
    ex: &mut Exchange<'_>,
    head: ResponseHead,
) -> Next {
    let t = service.config.timeouts;
    let dechunk = ex.head.minor == 0 && head.body == ResponseBody::Chunked;
    let keep = ex.head.keep_alive
        && ex.body.is_done()
        && head.body != ResponseBody::UntilClose
        && !dechunk;
    let connection = match (keep, ex.head.minor) {
        (false, _) => ClientConnection::Close,
        (true, 0) => ClientConnection::KeepAlive10,
        (true, _) => ClientConnection::KeepAlive,
    };
    client.trace.first_byte();
    count(client, service, head.status);
    let set_cookie = set_cookie(ex, backend);
    let cookie = set_cookie.as_deref().map(|value| SetCookie {
        value,
        nocache: ex.group.cookie.as_ref().is_some_and(|c| c.nocache),
    });
    let out = &mut ex.out;
    let edits = ex.response_headers;
    rewrite::response_persisted(bbuf, &head, connection, dechunk, edits, cookie, out);
    bbuf.drain(..head.len);
    let mut body = Cursor::response(head.body, dechunk);
    let mut moved = Moved::default();
    let relayed = relay_body(
        &mut upstream,
        &mut client.stream,
        bbuf,
        out,
        &mut body,
        (t.server_ms, t.client_ms),
        &mut moved,
    )
    .await;
    client.trace.bytes(0, moved.written);
    if let Err(end) = &relayed {
        let (by, phase) = response_end(end);
        client.trace.end(by, phase);
    }
    match relayed {
        Ok(()) => {
            if head.keep_alive && bbuf.is_empty() {
                backend.put_idle(upstream);
            }
            if keep { Next::KeepAlive } else { Next::Close }
        }
        Err(BodyEnd::SourceTimeout) => {
            backend.count_error("timeout");
            tracing::warn!(listener = %service.config.name, backend = backend.name(), "backend stalled mid-response; cut");
            Next::Close
        }
        Err(BodyEnd::Malformed(e)) => {
            backend.count_error("response");
            throttle::warn_backend(backend, &e);
            Next::Close
        }
        Err(BodyEnd::SourceClosed) => {
            backend.count_error("response");
            Next::Close
        }
        Err(BodyEnd::DestinationTimeout | BodyEnd::DestinationFailed(_)) => Next::Close,
    }
}

/// The `Set-Cookie` value pinning the client to `backend`, unless its cookie did already.
fn set_cookie(ex: &Exchange<'_>, backend: &Arc<Backend>) -> Option<String> {
    let rule = ex.group.cookie.as_ref()?;
    let chosen = ex.group.index_of(backend)?;
    persist::must_insert(ex.cookie, chosen)
        .then(|| ex.group.cookie_value(chosen))
        .flatten()
        .map(|value| persist::set_cookie(rule, value))
}

enum BodyEnd {
    SourceTimeout,
    SourceClosed,
    Malformed(super::chunked::ChunkError),
    DestinationTimeout,
    DestinationFailed(std::io::Error),
}

/// Who ended a response body relay that failed, in the access log's terms (pure).
fn response_end(end: &BodyEnd) -> (By, Phase) {
    match end {
        BodyEnd::SourceTimeout => (By::ServerTimeout, Phase::Data),
        BodyEnd::SourceClosed => (By::Server, Phase::Data),
        BodyEnd::Malformed(_) => (By::Proxy, Phase::Data),
        BodyEnd::DestinationTimeout => (By::ClientTimeout, Phase::Data),
        BodyEnd::DestinationFailed(_) => (By::Client, Phase::Data),
    }
}

/// Bytes a body relay read from its source and wrote to its destination.
#[derive(Default)]
struct Moved {
    read: u64,
    written: u64,
}

/// Copies a body from `src` to `dst` through `rbuf` (which may already hold its first
/// bytes), writing `out` first. One bounded buffer each way: a slow reader slows the
/// writer instead of growing memory.
async fn relay_body(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    body: &mut Cursor,
    (src_ms, dst_ms): (u64, u64),
    moved: &mut Moved,
) -> Result<(), BodyEnd> {
    loop {
        let used = body.advance(rbuf, out).map_err(BodyEnd::Malformed)?;
        rbuf.drain(..used);
        if !out.is_empty() {
            match timeout(ms(dst_ms), dst.write_all(out)).await {
                Ok(Ok(())) => {
                    moved.written += out.len() as u64;
                    out.clear();
                }
                Ok(Err(e)) => return Err(BodyEnd::DestinationFailed(e)),
                Err(_) => return Err(BodyEnd::DestinationTimeout),
            }
        }
        if body.is_done() {
            return Ok(());
        }
        match timeout(ms(src_ms), src.read_buf(rbuf)).await {
            Err(_) => return Err(BodyEnd::SourceTimeout),
            Ok(Ok(0) | Err(_)) if body.ends_at_close() => {
                body.finish_at_close();
                return Ok(());
            }
            Ok(Ok(0) | Err(_)) => return Err(BodyEnd::SourceClosed),
            Ok(Ok(n)) => moved.read += n as u64,
        }
    }
}

/// After `101 Switching Protocols`: bytes both ways until either side is done.
async fn tunnel(
    client: &mut Client,
    service: &Service,
    mut upstream: TcpStream,
    bbuf: &mut Vec<u8>,
    cbuf: &mut Vec<u8>,
    head: &ResponseHead,
) -> Next {
    client.trace.first_byte();
    count(client, service, 101);
    let t = service.config.timeouts;
    let mut out = Vec::new();
    rewrite::response(bbuf, head, ClientConnection::Upgrade, false, &mut out);
    out.extend_from_slice(&bbuf[head.len..]);
    bbuf.clear();
    if !send(&mut client.stream, &out, ms(t.client_ms)).await {
        client.trace.end(By::Client, Phase::Data);
        return Next::Close;
    }
    client.trace.bytes(0, out.len() as u64);
    // Bytes the client sent after its upgrade request belong to the new protocol.
    if !cbuf.is_empty() && !send(&mut upstream, cbuf, ms(t.server_ms)).await {
        return Next::Close;
    }
    cbuf.clear();
    let idle = ms(t.client_ms.max(t.server_ms));
    match pump::relay(&client.stream, &upstream, idle).await {
        Ok(totals) => client.trace.bytes(totals.a_to_b, totals.b_to_a),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            client.trace.end(By::ClientTimeout, Phase::Data);
        }
        Err(_) => client.trace.end(By::Server, Phase::Data),
    }
    Next::Close
}

/// Answers a failed exchange, counts it and closes.
async fn fail(client: &mut Client, service: &Service, failure: Failure) -> Next {
    let (status, message, reason) = match failure {
        Failure::Silent => {
            client.trace.end(By::Client, Phase::Request);
            return Next::Close;
        }
        Failure::Client(reject) => {
            client.trace.end(By::Proxy, Phase::Request);
            (reject.status(), reject.to_string(), reject.reason())
        }
        Failure::Timeout => {
            client.trace.end(By::ClientTimeout, Phase::Request);
            let message = "request not received in time".to_string();
            (408, message, "request_timeout")
        }
        Failure::Gateway(end, status, message) => {
            client.trace.end(end.by, end.phase);
            (status, message, "")
        }
    };
    count(client, service, status);
    if reason.is_empty() {
        tracing::warn!(peer = %client.peer, listener = %service.config.name, %message, "request failed");
    } else {
        service.count_client_error(reason);
        throttle::info_client(client.peer, &service.config.name, status, &message);
    }
    let sent = reply_and_close(&mut client.stream, status, &message).await;
    client.trace.bytes(0, sent);
    Next::Close
}

/// Counts a response to the client, on the listener and in the trace.
fn count(client: &mut Client, service: &Service, status: u16) {
    service.count_response(status);
    client.trace.status(status);
}

/// A PROXY header from a source the listener does not list: refused as the bad request
/// it is here, counted as a PROXY protocol error rather than a client's HTTP error.
async fn unlisted_header(client: &mut Client, service: &Service) -> Next {
    client.trace.end(By::Proxy, Phase::Request);
    count(client, service, 400);
    proxy_protocol::count_unlisted(service, client.peer);
    let message = "PROXY protocol header from a source not listed in acceptProxyProtocol";
    reply_and_close(&mut client.stream, 400, message).await;
    Next::Close
}

/// Sends a response of the proxy's own, then closes without losing it to a reset.
/// Returns the bytes sent.
async fn reply_and_close(stream: &mut TcpStream, status: u16, message: &str) -> u64 {
    let reply = rewrite::local_response(status, message, true);
    let sent = send(stream, &reply, LINGER).await;
    linger(stream).await;
    if sent { reply.len() as u64 } else { 0 }
}

/// Half-closes, then reads what the client still sends for a moment, so the response
/// is not destroyed by a reset for unread data.
async fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    for _ in 0..64 {
        match timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// The listener is at maxConnections: read the request, answer 503, close.
async fn refuse(mut client: Client, service: Arc<Service>) {
    let service = &service;
    client.trace = Trace::begin(service);
    let mut cbuf = bufpool::take(bufpool::HEAD);
    let wait = ms(service.config.timeouts.http_request_ms.min(5_000));
    let read = timeout(
        wait,
        read_head(&mut client, service, &mut cbuf, &head::limits()),
    )
    .await;
    if let Ok(Ok(head)) = read {
        client
            .trace
            .request(head.method_span.get(&cbuf), head.path.get(&cbuf));
        count(&mut client, service, 503);
        client.trace.end(By::Resource, Phase::Request);
        let sent = reply_and_close(&mut client.stream, 503, "listener at capacity").await;
        client.trace.bytes(0, sent);
    }
    bufpool::give(cbuf);
    std::mem::take(&mut client.trace).finish(service, client.peer);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arc_swap::ArcSwap;
    use halo_crds::node_config::ListenerConfig;

    use crate::metrics::Metrics;
    use crate::proxy::Service;

    #[test]
    fn table_of_response_body_ends() {
        use super::{BodyEnd, response_end};
        use crate::proxy::accesslog::Termination;
        let code = |end: &BodyEnd| {
            let (by, phase) = response_end(end);
            Termination::new(by, phase).code()
        };
        let io = || std::io::Error::other("reset");
        for (end, want) in [
            (BodyEnd::SourceTimeout, b"sD"),
            (BodyEnd::SourceClosed, b"SD"),
            (
                BodyEnd::Malformed(super::super::chunked::ChunkError("x")),
                b"PD",
            ),
            (BodyEnd::DestinationTimeout, b"cD"),
            (BodyEnd::DestinationFailed(io()), b"CD"),
        ] {
            assert_eq!(&code(&end), want);
        }
    }

    fn size<F: std::future::Future>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }

    /// What an idle keep-alive connection costs is mostly its task's state: keep the
    /// big per-request state boxed, out of it.
    #[tokio::test]
    async fn an_idle_connection_state_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let config: ListenerConfig = serde_json::from_value(serde_json::json!({
            "name": "t", "addresses": [], "port": 1, "protocol": "HTTP",
            "routes": [], "groups": [],
            "timeouts": {"connectMs": 1, "clientMs": 1, "serverMs": 1, "httpRequestMs": 1, "idleMs": 1},
        }))
        .expect("config");
        let build = crate::proxy::Build { ramp_new: false };
        let service = Service::new(config, None, Arc::new(Metrics::new()), build);
        let serve = super::serve(stream, addr, Arc::new(ArcSwap::new(service)));
        assert!(
            size(&serve) <= 512,
            "serve future is {} bytes",
            size(&serve)
        );
    }
}
