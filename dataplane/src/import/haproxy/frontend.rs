//! A frontend's directives (bind, mode, maxconn, routing rules, header rules, logging,
//! client-side timeouts) read into a typed form that listeners are built from.

use std::collections::BTreeMap;

use halo_crds::load_balancer::{HeaderModifier, HeaderValue, RequestRedirect, TlsVersion};

use super::acl::{self, Acl, Condition};
use super::backend::{SideTimeouts, Timed, last, option, timeout};
use super::lex::Line;
use super::notes::Notes;
use super::values::{BindAddr, bind_addr, ciphers};

/// TLS settings of a `bind ... ssl` (or `ssl-default-bind-*` in `global`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindTls {
    pub crt: Vec<String>,
    pub alpn: Vec<String>,
    pub min_version: Option<TlsVersion>,
    pub cipher_suites: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Bind {
    pub line: usize,
    pub text: String,
    pub addrs: Vec<BindAddr>,
    pub tls: Option<BindTls>,
    pub accept_proxy: bool,
}

#[derive(Debug, Clone)]
pub enum Action {
    Backend(String),
    Redirect(RequestRedirect),
}

/// A routing decision in HAProxy's order, with its condition (`unless` negates it).
#[derive(Debug, Clone)]
pub struct Rule {
    pub line: usize,
    pub text: String,
    pub action: Action,
    pub cond: Option<(Condition, bool)>,
}

#[derive(Debug, Clone, Default)]
pub struct Frontend {
    pub http: bool,
    pub mode_line: Option<(usize, String)>,
    pub binds: Vec<Bind>,
    pub default_backend: Option<(String, usize, String)>,
    pub rules: Vec<Rule>,
    pub request_headers: HeaderModifier,
    pub response_headers: HeaderModifier,
    /// The lines that set header rules, noted when the filter lands on a listener.
    pub header_lines: Vec<(usize, String)>,
    pub max_connections: Option<(u32, usize, String)>,
    pub forwardfor: Option<(usize, String)>,
    pub log: Option<(usize, String)>,
    pub client: Option<Timed>,
    pub http_request: Option<Timed>,
    pub idle: Option<Timed>,
    /// Backend-side timeouts as the frontend sees them (its defaults): the listener's
    /// when it has no default backend.
    pub side: SideTimeouts,
}

/// Reads a frontend (or the frontend half of a listen) from its effective lines.
pub fn read(lines: &[&Line], global_tls: &BindTls, notes: &mut Notes) -> Frontend {
    let mut fe = Frontend {
        http: last(lines, &["mode"]).and_then(|l| l.word(1)) == Some("http"),
        mode_line: last(lines, &["mode"]).map(|l| (l.number, l.text())),
        ..Frontend::default()
    };
    let (acls, errors) = acl::named(lines);
    for (n, e) in errors {
        notes.unsupported(n, "acl", e);
    }
    for l in lines {
        let (n, text) = (l.number, l.text());
        match l.word(0).unwrap_or("") {
            "bind" => match bind(l, global_tls) {
                Ok(b) => fe.binds.push(b),
                Err(e) => notes.unsupported(n, &text, e),
            },
            "default_backend" => {
                fe.default_backend = l.word(1).map(|b| (b.to_string(), n, text.clone()))
            }
            "use_backend" => push_rule(
                &mut fe,
                l,
                2,
                Action::Backend(l.words.get(1).cloned().unwrap_or_default()),
                &acls,
                notes,
            ),
            "redirect" => redirect(&mut fe, l, 1, &acls, notes),
            "http-request" => http_request(&mut fe, l, &acls, notes),
            "http-response" => {
                header_rule(&mut fe.response_headers, &mut fe.header_lines, l, notes)
            }
            _ => {}
        }
    }
    if let Some(l) = last(lines, &["maxconn"]) {
        match l
            .word(1)
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|m| *m > 0)
        {
            Some(m) => fe.max_connections = Some((m, l.number, l.text())),
            None => notes.unsupported(l.number, &l.text(), "maxconn needs a positive number"),
        }
    }
    fe.forwardfor = option(lines, "forwardfor")
        .filter(|(_, on)| *on)
        .map(|(l, _)| (l.number, l.text()));
    fe.log = ["httplog", "tcplog"]
        .iter()
        .filter_map(|o| option(lines, o))
        .filter(|(_, on)| *on)
        .map(|(l, _)| (l.number, l.text()))
        .next();
    fe.client = timeout(lines, "client", notes);
    fe.side = SideTimeouts {
        connect: timeout(lines, "connect", notes),
        server: timeout(lines, "server", notes),
        queue: timeout(lines, "queue", notes),
        tunnel: timeout(lines, "tunnel", notes),
    };
    fe.http_request = timeout(lines, "http-request", notes);
    fe.idle = timeout(lines, "http-keep-alive", notes);
    fe
}

/// `bind ADDR[,ADDR...] [options]`.
fn bind(l: &Line, global_tls: &BindTls) -> Result<Bind, String> {
    let list = l.word(1).ok_or("bind needs an address")?;
    let addrs = list
        .split(',')
        .map(bind_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let mut b = Bind {
        line: l.number,
        text: l.text(),
        addrs,
        tls: None,
        accept_proxy: false,
    };
    let mut tls = global_tls.clone();
    let mut ssl = false;
    let mut words = l.words[2..].iter();
    while let Some(w) = words.next() {
        let mut value = || {
            words
                .next()
                .cloned()
                .ok_or(format!("bind option {w} needs a value"))
        };
        match w.as_str() {
            "ssl" => ssl = true,
            "crt" => tls.crt.push(value()?),
            "alpn" => tls.alpn = value()?.split(',').map(str::to_string).collect(),
            "ssl-min-ver" => tls.min_version = Some(version(&value()?)?),
            "ciphers" | "ciphersuites" => tls.cipher_suites.extend(ciphers(&value()?).0),
            "accept-proxy" => b.accept_proxy = true,
            "no-sslv3" | "no-tlsv10" | "no-tlsv11" | "v4v6" | "tfo" | "defer-accept" => {}
            "name" | "process" | "thread" | "maxconn" | "backlog" | "id" => {
                value()?;
            }
            other => return Err(format!("bind option {other}: no Halo equivalent")),
        }
    }
    if ssl {
        b.tls = Some(tls);
    }
    Ok(b)
}

fn version(text: &str) -> Result<TlsVersion, String> {
    match text {
        "TLSv1.2" => Ok(TlsVersion::Tls12),
        "TLSv1.3" => Ok(TlsVersion::Tls13),
        other => Err(format!("{other}: Halo speaks TLS 1.2 and 1.3 only")),
    }
}

/// The rule's condition from the words from `at` on (`if`/`unless` ...), if any.
fn cond_at(
    l: &Line,
    at: usize,
    acls: &BTreeMap<String, Vec<Acl>>,
) -> Result<Option<(Condition, bool)>, String> {
    let negate = match l.word(at) {
        None => return Ok(None),
        Some("if") => false,
        Some("unless") => true,
        Some(other) => return Err(format!("expected if or unless, found {other:?}")),
    };
    Ok(Some((
        acl::condition(&l.words[at + 1..], acls, l.number)?,
        negate,
    )))
}

fn push_rule(
    fe: &mut Frontend,
    l: &Line,
    at: usize,
    action: Action,
    acls: &BTreeMap<String, Vec<Acl>>,
    notes: &mut Notes,
) {
    match cond_at(l, at, acls) {
        Ok(cond) => fe.rules.push(Rule {
            line: l.number,
            text: l.text(),
            action,
            cond,
        }),
        Err(e) => notes.unsupported(l.number, &l.text(), e),
    }
}

/// `redirect scheme|location|prefix X [code N] [if ...]` from word `at` on.
fn redirect(
    fe: &mut Frontend,
    l: &Line,
    at: usize,
    acls: &BTreeMap<String, Vec<Acl>>,
    notes: &mut Notes,
) {
    let (kind, target) = (l.word(at).unwrap_or(""), l.word(at + 1).unwrap_or(""));
    let mut r = RequestRedirect::default();
    match kind {
        "scheme" if matches!(target, "http" | "https") => r.scheme = Some(target.to_string()),
        _ => {
            notes.unsupported(l.number, &l.text(), format!("redirect {kind}: Halo's route redirect changes scheme, host, port or path; write it as a RequestRedirect filter"));
            return;
        }
    }
    let mut next = at + 2;
    while let Some(w) = l.word(next) {
        match w {
            "code" => {
                r.status_code = l.word(next + 1).and_then(|c| c.parse().ok());
                next += 2;
            }
            "drop-query" | "append-slash" | "set-cookie" | "clear-cookie" => {
                notes.unsupported(l.number, &l.text(), format!("redirect option {w}"));
                return;
            }
            _ => break,
        }
    }
    push_rule(fe, l, next, Action::Redirect(r), acls, notes);
}

fn http_request(fe: &mut Frontend, l: &Line, acls: &BTreeMap<String, Vec<Acl>>, notes: &mut Notes) {
    match l.word(1) {
        Some("redirect") => redirect(fe, l, 2, acls, notes),
        Some("set-header" | "add-header" | "del-header") => {
            header_rule(&mut fe.request_headers, &mut fe.header_lines, l, notes)
        }
        _ => notes.unsupported(
            l.number,
            &l.text(),
            "no Halo equivalent for this http-request action",
        ),
    }
}

/// An unconditional `set-header`/`add-header`/`del-header` with a literal value.
fn header_rule(
    m: &mut HeaderModifier,
    lines: &mut Vec<(usize, String)>,
    l: &Line,
    notes: &mut Notes,
) {
    let (n, text) = (l.number, l.text());
    let (action, name) = (l.word(1).unwrap_or(""), l.word(2).unwrap_or(""));
    let value_at = if action == "del-header" { 3 } else { 4 };
    if l.words.len() > value_at {
        notes.unsupported(
            n,
            &text,
            "conditional header rules: Halo's header filters apply to every request of the route",
        );
        return;
    }
    let value = l.word(3).unwrap_or("").to_string();
    if name.is_empty() || value.contains("%[") || value.contains('%') {
        notes.unsupported(
            n,
            &text,
            "Halo sets literal header values, not log-format expressions",
        );
        return;
    }
    let pair = HeaderValue {
        name: name.to_string(),
        value,
    };
    match action {
        "set-header" => m.set.push(pair),
        "add-header" => m.add.push(pair),
        "del-header" => m.remove.push(name.to_string()),
        _ => {
            notes.unsupported(n, &text, "no Halo equivalent for this http-response action");
            return;
        }
    }
    lines.push((n, text));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::haproxy::lex::lex;

    fn read_text(text: &str) -> (Frontend, Notes) {
        let lines = lex(text, &|_| None).expect("lexes");
        let refs: Vec<&Line> = lines.iter().collect();
        let mut notes = Notes::default();
        (read(&refs, &BindTls::default(), &mut notes), notes)
    }

    #[test]
    fn binds_rules_and_headers_are_read_in_order() {
        let (fe, notes) = read_text(
            "mode http\nbind 10.0.0.1:443,10.0.0.1:8443 ssl crt /c.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3\n\
             bind :80\nacl api path_beg /api\n\
             http-request redirect scheme https code 301 unless { ssl_fc }\n\
             use_backend be_api if api\ndefault_backend be_web\n\
             http-request set-header X-Via halo\nhttp-request del-header X-Debug\n\
             http-request set-header X-Client %[src]\nmaxconn 500\noption forwardfor\n\
             bind unix@/run/a.sock\n",
        );
        assert!(fe.http);
        assert_eq!(fe.binds.len(), 2);
        assert_eq!(fe.binds[0].addrs.len(), 2);
        let tls = fe.binds[0].tls.as_ref().expect("tls");
        assert_eq!(tls.crt, ["/c.pem"]);
        assert_eq!(tls.alpn, ["h2", "http/1.1"]);
        assert_eq!(tls.min_version, Some(TlsVersion::Tls13));
        assert!(fe.binds[1].tls.is_none() && fe.binds[1].addrs[0].ip.is_none());
        assert_eq!(fe.rules.len(), 2);
        assert!(matches!(&fe.rules[0].action, Action::Redirect(r) if r.status_code == Some(301)));
        assert!(matches!(&fe.rules[1].action, Action::Backend(b) if b == "be_api"));
        assert_eq!(
            fe.default_backend.as_ref().map(|d| d.0.as_str()),
            Some("be_web")
        );
        assert_eq!(fe.request_headers.set.len(), 1);
        assert_eq!(fe.request_headers.remove, ["X-Debug"]);
        assert_eq!(fe.max_connections.as_ref().map(|m| m.0), Some(500));
        assert!(fe.forwardfor.is_some());
        // The expression header and the unix socket are left out, and say so.
        assert!(notes.seen(10) && notes.seen(13) && !notes.seen(2));
    }
}
