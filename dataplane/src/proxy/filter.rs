//! What a route does to a request besides choosing where it goes, in a form any HTTP
//! driver applies: header edit lists, rewritten paths and hosts, redirect locations and
//! fixed answers. Pure: compiled once from the route's config, then strings in, strings out.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use halo_crds::node_config::{
    FilterConfig, HeaderModifier, PathModifier, RouteAction, RouteConfig,
};

use super::route::pick_weighted;

/// The scheme a listener speaks to its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Self::Http),
            "https" => Some(Self::Https),
            _ => None,
        }
    }
}

/// Fields no header filter may touch: they frame the message or belong to one
/// connection, and the proxy writes them itself.
const PROTECTED: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// The net effect of a route's header filters on one message: fields dropped by name,
/// then fields appended in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Lowercase names whose incoming fields go.
    drop: Vec<Box<str>>,
    append: Vec<(Box<str>, Box<str>)>,
}

/// No edits, for messages of routes without header filters.
pub static NO_EDITS: HeaderEdits = HeaderEdits {
    drop: Vec::new(),
    append: Vec::new(),
};

impl HeaderEdits {
    /// Folds modifiers applied in order (each one's `set`, then `add`, then `remove`)
    /// into one drop list and one append list.
    pub fn compile<'a>(
        modifiers: impl IntoIterator<Item = &'a HeaderModifier>,
    ) -> Result<Self, String> {
        let mut edits = Self::default();
        for m in modifiers {
            for h in &m.set {
                let name = checked(&h.name, Some(&h.value))?;
                edits.append.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                edits.dropping(&name);
                edits
                    .append
                    .push((h.name.as_str().into(), h.value.as_str().into()));
            }
            for h in &m.add {
                checked(&h.name, Some(&h.value))?;
                edits
                    .append
                    .push((h.name.as_str().into(), h.value.as_str().into()));
            }
            for name in &m.remove {
                let name = checked(name, None)?;
                edits.append.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                edits.dropping(&name);
            }
        }
        Ok(edits)
    }

    fn dropping(&mut self, lower: &str) {
        if !self.drop.iter().any(|d| **d == *lower) {
            self.drop.push(lower.into());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.drop.is_empty() && self.append.is_empty()
    }

    /// Whether an incoming field named `name` (any case) is removed.
    pub fn drops(&self, name: &[u8]) -> bool {
        self.drop
            .iter()
            .any(|d| d.as_bytes().eq_ignore_ascii_case(name))
    }

    /// Fields to add, in order.
    pub fn appended(&self) -> impl Iterator<Item = (&str, &str)> {
        self.append.iter().map(|(n, v)| (&**n, &**v))
    }
}

/// A header name as lowercase, refused when it is not a token, is protected, or its
/// value could break the message.
fn checked(name: &str, value: Option<&str>) -> Result<String, String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    let lower = name.to_ascii_lowercase();
    if PROTECTED.contains(&lower.as_str()) {
        return Err(format!("header {name} is managed by the proxy"));
    }
    if let Some(v) = value
        && v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(format!("the value of header {name} has control characters"));
    }
    Ok(lower)
}

/// The path after a path modifier. `prefix_len` bytes of `path` are what the route's
/// prefix matched; a replaced prefix keeps the rest at a segment boundary, so `/api`
/// replaced by `/` turns `/api/x` into `/x`, not `//x`.
pub fn rewrite_path(modifier: &PathModifier, path: &[u8], prefix_len: usize) -> Vec<u8> {
    match modifier {
        PathModifier::ReplaceFull(p) => p.as_bytes().to_vec(),
        PathModifier::ReplacePrefix(with) => {
            let rest = path.get(prefix_len..).unwrap_or_default();
            let mut with = with.as_bytes();
            while let [head @ .., b'/'] = with {
                with = head;
            }
            let mut out = Vec::with_capacity(with.len() + rest.len() + 1);
            out.extend_from_slice(with);
            if !rest.is_empty() && rest[0] != b'/' {
                out.push(b'/');
            }
            out.extend_from_slice(rest);
            if out.is_empty() {
                out.push(b'/');
            }
            out
        }
    }
}

/// A path and its query joined again into a request target.
pub fn with_query(mut path: Vec<u8>, query: &[u8]) -> Vec<u8> {
    if !query.is_empty() {
        path.push(b'?');
        path.extend_from_slice(query);
    }
    path
}

/// A route's redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<Scheme>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathModifier>,
    pub status: u16,
}

/// What a redirect's Location is made of when the route does not say.
#[derive(Clone, Copy, Debug)]
pub struct RedirectFrom<'a> {
    pub scheme: Scheme,
    /// Host field or authority as sent (maybe with a port).
    pub host: Option<&'a [u8]>,
    /// The listener's port, for a request whose host names none.
    pub listener_port: u16,
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub prefix_len: usize,
}

/// The Location of a redirect (Gateway API rules): an unset scheme, host or path is
/// the request's; an unset port is the new scheme's default when the route sets a
/// scheme, else the request's (its Host's, or the listener's when it names no host);
/// the port is left out when it is its scheme's default.
pub fn location(r: &Redirect, from: &RedirectFrom<'_>) -> String {
    let (req_host, req_port) = split_host(from.host.unwrap_or_default());
    let scheme = r.scheme.unwrap_or(from.scheme);
    let port = match (r.port, r.scheme) {
        (Some(p), _) => p,
        (None, Some(s)) => s.default_port(),
        // A Host without a port means the scheme's default, whatever port the
        // listener has (clients may reach it through a port mapping).
        (None, None) if from.host.is_some() => req_port.unwrap_or(from.scheme.default_port()),
        (None, None) => from.listener_port,
    };
    let host = r
        .hostname
        .as_deref()
        .unwrap_or_else(|| std::str::from_utf8(req_host).unwrap_or_default());
    let mut out = format!("{}://{host}", scheme.as_str());
    if port != scheme.default_port() {
        let _ = write!(out, ":{port}");
    }
    let path = match &r.path {
        Some(m) => rewrite_path(m, from.path, from.prefix_len),
        None if from.path.is_empty() => b"/".to_vec(),
        None => from.path.to_vec(),
    };
    let target = with_query(path, from.query);
    out.push_str(&String::from_utf8_lossy(&target));
    out
}

/// A Host value split into name and port (`[::1]:8080` gives `[::1]` and 8080).
fn split_host(host: &[u8]) -> (&[u8], Option<u16>) {
    let colon = match host.first() {
        Some(b'[') => host
            .iter()
            .position(|&b| b == b']')
            .and_then(|end| (host.get(end + 1) == Some(&b':')).then_some(end + 1)),
        _ => host.iter().position(|&b| b == b':'),
    };
    match colon {
        Some(i) => (
            &host[..i],
            std::str::from_utf8(&host[i + 1..])
                .ok()
                .and_then(|p| p.parse().ok()),
        ),
        None => (host, None),
    }
}

/// What a route ends in.
#[derive(Debug)]
pub enum Action {
    /// To one of these backend groups (indexes into the listener's groups), by weight.
    Forward {
        groups: Vec<usize>,
        weights: Vec<u32>,
        /// Smooth weighted round robin state; unused with one group.
        turns: Mutex<Vec<i64>>,
    },
    Redirect(Redirect),
    Fixed {
        status: u16,
        body: String,
        content_type: String,
    },
}

impl Action {
    /// The backend group a forwarded request goes to; None when every weight is zero.
    pub fn pick_group(&self) -> Option<usize> {
        let Self::Forward {
            groups,
            weights,
            turns,
        } = self
        else {
            return None;
        };
        match groups.as_slice() {
            [] => None,
            [one] => (weights[0] > 0).then_some(*one),
            _ => {
                let mut turns = turns.lock().ok()?;
                pick_weighted(&mut turns, weights).map(|i| groups[i])
            }
        }
    }
}

/// One route compiled for the drivers.
#[derive(Debug)]
pub struct RoutePlan {
    pub name: String,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    /// URL rewrite: the Host sent to the backend.
    pub host: Option<String>,
    /// URL rewrite of the path (the query is kept).
    pub path: Option<PathModifier>,
    pub action: Action,
    /// Request start to response head.
    pub timeout: Option<Duration>,
}

pub const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

impl RoutePlan {
    /// Compiles `route`; `groups` is how many backend groups the listener has. An error
    /// names the field (relative to the route) and what is wrong.
    pub fn compile(route: &RouteConfig, groups: usize) -> Result<Self, (String, String)> {
        let mut request = Vec::new();
        let mut response = Vec::new();
        let mut host = None;
        let mut path = None;
        for (i, f) in route.filters.iter().enumerate() {
            let field = || format!("filters[{i}]");
            match f {
                FilterConfig::RequestHeaders(m) => {
                    HeaderEdits::compile([m]).map_err(|e| (field(), e))?;
                    request.push(m);
                }
                FilterConfig::ResponseHeaders(m) => {
                    HeaderEdits::compile([m]).map_err(|e| (field(), e))?;
                    response.push(m);
                }
                FilterConfig::UrlRewrite {
                    hostname,
                    path: modifier,
                } => {
                    if let Some(h) = hostname {
                        checked_host(h).map_err(|e| (field(), e))?;
                        host = Some(h.clone());
                    }
                    if let Some(m) = modifier {
                        checked_path(m).map_err(|e| (field(), e))?;
                        path = Some(m.clone());
                    }
                }
            }
        }
        Ok(Self {
            name: route.name.clone(),
            request_headers: HeaderEdits::compile(request).map_err(|e| ("filters".into(), e))?,
            response_headers: HeaderEdits::compile(response).map_err(|e| ("filters".into(), e))?,
            host,
            path,
            action: action(&route.action, groups)?,
            timeout: route.timeout_ms.map(Duration::from_millis),
        })
    }
}

fn action(action: &RouteAction, groups: usize) -> Result<Action, (String, String)> {
    Ok(match action {
        RouteAction::Forward { groups: to } => {
            if let Some((i, w)) = to.iter().enumerate().find(|(_, w)| w.group >= groups) {
                return Err((
                    format!("action.groups[{i}]"),
                    format!("no backend group {}", w.group),
                ));
            }
            Action::Forward {
                groups: to.iter().map(|w| w.group).collect(),
                weights: to.iter().map(|w| w.weight).collect(),
                turns: Mutex::new(Vec::new()),
            }
        }
        RouteAction::Redirect {
            scheme,
            hostname,
            port,
            path,
            status,
        } => {
            let field = |f: &str| format!("action.{f}");
            let scheme = match scheme {
                None => None,
                Some(s) => Some(
                    Scheme::parse(s)
                        .ok_or_else(|| (field("scheme"), format!("{s:?} is not http or https")))?,
                ),
            };
            if let Some(h) = hostname {
                checked_host(h).map_err(|e| (field("hostname"), e))?;
            }
            if let Some(m) = path {
                checked_path(m).map_err(|e| (field("path"), e))?;
            }
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Err((
                    field("status"),
                    format!("{status} is not a redirect status"),
                ));
            }
            Action::Redirect(Redirect {
                scheme,
                hostname: hostname.clone(),
                port: *port,
                path: path.clone(),
                status: *status,
            })
        }
        RouteAction::Fixed {
            status,
            body,
            content_type,
        } => {
            if !(200..=599).contains(status) {
                return Err(("action.status".into(), format!("{status} is not 200-599")));
            }
            let content_type = content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE);
            if content_type.bytes().any(|b| b < 0x20 || b == 0x7f) {
                return Err(("action.contentType".into(), "has control characters".into()));
            }
            Action::Fixed {
                status: *status,
                body: body.clone(),
                content_type: content_type.to_string(),
            }
        }
    })
}

fn checked_host(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{h:?} is not a host name"))
    }
}

fn checked_path(m: &PathModifier) -> Result<(), String> {
    let (PathModifier::ReplaceFull(p) | PathModifier::ReplacePrefix(p)) = m;
    if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'?') {
        return Err(format!("{p:?} is not a path"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo_crds::node_config::HeaderValue;

    fn hv(name: &str, value: &str) -> HeaderValue {
        HeaderValue {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn header_filters_fold_in_order() {
        let first = HeaderModifier {
            set: vec![hv("X-Set", "1")],
            add: vec![hv("X-Add", "a"), hv("x-gone", "g")],
            remove: vec!["X-Old".into()],
        };
        let second = HeaderModifier {
            set: vec![hv("x-add", "b")],
            add: vec![hv("X-Set", "2")],
            remove: vec!["X-Gone".into()],
        };
        let edits = HeaderEdits::compile([&first, &second]).unwrap();
        assert!(edits.drops(b"X-SET") && edits.drops(b"x-old") && edits.drops(b"x-add"));
        assert!(!edits.drops(b"x-other"));
        assert_eq!(
            edits.appended().collect::<Vec<_>>(),
            [("X-Set", "1"), ("x-add", "b"), ("X-Set", "2")]
        );
        assert!(HeaderEdits::compile([]).unwrap().is_empty());
    }

    #[test]
    fn header_filters_refuse_what_would_break_messages() {
        let bad = [
            HeaderModifier {
                set: vec![hv("Content-Length", "1")],
                ..HeaderModifier::default()
            },
            HeaderModifier {
                add: vec![hv("x-a", "1\r\nx-b: 2")],
                ..HeaderModifier::default()
            },
            HeaderModifier {
                remove: vec!["bad name".into()],
                ..HeaderModifier::default()
            },
            HeaderModifier {
                remove: vec!["Host".into()],
                ..HeaderModifier::default()
            },
        ];
        for m in &bad {
            assert!(HeaderEdits::compile([m]).is_err(), "{m:?}");
        }
    }

    #[test]
    fn path_rewrites() {
        let full = PathModifier::ReplaceFull("/new".into());
        let prefix = |p: &str| PathModifier::ReplacePrefix(p.into());
        let cases = [
            (&full, "/old/x", 4, "/new"),
            (&prefix("/v2"), "/api/x", 4, "/v2/x"),
            (&prefix("/v2/"), "/api/x", 4, "/v2/x"),
            (&prefix("/"), "/api/x", 4, "/x"),
            (&prefix("/"), "/api", 4, "/"),
            (&prefix("/v2"), "/api", 4, "/v2"),
            (&prefix("/v2"), "/api/", 4, "/v2/"),
            (&prefix("/v2"), "/x", 0, "/v2/x"),
        ];
        for (m, path, len, want) in cases {
            let got = rewrite_path(m, path.as_bytes(), len);
            assert_eq!(String::from_utf8(got).unwrap(), want, "{m:?} {path}");
        }
        assert_eq!(with_query(b"/a".to_vec(), b"q=1"), b"/a?q=1");
        assert_eq!(with_query(b"/a".to_vec(), b""), b"/a");
    }

    #[test]
    fn redirect_locations() {
        let from = |host: Option<&'static str>, scheme| RedirectFrom {
            scheme,
            host: host.map(str::as_bytes),
            listener_port: 8080,
            path: b"/api/x",
            query: b"q=1",
            prefix_len: 4,
        };
        let r = |scheme, hostname: Option<&str>, port, path| Redirect {
            scheme,
            hostname: hostname.map(String::from),
            port,
            path,
            status: 301,
        };
        let https = Some(Scheme::Https);
        let cases = [
            (
                r(https, None, None, None),
                from(Some("Example.com:8080"), Scheme::Http),
                "https://Example.com/api/x?q=1",
            ),
            (
                r(https, None, Some(8443), None),
                from(Some("h"), Scheme::Http),
                "https://h:8443/api/x?q=1",
            ),
            (
                r(None, Some("other.org"), None, None),
                from(Some("h:8080"), Scheme::Http),
                "http://other.org:8080/api/x?q=1",
            ),
            (
                r(None, None, None, None),
                from(Some("h"), Scheme::Http),
                "http://h/api/x?q=1",
            ),
            (
                r(None, None, None, None),
                from(Some("h:443"), Scheme::Https),
                "https://h/api/x?q=1",
            ),
            (
                r(
                    None,
                    None,
                    Some(80),
                    Some(PathModifier::ReplacePrefix("/v2".into())),
                ),
                from(Some("[::1]:8080"), Scheme::Http),
                "http://[::1]/v2/x?q=1",
            ),
            (
                r(
                    https,
                    None,
                    Some(443),
                    Some(PathModifier::ReplaceFull("/".into())),
                ),
                from(Some("h"), Scheme::Http),
                "https://h/?q=1",
            ),
        ];
        for (redirect, from, want) in cases {
            assert_eq!(location(&redirect, &from), want, "{redirect:?}");
        }
    }

    #[test]
    fn weighted_groups() {
        let a = Action::Forward {
            groups: vec![4, 7],
            weights: vec![1, 3],
            turns: Mutex::new(Vec::new()),
        };
        let picks: Vec<_> = (0..4).filter_map(|_| a.pick_group()).collect();
        assert_eq!(picks, [7, 4, 7, 7]);
        let zero = Action::Forward {
            groups: vec![1],
            weights: vec![0],
            turns: Mutex::new(Vec::new()),
        };
        assert_eq!(zero.pick_group(), None);
    }
}
