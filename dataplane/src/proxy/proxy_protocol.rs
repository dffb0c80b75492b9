//! PROXY protocol v1 (text) and v2 (binary): the header another proxy puts in front of a
//! connection to say whose it is. The codec is pure; two thin drivers read a header off
//! an accepted socket and write one onto a backend connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use halo_crds::node_config::{ListenerConfig, ProxyProtocolVersion};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Service;
use super::h1::throttle;
use crate::metrics::with;

/// The v2 signature: starts with CRLF CRLF NUL so no text protocol can look like it.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included (TCP6 with the longest addresses and ports).
pub const V1_MAX: usize = 107;
/// v2: the fixed part before the addresses.
const V2_FIXED: usize = 16;
/// v2 header size accepted at most (fixed part, addresses and TLVs). The protocol
/// allows 64 KiB; senders put a few short TLVs at most.
pub const V2_MAX: usize = 2048;

/// What a header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// Relayed for this client, which connected to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The sender's own connection (v2 LOCAL, e.g. its health check), or an address
    /// family without a TCP address (v1 UNKNOWN, v2 UNSPEC or UNIX): the real peer
    /// stays the client.
    Local,
}

/// Why a connection's opening bytes are not a header we take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("PROXY v1 line longer than 107 bytes")]
    V1TooLong,
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
    #[error("PROXY v2 header longer than {V2_MAX} bytes")]
    V2TooLong,
}

impl DecodeError {
    /// The `reason` label of `halo_proxy_protocol_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::V1(_) | Self::V2(_) => "malformed",
            Self::V1TooLong | Self::V2TooLong => "too_long",
        }
    }
}

/// A header and how many bytes of the input it took.
pub type Decoded = (Header, usize);

/// Decodes the header at the start of `buf`. `Ok(None)`: too few bytes to tell yet.
pub fn decode(buf: &[u8]) -> Result<Option<Decoded>, DecodeError> {
    if buf.starts_with(b"PROXY ") {
        return decode_v1(buf);
    }
    if buf.len() >= V2_SIGNATURE.len() && buf.starts_with(&V2_SIGNATURE) {
        return decode_v2(buf);
    }
    let prefix_of = |whole: &[u8]| buf.len() < whole.len() && whole.starts_with(buf);
    if prefix_of(b"PROXY ") || prefix_of(&V2_SIGNATURE) {
        return Ok(None);
    }
    Err(DecodeError::Missing)
}

fn decode_v1(buf: &[u8]) -> Result<Option<Decoded>, DecodeError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(DecodeError::V1TooLong)
        } else if window.contains(&b'\n') {
            Err(DecodeError::V1("bare LF"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&window[..end]).map_err(|_| DecodeError::V1("not ASCII"))?;
    let header = parse_v1_line(line)?;
    Ok(Some((header, end + 2)))
}

/// `PROXY TCP4 192.0.2.1 192.0.2.2 51000 443` (single spaces, no CRLF).
fn parse_v1_line(line: &str) -> Result<Header, DecodeError> {
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let family = parts.next().ok_or(DecodeError::V1("no protocol"))?;
    if family == "UNKNOWN" {
        // Whatever follows is to be ignored.
        return Ok(Header::Local);
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(DecodeError::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(DecodeError::V1("expected four fields after the protocol"));
    };
    let addr = |text: &str| -> Result<IpAddr, DecodeError> {
        let ip: IpAddr = text.parse().map_err(|_| DecodeError::V1("bad address"))?;
        if ip.is_ipv6() == v6 {
            Ok(ip)
        } else {
            Err(DecodeError::V1("address of the wrong family"))
        }
    };
    Ok(Header::Proxied {
        source: SocketAddr::new(addr(src)?, port(sport)?),
        destination: SocketAddr::new(addr(dst)?, port(dport)?),
    })
}

/// A decimal port without sign or leading zeros.
fn port(text: &str) -> Result<u16, DecodeError> {
    let plain = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !plain {
        return Err(DecodeError::V1("bad port"));
    }
    text.parse().map_err(|_| DecodeError::V1("bad port"))
}

fn decode_v2(buf: &[u8]) -> Result<Option<Decoded>, DecodeError> {
    if buf.len() < V2_FIXED {
        return Ok(None);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(DecodeError::V2("version is not 2"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(DecodeError::V2("unknown command")),
    };
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = V2_FIXED + len;
    if total > V2_MAX {
        return Err(DecodeError::V2TooLong);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[V2_FIXED..total];
    // AF in the high nibble, transport in the low one (1 = STREAM).
    let header = match (family >> 4, family & 0x0f) {
        _ if local => Header::Local,
        (1, 1) => {
            let b = body
                .get(..12)
                .ok_or(DecodeError::V2("IPv4 addresses cut short"))?;
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]));
            Header::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([b[8], b[9]])),
                destination: SocketAddr::new(ip(4), u16::from_be_bytes([b[10], b[11]])),
            }
        }
        (2, 1) => {
            let b = body
                .get(..36)
                .ok_or(DecodeError::V2("IPv6 addresses cut short"))?;
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&b[i..i + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Header::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([b[32], b[33]])),
                destination: SocketAddr::new(ip(16), u16::from_be_bytes([b[34], b[35]])),
            }
        }
        (0..=3, 0..=2) => Header::Local,
        _ => return Err(DecodeError::V2("unknown address family")),
    };
    // TLVs after the addresses are skipped: nothing here needs them.
    Ok(Some((header, total)))
}

/// Both addresses in one family: an IPv4 one becomes IPv4-mapped when the other is IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

/// The header for a connection from `source` to `destination`.
pub fn encode(
    version: ProxyProtocolVersion,
    source: SocketAddr,
    destination: SocketAddr,
) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    match version {
        ProxyProtocolVersion::V1 => encode_v1(source, destination),
        ProxyProtocolVersion::V2 => encode_v2(source, destination),
    }
}

/// The header for the sender's own connection (a health check): v1 UNKNOWN, v2 LOCAL.
pub fn encode_local(version: ProxyProtocolVersion) -> Vec<u8> {
    match version {
        ProxyProtocolVersion::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        ProxyProtocolVersion::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.extend_from_slice(&[0x20, 0x00, 0, 0]);
            out
        }
    }
}

fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_FIXED + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11); // INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            out.push(0x21); // INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s));
            out.extend_from_slice(&v6(d));
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// Why an accepted connection was closed before it was served.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("no complete PROXY protocol header in time")]
    Timeout,
    #[error("closed before a complete PROXY protocol header")]
    Closed,
}

impl AcceptError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Decode(e) => e.reason(),
            Self::Timeout => "timeout",
            Self::Closed => "closed",
        }
    }
}

/// Pause between looks at a header that arrived in pieces (rare: senders write it in
/// one segment).
const PIECES: Duration = Duration::from_millis(5);

/// Reads the header off `stream` by `deadline`, consuming exactly its bytes: what
/// follows (a request, a ClientHello) stays in the socket for the protocol after it.
pub async fn read_header(stream: &TcpStream, deadline: Instant) -> Result<Header, AcceptError> {
    let mut buf = vec![0u8; V2_MAX];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Err(AcceptError::Timeout),
            Ok(Err(_) | Ok(0)) => return Err(AcceptError::Closed),
            Ok(Ok(n)) => n,
        };
        if let Some((header, len)) = decode(&buf[..n])? {
            consume(stream, len, deadline).await?;
            return Ok(header);
        }
        if n == seen || n == buf.len() {
            // No new bytes since the last look (peek returns at once while any are
            // queued): wait a little instead of spinning.
            if Instant::now() + PIECES >= deadline {
                return Err(AcceptError::Timeout);
            }
            tokio::time::sleep(PIECES).await;
        }
        seen = n;
    }
}

/// Reads and drops `len` bytes that are already queued.
async fn consume(stream: &TcpStream, mut len: usize, deadline: Instant) -> Result<(), AcceptError> {
    let mut sink = [0u8; 256];
    while len > 0 {
        let want = len.min(sink.len());
        let ready = tokio::time::timeout_at(deadline, stream.readable()).await;
        if !matches!(ready, Ok(Ok(()))) {
            return Err(AcceptError::Timeout);
        }
        match stream.try_read(&mut sink[..want]) {
            Ok(0) => return Err(AcceptError::Closed),
            Ok(n) => len -= n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(AcceptError::Closed),
        }
    }
    Ok(())
}

/// Whether connections from `peer` must open with a header on this listener.
pub fn expected(config: &ListenerConfig, peer: IpAddr) -> bool {
    config.proxy_protocol_from.iter().any(|p| p.contains(peer))
}

/// For a connection from a PROXY protocol source: the client it is for (its real peer
/// for a LOCAL header), or None when it was refused (counted and logged, throttled).
/// Waits at most the listener's httpRequest timeout.
pub async fn accept(stream: &TcpStream, peer: SocketAddr, service: &Service) -> Option<SocketAddr> {
    let deadline = Instant::now() + Duration::from_millis(service.config.timeouts.http_request_ms);
    match read_header(stream, deadline).await {
        Ok(Header::Proxied { source, .. }) => Some(source),
        Ok(Header::Local) => Some(peer),
        Err(e) => {
            service
                .metrics
                .proxy_protocol_errors
                .get_or_create(&with(service.labels.clone(), "reason", e.reason()))
                .inc();
            throttle::info_proxy_header(peer, &service.config.name, &e);
            None
        }
    }
}

/// Whether a connection opens like a PROXY header (v1 or v2). From a source that is
/// not listed it is no request an HTTP parser takes, and a sign that the proxy in
/// front sends headers this listener was not told to expect.
pub fn opens_like_header(buf: &[u8]) -> bool {
    buf.starts_with(b"PROXY ") || buf.starts_with(&V2_SIGNATURE)
}

/// Counts (reason `unlisted`) and logs, throttled, a header from a source that is not
/// listed in `acceptProxyProtocol`; it was not taken as a client address.
pub fn count_unlisted(service: &Service, peer: SocketAddr) {
    service
        .metrics
        .proxy_protocol_errors
        .get_or_create(&with(service.labels.clone(), "reason", "unlisted"))
        .inc();
    throttle::info_proxy_header(
        peer,
        &service.config.name,
        &"header from a source not listed in acceptProxyProtocol, not taken",
    );
}

/// Writes the header for `source` (the client) and `destination` (the address it
/// connected to) as the first bytes of a backend connection.
pub async fn send(
    upstream: &mut TcpStream,
    version: ProxyProtocolVersion,
    source: SocketAddr,
    destination: SocketAddr,
    limit: Duration,
) -> std::io::Result<()> {
    let header = encode(version, source, destination);
    match tokio::time::timeout(limit, upstream.write_all(&header)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "sending the PROXY protocol header",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// What `stream` still has after a header.
    async fn rest(mut stream: TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        out
    }

    type Outcome = Result<Option<Decoded>, DecodeError>;

    fn sa(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).expect("len").to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn headers_recognised_by_their_opening() {
        let cases: [(&[u8], bool); 7] = [
            (
                b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nGET / HTTP/1.1\r\n",
                true,
            ),
            (b"PROXY UNKNOWN\r\n", true),
            (&V2_SIGNATURE, true),
            (b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0c", true),
            (b"GET / HTTP/1.1\r\n", false),
            (b"PROXYX / HTTP/1.1\r\n", false),
            (b"\r\nGET / HTTP/1.1\r\n", false),
        ];
        for (input, want) in cases {
            assert_eq!(opens_like_header(input), want, "{input:?}");
        }
    }

    #[test]
    fn v1_lines() {
        let proxied = |s: &str, d: &str| Header::Proxied {
            source: sa(s),
            destination: sa(d),
        };
        let cases: &[(&[u8], Outcome)] = &[
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\nGET / HTTP/1.1\r\n",
                Ok(Some((proxied("192.0.2.1:51000", "198.51.100.2:443"), 45))),
            ),
            (
                b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n",
                Ok(Some((proxied("[2001:db8::1]:1", "[::1]:65535"), 36))),
            ),
            (b"PROXY UNKNOWN\r\n", Ok(Some((Header::Local, 15)))),
            (
                b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
                Ok(Some((Header::Local, 35))),
            ),
            // Incomplete: wait for more.
            (b"PRO", Ok(None)),
            (b"PROXY TCP4 192.0.2.1 198.51", Ok(None)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", Ok(None)),
            // Garbage and malformed lines.
            (b"GET / HTTP/1.1\r\n", Err(DecodeError::Missing)),
            (b"\x16\x03\x01", Err(DecodeError::Missing)),
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                Err(DecodeError::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                Err(DecodeError::V1("expected four fields after the protocol")),
            ),
            (
                b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
                Err(DecodeError::V1("expected four fields after the protocol")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
                Err(DecodeError::V1("address of the wrong family")),
            ),
            (
                b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
                Err(DecodeError::V1("bad address")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
                Err(DecodeError::V1("bad port")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
                Err(DecodeError::V1("bad port")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n",
                Err(DecodeError::V1("bad port")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
                Err(DecodeError::V1("bare LF")),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                &decode(input),
                want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn v1_length_bound() {
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(200));
        assert_eq!(decode(long.as_bytes()), Err(DecodeError::V1TooLong));
        // 107 bytes with the CRLF is the most allowed.
        let most = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 16));
        assert_eq!(most.len(), V1_MAX);
        assert_eq!(decode(most.as_bytes()), Ok(Some((Header::Local, V1_MAX))));
        let over = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 15));
        assert_eq!(decode(over.as_bytes()), Err(DecodeError::V1TooLong));
    }

    #[test]
    fn v2_headers() {
        let inet = [192, 0, 2, 1, 198, 51, 100, 2, 0xc7, 0x38, 0x01, 0xbb];
        let mut inet6 = Vec::new();
        inet6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("v6").octets());
        inet6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        inet6.extend_from_slice(&[0, 1, 0, 2]);
        let proxied = |s: &str, d: &str| Header::Proxied {
            source: sa(s),
            destination: sa(d),
        };
        let mut with_tlv = inet.to_vec();
        with_tlv.extend_from_slice(&[0x04, 0x00, 0x03, 1, 2, 3]); // NOOP TLV
        let cases: Vec<(Vec<u8>, Outcome)> = vec![
            (
                v2(0x21, 0x11, &inet),
                Ok(Some((proxied("192.0.2.1:51000", "198.51.100.2:443"), 28))),
            ),
            (
                v2(0x21, 0x21, &inet6),
                Ok(Some((proxied("[2001:db8::1]:1", "[::1]:2"), 52))),
            ),
            // TLVs are skipped, their bytes consumed.
            (
                v2(0x21, 0x11, &with_tlv),
                Ok(Some((proxied("192.0.2.1:51000", "198.51.100.2:443"), 34))),
            ),
            // LOCAL (the sender's own check) and UNSPEC keep the real peer.
            (v2(0x20, 0x00, &[]), Ok(Some((Header::Local, 16)))),
            (v2(0x20, 0x11, &inet), Ok(Some((Header::Local, 28)))),
            (v2(0x21, 0x00, &[]), Ok(Some((Header::Local, 16)))),
            (v2(0x21, 0x31, &[0u8; 216]), Ok(Some((Header::Local, 232)))),
            // Truncated: wait for the rest.
            (v2(0x21, 0x11, &inet)[..20].to_vec(), Ok(None)),
            (v2(0x21, 0x11, &inet)[..13].to_vec(), Ok(None)),
            (V2_SIGNATURE[..5].to_vec(), Ok(None)),
            // Broken.
            (
                v2(0x11, 0x11, &inet),
                Err(DecodeError::V2("version is not 2")),
            ),
            (
                v2(0x22, 0x11, &inet),
                Err(DecodeError::V2("unknown command")),
            ),
            (
                v2(0x21, 0x11, &inet[..8]),
                Err(DecodeError::V2("IPv4 addresses cut short")),
            ),
            (
                v2(0x21, 0x21, &inet),
                Err(DecodeError::V2("IPv6 addresses cut short")),
            ),
            (
                v2(0x21, 0x51, &inet),
                Err(DecodeError::V2("unknown address family")),
            ),
            (
                v2(0x21, 0x11, &vec![0u8; V2_MAX]),
                Err(DecodeError::V2TooLong),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(decode(&input), want, "input {input:?}");
        }
    }

    #[test]
    fn encode_then_decode() {
        let pairs = [
            ("192.0.2.1:51000", "198.51.100.2:443"),
            ("[2001:db8::1]:1", "[::1]:2"),
        ];
        for version in [ProxyProtocolVersion::V1, ProxyProtocolVersion::V2] {
            for (s, d) in pairs {
                let bytes = encode(version, sa(s), sa(d));
                let want = Header::Proxied {
                    source: sa(s),
                    destination: sa(d),
                };
                assert_eq!(decode(&bytes), Ok(Some((want, bytes.len()))), "{version:?}");
            }
        }
        assert_eq!(
            encode(
                ProxyProtocolVersion::V1,
                sa("10.0.0.1:5"),
                sa("10.0.0.2:80")
            ),
            b"PROXY TCP4 10.0.0.1 10.0.0.2 5 80\r\n"
        );
        for version in [ProxyProtocolVersion::V1, ProxyProtocolVersion::V2] {
            let bytes = encode_local(version);
            assert_eq!(decode(&bytes), Ok(Some((Header::Local, bytes.len()))));
        }
        // Mixed families: both as IPv6.
        let mixed = encode(ProxyProtocolVersion::V1, sa("10.0.0.1:5"), sa("[::1]:80"));
        assert_eq!(mixed, b"PROXY TCP6 ::ffff:10.0.0.1 ::1 5 80\r\n");
    }

    /// The driver takes exactly the header, even when it arrives in pieces, and leaves
    /// what follows in the socket.
    #[tokio::test]
    async fn read_header_leaves_the_payload() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let writer = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            c.write_all(b"PROXY TCP4 10.1.2.3 10.0.0.1 4")
                .await
                .expect("w");
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.write_all(b"00 80\r\nhello").await.expect("w");
        });
        let (server, _) = listener.accept().await.expect("accept");
        let deadline = Instant::now() + Duration::from_secs(5);
        let header = read_header(&server, deadline).await.expect("header");
        assert_eq!(
            header,
            Header::Proxied {
                source: sa("10.1.2.3:400"),
                destination: sa("10.0.0.1:80")
            }
        );
        writer.await.expect("writer");
        assert_eq!(rest(server).await, b"hello");
    }

    #[tokio::test]
    async fn read_header_times_out_and_refuses_garbage() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut quiet = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let deadline = Instant::now() + Duration::from_millis(100);
        let err = read_header(&server, deadline).await.expect_err("timeout");
        assert_eq!(err.reason(), "timeout");
        quiet.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("w");
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = read_header(&server, deadline).await.expect_err("garbage");
        assert_eq!(err.reason(), "missing");
    }
}
