//! What happened to one request (or TCP session) as it ran: marks set by the protocol
//! drivers at each phase, turned at the end into the backend's statistics and the
//! listener's access log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Service;
use super::accesslog::{self, By, Phase, Record, Termination};
use super::backend::Backend;

/// The backend that produced a response (an extension on HTTP/2 responses).
#[derive(Clone)]
pub struct Served(pub Arc<Backend>);

/// Empty (no cost) until [`Trace::begin`]; marks on an empty trace do nothing.
#[derive(Default)]
pub struct Trace(Option<Box<Marks>>);

#[derive(Default)]
struct Marks {
    start: Option<Instant>,
    wall: Option<SystemTime>,
    /// Names are kept only for the access log.
    text: bool,
    method: Option<String>,
    path: Option<String>,
    route: Option<String>,
    group: Option<String>,
    backend: Option<Arc<Backend>>,
    status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    headed: Option<Instant>,
    queue: Option<Duration>,
    connect: Option<Duration>,
    sent: Option<Instant>,
    response: Option<Duration>,
    termination: Option<Termination>,
}

impl Trace {
    /// Starts tracing an exchange of `service` now.
    pub fn begin(service: &Service) -> Self {
        Self(Some(Box::new(Marks {
            start: Some(Instant::now()),
            wall: Some(SystemTime::now()),
            text: service.access_log.is_some(),
            ..Marks::default()
        })))
    }

    /// An HTTP/2 request (its stream's method and path), from now.
    pub fn http2<B>(service: &Service, req: &http::Request<B>) -> Self {
        let mut trace = Self::begin(service);
        trace.request(
            req.method().as_str().as_bytes(),
            req.uri().path().as_bytes(),
        );
        // The response wait is timed from the request's arrival (connect included).
        trace.sent();
        trace
    }

    /// A request of the hyper engine was answered with `response`, whose head goes out
    /// now; its body streams on, and the trace is finished when the body ends. A
    /// backend's response names the backend in a [`Served`] extension.
    pub fn answered<B>(&mut self, response: &http::Response<B>) {
        if let Some(Served(backend)) = response.extensions().get::<Served>() {
            self.picked(backend);
            self.first_byte();
        }
        self.status(response.status().as_u16());
    }

    fn marks(&mut self) -> Option<&mut Marks> {
        self.0.as_deref_mut()
    }

    /// The request head arrived: its method and target (the query is not kept).
    pub fn request(&mut self, method: &[u8], target: &[u8]) {
        if let Some(m) = self.marks() {
            m.headed = Some(Instant::now());
            if m.text {
                m.method = Some(String::from_utf8_lossy(method).into_owned());
                let target = String::from_utf8_lossy(target);
                m.path = Some(accesslog::path_of(&target).to_string());
            }
        }
    }

    /// The route and backend group that took the request.
    pub fn routed(&mut self, route: &str, group: &str) {
        if let Some(m) = self.marks().filter(|m| m.text) {
            m.route = Some(route.to_string());
            m.group = Some(group.to_string());
        }
    }

    /// A route answered the request itself (redirect, fixed response): logged with the
    /// route's name and no group.
    pub fn answered_by(&mut self, route: &str) {
        if let Some(m) = self.marks().filter(|m| m.text) {
            m.route = Some(route.to_string());
        }
    }

    /// A backend was chosen (the last one tried is the one logged).
    pub fn picked(&mut self, backend: &Arc<Backend>) {
        if let Some(m) = self.marks() {
            // The first pick ends the wait for a backend; retries are connect time.
            if m.queue.is_none() {
                m.queue = m.headed.or(m.start).map(|t| t.elapsed());
            }
            m.backend = Some(backend.clone());
        }
    }

    pub fn connected(&mut self, took: Duration) {
        if let Some(m) = self.marks() {
            m.connect = Some(took);
        }
    }

    /// The whole request is with the backend: the response wait starts.
    pub fn sent(&mut self) {
        if let Some(m) = self.marks() {
            m.sent = Some(Instant::now());
        }
    }

    /// The backend's response head arrived.
    pub fn first_byte(&mut self) {
        if let Some(m) = self.marks() {
            m.response = m.sent.map(|t| t.elapsed());
        }
    }

    /// The status sent to the client.
    pub fn status(&mut self, status: u16) {
        if let Some(m) = self.marks() {
            m.status = Some(status);
        }
    }

    pub fn bytes(&mut self, received: u64, sent: u64) {
        if let Some(m) = self.marks() {
            m.bytes_in += received;
            m.bytes_out += sent;
        }
    }

    /// How it ended; the first cause named is kept.
    pub fn end(&mut self, by: By, phase: Phase) {
        if let Some(m) = self.marks() {
            m.termination.get_or_insert(Termination::new(by, phase));
        }
    }

    /// Counts the exchange on its backend and logs it. An exchange that never received a
    /// byte (an idle keep-alive connection closing) is not a request, and leaves no trace.
    pub fn finish(self, service: &Service, client: SocketAddr) {
        let Some(m) = self.0 else { return };
        let idle_close = matches!(
            m.termination,
            None | Some(Termination {
                by: By::Client,
                phase: Phase::Request
            })
        );
        if m.status.is_none() && m.bytes_in == 0 && m.backend.is_none() && idle_close {
            return;
        }
        if let Some(b) = &m.backend {
            b.stats
                .record(m.status, (m.bytes_in, m.bytes_out), m.connect, m.response);
        }
        let Some(log) = &service.access_log else {
            return;
        };
        log.log(&Record {
            time: m.wall.unwrap_or_else(SystemTime::now),
            client,
            listener: &service.config.name,
            route: m.route.as_deref(),
            group: m.group.as_deref(),
            backend: m.backend.as_ref().map(|b| b.name()),
            method: m.method.as_deref(),
            path: m.path.as_deref(),
            status: m.status,
            bytes_in: m.bytes_in,
            bytes_out: m.bytes_out,
            queue: m.queue,
            connect: m.connect,
            response: m.response,
            total: m.start.map_or(Duration::ZERO, |t| t.elapsed()),
            termination: m.termination.unwrap_or(Termination::NORMAL),
        });
    }
}
