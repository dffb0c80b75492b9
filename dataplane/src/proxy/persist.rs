//! Session persistence by cookie, HAProxy's `cookie NAME insert [indirect] [nocache]`:
//! which backend a request's cookie names, the request's Cookie header without it, and
//! the fields a response that (re)sets it gets. Pure: bytes in, bytes out.

use halo_crds::node_config::PersistenceConfig;

use http::{HeaderMap, HeaderValue, header};

use super::balance::hash_bytes;

/// A group's cookie rule, resolved for one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieRule {
    pub name: String,
    pub indirect: bool,
    pub nocache: bool,
    pub max_age_s: Option<u64>,
    /// HTTPS listener: the cookie is only sent back over TLS.
    pub secure: bool,
}

impl CookieRule {
    pub fn of(config: Option<&PersistenceConfig>, secure: bool) -> Option<Self> {
        match config? {
            PersistenceConfig::Cookie {
                name,
                indirect,
                nocache,
                max_age_s,
            } => Some(Self {
                name: name.clone(),
                indirect: *indirect,
                nocache: *nocache,
                max_age_s: *max_age_s,
                secure,
            }),
            PersistenceConfig::SourceIp => None,
        }
    }
}

/// The cookie value naming a backend: a hash of the listener and backend names, so it
/// survives reloads and is the same on every node, and says nothing about the address.
pub fn cookie_value(listener: &str, backend: &str) -> String {
    let mut key = Vec::with_capacity(listener.len() + backend.len() + 1);
    key.extend_from_slice(listener.as_bytes());
    key.push(0);
    key.extend_from_slice(backend.as_bytes());
    format!("{:016x}", hash_bytes(&key))
}

/// The `name=value` pairs of one Cookie header value (RFC 6265 §5.4: `; `-separated);
/// a pair without `=` has no value.
fn pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    header
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(eq) => (p[..eq].trim_ascii(), Some(p[eq + 1..].trim_ascii())),
            None => (p, None),
        })
}

/// The value of cookie `name` in the first of `headers` (Cookie header values) that has it.
pub fn find<'a>(headers: impl IntoIterator<Item = &'a [u8]>, name: &str) -> Option<&'a [u8]> {
    headers.into_iter().find_map(|h| {
        pairs(h)
            .find(|(n, _)| *n == name.as_bytes())
            .and_then(|(_, v)| v)
    })
}

/// The index of the backend whose cookie value is `value`, among `values`.
pub fn named(value: &[u8], values: &[String]) -> Option<usize> {
    values.iter().position(|v| v.as_bytes() == value)
}

/// One Cookie header value without cookie `name`, the others kept in order; empty when
/// nothing is left (the header is then dropped).
pub fn strip(header: &[u8], name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len());
    for (n, v) in pairs(header).filter(|(n, _)| *n != name.as_bytes()) {
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(n);
        if let Some(v) = v {
            out.push(b'=');
            out.extend_from_slice(v);
        }
    }
    out
}

/// The `Set-Cookie` value that pins the client to the backend whose cookie is `value`.
pub fn set_cookie(rule: &CookieRule, value: &str) -> String {
    let mut out = format!("{}={value}", rule.name);
    if let Some(age) = rule.max_age_s {
        out.push_str(&format!("; Max-Age={age}"));
    }
    out.push_str("; Path=/; HttpOnly");
    if rule.secure {
        out.push_str("; Secure");
    }
    out
}

/// What `Cache-Control` becomes on a response that sets the cookie (`nocache`), given
/// its existing values joined: `private` when there was none, else the same with
/// `no-cache="set-cookie"` added (unless the response is already private or no-store).
pub fn cache_control(existing: Option<&[u8]>) -> Vec<u8> {
    let Some(existing) = existing.map(<[u8]>::trim_ascii).filter(|e| !e.is_empty()) else {
        return b"private".to_vec();
    };
    let lower = existing.to_ascii_lowercase();
    let directive = |d: &[u8]| {
        lower
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii() == d || t.trim_ascii().starts_with(&[d, b"="].concat()))
    };
    let mut out = existing.to_vec();
    if !(directive(b"private")
        || directive(b"no-store")
        || lower.windows(10).any(|w| w == b"set-cookie"))
    {
        out.extend_from_slice(b", no-cache=\"set-cookie\"");
    }
    out
}

/// The response must (re)set the cookie: the request's cookie named another backend,
/// or none, or one that is not valid any more.
pub fn must_insert(cookie_named: Option<usize>, chosen: usize) -> bool {
    cookie_named != Some(chosen)
}

/// HTTP/2 requests (header maps): the persistence cookie's value, and with `indirect`
/// the cookie removed. A client may split cookies over several fields (RFC 9113
/// §8.2.3); what is left is joined into one, as an HTTP/1.1 backend expects.
pub fn take_from(headers: &mut HeaderMap, rule: &CookieRule) -> Option<Vec<u8>> {
    let fields = || headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes());
    let found = find(fields(), &rule.name).map(<[u8]>::to_vec)?;
    if rule.indirect {
        let rest: Vec<Vec<u8>> = fields()
            .map(|v| strip(v, &rule.name))
            .filter(|r| !r.is_empty())
            .collect();
        headers.remove(header::COOKIE);
        if let Ok(v) = HeaderValue::from_bytes(&rest.join(&b"; "[..]))
            && !rest.is_empty()
        {
            headers.insert(header::COOKIE, v);
        }
    }
    Some(found)
}

/// HTTP/2 responses (header maps): sets the cookie with `value`, and for `nocache`
/// makes Cache-Control private.
pub fn set_on(headers: &mut HeaderMap, rule: &CookieRule, value: &str) {
    if let Ok(v) = HeaderValue::from_str(&set_cookie(rule, value)) {
        headers.append(header::SET_COOKIE, v);
    }
    if rule.nocache {
        let existing: Vec<&[u8]> = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(|v| v.as_bytes().trim_ascii())
            .collect();
        let joined = existing.join(&b", "[..]);
        if let Ok(v) = HeaderValue::from_bytes(&cache_control(Some(&joined))) {
            headers.insert(header::CACHE_CONTROL, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(max_age_s: Option<u64>, secure: bool) -> CookieRule {
        CookieRule {
            name: "SRV".into(),
            indirect: true,
            nocache: true,
            max_age_s,
            secure,
        }
    }

    #[test]
    fn values_are_stable_distinct_and_not_addresses() {
        let a = cookie_value("ns/lb/web", "was-1");
        assert_eq!(a, cookie_value("ns/lb/web", "was-1"));
        assert_ne!(a, cookie_value("ns/lb/web", "was-2"));
        assert_ne!(a, cookie_value("ns/lb/api", "was-1"));
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn finds_the_cookie_among_others_and_headers() {
        let cases: [(&[&str], Option<&str>); 7] = [
            (&["SRV=abc"], Some("abc")),
            (&["a=1; SRV=abc; b=2"], Some("abc")),
            (&["a=1;SRV=abc"], Some("abc")),
            (&["a=1", "SRV=x; c=3"], Some("x")),
            (&["XSRV=abc; SRVX=1"], None),
            (&["srv=abc"], None),
            (&[], None),
        ];
        for (headers, want) in cases {
            let got = find(headers.iter().map(|h| h.as_bytes()), "SRV");
            assert_eq!(got, want.map(str::as_bytes), "{headers:?}");
        }
    }

    #[test]
    fn strips_only_the_persistence_cookie() {
        let cases = [
            ("SRV=abc", ""),
            ("a=1; SRV=abc; b=2", "a=1; b=2"),
            ("SRV=abc;a=1", "a=1"),
            ("a=1; b=", "a=1; b="),
            ("a=1; SRV=abc; SRV=def", "a=1"),
            ("XSRV=1; SRV=2", "XSRV=1"),
            ("flag; SRV=2", "flag"),
        ];
        for (header, want) in cases {
            let got = strip(header.as_bytes(), "SRV");
            assert_eq!(String::from_utf8_lossy(&got), want, "{header:?}");
        }
    }

    #[test]
    fn set_cookie_attributes() {
        let cases = [
            (rule(None, false), "SRV=v; Path=/; HttpOnly"),
            (
                rule(Some(3600), false),
                "SRV=v; Max-Age=3600; Path=/; HttpOnly",
            ),
            (rule(None, true), "SRV=v; Path=/; HttpOnly; Secure"),
        ];
        for (r, want) in cases {
            assert_eq!(set_cookie(&r, "v"), want);
        }
    }

    #[test]
    fn nocache_marks_the_response_private() {
        let cases: [(Option<&str>, &str); 6] = [
            (None, "private"),
            (Some(""), "private"),
            (Some("max-age=60"), "max-age=60, no-cache=\"set-cookie\""),
            (
                Some("public, max-age=60"),
                "public, max-age=60, no-cache=\"set-cookie\"",
            ),
            (Some("private, max-age=60"), "private, max-age=60"),
            (Some("no-store"), "no-store"),
        ];
        for (existing, want) in cases {
            let got = cache_control(existing.map(str::as_bytes));
            assert_eq!(String::from_utf8_lossy(&got), want, "{existing:?}");
        }
    }

    #[test]
    fn header_maps_lose_the_cookie_and_gain_set_cookie() {
        let r = rule(Some(60), true);
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("SRV=v; b=2"));
        assert_eq!(take_from(&mut h, &r).as_deref(), Some(&b"v"[..]));
        let left: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(left, vec!["a=1; b=2"]);
        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("SRV=v"));
        assert!(take_from(&mut only, &r).is_some());
        assert!(only.get(header::COOKIE).is_none());
        let mut none = HeaderMap::new();
        none.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        assert_eq!(take_from(&mut none, &r), None);
        assert_eq!(none.get(header::COOKIE).unwrap(), "a=1");

        let mut resp = HeaderMap::new();
        resp.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=9"));
        set_on(&mut resp, &r, "v");
        assert_eq!(
            resp.get(header::SET_COOKIE).unwrap(),
            "SRV=v; Max-Age=60; Path=/; HttpOnly; Secure"
        );
        assert_eq!(
            resp.get(header::CACHE_CONTROL).unwrap(),
            "max-age=9, no-cache=\"set-cookie\""
        );
    }

    #[test]
    fn resolves_and_decides_on_insertion() {
        let values = vec!["aa".to_string(), "bb".to_string()];
        assert_eq!(named(b"bb", &values), Some(1));
        assert_eq!(named(b"cc", &values), None);
        assert!(must_insert(None, 0));
        assert!(must_insert(Some(1), 0));
        assert!(!must_insert(Some(0), 0));
    }
}
