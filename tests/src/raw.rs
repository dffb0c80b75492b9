//! HTTP/1.x as raw bytes on loopback, for framing tests: a backend that records the exact
//! bytes of every request it receives and answers with scripted bytes, and a client
//! connection that writes arbitrary bytes and reads responses, every read bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::{self, Server};

/// Largest request head the recording backend accepts before giving up on a connection.
const MAX_HEAD: usize = 1 << 20;
/// How long the recording backend waits for the rest of a request it has started reading.
const BACKEND_READ: Duration = Duration::from_secs(30);

/// One request as the backend read it off the wire.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Which accepted connection it came on (0 = the first the backend accepted).
    pub conn: usize,
    /// Its position on that connection (0 = first).
    pub seq: usize,
    /// The head, through the blank line, byte for byte.
    pub head: Vec<u8>,
    /// The body bytes as they were framed on the wire (chunk sizes included).
    pub body_raw: Vec<u8>,
    /// The body with chunked framing removed.
    pub body: Vec<u8>,
}

impl Recorded {
    fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    pub fn request_line(&self) -> String {
        self.head_text()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    pub fn method(&self) -> String {
        self.request_line()
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    pub fn target(&self) -> String {
        self.request_line()
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    pub fn version(&self) -> String {
        self.request_line()
            .split(' ')
            .nth(2)
            .unwrap_or_default()
            .to_string()
    }

    /// Header fields in order, names lowercased, values trimmed.
    pub fn headers(&self) -> Vec<(String, String)> {
        parse_fields(&self.head_text())
    }

    /// Header fields in order, names lowercased, values as bytes with surrounding
    /// whitespace removed.
    pub fn headers_raw(&self) -> Vec<(String, Vec<u8>)> {
        let end = self.head.len().saturating_sub(4);
        self.head[..end]
            .split(|&b| b == b'\n')
            .skip(1)
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
                let value = line[colon + 1..].trim_ascii().to_vec();
                Some((name, value))
            })
            .collect()
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers()
            .into_iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .collect()
    }
}

fn parse_fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// Every value of field `name` (lowercase) joined by commas and lowercased, the way a
/// recipient combines repeated fields (RFC 9110 §5.3) before reading their tokens.
fn field_list(fields: &[(String, String)], name: &str) -> String {
    fields
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

/// What the recording backend does after it has read a request.
#[derive(Clone, Debug)]
pub enum Step {
    Send(Bytes),
    /// Sends the same bytes `n` times (large bodies without one large buffer).
    Repeat(Bytes, usize),
    Sleep(Duration),
    /// Half-closes: sends FIN but keeps reading, so a proxy that wrongly reuses the
    /// connection gets its next request recorded on it.
    ShutdownWrite,
    /// Closes the connection (without reading further requests).
    Close,
}

pub type Script = dyn Fn(&Recorded) -> Vec<Step> + Send + Sync;

/// `200 OK` with a Content-Length body: the usual keep-alive answer.
pub fn ok(body: &str) -> Vec<Step> {
    vec![Step::Send(Bytes::from(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
        body.len()
    )))]
}

/// The recording backend; stops (and cuts its connections) when dropped.
pub struct Recorder {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    _server: Server,
}

impl Recorder {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Bytes read so far over all connections, whole requests or not.
    pub fn received_bytes(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// Complete requests read so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// Waits until at least `n` complete requests arrived.
    pub async fn wait_requests(&self, n: usize, limit: Duration) -> Vec<Recorded> {
        let start = Instant::now();
        loop {
            let seen = self.requests();
            if seen.len() >= n || start.elapsed() >= limit {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A backend on 127.0.0.1 (kernel-picked port) that answers each request with what
/// `script` returns for it. It reads heads up to the blank line and bodies framed by
/// Content-Length or chunked encoding (the framing a proxy must send), and, like a real
/// server, answers `Expect: 100-continue` with `100 Continue` before reading the body.
pub async fn recording(
    script: impl Fn(&Recorded) -> Vec<Step> + Send + Sync + 'static,
) -> std::io::Result<Recorder> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let script: Arc<Script> = Arc::new(script);
    let (acc, rec, reqs) = (accepted.clone(), received.clone(), requests.clone());
    let server = server::serve("127.0.0.1:0", move |stream| {
        // Numbered on accept, so `Recorded::conn` follows the order connections arrived.
        let conn = acc.fetch_add(1, Ordering::SeqCst);
        let (rec, reqs, script) = (rec.clone(), reqs.clone(), script.clone());
        async move {
            let _ = serve_recorded(stream, conn, &rec, &reqs, &*script).await;
        }
    })
    .await?;
    Ok(Recorder {
        addr: server.addr(),
        accepted,
        received,
        requests,
        _server: server,
    })
}

struct Reader<'a> {
    stream: &'a mut TcpStream,
    buf: Vec<u8>,
    received: &'a AtomicUsize,
}

impl Reader<'_> {
    /// Reads more bytes; false on EOF, error or timeout.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(BACKEND_READ, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.received.fetch_add(n, Ordering::SeqCst);
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    async fn take_until(&mut self, delim: &[u8], limit: usize) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, delim) {
                return Some(self.buf.drain(..i + delim.len()).collect());
            }
            if self.buf.len() > limit || !self.fill().await {
                return None;
            }
        }
    }

    async fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }
}

async fn serve_recorded(
    mut stream: TcpStream,
    conn: usize,
    received: &AtomicUsize,
    requests: &Mutex<Vec<Recorded>>,
    script: &Script,
) -> std::io::Result<()> {
    let mut leftover = Vec::new();
    for seq in 0..10_000 {
        let mut reader = Reader {
            stream: &mut stream,
            buf: std::mem::take(&mut leftover),
            received,
        };
        let Some(head) = reader.take_until(b"\r\n\r\n", MAX_HEAD).await else {
            return Ok(());
        };
        let fields = parse_fields(&String::from_utf8_lossy(&head));
        let value = |name: &str| field_list(&fields, name);
        if value("expect") == "100-continue" {
            reader
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        let (mut body_raw, mut body) = (Vec::new(), Vec::new());
        if value("transfer-encoding").ends_with("chunked") {
            loop {
                let Some(line) = reader.take_until(b"\r\n", 4096).await else {
                    return Ok(());
                };
                body_raw.extend_from_slice(&line);
                let text = String::from_utf8_lossy(&line);
                let size_text = text.trim_end().split(';').next().unwrap_or("").trim();
                let Ok(size) = usize::from_str_radix(size_text, 16) else {
                    return Ok(());
                };
                if size == 0 {
                    // Trailer section, up to the blank line.
                    loop {
                        let Some(line) = reader.take_until(b"\r\n", 4096).await else {
                            return Ok(());
                        };
                        body_raw.extend_from_slice(&line);
                        if line == b"\r\n" {
                            break;
                        }
                    }
                    break;
                }
                let Some(data) = reader.take(size + 2).await else {
                    return Ok(());
                };
                body_raw.extend_from_slice(&data);
                body.extend_from_slice(&data[..size]);
            }
        } else if let Ok(n) = value("content-length").parse::<usize>() {
            let Some(data) = reader.take(n).await else {
                return Ok(());
            };
            body_raw = data.clone();
            body = data;
        }
        leftover = std::mem::take(&mut reader.buf);
        let recorded = Recorded {
            conn,
            seq,
            head,
            body_raw,
            body,
        };
        let steps = script(&recorded);
        requests.lock().expect("lock").push(recorded);
        for step in steps {
            match step {
                Step::Send(bytes) => stream.write_all(&bytes).await?,
                Step::Repeat(bytes, n) => {
                    for _ in 0..n {
                        stream.write_all(&bytes).await?;
                    }
                }
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::ShutdownWrite => stream.shutdown().await?,
                Step::Close => return Ok(()),
            }
        }
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One response as the client read it.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// The head, through the blank line.
    pub head: String,
    /// The body with chunked framing removed.
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        parse_fields(&self.head)
            .into_iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .collect()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection speaking raw bytes.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connect {addr}"))?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        tokio::time::timeout(Duration::from_secs(10), self.stream.write_all(bytes))
            .await
            .context("write timed out")??;
        Ok(())
    }

    /// Reads more bytes before `deadline`; Ok(false) on EOF.
    async fn fill(&mut self, deadline: Instant) -> Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, self.stream.read(&mut chunk))
            .await
            .map_err(|_| anyhow!("no data within the deadline"))??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    async fn take_until(&mut self, delim: &[u8], deadline: Instant) -> Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, delim) {
                return Ok(self.buf.drain(..i + delim.len()).collect());
            }
            if !self.fill(deadline).await? {
                bail!(
                    "connection closed before {:?}; had {:?}",
                    String::from_utf8_lossy(delim),
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    async fn take(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill(deadline).await? {
                bail!(
                    "connection closed {} bytes into a {n}-byte body",
                    self.buf.len()
                );
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one response (an interim 1xx counts as one), framed per RFC 9112 §6.3;
    /// `head_request` says the request was HEAD, so the response has no body.
    pub async fn response(&mut self, head_request: bool, limit: Duration) -> Result<Response> {
        let deadline = Instant::now() + limit;
        let head =
            String::from_utf8_lossy(&self.take_until(b"\r\n\r\n", deadline).await?).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        let fields = parse_fields(&head);
        let get = |name: &str| field_list(&fields, name);
        let mut body = Vec::new();
        if head_request || status < 200 || status == 204 || status == 304 {
            // No body, whatever the header fields say.
        } else if get("transfer-encoding").ends_with("chunked") {
            loop {
                let line = self.take_until(b"\r\n", deadline).await?;
                let text = String::from_utf8_lossy(&line);
                let size_text = text.trim_end().split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .with_context(|| format!("bad chunk size {text:?}"))?;
                if size == 0 {
                    // Trailers, up to the blank line.
                    while self.take_until(b"\r\n", deadline).await? != b"\r\n" {}
                    break;
                }
                let data = self.take(size + 2, deadline).await?;
                body.extend_from_slice(&data[..size]);
            }
        } else if !get("content-length").is_empty() {
            let n: usize = get("content-length")
                .parse()
                .with_context(|| format!("bad content-length in {head:?}"))?;
            body = self.take(n, deadline).await?;
        } else {
            // Delimited by close.
            while self.fill(deadline).await? {}
            body = std::mem::take(&mut self.buf);
        }
        Ok(Response { status, head, body })
    }

    /// The next final response, skipping interim 1xx ones.
    pub async fn final_response(
        &mut self,
        head_request: bool,
        limit: Duration,
    ) -> Result<Response> {
        let deadline = Instant::now() + limit;
        for _ in 0..10 {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.response(head_request, left).await?;
            if r.status >= 200 || r.status == 101 {
                return Ok(r);
            }
        }
        bail!("more than 10 interim responses")
    }

    /// True when the peer closes (EOF or reset) within `limit`; bytes read meanwhile are
    /// kept and returned by `unread`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            match self.fill(deadline).await {
                Ok(true) => continue,
                Ok(false) => return true,
                Err(e) => {
                    return e
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
                }
            }
        }
    }

    /// Bytes received but not consumed by a response read.
    pub fn unread(&self) -> &[u8] {
        &self.buf
    }

    /// Reads whatever arrives within `limit` (up to EOF), without framing.
    pub async fn read_for(&mut self, limit: Duration) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        while let Ok(true) = self.fill(deadline).await {}
        std::mem::take(&mut self.buf)
    }
}
