//! Which certificate answers a ClientHello: the names each certificate covers (exact
//! and `*.` wildcards from its SAN, or its CN without one) indexed once, and the SNI
//! name looked up in them. Pure: names in, a certificate index out.

use std::collections::HashMap;

/// Certificate names by kind; the value is the certificate's index in the listener's
/// list. A name two certificates share belongs to the first.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NameIndex {
    exact: HashMap<String, usize>,
    /// `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, usize>,
}

impl NameIndex {
    /// Indexes `names[i]`, the DNS names of certificate `i`.
    pub fn new<S: AsRef<str>>(names: &[Vec<S>]) -> Self {
        let mut index = Self::default();
        for (i, list) in names.iter().enumerate() {
            for name in list {
                let name = normalize(name.as_ref());
                match name.strip_prefix("*.") {
                    Some(suffix) if !suffix.is_empty() => {
                        index.wildcard.entry(suffix.to_string()).or_insert(i);
                    }
                    _ => {
                        index.exact.entry(name).or_insert(i);
                    }
                }
            }
        }
        index
    }

    /// The certificate for SNI `name`: an exact name first, then a wildcard covering
    /// exactly one label (RFC 6125), else the first certificate.
    pub fn select(&self, name: Option<&str>) -> usize {
        let Some(name) = name.map(normalize) else {
            return 0;
        };
        if let Some(&i) = self.exact.get(&name) {
            return i;
        }
        name.split_once('.')
            .and_then(|(label, parent)| {
                (!label.is_empty())
                    .then(|| self.wildcard.get(parent))
                    .flatten()
            })
            .copied()
            .unwrap_or(0)
    }
}

/// Lowercase without a trailing dot: DNS names compare that way.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether route hostname `pattern` (exact, or `*.suffix` for one or more labels, as the
/// routes define it) covers `name`.
pub fn route_host_matches(pattern: &str, name: &str) -> bool {
    let name = normalize(name);
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|head| !head.is_empty()),
        None => normalize(pattern) == name,
    }
}

/// How specific a route hostname is for precedence: exact names first, then wildcards
/// with longer suffixes.
pub fn route_host_rank(pattern: &str) -> (u8, usize) {
    match pattern.strip_prefix("*.") {
        Some(suffix) => (1, usize::MAX - suffix.len()),
        None => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_by_sni() {
        let names = vec![
            vec!["default.test"],
            vec!["a.example.com", "*.example.com"],
            vec!["b.example.com", "*.example.com", "x.other.test"],
            vec!["*.deep.example.com"],
        ];
        let index = NameIndex::new(&names);
        let cases = [
            (None, 0),
            (Some("default.test"), 0),
            (Some("unknown.test"), 0),
            (Some("a.example.com"), 1),
            (Some("A.Example.COM."), 1),
            (Some("b.example.com"), 2),
            // The wildcard is the first certificate's.
            (Some("c.example.com"), 1),
            // One label only.
            (Some("x.y.example.com"), 0),
            (Some("example.com"), 0),
            (Some("z.deep.example.com"), 3),
            (Some("x.other.test"), 2),
            (Some(""), 0),
        ];
        for (sni, want) in cases {
            assert_eq!(index.select(sni), want, "{sni:?}");
        }
    }

    #[test]
    fn route_hostnames() {
        let cases = [
            ("api.example.com", "api.example.com", true),
            ("api.example.com", "API.example.com", true),
            ("api.example.com", "x.api.example.com", false),
            ("*.api.example.com", "x.api.example.com", true),
            ("*.api.example.com", "y.x.api.example.com", true),
            ("*.api.example.com", "api.example.com", false),
            ("*.api.example.com", "xapi.example.com", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(route_host_matches(pattern, name), want, "{pattern} {name}");
        }
        assert!(route_host_rank("a.b") < route_host_rank("*.long.example.com"));
        assert!(route_host_rank("*.long.example.com") < route_host_rank("*.example.com"));
    }
}
