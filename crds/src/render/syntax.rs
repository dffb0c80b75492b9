//! Pure syntax checks for what routes carry: host names, HTTP tokens, header values,
//! regular expressions. Each returns the normalised value or why it is unusable.

use std::net::IpAddr;

use regex::Regex;

/// A route hostname, lowercased: an exact DNS name or `*.` and a DNS name (no IP addresses).
pub fn route_hostname(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    if is_dns_name(name) {
        Ok(lower)
    } else {
        Err(format!(
            "{text:?} is not a DNS name or a wildcard like *.example.com"
        ))
    }
}

/// An exact host name (redirects, rewrites), lowercased.
pub fn exact_hostname(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    if is_dns_name(&lower) {
        Ok(lower)
    } else {
        Err(format!("{text:?} is not a DNS name"))
    }
}

/// RFC 1123 labels of letters, digits and inner hyphens, at most 253 characters, and not
/// an IP address (Gateway API hostnames are names only).
fn is_dns_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty()
        && name.len() <= 253
        && name.parse::<IpAddr>().is_err()
        && name.split('.').all(label_ok)
}

/// An RFC 9110 token (header names, methods, cookie names).
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header name, lowercased.
pub fn header_name(text: &str) -> Result<String, String> {
    if is_token(text) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("{text:?} is not a valid header name"))
    }
}

/// A header value a proxy may send: no CR, LF or NUL (which would split or end the head).
pub fn header_value(text: &str) -> Result<(), String> {
    if text.contains(['\r', '\n', '\0']) {
        Err("must not contain CR, LF or NUL".into())
    } else {
        Ok(())
    }
}

/// A request method: an upper-case token such as `GET` or `PURGE`.
pub fn method(text: &str) -> Result<String, String> {
    if is_token(text) && !text.bytes().any(|b| b.is_ascii_lowercase()) {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not an upper-case method token"))
    }
}

/// A regular expression that must match a whole value; compiled as the data plane will.
pub fn whole_match_regex(text: &str) -> Result<String, String> {
    match Regex::new(&format!("^(?:{text})$")) {
        Ok(_) => Ok(text.to_string()),
        Err(e) => Err(format!(
            "invalid regular expression: {}",
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
}

/// A path written by the user for a request (matches, rewrites, redirects).
pub fn absolute_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        Err(format!("{text:?} must start with /"))
    } else if text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        Err(format!(
            "{text:?} must not contain spaces or control characters"
        ))
    } else {
        Ok(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Example.COM", Some("example.com")),
            ("*.example.com", Some("*.example.com")),
            ("a-b.c1", Some("a-b.c1")),
            ("*", None),
            ("*example.com", None),
            ("a.*.com", None),
            ("-a.com", None),
            ("a..com", None),
            ("10.0.0.1", None),
            ("a_b.com", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(route_hostname(text).ok().as_deref(), *want, "{text}");
        }
        assert!(exact_hostname("*.example.com").is_err());
    }

    #[test]
    fn tokens_methods_values_regexes_paths() {
        assert!(is_token("X-Request-Id"));
        assert!(!is_token("X Request"));
        assert!(!is_token("a:b"));
        assert_eq!(header_name("X-Up").as_deref(), Ok("x-up"));
        assert!(method("get").is_err());
        assert_eq!(method("PURGE").as_deref(), Ok("PURGE"));
        assert!(header_value("a\r\nb").is_err());
        assert!(header_value("a\0").is_err());
        assert!(header_value("fine value").is_ok());
        assert!(whole_match_regex("/api/v[0-9]+").is_ok());
        assert!(whole_match_regex("/api/(").is_err());
        assert!(absolute_path("api").is_err());
        assert!(absolute_path("/a b").is_err());
        assert!(absolute_path("/a/b").is_ok());
    }
}
