//! The HTTP/1.1 side of routing: a parsed request head seen through the router's
//! neutral view, and a route's path rewrite and redirect worked out for that head.

use std::net::SocketAddr;

use super::head::RequestHead;
use crate::proxy::filter::{self, Redirect, RedirectFrom, RoutePlan, Scheme};
use crate::proxy::route::{Headers, Matched, RequestView};

/// The header fields of a request head, for header matches.
pub struct HeadFields<'a> {
    buf: &'a [u8],
    head: &'a RequestHead,
}

impl<'a> HeadFields<'a> {
    pub fn new(buf: &'a [u8], head: &'a RequestHead) -> Self {
        Self { buf, head }
    }

    /// The request as the router sees it.
    pub fn view(&self) -> RequestView<'_> {
        let target = self.head.path.get(self.buf);
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(i) => (&target[..i], &target[i + 1..]),
            None => (target, &[][..]),
        };
        RequestView {
            method: self.head.method_span.get(self.buf),
            host: self.head.host.map(|h| h.get(self.buf)),
            path,
            query,
            headers: self,
        }
    }
}

impl Headers for HeadFields<'_> {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.head
            .fields
            .iter()
            .find(|f| f.name.get(self.buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.get(self.buf))
    }
}

/// The request target after the route's URL rewrite (the query kept); None when the
/// route leaves the path alone, so the common case copies the original bytes.
pub fn target(plan: &RoutePlan, req: &RequestView<'_>, matched: Matched) -> Option<Vec<u8>> {
    let modifier = plan.path.as_ref()?;
    let path = filter::rewrite_path(modifier, req.path, matched.prefix_len);
    Some(filter::with_query(path, req.query))
}

/// The Location of a redirect route for this request. `local` is the address the client
/// connected to, standing in for a missing Host.
pub fn location(
    redirect: &Redirect,
    req: &RequestView<'_>,
    matched: Matched,
    scheme: Scheme,
    listener_port: u16,
    local: Option<SocketAddr>,
) -> String {
    let fallback = match (req.host, local) {
        (None, Some(SocketAddr::V4(a))) => a.ip().to_string(),
        (None, Some(SocketAddr::V6(a))) => format!("[{}]", a.ip()),
        _ => String::new(),
    };
    let host = req
        .host
        .or((!fallback.is_empty()).then_some(fallback.as_bytes()));
    filter::location(
        redirect,
        &RedirectFrom {
            scheme,
            host,
            listener_port,
            path: req.path,
            query: req.query,
            prefix_len: matched.prefix_len,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::head::{Limits, parse_request};
    use super::*;

    #[test]
    fn a_head_as_the_router_sees_it() {
        let text = b"POST /a/b?x=1&y HTTP/1.1\r\nHost: Example.com:81\r\nX-Env: canary\r\nX-Env: other\r\n\r\n";
        let head = parse_request(text, &Limits::default()).unwrap().unwrap();
        let fields = HeadFields::new(text, &head);
        let view = fields.view();
        assert_eq!(view.method, b"POST");
        assert_eq!(view.host, Some(&b"Example.com:81"[..]));
        assert_eq!(view.path, b"/a/b");
        assert_eq!(view.query, b"x=1&y");
        assert_eq!(view.headers.first("x-env"), Some(&b"canary"[..]));
        assert_eq!(view.headers.first("x-none"), None);
    }
}
