//! HTTP/1.1 message heads (RFC 9112): parse, validate and decide the framing of a
//! request or a response. Pure: bytes in, a typed head (offsets into those bytes) or a
//! typed refusal out. Anything ambiguous is refused rather than guessed.

use std::ops::Range;

/// Size limits on a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header fields, in bytes (nginx's large buffer, HAProxy's bufsize).
    pub max_head: usize,
    pub max_headers: usize,
    pub max_uri: usize,
}

impl Limits {
    pub const DEFAULT: Self = Self {
        max_head: 16 * 1024,
        max_headers: 100,
        max_uri: 8 * 1024,
    };
    /// httparse is given a fixed array of field slots; more cannot be asked for.
    pub const MAX_HEADERS: usize = 128;
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

static CONFIGURED: std::sync::OnceLock<Limits> = std::sync::OnceLock::new();

/// Sets the process-wide limits once at start (`--max-request-head` and friends).
pub fn configure(limits: Limits) {
    let _ = CONFIGURED.set(limits);
}

/// The limits in force.
pub fn limits() -> Limits {
    CONFIGURED.get().copied().unwrap_or_default()
}

/// Byte offsets into the buffer the head was parsed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn of(range: Range<usize>) -> Self {
        Self {
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// Header fields the proxy treats specially; everything else is copied as it came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    /// keep-alive, proxy-connection, te, trailer: belong to one connection (RFC 9110 §7.6.1).
    HopByHop,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Forwarded,
}

impl FieldKind {
    fn of(name: &[u8]) -> Self {
        const TABLE: [(&[u8], FieldKind); 13] = [
            (b"host", FieldKind::Host),
            (b"content-length", FieldKind::ContentLength),
            (b"transfer-encoding", FieldKind::TransferEncoding),
            (b"connection", FieldKind::Connection),
            (b"keep-alive", FieldKind::HopByHop),
            (b"proxy-connection", FieldKind::HopByHop),
            (b"te", FieldKind::HopByHop),
            (b"upgrade", FieldKind::Upgrade),
            (b"expect", FieldKind::Expect),
            (b"x-forwarded-for", FieldKind::XForwardedFor),
            (b"x-forwarded-proto", FieldKind::XForwardedProto),
            (b"x-forwarded-host", FieldKind::XForwardedHost),
            (b"forwarded", FieldKind::Forwarded),
        ];
        TABLE
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(FieldKind::Other, |(_, k)| *k)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Span,
    pub value: Span,
    pub kind: FieldKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Connect,
    Other,
}

impl Method {
    fn of(token: &[u8]) -> Self {
        match token {
            b"GET" => Self::Get,
            b"HEAD" => Self::Head,
            b"POST" => Self::Post,
            b"PUT" => Self::Put,
            b"DELETE" => Self::Delete,
            b"OPTIONS" => Self::Options,
            b"TRACE" => Self::Trace,
            b"CONNECT" => Self::Connect,
            _ => Self::Other,
        }
    }

    /// RFC 9110 §9.2.2: may be sent again without changing the outcome.
    pub fn idempotent(self) -> bool {
        matches!(
            self,
            Self::Get | Self::Head | Self::Put | Self::Delete | Self::Options | Self::Trace
        )
    }
}

/// How a request body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    None,
    Length(u64),
    Chunked,
    /// Read until the backend closes; that connection can never be reused.
    UntilClose,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, final CRLF included.
    pub len: usize,
    pub method: Method,
    pub method_span: Span,
    /// What goes on the request line to the backend: always origin-form (or `*`).
    pub path: Span,
    /// HTTP/1.x minor version.
    pub minor: u8,
    pub fields: Vec<Field>,
    pub body: RequestBody,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` field: the exchange may become a tunnel.
    pub upgrade: bool,
    pub expect_continue: bool,
    /// The Host field, or the authority of an absolute-form target.
    pub host: Option<Span>,
    pub has_host_field: bool,
    /// Field names the client listed in `Connection` (removed before forwarding).
    pub connection_tokens: Vec<Span>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    /// Status code and reason phrase as the backend sent them.
    pub status_text: Span,
    pub minor: u8,
    pub fields: Vec<Field>,
    pub body: ResponseBody,
    /// The backend will keep this connection open after the response.
    pub keep_alive: bool,
    pub connection_tokens: Vec<Span>,
}

/// Why a request was refused; each maps to a status and a metric reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head over the size limit")]
    HeadTooLarge,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("request target over the size limit")]
    UriTooLong,
    #[error("Content-Length together with Transfer-Encoding")]
    LengthAndChunked,
    #[error("conflicting Content-Length values")]
    BadLength,
    #[error("Transfer-Encoding whose last coding is not chunked")]
    BadTransferEncoding,
    #[error("more than one Host field")]
    DuplicateHost,
    #[error("missing Host field")]
    MissingHost,
    #[error("invalid Host field")]
    BadHost,
    #[error("absolute-form target disagrees with Host")]
    HostMismatch,
    #[error("CONNECT is not served here")]
    Connect,
}

impl Reject {
    pub fn status(self) -> u16 {
        match self {
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::UriTooLong => 414,
            Self::Connect => 405,
            _ => 400,
        }
    }

    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed(why) => why,
            Self::HeadTooLarge => "head_too_large",
            Self::TooManyHeaders => "too_many_headers",
            Self::UriTooLong => "uri_too_long",
            Self::LengthAndChunked => "length_and_chunked",
            Self::BadLength => "bad_content_length",
            Self::BadTransferEncoding => "bad_transfer_encoding",
            Self::DuplicateHost => "duplicate_host",
            Self::MissingHost => "missing_host",
            Self::BadHost => "bad_host",
            Self::HostMismatch => "host_mismatch",
            Self::Connect => "connect_method",
        }
    }
}

/// Why a backend's response cannot be relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("malformed response head: {0}")]
    Malformed(&'static str),
    #[error("response head over the size limit")]
    TooLarge,
    #[error("response with both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    #[error("conflicting Content-Length values in the response")]
    BadLength,
}

/// Parses a request head from the start of `buf`. `Ok(None)`: not complete yet.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, Reject> {
    let mut storage = [httparse::EMPTY_HEADER; Limits::MAX_HEADERS];
    let slots = limits.max_headers.min(storage.len());
    let mut req = httparse::Request::new(&mut storage[..slots]);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return partial_request(buf, limits).map(|()| None),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooManyHeaders),
        Err(e) => return Err(Reject::Malformed(httparse_reason(e))),
    };
    if len > limits.max_head {
        return Err(Reject::HeadTooLarge);
    }
    check_bytes(&buf[..len]).map_err(Reject::Malformed)?;
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Reject::Malformed("request_line"));
    };
    if target.len() > limits.max_uri {
        return Err(Reject::UriTooLong);
    }
    let method_span = span_in(buf, method.as_bytes());
    let target_span = span_in(buf, target.as_bytes());
    let fields: Vec<Field> = req
        .headers
        .iter()
        .map(|h| Field {
            name: span_in(buf, h.name.as_bytes()),
            value: span_in(buf, h.value),
            kind: FieldKind::of(h.name.as_bytes()),
        })
        .collect();
    build_request(
        buf,
        len,
        Method::of(method.as_bytes()),
        method_span,
        target_span,
        minor,
        fields,
    )
}

fn build_request(
    buf: &[u8],
    len: usize,
    method: Method,
    method_span: Span,
    target: Span,
    minor: u8,
    fields: Vec<Field>,
) -> Result<Option<RequestHead>, Reject> {
    if method == Method::Connect {
        return Err(Reject::Connect);
    }
    let conn = connection_options(buf, &fields);
    let body = request_body(buf, &fields, minor)?;
    let (path, authority) = split_target(buf, target, method)?;
    let host = host_field(buf, &fields, minor)?;
    let has_host_field = host.is_some();
    let host = match (host, authority) {
        (Some(h), Some(a)) if !h.get(buf).eq_ignore_ascii_case(a.get(buf)) => {
            return Err(Reject::HostMismatch);
        }
        (h, a) => h.or(a),
    };
    if let Some(h) = host
        && !valid_host(h.get(buf))
    {
        return Err(Reject::BadHost);
    }
    let upgrade = conn.upgrade && fields.iter().any(|f| f.kind == FieldKind::Upgrade);
    let expect_continue = fields.iter().any(|f| {
        f.kind == FieldKind::Expect && f.value.get(buf).eq_ignore_ascii_case(b"100-continue")
    });
    let keep_alive = if minor == 0 {
        conn.keep_alive && !conn.close
    } else {
        !conn.close
    };
    Ok(Some(RequestHead {
        len,
        method,
        method_span,
        path,
        minor,
        fields,
        body,
        keep_alive,
        upgrade,
        expect_continue,
        host,
        has_host_field,
        connection_tokens: conn.tokens,
    }))
}

/// A head that is not complete yet may already be too long to ever be accepted.
fn partial_request(buf: &[u8], limits: &Limits) -> Result<(), Reject> {
    let first_line_done = buf.contains(&b'\n');
    if !first_line_done && buf.len() > limits.max_uri + 64 {
        return Err(Reject::UriTooLong);
    }
    if buf.len() >= limits.max_head {
        return Err(Reject::HeadTooLarge);
    }
    // Refuse bare LF and control bytes as soon as they arrive, not only at the end.
    check_bytes(buf).map_err(Reject::Malformed)
}

/// RFC 9112 §2.2: no bare LF (a CR must precede every LF), §5: no NUL or other
/// control bytes in field lines (HTAB allowed).
fn check_bytes(head: &[u8]) -> Result<(), &'static str> {
    let mut prev = 0u8;
    for &b in head {
        match b {
            b'\n' if prev != b'\r' => return Err("bare_lf"),
            b'\r' | b'\n' | b'\t' => {}
            0 => return Err("nul_byte"),
            b if b < 0x20 || b == 0x7f => return Err("control_byte"),
            _ => {}
        }
        prev = b;
    }
    Ok(())
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "bad_field_name",
        httparse::Error::HeaderValue => "bad_field_value",
        httparse::Error::NewLine => "bad_line_ending",
        httparse::Error::Status => "bad_status",
        httparse::Error::Token => "bad_token",
        httparse::Error::TooManyHeaders => "too_many_headers",
        httparse::Error::Version => "bad_version",
    }
}

/// Offset of a slice httparse returned, within the buffer it parsed.
fn span_in(buf: &[u8], part: &[u8]) -> Span {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    Span::of(start..start + part.len())
}

#[derive(Default)]
struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    tokens: Vec<Span>,
}

/// Comma-separated tokens of every `Connection` field (RFC 9110 §7.6.1).
fn connection_options(buf: &[u8], fields: &[Field]) -> ConnectionOptions {
    let mut out = ConnectionOptions::default();
    for f in fields.iter().filter(|f| f.kind == FieldKind::Connection) {
        for token in list_items(buf, f.value) {
            let t = token.get(buf);
            if t.eq_ignore_ascii_case(b"close") {
                out.close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                out.keep_alive = true;
            } else if t.eq_ignore_ascii_case(b"upgrade") {
                out.upgrade = true;
            } else {
                out.tokens.push(token);
            }
        }
    }
    out
}

/// The non-empty, trimmed items of a comma-separated field value.
fn list_items(buf: &[u8], value: Span) -> impl Iterator<Item = Span> + '_ {
    let bytes = value.get(buf);
    let base = value.start as usize;
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        while pos <= bytes.len() {
            let rest = &bytes[pos..];
            let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            let item = trimmed(buf, Span::of(base + pos..base + pos + end));
            pos += end + 1;
            if !item.is_empty() {
                return Some(item);
            }
        }
        None
    })
}

fn request_body(buf: &[u8], fields: &[Field], minor: u8) -> Result<RequestBody, Reject> {
    let length = content_length(buf, fields).map_err(|()| Reject::BadLength)?;
    let chunked = transfer_encoding(buf, fields);
    match (length, chunked) {
        (Some(_), Some(_)) => Err(Reject::LengthAndChunked),
        // HTTP/1.0 has no chunked coding: a TE there is a smuggling attempt.
        (None, Some(_)) if minor == 0 => Err(Reject::BadTransferEncoding),
        (None, Some(true)) => Ok(RequestBody::Chunked),
        // A request cannot be read to close: the last coding must be chunked (§6.3).
        (None, Some(false)) => Err(Reject::BadTransferEncoding),
        (Some(0), None) | (None, None) => Ok(RequestBody::None),
        (Some(n), None) => Ok(RequestBody::Length(n)),
    }
}

/// All Content-Length values must be one decimal number (a list of equal ones is
/// allowed, RFC 9112 §6.3 item 5). `Err` when they disagree or are not numbers.
fn content_length(buf: &[u8], fields: &[Field]) -> Result<Option<u64>, ()> {
    let mut found: Option<u64> = None;
    for f in fields.iter().filter(|f| f.kind == FieldKind::ContentLength) {
        let mut any = false;
        for item in list_items(buf, f.value) {
            any = true;
            let digits = item.get(buf);
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let n = digits
                .iter()
                .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
            if found.is_some_and(|prev| prev != n) {
                return Err(());
            }
            found = Some(n);
        }
        if !any {
            return Err(());
        }
    }
    Ok(found)
}

/// `Some(true)` when Transfer-Encoding is present and its last coding is chunked,
/// `Some(false)` when present otherwise (including `chunked` applied twice).
fn transfer_encoding(buf: &[u8], fields: &[Field]) -> Option<bool> {
    let mut present = false;
    let mut chunked_count = 0usize;
    let mut last_chunked = false;
    for f in fields
        .iter()
        .filter(|f| f.kind == FieldKind::TransferEncoding)
    {
        present = true;
        let mut any = false;
        for item in list_items(buf, f.value) {
            any = true;
            // Codings may carry parameters (`gzip;q=1`); only the name matters here.
            let name = item
                .get(buf)
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default();
            last_chunked = name.trim_ascii().eq_ignore_ascii_case(b"chunked");
            chunked_count += usize::from(last_chunked);
        }
        if !any {
            last_chunked = false;
        }
    }
    present.then_some(last_chunked && chunked_count == 1)
}

/// Origin-form path to forward, and the authority of an absolute-form target.
fn split_target(buf: &[u8], target: Span, method: Method) -> Result<(Span, Option<Span>), Reject> {
    let t = target.get(buf);
    if t.first() == Some(&b'/') {
        return Ok((target, None));
    }
    if t == b"*" {
        return if method == Method::Options {
            Ok((target, None))
        } else {
            Err(Reject::Malformed("asterisk_target"))
        };
    }
    let scheme_len = if starts_with_ignore_case(t, b"http://") {
        7
    } else if starts_with_ignore_case(t, b"https://") {
        8
    } else {
        return Err(Reject::Malformed("bad_target"));
    };
    let rest = &t[scheme_len..];
    let auth_len = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(rest.len());
    if auth_len == 0 {
        return Err(Reject::Malformed("bad_target"));
    }
    let auth_start = target.start as usize + scheme_len;
    let authority = Span::of(auth_start..auth_start + auth_len);
    let path = Span::of(auth_start + auth_len..target.end as usize);
    // `http://host?x` has an empty path: the backend gets `/` (see rewrite).
    Ok((path, Some(authority)))
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// RFC 9112 §3.2: exactly one Host in HTTP/1.1; HTTP/1.0 may omit it.
fn host_field(buf: &[u8], fields: &[Field], minor: u8) -> Result<Option<Span>, Reject> {
    let mut hosts = fields.iter().filter(|f| f.kind == FieldKind::Host);
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Reject::DuplicateHost);
    }
    match first {
        Some(f) => Ok(Some(trimmed(buf, f.value))),
        None if minor >= 1 => Err(Reject::MissingHost),
        None => Ok(None),
    }
}

/// `s` without leading and trailing whitespace.
fn trimmed(buf: &[u8], s: Span) -> Span {
    let bytes = s.get(buf);
    let lead = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let trail = bytes[lead..]
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    Span::of(s.start as usize + lead..s.end as usize - trail)
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): reg-name characters or an IP literal in
/// brackets. Refusing anything else keeps quotes and commas out of `Forwarded`.
pub fn valid_host(host: &[u8]) -> bool {
    let (name, port) = if host.first() == Some(&b'[') {
        let Some(close) = host.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &host[1..close];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        (&host[..=close], &host[close + 1..])
    } else {
        let colon = host.iter().position(|&b| b == b':').unwrap_or(host.len());
        let name = &host[..colon];
        let ok = name.iter().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b';'
                        | b'='
                        | b'%'
                )
        });
        if !ok {
            return false;
        }
        (name, &host[colon..])
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    !name.is_empty() && port_ok
}

/// Parses a response head. `method` is the request's: a HEAD response has no body.
pub fn parse_response(
    buf: &[u8],
    method: Method,
    limits: &Limits,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut storage);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head => {
            return Err(BadResponse::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(BadResponse::Malformed(httparse_reason(e))),
    };
    if len > limits.max_head {
        return Err(BadResponse::TooLarge);
    }
    check_bytes(&buf[..len]).map_err(BadResponse::Malformed)?;
    let (Some(minor), Some(status)) = (resp.version, resp.code) else {
        return Err(BadResponse::Malformed("status_line"));
    };
    // Status code and reason phrase: after "HTTP/1.x ", up to the line end.
    let line_end = buf.iter().position(|&b| b == b'\r').unwrap_or(0);
    let status_text = Span::of(9.min(line_end)..line_end);
    let fields: Vec<Field> = resp
        .headers
        .iter()
        .map(|h| Field {
            name: span_in(buf, h.name.as_bytes()),
            value: span_in(buf, h.value),
            kind: FieldKind::of(h.name.as_bytes()),
        })
        .collect();
    let conn = connection_options(buf, &fields);
    let body = response_body(buf, &fields, status, method)?;
    let persistent = if minor == 0 {
        conn.keep_alive && !conn.close
    } else {
        !conn.close
    };
    Ok(Some(ResponseHead {
        len,
        status,
        status_text,
        minor,
        fields,
        body,
        keep_alive: persistent && body != ResponseBody::UntilClose,
        connection_tokens: conn.tokens,
    }))
}

fn response_body(
    buf: &[u8],
    fields: &[Field],
    status: u16,
    method: Method,
) -> Result<ResponseBody, BadResponse> {
    // RFC 9112 §6.3 items 1-2: these never have content, whatever the fields say.
    if method == Method::Head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(ResponseBody::None);
    }
    let length = content_length(buf, fields).map_err(|()| BadResponse::BadLength)?;
    match (length, transfer_encoding(buf, fields)) {
        // Allowed by §6.3 item 3 (TE wins) but a classic desync vector: refuse.
        (Some(_), Some(_)) => Err(BadResponse::LengthAndChunked),
        (None, Some(true)) => Ok(ResponseBody::Chunked),
        (None, Some(false)) => Ok(ResponseBody::UntilClose),
        (Some(n), None) => Ok(ResponseBody::Length(n)),
        (None, None) => Ok(ResponseBody::UntilClose),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Option<RequestHead>, Reject> {
        parse_request(text.as_bytes(), &Limits::default())
    }

    #[test]
    fn request_decisions() {
        let cases: &[(&str, Result<RequestBody, Reject>)] = &[
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(RequestBody::None)),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
                Ok(RequestBody::Length(5)),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
                Ok(RequestBody::Length(5)),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Err(Reject::BadLength),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                Err(Reject::BadLength),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(Reject::LengthAndChunked),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(RequestBody::Chunked),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Ok(RequestBody::Chunked),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Err(Reject::BadTransferEncoding),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(Reject::BadTransferEncoding),
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(Reject::BadTransferEncoding),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                Err(Reject::DuplicateHost),
            ),
            ("GET / HTTP/1.1\r\n\r\n", Err(Reject::MissingHost)),
            ("GET / HTTP/1.0\r\n\r\n", Ok(RequestBody::None)),
            (
                "GET / HTTP/1.1\r\nHost: x\",for=\"6.6.6.6\r\n\r\n",
                Err(Reject::BadHost),
            ),
            (
                "GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n",
                Err(Reject::HostMismatch),
            ),
            (
                "GET http://a/x HTTP/1.1\r\nHost: A\r\n\r\n",
                Ok(RequestBody::None),
            ),
            (
                "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
                Err(Reject::Connect),
            ),
            (
                "GET / HTTP/1.1\nHost: a\r\n\r\n",
                Err(Reject::Malformed("bare_lf")),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
                Err(Reject::Malformed("bad_field_value")),
            ),
            (
                "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
                Err(Reject::Malformed("bad_field_name")),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
                Err(Reject::Malformed("bad_field_name")),
            ),
            (
                "GET x HTTP/1.1\r\nHost: a\r\n\r\n",
                Err(Reject::Malformed("bad_target")),
            ),
        ];
        for (text, want) in cases {
            let got = req(text).map(|h| h.map(|h| h.body));
            match want {
                Ok(body) => assert_eq!(got, Ok(Some(*body)), "{text:?}"),
                Err(r) => assert_eq!(got, Err(*r), "{text:?}"),
            }
        }
    }

    #[test]
    fn keep_alive_upgrade_and_expect() {
        let h = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = req("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = req(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, x-a\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.upgrade && h.keep_alive);
        assert_eq!(h.connection_tokens.len(), 1);
        let h =
            req("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(h.expect_continue);
    }

    #[test]
    fn limits_and_partial_heads() {
        assert_eq!(req("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(req(&long_uri), Err(Reject::UriTooLong));
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "a".repeat(17000));
        assert_eq!(req(&big), Err(Reject::HeadTooLarge));
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            req(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            Err(Reject::TooManyHeaders)
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\n"),
            Err(Reject::Malformed("bare_lf"))
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let text = "GET http://a.example:8080/p?q=1 HTTP/1.1\r\nHost: a.example:8080\r\n\r\n";
        let h = req(text).unwrap().unwrap();
        assert_eq!(h.path.get(text.as_bytes()), b"/p?q=1");
        assert_eq!(h.host.unwrap().get(text.as_bytes()), b"a.example:8080");
        let text = "GET http://b/ HTTP/1.0\r\n\r\n";
        let h = req(text).unwrap().unwrap();
        assert_eq!(h.host.unwrap().get(text.as_bytes()), b"b");
        assert!(!h.has_host_field);
    }

    #[test]
    fn hosts() {
        for ok in ["a", "a.b:80", "[::1]:8080", "127.0.0.1", "xn--d1a.example"] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "a:b", "a\"b", "a,b", "[::1", "a:123456", "a b", "[zz]"] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    fn resp(text: &str, method: Method) -> Result<Option<ResponseHead>, BadResponse> {
        parse_response(text.as_bytes(), method, &Limits::default())
    }

    #[test]
    fn response_decisions() {
        use ResponseBody::*;
        type Case = (
            &'static str,
            Method,
            Result<(ResponseBody, bool), BadResponse>,
        );
        let cases: &[Case] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                Method::Get,
                Ok((Length(3), true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                Method::Head,
                Ok((None, true)),
            ),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
                Method::Get,
                Ok((None, true)),
            ),
            (
                "HTTP/1.1 304 Not Modified\r\n\r\n",
                Method::Get,
                Ok((None, true)),
            ),
            (
                "HTTP/1.1 100 Continue\r\n\r\n",
                Method::Post,
                Ok((None, true)),
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                Method::Get,
                Ok((UntilClose, false)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::Get,
                Ok((Chunked, true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Method::Get,
                Ok((UntilClose, false)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
                Method::Get,
                Ok((Length(3), false)),
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
                Method::Get,
                Ok((Length(3), false)),
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
                Method::Get,
                Ok((Length(3), true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::Get,
                Err(BadResponse::LengthAndChunked),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                Method::Get,
                Err(BadResponse::BadLength),
            ),
        ];
        for (text, method, want) in cases {
            let got = resp(text, *method).map(|h| h.map(|h| (h.body, h.keep_alive)));
            match want {
                Ok(v) => assert_eq!(got, Ok(Some(*v)), "{text:?}"),
                Err(e) => assert_eq!(got, Err(*e), "{text:?}"),
            }
        }
        let text = "HTTP/1.1 404 Not Found\r\n\r\n";
        let h = resp(text, Method::Get).unwrap().unwrap();
        assert_eq!(h.status_text.get(text.as_bytes()), b"404 Not Found");
    }
}
