//! HAProxy ACLs and `if`/`unless` conditions, turned into what a Halo route can match:
//! hostnames and matches (path, method, headers). `ssl_fc` is known per listener, so it
//! is decided here rather than matched; what a route cannot express is an error saying why.

use std::collections::BTreeMap;

use halo_crds::load_balancer::{PathMatch, PathMatchType, RouteMatch, ValueMatch, ValueMatchType};

use super::lex::Line;

/// What an ACL tests, typed from its fetch (`hdr_beg(host)`, `path_end`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    HostExact,
    HostPrefix,
    HostSuffix,
    HostDomain,
    Path(PathTest),
    Method,
    Header { name: String, regex: bool },
    SslFc,
    Src,
    Other(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathTest {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub criterion: Criterion,
    pub values: Vec<String>,
    pub case_insensitive: bool,
    pub line: usize,
    /// The `acl` line as written (empty for an anonymous ACL).
    pub text: String,
}

/// One term of a condition: an ACL (named, or anonymous `{ ... }`), maybe negated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub negated: bool,
    pub acl: Acl,
    pub label: String,
}

/// `||`-separated groups of terms that must all hold.
pub type Condition = Vec<Vec<Term>>;

/// A `-m` matching method or a flag this module does not take.
fn parse_flags(words: &[String]) -> Result<(bool, Option<String>, usize), String> {
    let (mut nocase, mut method, mut i) = (false, None, 0);
    while let Some(w) = words.get(i) {
        match w.as_str() {
            "-i" => nocase = true,
            "-m" => {
                method = Some(words.get(i + 1).cloned().ok_or("-m needs a method")?);
                i += 1;
            }
            "--" => return Ok((nocase, method, i + 1)),
            "-f" | "-M" | "-n" | "-u" => return Err(format!("ACL flag {w} (pattern files, maps)")),
            _ => break,
        }
        i += 1;
    }
    Ok((nocase, method, i))
}

/// Parses `CRITERION [flags] VALUE...` (the words after `acl NAME`, or inside braces).
pub fn parse(words: &[String], line: usize) -> Result<Acl, String> {
    let fetch = words.first().ok_or("an ACL needs a criterion")?;
    let (case_insensitive, method, used) = parse_flags(&words[1..])?;
    let values: Vec<String> = words[1 + used..].to_vec();
    let criterion = criterion(&fetch.to_ascii_lowercase(), method.as_deref());
    if values.is_empty() && criterion != Criterion::SslFc {
        return Err(format!("ACL {fetch} has no value to match"));
    }
    Ok(Acl {
        criterion,
        values,
        case_insensitive,
        line,
        text: String::new(),
    })
}

fn criterion(fetch: &str, method: Option<&str>) -> Criterion {
    // Converters (`,lower`) change nothing a route's case-insensitive host test needs.
    let fetch = match fetch.rfind(')') {
        Some(i) => &fetch[..=i],
        None => fetch.split(',').next().unwrap_or(fetch),
    };
    let header = |f: &str| -> Option<String> {
        let inner = f.split_once('(')?.1.strip_suffix(')')?;
        Some(
            inner
                .split(',')
                .next()
                .unwrap_or(inner)
                .to_ascii_lowercase(),
        )
    };
    let (base, arg) = match fetch.split_once('(') {
        Some((b, _)) => (b.trim_start_matches("req."), header(fetch)),
        None => (fetch, None),
    };
    let host = arg.as_deref() == Some("host");
    match (base, method) {
        ("hdr", Some("beg")) | ("hdr_beg", None) if host => Criterion::HostPrefix,
        ("hdr", Some("end")) | ("hdr_end", None) if host => Criterion::HostSuffix,
        ("hdr", Some("dom")) | ("hdr_dom", None) if host => Criterion::HostDomain,
        ("hdr", None | Some("str")) if host => Criterion::HostExact,
        ("hdr", None | Some("str")) => header_test(arg, false, fetch),
        ("hdr_reg", None) | ("hdr", Some("reg")) if !host => header_test(arg, true, fetch),
        ("path", None | Some("str")) => Criterion::Path(PathTest::Exact),
        ("path_beg", None) | ("path", Some("beg")) => Criterion::Path(PathTest::Prefix),
        ("path_end", None) | ("path", Some("end")) => Criterion::Path(PathTest::Suffix),
        ("path_reg", None) | ("path", Some("reg")) => Criterion::Path(PathTest::Regex),
        ("method", None) => Criterion::Method,
        ("ssl_fc", None) => Criterion::SslFc,
        ("src", None) => Criterion::Src,
        _ => Criterion::Other(fetch.to_string()),
    }
}

fn header_test(name: Option<String>, regex: bool, fetch: &str) -> Criterion {
    match name {
        Some(name) if !name.is_empty() => Criterion::Header { name, regex },
        _ => Criterion::Other(fetch.to_string()),
    }
}

/// Parses the words after `if`/`unless`, resolving named ACLs in `acls` (an ACL defined
/// on several lines matches if any of them does, so its definitions are ORed).
pub fn condition(
    words: &[String],
    acls: &BTreeMap<String, Vec<Acl>>,
    line: usize,
) -> Result<Condition, String> {
    let mut out: Condition = vec![Vec::new()];
    let mut i = 0;
    while let Some(w) = words.get(i) {
        i += 1;
        if w == "||" || w.eq_ignore_ascii_case("or") {
            out.push(Vec::new());
            continue;
        }
        let (negated, name) = match w.strip_prefix('!') {
            Some("") => {
                let next = words.get(i).ok_or("! at the end of the condition")?;
                i += 1;
                (true, next.as_str())
            }
            Some(rest) => (true, rest),
            None => (false, w.as_str()),
        };
        let terms = if name == "{" {
            let close = words[i..]
                .iter()
                .position(|w| w == "}")
                .ok_or("anonymous ACL without its closing }")?;
            let acl = parse(&words[i..i + close], line)?;
            let label = format!("{{ {} }}", words[i..i + close].join(" "));
            i += close + 1;
            vec![Term {
                negated,
                acl,
                label,
            }]
        } else {
            let defs = acls
                .get(name)
                .ok_or_else(|| format!("ACL {name:?} is not defined"))?;
            if defs.len() > 1 {
                return Err(format!(
                    "ACL {name:?} is defined on several lines; routes cannot OR them inside a condition"
                ));
            }
            vec![Term {
                negated,
                acl: defs[0].clone(),
                label: name.to_string(),
            }]
        };
        if let Some(group) = out.last_mut() {
            group.extend(terms);
        }
    }
    if out.iter().any(Vec::is_empty) {
        return Err("empty condition (or a stray ||)".into());
    }
    Ok(out)
}

/// ACLs by name, each with its definitions in order.
pub type Named = BTreeMap<String, Vec<Acl>>;

/// Named ACLs of a proxy (`acl NAME ...`), each name with its definitions in order.
pub fn named(lines: &[&Line]) -> (Named, Vec<(usize, String)>) {
    let mut acls: BTreeMap<String, Vec<Acl>> = BTreeMap::new();
    let mut errors = Vec::new();
    for line in lines.iter().filter(|l| l.words[0] == "acl") {
        let Some(name) = line.word(1) else {
            errors.push((line.number, "acl needs a name".to_string()));
            continue;
        };
        match parse(&line.words[2..], line.number) {
            Ok(acl) => {
                let acl = Acl {
                    text: line.text(),
                    ..acl
                };
                acls.entry(name.to_string()).or_default().push(acl)
            }
            Err(e) => errors.push((line.number, e)),
        }
    }
    (acls, errors)
}

/// What a route takes: hosts (any if empty) and matches (every request if empty).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selector {
    pub hostnames: Vec<String>,
    pub matches: Vec<RouteMatch>,
    /// How the route differs from the condition, if it does.
    pub approximations: Vec<String>,
}

/// A condition decided for one listener: `None` when it never holds there, else the
/// selectors of its `||` groups (one route each).
pub fn resolve(cond: &Condition, negate: bool, tls: bool) -> Result<Option<Vec<Selector>>, String> {
    if negate {
        return resolve_negated(cond, tls);
    }
    let mut out = Vec::new();
    for group in cond {
        if let Some(selector) = conjunction(group, tls)? {
            out.push(selector);
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// `unless`: only a condition of `ssl_fc` alone can be turned around.
fn resolve_negated(cond: &Condition, tls: bool) -> Result<Option<Vec<Selector>>, String> {
    let all_static = cond
        .iter()
        .flatten()
        .all(|t| t.acl.criterion == Criterion::SslFc);
    if !all_static {
        return Err(
            "\"unless\" negates a match, and a route cannot match the opposite of one".into(),
        );
    }
    let holds = cond.iter().any(|g| g.iter().all(|t| t.negated != tls));
    Ok((!holds).then(|| vec![Selector::default()]))
}

/// One AND group as one selector, or `None` if `ssl_fc` rules it out on this listener.
fn conjunction(group: &[Term], tls: bool) -> Result<Option<Selector>, String> {
    let mut selector = Selector::default();
    let mut hosts: Option<Vec<String>> = None;
    // Each non-host term gives alternatives; the route's matches are their product.
    let mut alternatives: Vec<Vec<RouteMatch>> = Vec::new();
    for term in group {
        if term.acl.criterion == Criterion::SslFc {
            if term.negated == tls {
                return Ok(None);
            }
            continue;
        }
        if term.negated {
            return Err(format!(
                "!{}: a route cannot match the opposite of a test",
                term.label
            ));
        }
        if term.acl.criterion == Criterion::HostPrefix {
            selector.approximations.push(format!(
                "{}: hdr_beg(host) is matched as a regular expression on the Host header",
                term.label
            ));
        }
        match host_names(&term.acl, &mut selector.approximations) {
            Some(names) => {
                if hosts.replace(names?).is_some() {
                    return Err(format!("{}: two host tests in one condition", term.label));
                }
            }
            None => alternatives.push(matches(term)?),
        }
    }
    selector.hostnames = hosts.unwrap_or_default();
    selector.matches = product(&alternatives)?;
    Ok(Some(selector))
}

/// `Some` for host criteria: the hostnames a route takes (Gateway API style names).
fn host_names(acl: &Acl, approx: &mut Vec<String>) -> Option<Result<Vec<String>, String>> {
    let mut names = Vec::new();
    for v in &acl.values {
        let v = v.to_ascii_lowercase();
        match &acl.criterion {
            Criterion::HostExact => names.push(v),
            Criterion::HostDomain => names.extend([v.clone(), format!("*.{v}")]),
            Criterion::HostSuffix => match v.strip_prefix('.') {
                Some(domain) => names.push(format!("*.{domain}")),
                None => {
                    approx.push(format!(
                        "hdr_end(host) {v} also took names merely ending in it; the route takes {v} and *.{v}"
                    ));
                    names.extend([v.clone(), format!("*.{v}")]);
                }
            },
            Criterion::HostPrefix => return None,
            _ => return None,
        }
    }
    Some(Ok(names))
}

/// The route matches one (non-host) term allows: one per value.
fn matches(term: &Term) -> Result<Vec<RouteMatch>, String> {
    let acl = &term.acl;
    let nocase = if acl.case_insensitive { "(?i)" } else { "" };
    let path = |kind, value: String| RouteMatch {
        path: Some(PathMatch {
            kind: Some(kind),
            value,
        }),
        ..RouteMatch::default()
    };
    let header = |name: &str, kind, value: String| RouteMatch {
        headers: vec![ValueMatch {
            kind: Some(kind),
            name: name.to_string(),
            value,
        }],
        ..RouteMatch::default()
    };
    use PathMatchType::{Exact, RegularExpression as Re};
    let mut out = Vec::new();
    for v in &acl.values {
        let quoted = regex::escape(v);
        out.push(match &acl.criterion {
            Criterion::Path(PathTest::Exact) if nocase.is_empty() => path(Exact, v.clone()),
            Criterion::Path(PathTest::Exact) => path(Re, format!("{nocase}{quoted}")),
            // Whole-path regexes keep HAProxy's byte-wise prefix and suffix meaning.
            Criterion::Path(PathTest::Prefix) => path(Re, format!("{nocase}{quoted}.*")),
            Criterion::Path(PathTest::Suffix) => path(Re, format!("{nocase}.*{quoted}")),
            Criterion::Path(PathTest::Regex) => path(Re, format!("{nocase}.*(?:{v}).*")),
            Criterion::Method => RouteMatch {
                method: Some(v.to_ascii_uppercase()),
                ..RouteMatch::default()
            },
            Criterion::Header { name, regex: false } if nocase.is_empty() => {
                header(name, ValueMatchType::Exact, v.clone())
            }
            Criterion::Header { name, regex: false } => header(
                name,
                ValueMatchType::RegularExpression,
                format!("{nocase}{quoted}"),
            ),
            Criterion::Header { name, regex: true } => header(
                name,
                ValueMatchType::RegularExpression,
                format!("{nocase}.*(?:{v}).*"),
            ),
            Criterion::HostPrefix => header(
                "host",
                ValueMatchType::RegularExpression,
                format!("(?i){quoted}.*"),
            ),
            Criterion::Src => {
                return Err(format!(
                    "{}: routes cannot match the client address (src)",
                    term.label
                ));
            }
            other => return Err(format!("{}: {other:?} has no route equivalent", term.label)),
        });
    }
    Ok(out)
}

/// Every combination of one alternative per term, merged into one match (AND).
fn product(alternatives: &[Vec<RouteMatch>]) -> Result<Vec<RouteMatch>, String> {
    let mut out: Vec<RouteMatch> = Vec::new();
    for alts in alternatives {
        if out.is_empty() {
            out = alts.clone();
            continue;
        }
        let mut next = Vec::new();
        for base in &out {
            for alt in alts {
                next.push(merge(base, alt)?);
            }
        }
        out = next;
    }
    if out.len() > 16 {
        return Err(format!(
            "{} combinations; a route holds at most 16 matches",
            out.len()
        ));
    }
    Ok(out)
}

fn merge(a: &RouteMatch, b: &RouteMatch) -> Result<RouteMatch, String> {
    if a.path.is_some() && b.path.is_some() {
        return Err("two path tests in one condition".into());
    }
    if a.method.is_some() && b.method.is_some() {
        return Err("two method tests in one condition".into());
    }
    let mut m = a.clone();
    m.path = a.path.clone().or_else(|| b.path.clone());
    m.method = a.method.clone().or_else(|| b.method.clone());
    m.headers.extend(b.headers.iter().cloned());
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn acls(defs: &[&str]) -> BTreeMap<String, Vec<Acl>> {
        let mut out: BTreeMap<String, Vec<Acl>> = BTreeMap::new();
        for d in defs {
            let words = w(d);
            let acl = parse(&words[1..], 1).expect("acl parses");
            out.entry(words[0].clone()).or_default().push(acl);
        }
        out
    }

    fn path_of(m: &RouteMatch) -> String {
        m.path.as_ref().map(|p| p.value.clone()).unwrap_or_default()
    }

    #[test]
    fn criteria_are_typed_from_fetch_and_method() {
        let cases: &[(&str, Criterion)] = &[
            ("hdr(host) -i a", Criterion::HostExact),
            ("hdr(Host) -m beg a", Criterion::HostPrefix),
            ("req.hdr(host),lower a", Criterion::HostExact),
            ("hdr_end(host) a", Criterion::HostSuffix),
            ("hdr_dom(host) a", Criterion::HostDomain),
            ("path_beg /a", Criterion::Path(PathTest::Prefix)),
            ("path -m end .a", Criterion::Path(PathTest::Suffix)),
            ("path_reg ^/a", Criterion::Path(PathTest::Regex)),
            ("method GET", Criterion::Method),
            ("ssl_fc", Criterion::SslFc),
            ("src 10.0.0.0/8", Criterion::Src),
            (
                "hdr(x-env) prod",
                Criterion::Header {
                    name: "x-env".into(),
                    regex: false,
                },
            ),
            ("url_param(x) 1", Criterion::Other("url_param(x)".into())),
        ];
        for (text, want) in cases {
            let acl = parse(&w(text), 1).expect(text);
            assert_eq!(&acl.criterion, want, "{text}");
        }
        assert!(parse(&w("path_beg"), 1).is_err());
        assert!(parse(&w("path_beg -f /etc/paths"), 1).is_err());
    }

    #[test]
    fn conditions_become_hostnames_and_matches() {
        let named = acls(&[
            "shop hdr(host) -i shop.example.com",
            "dom hdr_dom(host) -i example.org",
            "api path_beg /api /v1",
            "img path_end .png",
            "post method POST",
            "tls ssl_fc",
            "office src 10.0.0.0/8",
        ]);
        let sel = |text: &str, tls: bool| {
            resolve(&condition(&w(text), &named, 1).expect(text), false, tls)
        };

        let r = sel("shop api", false).expect("ok").expect("holds");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].hostnames, ["shop.example.com"]);
        let paths: Vec<String> = r[0].matches.iter().map(path_of).collect();
        assert_eq!(paths, ["/api.*", "/v1.*"]);

        let r = sel("api post", false).expect("ok").expect("holds");
        assert_eq!(r[0].matches.len(), 2);
        assert!(
            r[0].matches
                .iter()
                .all(|m| m.method.as_deref() == Some("POST"))
        );

        let r = sel("shop || dom", false).expect("ok").expect("holds");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].hostnames, ["example.org", "*.example.org"]);

        let r = sel("img { hdr(host) www.example.com }", false)
            .expect("ok")
            .expect("holds");
        assert_eq!(path_of(&r[0].matches[0]), r".*\.png");
        assert_eq!(r[0].hostnames, ["www.example.com"]);

        assert_eq!(sel("tls shop", false), Ok(None));
        assert!(sel("!tls shop", false).expect("ok").is_some());
        assert_eq!(
            sel("!tls || shop", true).expect("ok").expect("holds")[0].hostnames,
            ["shop.example.com"]
        );

        for bad in ["!shop", "office", "api img", "shop dom", "nope"] {
            let parsed = condition(&w(bad), &named, 1);
            let resolved = parsed.and_then(|c| resolve(&c, false, false));
            assert!(resolved.is_err(), "{bad}: {resolved:?}");
        }
    }

    #[test]
    fn unless_is_only_possible_on_ssl_fc() {
        let named = acls(&["tls ssl_fc", "api path_beg /api"]);
        let cond = |t: &str| condition(&w(t), &named, 1).expect(t);
        assert_eq!(
            resolve(&cond("{ ssl_fc }"), true, false),
            Ok(Some(vec![Selector::default()]))
        );
        assert_eq!(resolve(&cond("tls"), true, true), Ok(None));
        assert!(resolve(&cond("api"), true, false).is_err());
    }
}
