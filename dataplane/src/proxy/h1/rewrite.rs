//! The heads the proxy sends on: copied field by field as byte ranges of what arrived,
//! minus hop-by-hop fields, plus the forwarding fields. Pure: parsed head in, bytes out.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use halo_crds::node_config::{ForwardedConfig, ForwardedMode};

use super::head::{Field, FieldKind, RequestHead, ResponseHead, Span};
use crate::proxy::filter::{HeaderEdits, NO_EDITS, Scheme};
use crate::proxy::persist;

/// What the proxy knows about the client side of a request.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    pub peer: SocketAddr,
    /// The address the client connected to, looked up only for a request that names no
    /// host (HTTP/1.0 without Host), which gets it as its Host.
    pub local: Option<SocketAddr>,
    /// What the client spoke to this listener (X-Forwarded-Proto, Forwarded proto=).
    pub scheme: Scheme,
    pub forwarding: Forwarding,
}

/// What this hop does with forwarding fields (X-Forwarded-For/-Proto/-Host, Forwarded)
/// for one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarding {
    /// Pass on what came and add nothing.
    Off,
    /// A trusted client: keep its fields and add this hop.
    Append,
    /// An untrusted client: drop its fields and add this hop.
    Replace,
}

/// The forwarding treatment of `client` under a listener's settings: in `Append` mode an
/// empty trust list trusts everyone, in `Replace` mode it trusts no one.
pub fn forwarding(config: &ForwardedConfig, client: IpAddr) -> Forwarding {
    let listed = || config.trusted.iter().any(|p| p.contains(client));
    match config.mode {
        ForwardedMode::Off => Forwarding::Off,
        ForwardedMode::Append if config.trusted.is_empty() || listed() => Forwarding::Append,
        ForwardedMode::Replace if listed() => Forwarding::Append,
        ForwardedMode::Append | ForwardedMode::Replace => Forwarding::Replace,
    }
}

/// A route's changes to a request head.
#[derive(Clone, Copy, Debug)]
pub struct RequestEdits<'a> {
    /// Replaces the request target (path and query).
    pub target: Option<&'a [u8]>,
    /// Replaces Host.
    pub host: Option<&'a str>,
    pub headers: &'a HeaderEdits,
    /// A persistence cookie (`indirect`) the backend must not see.
    pub strip_cookie: Option<&'a str>,
}

impl RequestEdits<'static> {
    pub const NONE: Self = Self {
        target: None,
        host: None,
        headers: &NO_EDITS,
        strip_cookie: None,
    };
}

fn is_cookie(buf: &[u8], f: &Field) -> bool {
    f.name.get(buf).eq_ignore_ascii_case(b"cookie")
}

/// A Cookie field without the persistence cookie; nothing when no other cookie is left.
fn push_cookie_without(out: &mut Vec<u8>, buf: &[u8], f: &Field, name: &str) {
    let rest = persist::strip(f.value.get(buf), name);
    if !rest.is_empty() {
        out.extend_from_slice(f.name.get(buf));
        out.extend_from_slice(b": ");
        out.extend_from_slice(&rest);
        out.extend_from_slice(b"\r\n");
    }
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

fn push_edits(out: &mut Vec<u8>, edits: &HeaderEdits) {
    for (name, value) in edits.appended() {
        let _ = write!(out, "{name}: {value}\r\n");
    }
}

/// Writes the request head for the backend into `out` (which is cleared first).
pub fn request(
    buf: &[u8],
    head: &RequestHead,
    origin: &Origin,
    edits: &RequestEdits<'_>,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(head.method_span.get(buf));
    out.push(b' ');
    let path = edits.target.unwrap_or_else(|| head.path.get(buf));
    if path.first() == Some(&b'?') || path.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    // Backends always get HTTP/1.1, so their connections can be pooled.
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let fwd = origin.forwarding;
    for f in &head.fields {
        let keep = match f.kind {
            FieldKind::Connection | FieldKind::HopByHop => false,
            FieldKind::Upgrade => head.upgrade,
            // The proxy answers `100 Continue` itself.
            FieldKind::Expect => !head.expect_continue,
            FieldKind::Host => edits.host.is_none(),
            // List fields: re-written with this hop appended unless passed as they are.
            FieldKind::XForwardedFor | FieldKind::Forwarded => fwd == Forwarding::Off,
            FieldKind::XForwardedProto | FieldKind::XForwardedHost => fwd != Forwarding::Replace,
            _ => !edits.headers.drops(f.name.get(buf)),
        };
        if !keep || listed(buf, &head.connection_tokens, f) {
            continue;
        }
        match edits.strip_cookie {
            Some(name) if is_cookie(buf, f) => push_cookie_without(out, buf, f, name),
            _ => push_field(out, buf, f),
        }
    }
    match (edits.host, head.has_host_field, head.host, origin.local) {
        (Some(h), ..) => {
            let _ = write!(out, "Host: {h}\r\n");
        }
        (None, true, ..) => {}
        (None, false, Some(h), _) => {
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(h.get(buf));
            out.extend_from_slice(b"\r\n");
        }
        (None, false, None, Some(local)) => {
            let _ = write!(out, "Host: {local}\r\n");
        }
        (None, false, None, None) => {}
    }
    if head.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    push_edits(out, edits.headers);
    if fwd != Forwarding::Off {
        forwarding_fields(buf, head, origin, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// X-Forwarded-For and RFC 7239 Forwarded with this hop appended (to what a trusted
/// client sent), X-Forwarded-Proto and -Host unless a trusted client sent its own.
/// Written straight into `out`: no allocation. The host parameter is always a
/// quoted-string with `"` and `\` escaped.
fn forwarding_fields(buf: &[u8], head: &RequestHead, origin: &Origin, out: &mut Vec<u8>) {
    let client = origin.peer.ip();
    let trusted = origin.forwarding == Forwarding::Append;
    let earlier = |kind: FieldKind| {
        head.fields
            .iter()
            .filter(move |f| trusted && f.kind == kind)
            .map(|f| f.value.get(buf).trim_ascii())
    };
    out.extend_from_slice(b"X-Forwarded-For: ");
    for v in earlier(FieldKind::XForwardedFor) {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    let _ = write!(out, "{client}\r\n");
    let scheme = origin.scheme.as_str();
    if earlier(FieldKind::XForwardedProto).next().is_none() {
        let _ = write!(out, "X-Forwarded-Proto: {scheme}\r\n");
    }
    if let Some(h) = head.host
        && earlier(FieldKind::XForwardedHost).next().is_none()
    {
        out.extend_from_slice(b"X-Forwarded-Host: ");
        out.extend_from_slice(h.get(buf));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Forwarded: ");
    for v in earlier(FieldKind::Forwarded) {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    if client.is_ipv6() {
        let _ = write!(out, "for=\"[{client}]\";proto={scheme}");
    } else {
        let _ = write!(out, "for={client};proto={scheme}");
    }
    if let Some(h) = head.host {
        out.extend_from_slice(b";host=\"");
        for &b in h.get(buf) {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
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
    response_edited(buf, head, connection, dechunk, &NO_EDITS, out);
}

/// `response` with a route's response header filters applied.
pub fn response_edited(
    buf: &[u8],
    head: &ResponseHead,
    connection: ClientConnection,
    dechunk: bool,
    edits: &HeaderEdits,
    out: &mut Vec<u8>,
) {
    response_persisted(buf, head, connection, dechunk, edits, None, out);
}

/// A persistence cookie a response sets.
#[derive(Clone, Copy, Debug)]
pub struct SetCookie<'a> {
    /// The whole `Set-Cookie` value.
    pub value: &'a str,
    /// Mark the response private (`nocache`).
    pub nocache: bool,
}

/// Whether a response field is Cache-Control.
fn is_cache_control(buf: &[u8], f: &Field) -> bool {
    f.name.get(buf).eq_ignore_ascii_case(b"cache-control")
}

/// `response_edited` that also sets a persistence cookie (and, for `nocache`, rewrites
/// Cache-Control so shared caches do not keep the cookie).
pub fn response_persisted(
    buf: &[u8],
    head: &ResponseHead,
    connection: ClientConnection,
    dechunk: bool,
    edits: &HeaderEdits,
    cookie: Option<SetCookie<'_>>,
    out: &mut Vec<u8>,
) {
    let nocache = cookie.is_some_and(|c| c.nocache);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status_text.get(buf));
    out.extend_from_slice(b"\r\n");
    for f in &head.fields {
        let keep = match f.kind {
            FieldKind::Connection | FieldKind::HopByHop => false,
            FieldKind::Upgrade => connection == ClientConnection::Upgrade,
            FieldKind::TransferEncoding => !dechunk,
            _ if nocache && is_cache_control(buf, f) => false,
            _ => !edits.drops(f.name.get(buf)),
        };
        if keep && !listed(buf, &head.connection_tokens, f) {
            push_field(out, buf, f);
        }
    }
    push_edits(out, edits);
    if let Some(c) = cookie {
        let _ = write!(out, "Set-Cookie: {}\r\n", c.value);
    }
    if nocache {
        let existing: Vec<&[u8]> = head
            .fields
            .iter()
            .filter(|f| is_cache_control(buf, f))
            .map(|f| f.value.get(buf).trim_ascii())
            .collect();
        let joined = existing.join(&b", "[..]);
        out.extend_from_slice(b"Cache-Control: ");
        out.extend_from_slice(&persist::cache_control(Some(&joined)));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(match connection {
        ClientConnection::KeepAlive => b"" as &[u8],
        ClientConnection::KeepAlive10 => b"Connection: keep-alive\r\n",
        ClientConnection::Close => b"Connection: close\r\n",
        ClientConnection::Upgrade => b"Connection: upgrade\r\n",
    });
    out.extend_from_slice(b"\r\n");
}

/// A complete answer of a route's own (fixed response, redirect): `fields` are
/// written as given; no body for a HEAD request (its length is still announced).
pub fn answer(
    status: u16,
    fields: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
    close: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in fields {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    // 204 and 304 have no body and must not announce one (RFC 9110 §8.6).
    let bodiless = matches!(status, 204 | 304);
    if !bodiless {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !bodiless {
        out.extend_from_slice(body);
    }
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
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        429 => "Too Many Requests",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
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
            scheme: Scheme::Http,
            forwarding: Forwarding::Append,
        }
    }

    fn forward(text: &str) -> String {
        let head = parse_request(text.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        request(
            text.as_bytes(),
            &head,
            &origin(),
            &RequestEdits::NONE,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_heads() {
        let cases = [
            (
                "GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, x-s\r\nX-S: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
                "GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1, 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nForwarded: for=10.0.0.9;proto=http;host=\"h\"\r\n\r\n",
            ),
            (
                "GET /a HTTP/1.1\r\nHost: h\r\nConnection: host, content-length\r\nContent-Length: 0\r\n\r\n",
                "GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nForwarded: for=10.0.0.9;proto=http;host=\"h\"\r\n\r\n",
            ),
            (
                "GET http://h:81?q HTTP/1.0\r\n\r\n",
                "GET /?q HTTP/1.1\r\nHost: h:81\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h:81\r\nForwarded: for=10.0.0.9;proto=http;host=\"h:81\"\r\n\r\n",
            ),
            (
                "GET / HTTP/1.0\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nForwarded: for=10.0.0.9;proto=http\r\n\r\n",
            ),
            (
                "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nForwarded: for=10.0.0.9;proto=http;host=\"h\"\r\n\r\n",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(forward(input), want, "{input:?}");
        }
    }

    fn forward_with(text: &str, origin: &Origin, edits: &RequestEdits<'_>) -> String {
        let head = parse_request(text.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        request(text.as_bytes(), &head, origin, edits, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn forwarding_modes() {
        let text = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: outer\r\nForwarded: for=1.1.1.1\r\n\r\n";
        let cases = [
            (
                Forwarding::Append,
                Scheme::Http,
                "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: outer\r\nX-Forwarded-For: 1.1.1.1, 10.0.0.9\r\nForwarded: for=1.1.1.1, for=10.0.0.9;proto=http;host=\"h\"\r\n\r\n",
            ),
            (
                Forwarding::Replace,
                Scheme::Https,
                "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: h\r\nForwarded: for=10.0.0.9;proto=https;host=\"h\"\r\n\r\n",
            ),
            (Forwarding::Off, Scheme::Https, text),
        ];
        for (forwarding, scheme, want) in cases {
            let origin = Origin {
                forwarding,
                scheme,
                ..origin()
            };
            assert_eq!(
                forward_with(text, &origin, &RequestEdits::NONE),
                want,
                "{forwarding:?}"
            );
        }
    }

    #[test]
    fn who_is_trusted() {
        let config = |mode, trusted: &[&str]| ForwardedConfig {
            mode,
            trusted: trusted.iter().map(|p| p.parse().unwrap()).collect(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            (
                config(ForwardedMode::Append, &[]),
                "10.0.0.1",
                Forwarding::Append,
            ),
            (
                config(ForwardedMode::Append, &["10.0.0.0/8"]),
                "10.0.0.1",
                Forwarding::Append,
            ),
            (
                config(ForwardedMode::Append, &["10.0.0.0/8"]),
                "192.0.2.1",
                Forwarding::Replace,
            ),
            (
                config(ForwardedMode::Replace, &[]),
                "10.0.0.1",
                Forwarding::Replace,
            ),
            (
                config(ForwardedMode::Replace, &["10.0.0.1/32"]),
                "10.0.0.1",
                Forwarding::Append,
            ),
            (
                config(ForwardedMode::Off, &["10.0.0.1/32"]),
                "10.0.0.1",
                Forwarding::Off,
            ),
        ];
        for (config, client, want) in cases {
            assert_eq!(forwarding(&config, ip(client)), want, "{config:?} {client}");
        }
    }

    #[test]
    fn route_edits_of_a_request() {
        use halo_crds::node_config::{HeaderModifier, HeaderValue};
        let hv = |n: &str, v: &str| HeaderValue {
            name: n.into(),
            value: v.into(),
        };
        let headers = HeaderEdits::compile([&HeaderModifier {
            set: vec![hv("X-Set", "new")],
            add: vec![hv("X-Add", "2")],
            remove: vec!["x-drop".into()],
        }])
        .unwrap();
        let edits = RequestEdits {
            target: Some(b"/v2/x?q=1"),
            host: Some("inner.local"),
            headers: &headers,
            strip_cookie: None,
        };
        let origin = Origin {
            forwarding: Forwarding::Off,
            ..origin()
        };
        let text = "GET /api/x?q=1 HTTP/1.1\r\nHost: h\r\nX-Set: old\r\nX-Add: 1\r\nX-Drop: 1\r\nX-Keep: 1\r\n\r\n";
        assert_eq!(
            forward_with(text, &origin, &edits),
            "GET /v2/x?q=1 HTTP/1.1\r\nX-Add: 1\r\nX-Keep: 1\r\nHost: inner.local\r\nX-Set: new\r\nX-Add: 2\r\n\r\n"
        );
    }

    #[test]
    fn persistence_cookie_is_stripped_from_requests() {
        let edits = RequestEdits {
            strip_cookie: Some("SRV"),
            ..RequestEdits::NONE
        };
        let origin = Origin {
            forwarding: Forwarding::Off,
            ..origin()
        };
        let cases = [
            (
                "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; SRV=x; b=2\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; b=2\r\n\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nCookie: SRV=x\r\nX: 1\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: h\r\nX: 1\r\n\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\ncookie: SRV=x\r\nCookie: c=3\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: h\r\nCookie: c=3\r\n\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nX-Cookie: SRV=x\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: h\r\nX-Cookie: SRV=x\r\n\r\n",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(forward_with(input, &origin, &edits), want, "{input:?}");
        }
    }

    #[test]
    fn responses_that_set_the_cookie_become_private() {
        let persisted = |text: &str, nocache: bool| {
            let head = parse_response(text.as_bytes(), Method::Get, &Limits::default())
                .unwrap()
                .unwrap();
            let mut out = Vec::new();
            let cookie = SetCookie {
                value: "SRV=v; Path=/; HttpOnly",
                nocache,
            };
            response_persisted(
                text.as_bytes(),
                &head,
                ClientConnection::KeepAlive,
                false,
                &NO_EDITS,
                Some(cookie),
                &mut out,
            );
            String::from_utf8(out).unwrap()
        };
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                true,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSet-Cookie: SRV=v; Path=/; HttpOnly\r\nCache-Control: private\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=5\r\nContent-Length: 0\r\n\r\n",
                true,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSet-Cookie: SRV=v; Path=/; HttpOnly\r\nCache-Control: max-age=5, no-cache=\"set-cookie\"\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=5\r\nContent-Length: 0\r\n\r\n",
                false,
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=5\r\nContent-Length: 0\r\nSet-Cookie: SRV=v; Path=/; HttpOnly\r\n\r\n",
            ),
        ];
        for (input, nocache, want) in cases {
            assert_eq!(persisted(input, nocache), want, "{input:?}");
        }
    }

    #[test]
    fn route_edits_of_a_response_and_own_answers() {
        use halo_crds::node_config::{HeaderModifier, HeaderValue};
        let edits = HeaderEdits::compile([&HeaderModifier {
            set: vec![HeaderValue {
                name: "Server".into(),
                value: "halo".into(),
            }],
            add: Vec::new(),
            remove: vec!["x-internal".into()],
        }])
        .unwrap();
        let text = "HTTP/1.1 200 OK\r\nServer: app\r\nX-Internal: 1\r\nContent-Length: 0\r\n\r\n";
        let head = parse_response(text.as_bytes(), Method::Get, &Limits::default())
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        response_edited(
            text.as_bytes(),
            &head,
            ClientConnection::KeepAlive,
            false,
            &edits,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: halo\r\n\r\n"
        );
        answer(
            302,
            &[("Location", "https://h/")],
            b"",
            false,
            true,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 302 Found\r\nLocation: https://h/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        answer(
            503,
            &[("Content-Type", "text/html")],
            b"<p>down</p>",
            true,
            false,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nContent-Length: 11\r\n\r\n"
        );
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
