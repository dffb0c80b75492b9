//! One HTTP/2 client connection: hyper's server with extended CONNECT enabled, each
//! stream handed to the forwarder, and a watchdog for the listener's idle and stall
//! limits (the library has none of its own).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use halo_crds::node_config::TimeoutsConfig;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::activity::{Activity, Watched};
use super::body::Body;
use super::forward;
use super::preface::{self, Prefixed, Start};
use super::upstream::Origin;
use crate::proxy::h1::{head, throttle};
use crate::proxy::{Admitted, Service, tls};

/// Streams one client may have open at once (RFC 9113 recommends at least 100).
const MAX_STREAMS: u32 = 128;
/// How long a connection that was asked to go away may take to finish.
const DRAIN: Duration = Duration::from_secs(1);
/// Longest a refused connection is kept to tell its requests so.
const REFUSE_FOR: Duration = Duration::from_secs(5);

/// What every stream of one client connection shares.
pub struct Conn {
    pub slot: Arc<ArcSwap<Service>>,
    pub peer: SocketAddr,
    /// The address the client connected to (for a PROXY protocol header to backends).
    pub local: Option<SocketAddr>,
    /// The listener was full when it connected: every request is answered 503.
    pub refusing: bool,
    streams: AtomicUsize,
}

/// A client connection's peer (the client) and local address.
type Ends = (SocketAddr, Option<SocketAddr>);

/// One request in progress; counted open until dropped (after its response body).
pub struct Stream {
    pub conn: Arc<Conn>,
    /// Bytes of the request body forwarded so far (None: the request has no body).
    pub received: Option<Arc<AtomicU64>>,
}

impl Conn {
    fn new(slot: Arc<ArcSwap<Service>>, (peer, local): Ends, admitted: bool) -> Arc<Self> {
        Arc::new(Self {
            slot,
            peer,
            local,
            refusing: !admitted,
            streams: AtomicUsize::new(0),
        })
    }

    /// Whom this client's backend connections are opened for.
    pub fn origin(&self) -> Origin {
        Origin {
            client: self.peer,
            local: self.local,
        }
    }
}

impl Stream {
    fn open(conn: &Arc<Conn>, has_body: bool) -> Self {
        conn.streams.fetch_add(1, Ordering::Relaxed);
        Self {
            conn: conn.clone(),
            received: has_body.then(|| Arc::new(AtomicU64::new(0))),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.conn.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves an HTTP/2 connection (TLS with ALPN `h2`, or a stream already known to carry
/// HTTP/2) until it closes. Counts against the listener's maxConnections.
pub async fn serve<IO>(io: IO, peer: SocketAddr, slot: Arc<ArcSwap<Service>>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let admitted = slot.load().admit();
    run(io, (peer, None), slot, admitted).await;
}

/// Serves a plain connection whose first bytes `head` (already read) began with the
/// HTTP/2 preface; `admitted` is the slot the HTTP/1.1 accept path took for it.
pub async fn serve_h2c(
    stream: TcpStream,
    head: Vec<u8>,
    peer: SocketAddr,
    slot: Arc<ArcSwap<Service>>,
    admitted: Admitted,
) {
    let ends = (peer, stream.local_addr().ok());
    run(Prefixed::new(head, stream), ends, slot, Some(admitted)).await;
}

async fn run<IO>(io: IO, peer: Ends, slot: Arc<ArcSwap<Service>>, admitted: Option<Admitted>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Conn::new(slot, peer, admitted.is_some());
    let activity = Activity::new();
    let io = TokioIo::new(Watched::new(io, activity.clone()));
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(head::limits().max_head).unwrap_or(u32::MAX));
    let connection = builder.serve_connection(io, service(conn.clone()));
    let connection = std::pin::pin!(connection);
    watch(connection, |c| c.graceful_shutdown(), &conn, &activity).await;
    drop(admitted);
}

/// Serves HTTP/1.1 with hyper (TLS clients without ALPN `h2`, and plain clients of a
/// listener whose backends speak TLS), through the same forwarder as HTTP/2: routing,
/// filters and backend connections behave the same for both.
async fn run_http1<IO>(io: IO, peer: Ends, slot: Arc<ArcSwap<Service>>, admitted: Option<Admitted>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let wait = ms(slot.load().config.timeouts.http_request_ms);
    let conn = Conn::new(slot, peer, admitted.is_some());
    let activity = Activity::new();
    let io = TokioIo::new(Watched::new(io, activity.clone()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(wait)
        .max_buf_size(head::limits().max_head.max(8192));
    let connection = builder
        .serve_connection(io, service(conn.clone()))
        .with_upgrades();
    let connection = std::pin::pin!(connection);
    watch(connection, |c| c.graceful_shutdown(), &conn, &activity).await;
    drop(admitted);
}

/// Each request of `conn` handed to the forwarder as one counted stream.
fn service(
    shared: Arc<Conn>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    service_fn(move |req| {
        let stream = Stream::open(&shared, !hyper::body::Body::is_end_stream(req.body()));
        // Boxed once here: hyper and the runtime move a stream's future several times
        // before and while it runs, and a request's state is kilobytes.
        let handled = Box::pin(forward::handle(stream, req));
        async move { Ok::<_, Infallible>(handled.await) }
    })
}

/// Drives `connection` to its end, asking it to go away (`drain`) or dropping it per
/// `verdict`.
async fn watch<C>(
    mut connection: std::pin::Pin<&mut C>,
    mut drain: impl FnMut(std::pin::Pin<&mut C>),
    conn: &Conn,
    activity: &Activity,
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let peer = conn.peer;
    let started = tokio::time::Instant::now();
    let mut draining: Option<tokio::time::Instant> = None;
    // Bounded: a connection with no progress is closed by `verdict` within its limits.
    loop {
        let t = conn.slot.load().config.timeouts;
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(e) = r {
                    ended_with(&conn.slot.load(), peer, &e);
                }
                break;
            }
            () = tokio::time::sleep(tick(&t)) => {}
        }
        let state = State {
            streams: conn.streams.load(Ordering::Relaxed),
            quiet: activity.quiet_for(),
            age: started.elapsed(),
            refusing: conn.refusing,
            draining: draining.map(|d| d.elapsed()),
        };
        match verdict(state, &t) {
            Watch::Keep => {}
            Watch::Drain => {
                if draining.is_none() {
                    drain(connection.as_mut());
                    draining = Some(tokio::time::Instant::now());
                }
            }
            Watch::Close => break,
        }
    }
}

/// Counts and logs (rate-limited) a connection that ended on the client's malformed input;
/// hyper has answered an HTTP/1.1 one 400 or 431, an HTTP/2 one got a GOAWAY.
fn ended_with(service: &Service, peer: SocketAddr, e: &hyper::Error) {
    match client_fault(e) {
        Some(reason) => {
            service.count_client_error(reason);
            throttle::info_client(peer, &service.config.name, 400, reason);
        }
        None => tracing::debug!(%peer, error = %e, "HTTP connection ended"),
    }
}

/// The client's fault behind a connection error, as a metric reason; None for the
/// ordinary ends (closed, reset, timed out).
fn client_fault(e: &hyper::Error) -> Option<&'static str> {
    if e.is_parse_too_large() {
        return Some("head_too_large");
    }
    if e.is_parse() {
        return Some("malformed");
    }
    let h2 = std::error::Error::source(e)?.downcast_ref::<h2::Error>()?;
    if h2.is_remote() {
        return None;
    }
    h2_fault(h2.reason()?)
}

/// HTTP/2 connection errors that the peer's frames caused (RFC 9113 §7).
fn h2_fault(reason: h2::Reason) -> Option<&'static str> {
    match reason {
        h2::Reason::PROTOCOL_ERROR => Some("h2_protocol_error"),
        h2::Reason::FRAME_SIZE_ERROR => Some("h2_frame_size_error"),
        h2::Reason::COMPRESSION_ERROR => Some("h2_compression_error"),
        h2::Reason::FLOW_CONTROL_ERROR => Some("h2_flow_control_error"),
        h2::Reason::ENHANCE_YOUR_CALM => Some("h2_enhance_your_calm"),
        _ => None,
    }
}

/// Serves an HTTPS client: the TLS handshake within `timeouts.httpRequest`, then HTTP/2
/// when ALPN chose `h2`, else HTTP/1.1. `admitted` is None when the listener is full
/// (its requests are answered 503).
pub async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<ArcSwap<Service>>,
    admitted: Option<Admitted>,
) {
    let service = slot.load_full();
    let Some(config) = service.tls.clone() else {
        service.count_tls_error("no_certificate");
        return;
    };
    let wait = ms(service.config.timeouts.http_request_ms);
    let ends = (peer, stream.local_addr().ok());
    let accepted = tokio::time::timeout(wait, TlsAcceptor::from(config).accept(stream)).await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = tls::failure_reason(&e);
            service.count_tls_error(reason);
            throttle::info_tls(peer, &service.config.name, reason, &e);
            return;
        }
        Err(_) => {
            service.count_tls_error("timeout");
            throttle::info_tls(
                peer,
                &service.config.name,
                "timeout",
                &"handshake not done in time",
            );
            return;
        }
    };
    drop(service);
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        run(tls, ends, slot, admitted).await;
    } else {
        run_http1(tls, ends, slot, admitted).await;
    }
}

/// Serves a plain client with hyper (see `run_http1`), as HTTP/2 when the listener
/// takes h2c and the client starts with the preface.
pub async fn serve_http1(mut stream: TcpStream, peer: SocketAddr, slot: Arc<ArcSwap<Service>>) {
    let admitted = slot.load().admit();
    let ends = (peer, stream.local_addr().ok());
    if !slot.load().config.h2c {
        run_http1(stream, ends, slot, admitted).await;
        return;
    }
    let wait = ms(slot.load().config.timeouts.http_request_ms);
    match preface::read_start(&mut stream, wait).await {
        Start::Http2(head) => run(Prefixed::new(head, stream), ends, slot, admitted).await,
        Start::Http1(head) => run_http1(Prefixed::new(head, stream), ends, slot, admitted).await,
        Start::Gone => {}
    }
}

/// What the watchdog does with a connection now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watch {
    Keep,
    /// Ask the client to go away (GOAWAY) and let open streams finish.
    Drain,
    Close,
}

#[derive(Clone, Copy, Debug)]
struct State {
    streams: usize,
    quiet: Duration,
    age: Duration,
    refusing: bool,
    /// How long ago the client was asked to go away, if it was.
    draining: Option<Duration>,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Idle without streams for `idle`: drain. Streams open but no byte moved for the
/// client or server limit: close. A refused connection drains at once and closes soon.
fn verdict(s: State, t: &TimeoutsConfig) -> Watch {
    if let Some(since) = s.draining {
        let stalled = s.quiet >= ms(t.client_ms.max(t.server_ms));
        return if (s.streams == 0 && since >= DRAIN) || stalled {
            Watch::Close
        } else {
            Watch::Keep
        };
    }
    if s.refusing {
        let limit = ms(t.http_request_ms).min(REFUSE_FOR);
        return if s.age >= limit {
            Watch::Close
        } else {
            Watch::Drain
        };
    }
    match s.streams {
        0 if s.quiet >= ms(t.idle_ms) => Watch::Drain,
        0 => Watch::Keep,
        _ if s.quiet >= ms(t.client_ms.max(t.server_ms)) => Watch::Close,
        _ => Watch::Keep,
    }
}

fn tick(t: &TimeoutsConfig) -> Duration {
    let shortest = t.idle_ms.min(t.client_ms).min(t.server_ms);
    (ms(shortest) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> TimeoutsConfig {
        TimeoutsConfig {
            connect_ms: 1_000,
            client_ms: 20_000,
            server_ms: 30_000,
            http_request_ms: 4_000,
            idle_ms: 10_000,
            queue_ms: 1_000,
        }
    }

    fn state(streams: usize, quiet_s: u64) -> State {
        State {
            streams,
            quiet: Duration::from_secs(quiet_s),
            age: Duration::from_secs(100),
            refusing: false,
            draining: None,
        }
    }

    #[test]
    fn verdicts() {
        let t = timeouts();
        let draining = |streams, quiet_s, since_ms| State {
            draining: Some(ms(since_ms)),
            ..state(streams, quiet_s)
        };
        let refusing = |age_ms| State {
            refusing: true,
            age: ms(age_ms),
            ..state(0, 0)
        };
        let cases = [
            (state(0, 9), Watch::Keep),
            (state(0, 10), Watch::Drain),
            (state(3, 29), Watch::Keep),
            (state(3, 30), Watch::Close),
            (draining(0, 0, 500), Watch::Keep),
            (draining(0, 0, 1_000), Watch::Close),
            (draining(2, 0, 5_000), Watch::Keep),
            (draining(2, 30, 5_000), Watch::Close),
            (refusing(100), Watch::Drain),
            (refusing(4_000), Watch::Close),
        ];
        for (s, want) in cases {
            assert_eq!(verdict(s, &t), want, "{s:?}");
        }
    }

    #[test]
    fn h2_faults_of_the_client_are_named() {
        let cases = [
            (h2::Reason::PROTOCOL_ERROR, Some("h2_protocol_error")),
            (h2::Reason::COMPRESSION_ERROR, Some("h2_compression_error")),
            (h2::Reason::NO_ERROR, None),
            (h2::Reason::CANCEL, None),
            (h2::Reason::INTERNAL_ERROR, None),
        ];
        for (reason, want) in cases {
            assert_eq!(h2_fault(reason), want, "{reason:?}");
        }
    }

    #[test]
    fn ticks_follow_the_shortest_limit() {
        let mut t = timeouts();
        assert_eq!(tick(&t), Duration::from_secs(1));
        t.idle_ms = 400;
        assert_eq!(tick(&t), ms(100));
        t.idle_ms = 10;
        assert_eq!(tick(&t), ms(50));
    }
}
