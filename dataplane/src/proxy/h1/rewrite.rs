//! The heads the proxy sends on: copied field by field as byte ranges of what arrived,
//! minus hop-by-hop fields, plus the forwarding fields. Pure: parsed head in, bytes out.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;

use super::head::{Field, FieldKind, RequestHead, ResponseHead, Span};

/// What the proxy knows about the client side of a request.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    pub peer: SocketAddr,
    /// The address the client connected to, looked up only for a request that names no
    /// host (HTTP/1.0 without Host), which gets it as its Host.
    pub local: Option<SocketAddr>,
    pub forwarded_headers: bool,
}

/// Whether a field the client listed in `Connection` is removed. Framing and Host are
/// never removed that way (`Connection: host` must not strip Host).
fn listed(buf: &[u8], tokens: &[Span], field: &Field) -> bool {
    !tokens.is_empty()
        && !matches!(
            field.kind,
            FieldKind::Host | FieldKind::ContentLength | FieldKind::TransferEncoding
        )
        && tokens
            .iter()
            .any(|t| t.get(buf).eq_ignore_ascii_case(field.name.get(buf)))
}

fn push_field(out: &mut Vec<u8>, buf: &[u8], f: &Field) {
    out.extend_from_slice(f.name.get(buf));
    out.extend_from_slice(b": ");
    out.extend_from_slice(f.value.get(buf));
    out.extend_from_slice(b"\r\n");
}

/// Writes the request head for the backend into `out` (which is cleared first).
pub fn request(buf: &[u8], head: &RequestHead, origin: &Origin, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(head.method_span.get(buf));
    out.push(b' ');
    let path = head.path.get(buf);
    if path.first() == Some(&b'?') || path.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    // Backends always get HTTP/1.1, so their connections can be pooled.
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for f in &head.fields {
        let keep = match f.kind {
            FieldKind::Connection | FieldKind::HopByHop => false,
            FieldKind::Upgrade => head.upgrade,
            // The proxy answers `100 Continue` itself.
            FieldKind::Expect => !head.expect_continue,
            FieldKind::XForwardedFor | FieldKind::XForwardedProto | FieldKind::Forwarded => {
                !origin.forwarded_headers
            }
            _ => true,
        };
        if keep && !listed(buf, &head.connection_tokens, f) {
            push_field(out, buf, f);
        }
    }
    if !head.has_host_field {
        match (head.host, origin.local) {
            (Some(h), _) => {
                out.extend_from_slice(b"Host: ");
                out.extend_from_slice(h.get(buf));
                out.extend_from_slice(b"\r\n");
            }
            (None, Some(local)) => {
                let _ = write!(out, "Host: {local}\r\n");
            }
            (None, None) => {}
        }
    }
    if head.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    if origin.forwarded_headers {
        forwarding_fields(buf, head, origin, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// X-Forwarded-For / -Proto and RFC 7239 Forwarded, appended to what earlier proxies
/// wrote. The host parameter is always a quoted-string with `"` and `\` escaped.
fn forwarding_fields(buf: &[u8], head: &RequestHead, origin: &Origin, out: &mut Vec<u8>) {
    let client = origin.peer.ip();
    let mut xff = String::new();
    let mut forwarded = String::new();
    for f in &head.fields {
        let target = match f.kind {
            FieldKind::XForwardedFor => &mut xff,
            FieldKind::Forwarded => &mut forwarded,
            _ => continue,
        };
        if let Ok(v) = std::str::from_utf8(f.value.get(buf)) {
            if !target.is_empty() {
                target.push_str(", ");
            }
            target.push_str(v.trim());
        }
    }
    if !xff.is_empty() {
        xff.push_str(", ");
    }
    let _ = write!(xff, "{client}");
    if !forwarded.is_empty() {
        forwarded.push_str(", ");
    }
    if client.is_ipv6() {
        let _ = write!(forwarded, "for=\"[{client}]\";proto=http");
    } else {
        let _ = write!(forwarded, "for={client};proto=http");
    }
    if let Some(h) = head.host {
        forwarded.push_str(";host=\"");
        for &b in h.get(buf) {
            if b == b'"' || b == b'\\' {
                forwarded.push('\\');
            }
            forwarded.push(char::from(b));
        }
        forwarded.push('"');
    }
    let _ = write!(
        out,
        "X-Forwarded-For: {xff}\r\nX-Forwarded-Proto: http\r\nForwarded: {forwarded}\r\n"
    );
}

/// How the response head must end for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientConnection {
    KeepAlive,
    /// HTTP/1.0 client that asked for keep-alive: say so explicitly.
    KeepAlive10,
    Close,
    Upgrade,
}

/// Writes the response head for the client into `out` (cleared first). `dechunk`: the
/// body will be sent without its chunked framing (HTTP/1.0 client), so the field goes.
pub fn response(
    buf: &[u8],
    head: &ResponseHead,
    connection: ClientConnection,
    dechunk: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status_text.get(buf));
    out.extend_from_slice(b"\r\n");
    for f in &head.fields {
        let keep = match f.kind {
            FieldKind::Connection | FieldKind::HopByHop => false,
            FieldKind::Upgrade => connection == ClientConnection::Upgrade,
            FieldKind::TransferEncoding => !dechunk,
            _ => true,
        };
        if keep && !listed(buf, &head.connection_tokens, f) {
            push_field(out, buf, f);
        }
    }
    out.extend_from_slice(match connection {
        ClientConnection::KeepAlive => b"" as &[u8],
        ClientConnection::KeepAlive10 => b"Connection: keep-alive\r\n",
        ClientConnection::Close => b"Connection: close\r\n",
        ClientConnection::Upgrade => b"Connection: upgrade\r\n",
    });
    out.extend_from_slice(b"\r\n");
}

/// A complete response the proxy makes itself (errors, refusals).
pub fn local_response(status: u16, message: &str, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + message.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n{message}\n",
        reason_phrase(status),
        message.len() + 1,
        if close { "Connection: close\r\n" } else { "" },
    );
    out
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::super::head::{Limits, Method, parse_request, parse_response};
    use super::*;

    fn origin() -> Origin {
        Origin {
            peer: "10.0.0.9:4000".parse().unwrap(),
            local: Some("192.0.2.1:80".parse().unwrap()),
            forwarded_headers: true,
        }
    }

    fn forward(text: &str) -> String {
        let head = parse_request(text.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        request(text.as_bytes(), &head, &origin(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_heads() {
        let cases = [
            (
                "GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, x-s\r\nX-S: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
                "GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1, 10.0.0.9\r\nX-Forwarded-Proto: http\r\nForwarded: for=10.0.0.9;proto=http;host=\"h\"\r\n\r\n",
            ),
            (
                "GET /a HTTP/1.1\r\nHost: h\r\nConnection: host, content-length\r\nContent-Length: 0\r\n\r\n",
                "GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nForwarded: for=10.0.0.9;proto=http;host=\"h\"\r\n\r\n",
            ),
            (
                "GET http://h:81?q HTTP/1.0\r\n\r\n",
                "GET /?q HTTP/1.1\r\nHost: h:81\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nForwarded: for=10.0.0.9;proto=http;host=\"h:81\"\r\n\r\n",
            ),
            (
                "GET / HTTP/1.0\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nForwarded: for=10.0.0.9;proto=http\r\n\r\n",
            ),
            (
                "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nForwarded: for=10.0.0.9;proto=http;host=\"h\"\r\n\r\n",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(forward(input), want, "{input:?}");
        }
    }

    #[test]
    fn response_heads() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\nKeep-Alive: timeout=5\r\nX-B: 2\r\n\r\n";
        let head = parse_response(text.as_bytes(), Method::Get, &Limits::default())
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        response(
            text.as_bytes(),
            &head,
            ClientConnection::Close,
            false,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-B: 2\r\nConnection: close\r\n\r\n"
        );
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = parse_response(text.as_bytes(), Method::Get, &Limits::default())
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        response(
            text.as_bytes(),
            &head,
            ClientConnection::Close,
            true,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
        );
    }
}
