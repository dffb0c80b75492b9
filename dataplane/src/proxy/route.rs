//! Request routing: a listener's routes compiled into host buckets and path indexes, so
//! a lookup costs a few hash probes however many routes there are. Pure: a neutral view
//! of the request in (HTTP/1.1 and HTTP/2 drivers both build one), a route index out.
//!
//! Precedence (Gateway API): the most specific host bucket first (exact name, then
//! `*.suffix` wildcards longest first, then routes without hostnames), falling back to a
//! less specific bucket when nothing in it matches. Within a bucket: exact path, then
//! the longest path prefix (whole segments), then regular expressions, then the prefix
//! `/` (and no path match at all): a catch-all such as the listener's default route
//! must not hide every regular expression. Among equal paths: a method match, then more
//! header matches, then more query matches, then config order.

use std::collections::HashMap;

use halo_crds::node_config::{
    ListenerConfig, NamedMatch, PathMatch, RouteConfig, RouteMatch, StringMatch,
};
use regex::bytes::{Regex, RegexBuilder};

use super::filter::RoutePlan;

/// Upper bound on one compiled expression, so a config cannot make the proxy's memory
/// explode.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest host name that can match a route (DNS limit plus a trailing dot).
const MAX_HOST: usize = 254;

/// Header lookup of one request, whatever its HTTP version.
pub trait Headers {
    /// The first value of field `name` (given lowercase; fields compare case-insensitively).
    fn first(&self, name: &str) -> Option<&[u8]>;
}

/// What the router looks at in a request.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a [u8],
    /// Host field or authority as sent: any case, maybe with a port.
    pub host: Option<&'a [u8]>,
    /// The path without the query.
    pub path: &'a [u8],
    /// What follows `?`, without it; empty when there is none.
    pub query: &'a [u8],
    pub headers: &'a dyn Headers,
}

/// The route a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matched {
    /// Index into the listener's routes.
    pub route: usize,
    /// Bytes of the request path the route's path match covered: the prefix for a
    /// prefix match (what ReplacePrefix replaces), the whole path otherwise.
    pub prefix_len: usize,
}

/// A route the data plane cannot serve: `field` is its place in the listener
/// (`routes[1].matches[0]`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct RouteError {
    pub field: String,
    pub message: String,
}

/// A listener's routes ready to serve: the router and, per route, what it does.
pub struct Routes {
    pub router: Router,
    /// Same order as the listener's routes.
    pub plans: Vec<RoutePlan>,
}

impl Routes {
    pub fn compile(config: &ListenerConfig) -> Result<Self, RouteError> {
        let plans = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                RoutePlan::compile(r, config.groups.len()).map_err(|(field, message)| RouteError {
                    field: format!("routes[{i}].{field}"),
                    message,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            router: Router::new(&config.routes)?,
            plans,
        })
    }

    /// Routes that send nothing anywhere (a listener whose config was refused).
    pub fn none() -> Self {
        Self {
            router: Router::empty(),
            plans: Vec::new(),
        }
    }

    /// The route for a request and its plan.
    pub fn find(&self, req: &RequestView<'_>) -> Option<(Matched, &RoutePlan)> {
        let m = self.router.route(req)?;
        Some((m, self.plans.get(m.route)?))
    }
}

/// One alternative of one route (a `RouteMatch`), with everything but its path.
struct Conditions {
    route: usize,
    method: Option<Box<[u8]>>,
    headers: Vec<(Box<str>, ValueMatch)>,
    query: Vec<(Box<[u8]>, ValueMatch)>,
}

enum ValueMatch {
    Exact(Box<[u8]>),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(v) => **v == *value,
            Self::Regex(r) => r.is_match(value),
        }
    }
}

impl Conditions {
    fn hold(&self, req: &RequestView<'_>) -> bool {
        self.method.as_deref().is_none_or(|m| m == req.method)
            && self
                .headers
                .iter()
                .all(|(n, v)| req.headers.first(n).is_some_and(|got| v.matches(got)))
            && self
                .query
                .iter()
                .all(|(n, v)| query_param(req.query, n).is_some_and(|got| v.matches(got)))
    }

    /// Ranks alternatives that match the same path equally well: smaller is preferred.
    fn rank(
        &self,
        id: usize,
    ) -> (
        bool,
        std::cmp::Reverse<usize>,
        std::cmp::Reverse<usize>,
        usize,
    ) {
        (
            self.method.is_none(),
            std::cmp::Reverse(self.headers.len()),
            std::cmp::Reverse(self.query.len()),
            id,
        )
    }
}

/// The first value of query parameter `name` (compared as sent, not decoded).
fn query_param<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (n, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        (n == name).then_some(v)
    })
}

/// Routes of one host bucket, by kind of path match. Lists hold condition ids in
/// preference order.
#[derive(Default)]
struct Bucket {
    exact: HashMap<Box<[u8]>, Vec<usize>>,
    /// Keys without trailing slashes (`/` is the empty key).
    prefix: HashMap<Box<[u8]>, Vec<usize>>,
    regex: Vec<(usize, usize)>,
}

impl Bucket {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.regex.is_empty()
    }
}

/// A listener's compiled routes.
pub struct Router {
    /// The listener has one route that takes everything: no lookup at all.
    only: Option<usize>,
    conditions: Vec<Conditions>,
    regexes: Vec<Regex>,
    exact_hosts: HashMap<Box<[u8]>, Bucket>,
    /// Keyed by the suffix with its leading dot (`.example.com` for `*.example.com`).
    wildcard_hosts: HashMap<Box<[u8]>, Bucket>,
    any_host: Bucket,
}

impl Router {
    fn empty() -> Self {
        Self {
            only: None,
            conditions: Vec::new(),
            regexes: Vec::new(),
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            any_host: Bucket::default(),
        }
    }

    pub fn new(routes: &[RouteConfig]) -> Result<Self, RouteError> {
        let mut router = Self::empty();
        let catch_all = RouteMatch::default();
        for (r, route) in routes.iter().enumerate() {
            let matches = if route.matches.is_empty() {
                std::slice::from_ref(&catch_all)
            } else {
                &route.matches[..]
            };
            for (m, rm) in matches.iter().enumerate() {
                let err = |message: String| RouteError {
                    field: format!("routes[{r}].matches[{m}]"),
                    message,
                };
                router.add(r, &route.hostnames, rm).map_err(err)?;
            }
        }
        router.sort();
        if let [only] = routes
            && only.hostnames.is_empty()
            && only.matches.iter().all(|m| *m == RouteMatch::default())
        {
            router.only = Some(0);
        }
        Ok(router)
    }

    fn add(&mut self, route: usize, hostnames: &[String], rm: &RouteMatch) -> Result<(), String> {
        let id = self.conditions.len();
        self.conditions.push(Conditions {
            route,
            method: rm.method.as_ref().map(|m| m.as_bytes().into()),
            headers: rm
                .headers
                .iter()
                .map(|h| Ok((h.name.to_ascii_lowercase().into(), value_match(h)?)))
                .collect::<Result<_, String>>()?,
            query: rm
                .query
                .iter()
                .map(|q| Ok((q.name.as_bytes().into(), value_match(q)?)))
                .collect::<Result<_, String>>()?,
        });
        let path = match &rm.path {
            Some(PathMatch::Regex(p)) => {
                self.regexes
                    .push(whole(p).map_err(|e| format!("path: {e}"))?);
                Path::Regex(self.regexes.len() - 1)
            }
            Some(PathMatch::Exact(p)) => Path::Exact(p.as_bytes().into()),
            Some(PathMatch::Prefix(p)) => Path::Prefix(trim_slashes(p.as_bytes()).into()),
            None => Path::Prefix(Box::default()),
        };
        let place = |bucket: &mut Bucket| match &path {
            Path::Exact(p) => bucket.exact.entry(p.clone()).or_default().push(id),
            Path::Prefix(p) => bucket.prefix.entry(p.clone()).or_default().push(id),
            Path::Regex(i) => bucket.regex.push((*i, id)),
        };
        if hostnames.is_empty() {
            place(&mut self.any_host);
        }
        for host in hostnames {
            let host = host.to_ascii_lowercase();
            let bucket = match host.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => self
                    .wildcard_hosts
                    .entry(suffix.as_bytes().into())
                    .or_default(),
                _ => self.exact_hosts.entry(host.as_bytes().into()).or_default(),
            };
            place(bucket);
        }
        Ok(())
    }

    fn sort(&mut self) {
        let conditions = &self.conditions;
        let key = |id: &usize| conditions[*id].rank(*id);
        let buckets = self
            .exact_hosts
            .values_mut()
            .chain(self.wildcard_hosts.values_mut())
            .chain(std::iter::once(&mut self.any_host));
        for b in buckets {
            for list in b.exact.values_mut().chain(b.prefix.values_mut()) {
                list.sort_by_key(key);
            }
            b.regex.sort_by_key(|(_, id)| key(id));
        }
    }

    /// The route for a request, or None (404).
    pub fn route(&self, req: &RequestView<'_>) -> Option<Matched> {
        if let Some(route) = self.only {
            return Some(Matched {
                route,
                prefix_len: 0,
            });
        }
        let path = if req.path.is_empty() {
            &b"/"[..]
        } else {
            req.path
        };
        let mut lower = [0u8; MAX_HOST];
        let host = if self.exact_hosts.is_empty() && self.wildcard_hosts.is_empty() {
            None
        } else {
            req.host.and_then(|h| normalize_host(h, &mut lower))
        };
        if let Some(host) = host {
            if let Some(found) = self
                .exact_hosts
                .get(host)
                .and_then(|b| self.in_bucket(b, req, path))
            {
                return Some(found);
            }
            for (i, _) in host.iter().enumerate().filter(|(_, b)| **b == b'.') {
                if i == 0 {
                    continue;
                }
                if let Some(found) = self
                    .wildcard_hosts
                    .get(&host[i..])
                    .and_then(|b| self.in_bucket(b, req, path))
                {
                    return Some(found);
                }
            }
        }
        self.in_bucket(&self.any_host, req, path)
    }

    fn in_bucket(&self, b: &Bucket, req: &RequestView<'_>, path: &[u8]) -> Option<Matched> {
        if b.is_empty() {
            return None;
        }
        let first = |list: &[usize]| {
            list.iter()
                .map(|id| &self.conditions[*id])
                .find(|c| c.hold(req))
                .map(|c| c.route)
        };
        let whole = |route| Matched {
            route,
            prefix_len: path.len(),
        };
        if let Some(route) = b.exact.get(path).and_then(|l| first(l)) {
            return Some(whole(route));
        }
        let by_prefix = |prefix: &[u8]| {
            b.prefix
                .get(prefix)
                .and_then(|l| first(l))
                .map(|route| Matched {
                    route,
                    prefix_len: prefix.len(),
                })
        };
        if !b.prefix.is_empty()
            && let Some(found) = segment_prefixes(path).find_map(by_prefix)
        {
            return Some(found);
        }
        let by_regex = b
            .regex
            .iter()
            .find(|(re, id)| self.regexes[*re].is_match(path) && self.conditions[*id].hold(req));
        match by_regex {
            Some((_, id)) => Some(whole(self.conditions[*id].route)),
            None => by_prefix(b""),
        }
    }
}

enum Path {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Regex(usize),
}

fn value_match(m: &NamedMatch) -> Result<ValueMatch, String> {
    Ok(match &m.value {
        StringMatch::Exact(v) => ValueMatch::Exact(v.as_bytes().into()),
        StringMatch::Regex(r) => {
            ValueMatch::Regex(whole(r).map_err(|e| format!("{}: {e}", m.name))?)
        }
    })
}

/// A regular expression that must match the whole input.
fn whole(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

fn trim_slashes(mut p: &[u8]) -> &[u8] {
    while let [rest @ .., b'/'] = p {
        p = rest;
    }
    p
}

/// The prefixes of `path` that end at a segment boundary, longest first, but not the
/// empty one (the prefix `/`): for `/a/b` that is `/a/b`, `/a`.
fn segment_prefixes(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let whole = (!path.ends_with(b"/")).then_some(path);
    let inner = path
        .iter()
        .enumerate()
        .rev()
        .filter(|(i, b)| **b == b'/' && *i > 0)
        .map(move |(i, _)| &path[..i]);
    whole.into_iter().chain(inner)
}

/// A request's host lowercased into `buf`, without its port or a trailing dot.
fn normalize_host<'b>(host: &[u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b [u8]> {
    let name = match host.first() {
        Some(b'[') => {
            let end = host.iter().position(|&b| b == b']')?;
            &host[..=end]
        }
        _ => host.split(|&b| b == b':').next().unwrap_or_default(),
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    let out = buf.get_mut(..name.len())?;
    for (o, b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_lowercase();
    }
    Some(out)
}

/// Smooth weighted round robin over a route's backend groups (as for backends): the
/// index to use, or None when every weight is zero.
pub fn pick_weighted(current: &mut Vec<i64>, weights: &[u32]) -> Option<usize> {
    current.resize(weights.len(), 0);
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (i, w) in weights.iter().enumerate().filter(|(_, w)| **w > 0) {
        let w = i64::from(*w);
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let best = best?;
    current[best] -= total;
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo_crds::node_config::{RouteAction, RouteConfig};

    struct Fields(Vec<(&'static str, &'static str)>);

    impl Headers for Fields {
        fn first(&self, name: &str) -> Option<&[u8]> {
            self.0
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())
        }
    }

    fn route(name: &str, hosts: &[&str], matches: Vec<RouteMatch>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            matches,
            filters: Vec::new(),
            action: RouteAction::Forward { groups: Vec::new() },
            timeout_ms: None,
        }
    }

    fn path(p: PathMatch) -> RouteMatch {
        RouteMatch {
            path: Some(p),
            ..RouteMatch::default()
        }
    }

    fn prefix(p: &str) -> RouteMatch {
        path(PathMatch::Prefix(p.into()))
    }

    fn exact(p: &str) -> RouteMatch {
        path(PathMatch::Exact(p.into()))
    }

    fn regex(p: &str) -> RouteMatch {
        path(PathMatch::Regex(p.into()))
    }

    fn named(name: &str, value: &str) -> NamedMatch {
        NamedMatch {
            name: name.into(),
            value: StringMatch::Exact(value.into()),
        }
    }

    /// Request text: `METHOD host/path?query header:value ...`; returns the route name
    /// and matched prefix length.
    fn lookup(routes: &[RouteConfig], request: &str) -> Option<(String, usize)> {
        let router = Router::new(routes).expect("routes compile");
        let mut words = request.split(' ');
        let method = words.next().unwrap_or_default();
        let target = words.next().unwrap_or_default();
        let headers: Vec<(&'static str, &'static str)> = words
            .map(|w| {
                let (n, v) = w.split_once(':').unwrap();
                (&*n.to_string().leak(), &*v.to_string().leak())
            })
            .collect();
        let (host, rest) = match target.find('/') {
            Some(i) => (&target[..i], &target[i..]),
            None => (target, ""),
        };
        let (p, q) = rest.split_once('?').unwrap_or((rest, ""));
        let fields = Fields(headers);
        let view = RequestView {
            method: method.as_bytes(),
            host: (!host.is_empty()).then_some(host.as_bytes()),
            path: p.as_bytes(),
            query: q.as_bytes(),
            headers: &fields,
        };
        router
            .route(&view)
            .map(|m| (routes[m.route].name.clone(), m.prefix_len))
    }

    fn name(routes: &[RouteConfig], request: &str) -> Option<String> {
        lookup(routes, request).map(|(n, _)| n)
    }

    #[test]
    fn hosts_exact_then_wildcard_longest_then_any() {
        let routes = [
            route("any", &[], vec![]),
            route("wild", &["*.example.com"], vec![]),
            route("deep", &["*.b.example.com"], vec![]),
            route("exact", &["A.example.com"], vec![]),
        ];
        let cases = [
            ("GET a.example.com/", "exact"),
            ("GET A.EXAMPLE.COM:8080/", "exact"),
            ("GET a.example.com./x", "exact"),
            ("GET x.example.com/", "wild"),
            ("GET x.y.example.com/", "wild"),
            ("GET x.b.example.com/", "deep"),
            ("GET b.example.com/", "wild"),
            ("GET example.com/", "any"),
            ("GET other.org/", "any"),
            ("GET [::1]:80/", "any"),
            ("GET /", "any"),
        ];
        for (req, want) in cases {
            assert_eq!(name(&routes, req).as_deref(), Some(want), "{req}");
        }
    }

    #[test]
    fn no_route_without_a_catch_all() {
        let routes = [
            route("exact", &["a.example.com"], vec![]),
            route("api", &[], vec![prefix("/api")]),
        ];
        assert_eq!(name(&routes, "GET b.example.com/"), None);
        assert_eq!(name(&routes, "GET b.example.com/apix"), None);
        assert_eq!(
            name(&routes, "GET b.example.com/api/x").as_deref(),
            Some("api")
        );
        assert_eq!(
            name(&routes, "GET a.example.com/zzz").as_deref(),
            Some("exact")
        );
    }

    #[test]
    fn a_host_bucket_without_a_match_falls_back_to_less_specific_ones() {
        let routes = [
            route("exact-api", &["a.example.com"], vec![prefix("/api")]),
            route("wild-static", &["*.example.com"], vec![prefix("/static")]),
            route("any", &[], vec![]),
        ];
        let cases = [
            ("GET a.example.com/api/1", "exact-api"),
            ("GET a.example.com/static/1", "wild-static"),
            ("GET a.example.com/other", "any"),
            ("GET b.example.com/api/1", "any"),
        ];
        for (req, want) in cases {
            assert_eq!(name(&routes, req).as_deref(), Some(want), "{req}");
        }
    }

    #[test]
    fn path_kinds_and_segment_prefixes() {
        let routes = [
            route("root", &[], vec![prefix("/")]),
            route("api", &[], vec![prefix("/api")]),
            route("api-slash", &[], vec![prefix("/api/v1/")]),
            route("exact", &[], vec![exact("/api/v1/status")]),
            route("re", &[], vec![regex("/v[0-9]+/items/[0-9]+")]),
        ];
        let cases = [
            ("GET /", "root", 0),
            ("GET ", "root", 0),
            ("GET /apix", "root", 0),
            ("GET /api", "api", 4),
            ("GET /api/", "api", 4),
            ("GET /api/x", "api", 4),
            ("GET /api/v1", "api-slash", 7),
            ("GET /api/v1/x", "api-slash", 7),
            ("GET /api/v1/status", "exact", 14),
            ("GET /api/v1/status/", "api-slash", 7),
            ("GET /api/v1/status?x=1", "exact", 14),
            // A prefix beats a regular expression, which beats the prefix `/`.
            ("GET /api/v1/items/3", "api-slash", 7),
            ("GET /api/v2/items/3", "api", 4),
            ("GET /v2/items/3", "re", 11),
            ("GET /v2/items/3x", "root", 0),
        ];
        for (req, want, len) in cases {
            assert_eq!(lookup(&routes, req), Some((want.to_string(), len)), "{req}");
        }
    }

    #[test]
    fn precedence_among_equal_paths() {
        let with = |method: Option<&str>, headers: usize, query: usize| RouteMatch {
            path: Some(PathMatch::Prefix("/p".into())),
            method: method.map(String::from),
            headers: (0..headers).map(|i| named(&format!("h{i}"), "1")).collect(),
            query: (0..query).map(|i| named(&format!("q{i}"), "1")).collect(),
        };
        let routes = [
            route("plain", &[], vec![with(None, 0, 0)]),
            route("plain-too", &[], vec![with(None, 0, 0)]),
            route("query2", &[], vec![with(None, 0, 2)]),
            route("header1", &[], vec![with(None, 1, 0)]),
            route("header2", &[], vec![with(None, 2, 0)]),
            route("post", &[], vec![with(Some("POST"), 0, 0)]),
            route("longer", &[], vec![prefix("/p/q")]),
        ];
        let cases = [
            ("GET /p", "plain"),
            ("POST /p", "post"),
            ("POST /p h0:1 h1:1", "post"),
            ("GET /p h0:1", "header1"),
            ("GET /p h0:1 h1:1", "header2"),
            ("GET /p?q0=1&q1=1 h0:1", "header1"),
            ("GET /p?q0=1&q1=1", "query2"),
            ("GET /p?q0=1", "plain"),
            // A longer prefix wins over any number of conditions.
            ("POST /p/q h0:1 h1:1", "longer"),
        ];
        for (req, want) in cases {
            assert_eq!(name(&routes, req).as_deref(), Some(want), "{req}");
        }
    }

    #[test]
    fn header_query_and_method_conditions() {
        let m = RouteMatch {
            path: None,
            method: Some("PUT".into()),
            headers: vec![
                named("X-Env", "canary"),
                NamedMatch {
                    name: "x-user".into(),
                    value: StringMatch::Regex("u[0-9]+".into()),
                },
            ],
            query: vec![NamedMatch {
                name: "v".into(),
                value: StringMatch::Regex("2|3".into()),
            }],
        };
        let routes = [route("cond", &[], vec![m]), route("rest", &[], vec![])];
        let cases = [
            ("PUT /x?v=2 x-env:canary x-user:u12", "cond"),
            ("PUT /x?a=b&v=3 X-ENV:canary x-user:u1", "cond"),
            ("GET /x?v=2 x-env:canary x-user:u12", "rest"),
            ("PUT /x?v=23 x-env:canary x-user:u12", "rest"),
            ("PUT /x?v=2 x-env:Canary x-user:u12", "rest"),
            ("PUT /x?v=2 x-env:canary x-user:au12", "rest"),
            ("PUT /x?V=2 x-env:canary x-user:u12", "rest"),
            ("PUT /x x-env:canary x-user:u12", "rest"),
        ];
        for (req, want) in cases {
            assert_eq!(name(&routes, req).as_deref(), Some(want), "{req}");
        }
    }

    #[test]
    fn any_of_several_matches_and_the_prefix_of_the_one_that_won() {
        let routes = [
            route("multi", &[], vec![exact("/a"), prefix("/b")]),
            route("rest", &[], vec![]),
        ];
        assert_eq!(lookup(&routes, "GET /a"), Some(("multi".into(), 2)));
        assert_eq!(lookup(&routes, "GET /b/c"), Some(("multi".into(), 2)));
        assert_eq!(lookup(&routes, "GET /a/c"), Some(("rest".into(), 0)));
    }

    #[test]
    fn a_bad_expression_is_refused_with_its_place() {
        let routes = [
            route("ok", &[], vec![]),
            route("bad", &[], vec![prefix("/x"), regex("(")]),
        ];
        let err = Router::new(&routes).err().expect("refused");
        assert_eq!(err.field, "routes[1].matches[1]");
    }

    #[test]
    fn many_routes_are_indexed() {
        let routes: Vec<_> = (0..1000)
            .map(|i| route(&format!("r{i}"), &[], vec![prefix(&format!("/r{i}"))]))
            .chain(std::iter::once(route("h", &["h.example"], vec![])))
            .collect();
        assert_eq!(name(&routes, "GET /r999/x").as_deref(), Some("r999"));
        assert_eq!(name(&routes, "GET h.example/r5").as_deref(), Some("h"));
        assert_eq!(name(&routes, "GET /r1000"), None);
    }

    #[test]
    fn weighted_choice_is_smooth_and_skips_zero() {
        let mut state = Vec::new();
        let picks: Vec<_> = (0..8)
            .map(|_| pick_weighted(&mut state, &[3, 0, 1]))
            .collect();
        assert_eq!(picks, [0, 0, 2, 0, 0, 0, 2, 0].map(Some).to_vec());
        let mut state = Vec::new();
        let counts = (0..1000).fold([0; 2], |mut c, _| {
            c[pick_weighted(&mut state, &[9, 1]).unwrap()] += 1;
            c
        });
        assert_eq!(counts, [900, 100]);
        assert_eq!(pick_weighted(&mut Vec::new(), &[0, 0]), None);
        assert_eq!(pick_weighted(&mut Vec::new(), &[]), None);
    }
}
