//! Who may use the admin listener, decided from the facts of one request (pure): the Host
//! header must name this listener (no DNS rebinding), and a mutating request must come with
//! the bearer token and must not look like a browser's cross-site request.

use std::net::{IpAddr, SocketAddr};

use http::{Method, StatusCode};

/// The facts of a request that the policy looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts<'a> {
    pub method: Option<&'a Method>,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// The local address the connection came in on.
    pub local: Option<SocketAddr>,
}

/// What the listener was configured with.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy<'a> {
    /// `None`: no token could be set up, so mutating endpoints are disabled.
    pub token: Option<&'a str>,
    /// Host names accepted besides `localhost` and this listener's own address.
    pub allowed_hosts: &'a [String],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Reject(StatusCode, String),
}

fn reject(status: StatusCode, reason: impl Into<String>) -> Verdict {
    Verdict::Reject(status, reason.into())
}

/// The verdict on one request.
pub fn judge(facts: &Facts<'_>, policy: &Policy<'_>) -> Verdict {
    if let Some(host) = facts.host
        && !host_allowed(host, facts.local, policy.allowed_hosts)
    {
        return reject(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {host:?} is not this admin listener (use its address or localhost, or allow the name with --admin-allow-host)"
            ),
        );
    }
    if facts.method.is_some_and(|m| m == Method::POST) {
        return judge_mutation(facts, policy);
    }
    Verdict::Allow
}

fn judge_mutation(facts: &Facts<'_>, policy: &Policy<'_>) -> Verdict {
    if let Some(site) = facts.sec_fetch_site
        && !matches!(site.trim(), "same-origin" | "none")
    {
        return reject(StatusCode::FORBIDDEN, "cross-site request refused");
    }
    if let Some(origin) = facts.origin
        && !same_origin(origin, facts.host)
    {
        return reject(StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    if let Some(ct) = facts.content_type
        && is_form_like(ct)
    {
        return reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "form and text/plain bodies are refused (send no body, or application/json)",
        );
    }
    let Some(token) = policy.token else {
        return reject(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled: the data plane has no admin token",
        );
    };
    match facts.authorization.and_then(bearer) {
        None => reject(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (see --admin-token-file)",
        ),
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Verdict::Allow,
        Some(_) => reject(StatusCode::UNAUTHORIZED, "wrong bearer token"),
    }
}

/// The host part of a Host header (`[::1]:9100` → `::1`, `a:80` → `a`).
fn host_part(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn host_allowed(host: &str, local: Option<SocketAddr>, allowed: &[String]) -> bool {
    let name = host_part(host.trim()).trim_end_matches('.');
    if let Ok(ip) = name.parse::<IpAddr>() {
        return ip.is_loopback() || local.is_some_and(|l| l.ip() == ip);
    }
    name.eq_ignore_ascii_case("localhost") || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    origin
        .trim()
        .strip_prefix("http://")
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host.trim()))
}

/// The content types a browser may send cross-site without asking first (CORS "simple").
fn is_form_like(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ]
    .iter()
    .any(|t| media.eq_ignore_ascii_case(t))
}

fn bearer(header: &str) -> Option<&str> {
    let (scheme, value) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| value.trim())
        .filter(|v| !v.is_empty())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret";

    fn local() -> Option<SocketAddr> {
        Some(SocketAddr::from(([10, 1, 2, 3], 9100)))
    }

    #[test]
    fn table_of_request_verdicts() {
        let get = Method::GET;
        let post = Method::POST;
        let allowed = vec!["halo-node-a.example".to_string()];
        let with_token = Policy {
            token: Some(TOKEN),
            allowed_hosts: &allowed,
        };
        let no_token = Policy {
            token: None,
            allowed_hosts: &allowed,
        };
        let base = Facts {
            local: local(),
            host: Some("127.0.0.1:9100"),
            ..Facts::default()
        };
        let authed = Facts {
            method: Some(&post),
            authorization: Some("Bearer s3cret"),
            ..base
        };
        use StatusCode as S;
        let cases: Vec<(&str, Facts, &Policy, Option<StatusCode>)> = vec![
            (
                "GET on loopback",
                Facts {
                    method: Some(&get),
                    ..base
                },
                &with_token,
                None,
            ),
            (
                "GET without Host",
                Facts {
                    method: Some(&get),
                    host: None,
                    ..base
                },
                &with_token,
                None,
            ),
            (
                "GET via localhost",
                Facts {
                    method: Some(&get),
                    host: Some("LOCALHOST:9100"),
                    ..base
                },
                &with_token,
                None,
            ),
            (
                "GET via own address",
                Facts {
                    method: Some(&get),
                    host: Some("10.1.2.3:9100"),
                    ..base
                },
                &with_token,
                None,
            ),
            (
                "GET via [::1]",
                Facts {
                    method: Some(&get),
                    host: Some("[::1]:9100"),
                    ..base
                },
                &with_token,
                None,
            ),
            (
                "GET via allowed name",
                Facts {
                    method: Some(&get),
                    host: Some("halo-node-a.example:9100"),
                    ..base
                },
                &with_token,
                None,
            ),
            (
                "DNS rebinding",
                Facts {
                    method: Some(&get),
                    host: Some("evil.example:9100"),
                    ..base
                },
                &with_token,
                Some(S::MISDIRECTED_REQUEST),
            ),
            (
                "other IP",
                Facts {
                    method: Some(&get),
                    host: Some("10.9.9.9:9100"),
                    ..base
                },
                &with_token,
                Some(S::MISDIRECTED_REQUEST),
            ),
            ("POST with token", authed, &with_token, None),
            (
                "POST token scheme case",
                Facts {
                    authorization: Some("bearer s3cret"),
                    ..authed
                },
                &with_token,
                None,
            ),
            (
                "POST without token",
                Facts {
                    authorization: None,
                    ..authed
                },
                &with_token,
                Some(S::UNAUTHORIZED),
            ),
            (
                "POST wrong token",
                Facts {
                    authorization: Some("Bearer nope"),
                    ..authed
                },
                &with_token,
                Some(S::UNAUTHORIZED),
            ),
            (
                "POST basic auth",
                Facts {
                    authorization: Some("Basic czNjcmV0"),
                    ..authed
                },
                &with_token,
                Some(S::UNAUTHORIZED),
            ),
            (
                "POST, no token configured",
                authed,
                &no_token,
                Some(S::FORBIDDEN),
            ),
            (
                "POST cross-site",
                Facts {
                    sec_fetch_site: Some("cross-site"),
                    ..authed
                },
                &with_token,
                Some(S::FORBIDDEN),
            ),
            (
                "POST same-site is not same-origin",
                Facts {
                    sec_fetch_site: Some("same-site"),
                    ..authed
                },
                &with_token,
                Some(S::FORBIDDEN),
            ),
            (
                "POST typed URL",
                Facts {
                    sec_fetch_site: Some("none"),
                    ..authed
                },
                &with_token,
                None,
            ),
            (
                "POST Origin evil",
                Facts {
                    origin: Some("evil"),
                    ..authed
                },
                &with_token,
                Some(S::FORBIDDEN),
            ),
            (
                "POST Origin null",
                Facts {
                    origin: Some("null"),
                    ..authed
                },
                &with_token,
                Some(S::FORBIDDEN),
            ),
            (
                "POST own Origin",
                Facts {
                    origin: Some("http://127.0.0.1:9100"),
                    ..authed
                },
                &with_token,
                None,
            ),
            (
                "POST text/plain",
                Facts {
                    content_type: Some("text/plain;charset=UTF-8"),
                    ..authed
                },
                &with_token,
                Some(S::UNSUPPORTED_MEDIA_TYPE),
            ),
            (
                "POST form",
                Facts {
                    content_type: Some("application/x-www-form-urlencoded"),
                    ..authed
                },
                &with_token,
                Some(S::UNSUPPORTED_MEDIA_TYPE),
            ),
            (
                "POST multipart",
                Facts {
                    content_type: Some("Multipart/Form-Data; boundary=x"),
                    ..authed
                },
                &with_token,
                Some(S::UNSUPPORTED_MEDIA_TYPE),
            ),
            (
                "POST json",
                Facts {
                    content_type: Some("application/json"),
                    ..authed
                },
                &with_token,
                None,
            ),
            (
                "POST rebinding with token",
                Facts {
                    host: Some("evil.example"),
                    ..authed
                },
                &with_token,
                Some(S::MISDIRECTED_REQUEST),
            ),
        ];
        for (name, facts, policy, want) in cases {
            let got = match judge(&facts, policy) {
                Verdict::Allow => None,
                Verdict::Reject(s, _) => Some(s),
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn host_parts() {
        for (header, want) in [
            ("a:80", "a"),
            ("a", "a"),
            ("[::1]:9100", "::1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("127.0.0.1:9100", "127.0.0.1"),
        ] {
            assert_eq!(host_part(header), want, "{header}");
        }
    }
}
