//! HTTP/1.1 exchanges without a request body on plain pooled connections, run in the
//! request's own task: the head is written and the response head parsed here (with the
//! byte-level engine's parser), and the body reads the socket as the client takes it.
//! Through hyper's client the same request crosses two channels and wakes three tasks;
//! the benchmark showed that to be the HTTP/2 path's cost. Requests with a body,
//! upgrades, and TLS or PROXY-protocol backends keep using hyper.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method as HttpMethod, Request, Response, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::BoxError;
use crate::proxy::backend::{Backend, ConnectError};
use crate::proxy::h1::body::Cursor;
use crate::proxy::h1::head::{self, Method, ResponseHead};

/// Room read at a time for a response head or body.
const READ_CHUNK: usize = 16 * 1024;

/// Whether `req` (already rewritten for the backend) can take this path.
pub fn eligible<B: HttpBody>(backend: &Backend, req: &Request<B>) -> bool {
    req.body().is_end_stream()
        && backend.tls.is_none()
        && backend.proxy_protocol.is_none()
        && req.method() != HttpMethod::CONNECT
        && req.version() == Version::HTTP_11
}

#[derive(Debug, thiserror::Error)]
pub enum Failed {
    /// No connection could be opened: another backend may take the request.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Broken(String),
}

/// How one try on one connection failed.
enum Attempt {
    /// The connection closed (or reset) before a byte of response: a pooled one the
    /// backend had closed meanwhile.
    Stale,
    Failed(Failed),
}

/// Sends the request head `parts` to `backend` and returns its response, the body
/// streaming from the connection (which goes back to the pool when the body is done).
pub async fn exchange(
    backend: &Arc<Backend>,
    request: Outgoing,
    connect: Duration,
    server: Duration,
) -> Result<Response<DirectBody>, Failed> {
    let Outgoing { head, method } = request;
    if let Some(stream) = backend.take_idle() {
        match attempt(backend, stream, &head, method, server).await {
            Ok(r) => return Ok(r),
            // RFC 9112 §9.3.1: an idempotent request may be sent again on a new
            // connection when the reused one closed without answering.
            Err(Attempt::Stale) if method.idempotent() => {}
            Err(Attempt::Stale) => {
                return Err(Failed::Broken("the reused connection closed".into()));
            }
            Err(Attempt::Failed(f)) => return Err(f),
        }
    }
    let stream = backend.connect(connect).await?;
    match attempt(backend, stream, &head, method, server).await {
        Ok(r) => Ok(r),
        Err(Attempt::Stale) => Err(Failed::Broken("closed before answering".into())),
        Err(Attempt::Failed(f)) => Err(f),
    }
}

/// A request as it goes on the wire (taken before any await: a request is not Sync).
pub struct Outgoing {
    head: Vec<u8>,
    method: Method,
}

impl Outgoing {
    pub fn of<B>(req: &Request<B>) -> Self {
        Self {
            head: request_head(req),
            method: method_of(req.method()),
        }
    }
}

fn method_of(m: &HttpMethod) -> Method {
    match *m {
        HttpMethod::GET => Method::Get,
        HttpMethod::HEAD => Method::Head,
        HttpMethod::POST => Method::Post,
        HttpMethod::PUT => Method::Put,
        HttpMethod::DELETE => Method::Delete,
        HttpMethod::OPTIONS => Method::Options,
        HttpMethod::TRACE => Method::Trace,
        HttpMethod::CONNECT => Method::Connect,
        _ => Method::Other,
    }
}

/// The request line and fields, in origin form; `req` carries Host already.
fn request_head<B>(req: &Request<B>) -> Vec<u8> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

async fn attempt(
    backend: &Arc<Backend>,
    mut stream: TcpStream,
    head: &[u8],
    method: Method,
    server: Duration,
) -> Result<Response<DirectBody>, Attempt> {
    let exchange = async {
        stream.write_all(head).await.map_err(|_| Attempt::Stale)?;
        read_head(&mut stream, method).await
    };
    let (response, buf) = match tokio::time::timeout(server, exchange).await {
        Ok(r) => r?,
        Err(_) => return Err(Attempt::Failed(Failed::Timeout(server))),
    };
    if response.status == 101 {
        return Err(broken("switched protocols unasked"));
    }
    to_response(backend, stream, &response, buf)
}

fn broken(message: &str) -> Attempt {
    Attempt::Failed(Failed::Broken(message.to_string()))
}

/// Reads until a final response head has arrived (interim 1xx ones are skipped); the
/// head and what followed it.
async fn read_head(
    stream: &mut TcpStream,
    method: Method,
) -> Result<(ResponseHead, BytesMut), Attempt> {
    let limits = head::limits();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut received = false;
    loop {
        match head::parse_response(&buf, method, &limits) {
            Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                buf.advance(h.len);
                continue;
            }
            Ok(Some(h)) => return Ok((h, buf)),
            Ok(None) => {}
            Err(e) => return Err(Attempt::Failed(Failed::Broken(e.to_string()))),
        }
        buf.reserve(READ_CHUNK);
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) if !received => return Err(Attempt::Stale),
            Ok(0) => return Err(broken("closed in the middle of the response head")),
            Err(e) => return Err(Attempt::Failed(Failed::Broken(e.to_string()))),
            Ok(_) => received = true,
        }
    }
}

fn to_response(
    backend: &Arc<Backend>,
    stream: TcpStream,
    h: &ResponseHead,
    mut buf: BytesMut,
) -> Result<Response<DirectBody>, Attempt> {
    let mut response = Response::new(DirectBody {
        stream: None,
        buf: BytesMut::new(),
        cursor: Cursor::response(h.body, true),
        keep: h.keep_alive,
        backend: backend.clone(),
    });
    *response.status_mut() =
        http::StatusCode::from_u16(h.status).map_err(|_| broken("bad status code"))?;
    *response.version_mut() = Version::HTTP_11;
    let headers = response.headers_mut();
    for f in &h.fields {
        let (name, value) = (f.name.get(&buf), f.value.get(&buf));
        match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => return Err(broken("a response field is not valid")),
        }
    }
    buf.advance(h.len);
    let body = response.body_mut();
    body.stream = Some(stream);
    body.buf = buf;
    Ok(response)
}

/// A response body read from its backend connection as it is polled.
pub struct DirectBody {
    stream: Option<TcpStream>,
    /// Bytes read and not yet passed on.
    buf: BytesMut,
    cursor: Cursor,
    /// The connection may serve another request once this body is done.
    keep: bool,
    backend: Arc<Backend>,
}

impl DirectBody {
    /// Passes on what the buffer holds of the body: Some(frame), or None if it holds
    /// nothing more of it (or only framing, which is consumed).
    fn take_data(&mut self) -> Result<Option<Bytes>, BoxError> {
        while !self.buf.is_empty() && !self.cursor.is_done() {
            let mut out = Vec::new();
            let used = self.cursor.advance(&self.buf, &mut out)?;
            self.buf.advance(used);
            if !out.is_empty() {
                return Ok(Some(Bytes::from(out)));
            }
            if used == 0 {
                break;
            }
        }
        Ok(None)
    }
}

impl HttpBody for DirectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // Bounded: each turn consumes buffered bytes, reads more, or returns.
        loop {
            match this.take_data() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            if this.cursor.is_done() {
                return Poll::Ready(None);
            }
            let Some(stream) = &this.stream else {
                return Poll::Ready(None);
            };
            if let Err(e) = std::task::ready!(stream.poll_read_ready(cx)) {
                return Poll::Ready(Some(Err(e.into())));
            }
            this.buf.reserve(READ_CHUNK);
            match stream.try_read_buf(&mut this.buf) {
                Ok(0) if this.cursor.ends_at_close() => {
                    this.cursor.finish_at_close();
                    this.keep = false;
                }
                Ok(0) => {
                    this.keep = false;
                    let cut = "the backend closed in the middle of the response body";
                    return Poll::Ready(Some(Err(cut.into())));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    this.keep = false;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cursor.is_done() && self.buf.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for DirectBody {
    fn drop(&mut self) {
        // A body read to its end, with no stray bytes after it, leaves a reusable
        // connection; anything else is closed.
        if let Some(stream) = self.stream.take()
            && self.keep
            && self.cursor.is_done()
            && self.buf.is_empty()
        {
            self.backend.put_idle(stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_head_is_origin_form_with_the_fields_as_given() {
        let req = http::Request::get("http://site/a/b?x=1")
            .header("host", "site")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .expect("request");
        let head = String::from_utf8(request_head(&req)).expect("utf8");
        assert_eq!(
            head,
            "GET /a/b?x=1 HTTP/1.1\r\nhost: site\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
        );
    }

    #[test]
    fn methods_map_to_the_parsers() {
        let cases = [
            (HttpMethod::GET, Method::Get),
            (HttpMethod::HEAD, Method::Head),
            (HttpMethod::DELETE, Method::Delete),
            (HttpMethod::PATCH, Method::Other),
        ];
        for (m, want) in cases {
            assert_eq!(method_of(&m), want, "{m}");
        }
    }
}
