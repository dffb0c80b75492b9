//! The request and response heads an HTTP/2 exchange passes on: hop-by-hop fields
//! removed, `:authority` made the backend's Host (HTTP/1.1) or kept (HTTP/2), the
//! forwarding fields added per the listener's mode, and an RFC 8441 WebSocket CONNECT
//! turned into an HTTP/1.1 Upgrade. Pure: parts in, parts out.

use std::fmt::Write as _;
use std::net::SocketAddr;

use halo_crds::node_config::{ForwardedConfig, ForwardedMode, UpstreamProtocol};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version, request, uri};

use crate::proxy::filter::HeaderEdits;

/// What the proxy knows about the client side of a request.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    pub peer: SocketAddr,
    /// `https` when the client connection is TLS.
    pub scheme: &'static str,
    pub forwarded: &'a ForwardedConfig,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadRequest {
    #[error("request names no host (:authority or Host)")]
    NoAuthority,
    #[error("invalid host {0:?}")]
    BadAuthority(String),
    #[error("CONNECT is not supported (only the websocket protocol of RFC 8441)")]
    Connect,
}

impl BadRequest {
    pub fn status(&self) -> u16 {
        match self {
            Self::NoAuthority | Self::BadAuthority(_) => 400,
            Self::Connect => 405,
        }
    }

    /// The `reason` label of the client-error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoAuthority => "no_host",
            Self::BadAuthority(_) => "bad_host",
            Self::Connect => "connect",
        }
    }
}

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1); `te` is
/// handled apart because `te: trailers` is end to end for HTTP/2 (gRPC needs it).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
];

/// Removes hop-by-hop fields and those the sender listed in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| *n != header::HOST && *n != header::CONTENT_LENGTH)
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The host the request is for: `:authority`, else the Host field.
pub fn authority(parts: &request::Parts) -> Result<uri::Authority, BadRequest> {
    if let Some(a) = parts.uri.authority() {
        return Ok(a.clone());
    }
    let host = parts
        .headers
        .get(header::HOST)
        .ok_or(BadRequest::NoAuthority)?;
    let text = host
        .to_str()
        .map_err(|_| BadRequest::BadAuthority("?".into()))?;
    text.parse()
        .map_err(|_| BadRequest::BadAuthority(text.chars().take(64).collect()))
}

/// Rewrites a client's request head for a backend speaking `protocol`.
pub fn to_backend(
    parts: &mut request::Parts,
    origin: &Origin<'_>,
    protocol: UpstreamProtocol,
) -> Result<(), BadRequest> {
    let authority = authority(parts)?;
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    let trailers = parts
        .headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::TE);
    parts.headers.remove(header::HOST);
    forwarding(&mut parts.headers, origin, &authority);
    match protocol {
        UpstreamProtocol::Http1 => {
            // HTTP/1.1 backends get the host as Host and the target in origin form.
            parts.version = Version::HTTP_11;
            parts.uri = Uri::from(path);
            // The proxy's HTTP/2 side answers `100 Continue` itself.
            parts.headers.remove(header::EXPECT);
            if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
        UpstreamProtocol::Http2 => {
            parts.version = Version::HTTP_2;
            let mut uri = uri::Parts::default();
            uri.scheme = Some(uri::Scheme::HTTP);
            uri.authority = Some(authority);
            uri.path_and_query = Some(path);
            parts.uri = Uri::from_parts(uri).unwrap_or_default();
            if trailers {
                parts
                    .headers
                    .insert(header::TE, HeaderValue::from_static("trailers"));
            }
        }
    }
    Ok(())
}

/// Whether the client's own forwarding fields are kept and appended to.
fn keeps_client_fields(origin: &Origin<'_>) -> bool {
    let trusted = || {
        origin
            .forwarded
            .trusted
            .iter()
            .any(|p| p.contains(origin.peer.ip()))
    };
    match origin.forwarded.mode {
        ForwardedMode::Append => origin.forwarded.trusted.is_empty() || trusted(),
        ForwardedMode::Replace => trusted(),
        ForwardedMode::Off => true,
    }
}

/// X-Forwarded-For / -Proto and RFC 7239 Forwarded for this hop.
fn forwarding(headers: &mut HeaderMap, origin: &Origin<'_>, authority: &uri::Authority) {
    if origin.forwarded.mode == ForwardedMode::Off {
        return;
    }
    let keep = keeps_client_fields(origin);
    let joined = |headers: &HeaderMap, name: &HeaderName| -> String {
        let mut out = String::new();
        if keep {
            for v in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
                if !out.is_empty() {
                    out.push_str(", ");
                }
                out.push_str(v.trim());
            }
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out
    };
    let xff_name = HeaderName::from_static("x-forwarded-for");
    let client = origin.peer.ip();
    let mut xff = joined(headers, &xff_name);
    let _ = write!(xff, "{client}");
    let mut forwarded = joined(headers, &header::FORWARDED);
    if client.is_ipv6() {
        let _ = write!(forwarded, "for=\"[{client}]\"");
    } else {
        let _ = write!(forwarded, "for={client}");
    }
    let _ = write!(forwarded, ";proto={};host=\"", origin.scheme);
    for c in authority.as_str().chars() {
        if c == '"' || c == '\\' {
            forwarded.push('\\');
        }
        forwarded.push(c);
    }
    forwarded.push('"');
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(headers, xff_name, &xff);
    set(headers, header::FORWARDED, &forwarded);
    // As the HTTP/1.1 engine: a trusted client's own -Proto and -Host stay, anyone
    // else's are replaced by this hop's.
    for (name, value) in [
        ("x-forwarded-proto", origin.scheme),
        ("x-forwarded-host", authority.as_str()),
    ] {
        let name = HeaderName::from_static(name);
        if !(keep && headers.contains_key(&name)) {
            set(headers, name, value);
        }
    }
}

/// An extended CONNECT for the `websocket` protocol (RFC 8441), already rewritten for an
/// HTTP/1.1 backend, becomes the RFC 6455 opening handshake with `key`.
pub fn websocket_to_http1(parts: &mut request::Parts, key: &str) {
    parts.method = Method::GET;
    parts.extensions.remove::<hyper::ext::Protocol>();
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(key) {
        parts.headers.insert(header::SEC_WEBSOCKET_KEY, v);
    }
}

/// A route's URL rewrite and request header filters, on a head `to_backend` made:
/// `target` replaces the path and query, `host` the Host (HTTP/1.1) or authority
/// (HTTP/2); X-Forwarded-Host keeps the client's.
pub fn routed(
    parts: &mut request::Parts,
    target: Option<&[u8]>,
    host: Option<&str>,
    edits: &HeaderEdits,
) {
    if target.is_some() || (host.is_some() && parts.uri.authority().is_some()) {
        let mut uri = parts.uri.clone().into_parts();
        if let Some(t) = target.and_then(|t| uri::PathAndQuery::try_from(t).ok()) {
            uri.path_and_query = Some(t);
        }
        if uri.authority.is_some()
            && let Some(a) = host.and_then(|h| uri::Authority::try_from(h).ok())
        {
            uri.authority = Some(a);
        }
        if let Ok(u) = Uri::from_parts(uri) {
            parts.uri = u;
        }
    }
    if let Some(h) = host
        && parts.headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(h)
    {
        parts.headers.insert(header::HOST, v);
    }
    edit(&mut parts.headers, edits);
}

/// A route's header filters: named fields dropped, then fields appended.
pub fn edit(headers: &mut HeaderMap, edits: &HeaderEdits) {
    if edits.is_empty() {
        return;
    }
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|n| edits.drops(n.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(name);
    }
    for (name, value) in edits.appended() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
}

/// An HTTP/1.1 client's protocol switch, asked of the backend again (`to_backend`
/// removed the hop-by-hop fields).
pub fn http1_upgrade(parts: &mut request::Parts, to: HeaderValue) {
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, to);
}

/// The backend's `101 Switching Protocols` head, as the `200` an RFC 8441 client
/// expects: the HTTP/1.1 handshake fields go, subprotocol and extensions stay.
pub fn websocket_accepted(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::SEC_WEBSOCKET_ACCEPT);
}

/// A Sec-WebSocket-Key: 16 bytes from `seed`, base64.
pub fn websocket_key(seed: u128) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = seed.to_be_bytes();
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use halo_crds::net::IpPrefix;

    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut b = http::Request::builder().uri(uri).version(Version::HTTP_2);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn fields(p: &request::Parts) -> Vec<String> {
        p.headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect()
    }

    fn config(mode: ForwardedMode, trusted: &[&str]) -> ForwardedConfig {
        ForwardedConfig {
            mode,
            trusted: trusted
                .iter()
                .map(|t| t.parse::<IpPrefix>().expect("prefix"))
                .collect(),
        }
    }

    fn rewrite(
        uri: &str,
        headers: &[(&str, &str)],
        forwarded: &ForwardedConfig,
        protocol: UpstreamProtocol,
    ) -> request::Parts {
        let mut p = parts(uri, headers);
        let origin = Origin {
            peer: "10.0.0.9:4000".parse().expect("peer"),
            scheme: "http",
            forwarded,
        };
        to_backend(&mut p, &origin, protocol).expect("rewrite");
        p
    }

    #[test]
    fn http1_backends_get_host_and_origin_form() {
        let p = rewrite(
            "http://example.test:8080/a?b=1",
            &[("te", "trailers"), ("x-a", "1"), ("expect", "100-continue")],
            &config(ForwardedMode::Off, &[]),
            UpstreamProtocol::Http1,
        );
        assert_eq!(p.uri, "/a?b=1");
        assert_eq!(p.version, Version::HTTP_11);
        assert_eq!(fields(&p), ["x-a: 1", "host: example.test:8080"]);
    }

    #[test]
    fn http2_backends_keep_authority_and_te_trailers() {
        let p = rewrite(
            "http://grpc.test/pkg.Svc/Call",
            &[("te", "trailers"), ("content-type", "application/grpc")],
            &config(ForwardedMode::Off, &[]),
            UpstreamProtocol::Http2,
        );
        assert_eq!(p.uri, "http://grpc.test/pkg.Svc/Call");
        assert_eq!(p.version, Version::HTTP_2);
        assert_eq!(
            fields(&p),
            ["content-type: application/grpc", "te: trailers"]
        );
    }

    #[test]
    fn host_field_when_no_authority() {
        let p = rewrite(
            "/x",
            &[("host", "h.test")],
            &config(ForwardedMode::Off, &[]),
            UpstreamProtocol::Http1,
        );
        assert_eq!(fields(&p), ["host: h.test"]);
        let mut bare = parts("/x", &[]);
        let origin = Origin {
            peer: "10.0.0.9:4000".parse().expect("peer"),
            scheme: "http",
            forwarded: &ForwardedConfig::default(),
        };
        assert_eq!(
            to_backend(&mut bare, &origin, UpstreamProtocol::Http1),
            Err(BadRequest::NoAuthority)
        );
    }

    #[test]
    fn forwarding_modes() {
        let client = [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.1.1.1"),
        ];
        // A trusted client's -Proto stays (as in the HTTP/1.1 engine).
        let appended = [
            "x-forwarded-for: 1.1.1.1, 10.0.0.9",
            "x-forwarded-proto: https",
            "forwarded: for=1.1.1.1, for=10.0.0.9;proto=http;host=\"h.test\"",
            "x-forwarded-host: h.test",
            "host: h.test",
        ];
        let replaced = [
            "x-forwarded-for: 10.0.0.9",
            "x-forwarded-proto: http",
            "forwarded: for=10.0.0.9;proto=http;host=\"h.test\"",
            "x-forwarded-host: h.test",
            "host: h.test",
        ];
        let untouched = [
            "x-forwarded-for: 1.1.1.1",
            "x-forwarded-proto: https",
            "forwarded: for=1.1.1.1",
            "host: h.test",
        ];
        let cases: [(ForwardedConfig, &[&str]); 6] = [
            (config(ForwardedMode::Append, &[]), &appended),
            (config(ForwardedMode::Append, &["10.0.0.0/8"]), &appended),
            (config(ForwardedMode::Append, &["192.0.2.0/24"]), &replaced),
            (config(ForwardedMode::Replace, &[]), &replaced),
            (config(ForwardedMode::Replace, &["10.0.0.9"]), &appended),
            (config(ForwardedMode::Off, &[]), &untouched),
        ];
        for (forwarded, want) in cases {
            let p = rewrite(
                "http://h.test/",
                &client,
                &forwarded,
                UpstreamProtocol::Http1,
            );
            assert_eq!(fields(&p), want, "{forwarded:?}");
        }
    }

    #[test]
    fn ipv6_client_and_quoted_host() {
        let mut p = parts("http://[::1]:80/", &[]);
        let forwarded = ForwardedConfig::default();
        let origin = Origin {
            peer: "[2001:db8::5]:4000".parse().expect("peer"),
            scheme: "https",
            forwarded: &forwarded,
        };
        to_backend(&mut p, &origin, UpstreamProtocol::Http1).expect("rewrite");
        assert_eq!(
            p.headers.get("forwarded").and_then(|v| v.to_str().ok()),
            Some("for=\"[2001:db8::5]\";proto=https;host=\"[::1]:80\"")
        );
    }

    #[test]
    fn responses_lose_hop_by_hop_fields() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-length", "2"),
            ("x-kept", "yes"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "x-kept"]);
    }

    #[test]
    fn websocket_handshake_translation() {
        let mut p = rewrite(
            "http://h.test/chat",
            &[
                ("sec-websocket-version", "13"),
                ("sec-websocket-protocol", "chat"),
            ],
            &config(ForwardedMode::Off, &[]),
            UpstreamProtocol::Http1,
        );
        p.method = Method::CONNECT;
        websocket_to_http1(&mut p, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(p.method, Method::GET);
        assert_eq!(
            fields(&p),
            [
                "sec-websocket-version: 13",
                "sec-websocket-protocol: chat",
                "host: h.test",
                "connection: upgrade",
                "upgrade: websocket",
                "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
            ]
        );
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ("sec-websocket-protocol", "chat"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        websocket_accepted(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["sec-websocket-protocol"]);
    }

    #[test]
    fn websocket_keys_are_base64_of_16_bytes() {
        // RFC 6455 §1.3's sample nonce is the 16 bytes of "the sample nonce".
        let sample = u128::from_be_bytes(*b"the sample nonce");
        assert_eq!(websocket_key(sample), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(websocket_key(0), "AAAAAAAAAAAAAAAAAAAAAA==");
    }

    #[test]
    fn route_rewrites_and_header_filters() {
        use halo_crds::node_config::{HeaderModifier, HeaderValue as Hv};
        let modifier = HeaderModifier {
            set: vec![Hv {
                name: "X-Env".into(),
                value: "prod".into(),
            }],
            add: vec![Hv {
                name: "X-Tag".into(),
                value: "b".into(),
            }],
            remove: vec!["x-secret".into()],
        };
        let edits = HeaderEdits::compile([&modifier]).expect("edits");
        let client = [
            ("x-env", "dev"),
            ("x-tag", "a"),
            ("x-secret", "s"),
            ("x-keep", "k"),
        ];
        // (backend protocol, uri after to_backend, target, host) -> uri, Host field.
        let cases = [
            (
                UpstreamProtocol::Http1,
                "https://site.test/api/x?q=1",
                Some(&b"/x?q=1"[..]),
                Some("internal"),
                "/x?q=1",
                Some("internal"),
            ),
            (
                UpstreamProtocol::Http1,
                "https://site.test/a",
                None,
                None,
                "/a",
                Some("site.test"),
            ),
            (
                UpstreamProtocol::Http2,
                "https://site.test/api/x",
                Some(&b"/x"[..]),
                Some("internal:8443"),
                "http://internal:8443/x",
                None,
            ),
        ];
        for (protocol, uri, target, host, want_uri, want_host) in cases {
            let forwarded = config(ForwardedMode::Off, &[]);
            let mut p = rewrite(uri, &client, &forwarded, protocol);
            routed(&mut p, target, host, &edits);
            assert_eq!(p.uri.to_string(), want_uri, "{uri}");
            assert_eq!(
                p.headers.get(header::HOST).and_then(|v| v.to_str().ok()),
                want_host,
                "{uri}"
            );
            let f = fields(&p);
            for want in ["x-env: prod", "x-tag: a", "x-tag: b", "x-keep: k"] {
                assert!(f.iter().any(|l| l == want), "{uri}: {f:?}");
            }
            assert!(
                !f.iter()
                    .any(|l| l.starts_with("x-secret") || l == "x-env: dev"),
                "{f:?}"
            );
        }
    }
}
