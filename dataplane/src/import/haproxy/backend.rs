//! A backend's directives (balance, cookie, checks, servers, retries, backend-side
//! timeouts) as a Halo `Upstream`, noting what each line became.

use halo_crds::load_balancer::{
    Algorithm, Backend, BackendTls, CookiePersistence, HealthCheck, HealthCheckType,
    PersistenceType, ProxyProtocolVersion, SessionPersistence, Upstream,
};

use super::lex::Line;
use super::notes::Notes;
use super::values::{duration, server_addr};

/// The last line starting with these words (the one HAProxy applies).
pub fn last<'a>(lines: &[&'a Line], words: &[&str]) -> Option<&'a Line> {
    lines.iter().rev().copied().find(|l| starts(l, words))
}

pub fn starts(line: &Line, words: &[&str]) -> bool {
    line.words.len() >= words.len() && line.words.iter().zip(words).all(|(a, b)| a == b)
}

/// `option NAME` / `no option NAME`: the last one, and whether it enables.
pub fn option<'a>(lines: &[&'a Line], name: &str) -> Option<(&'a Line, bool)> {
    lines.iter().rev().copied().find_map(|l| {
        if starts(l, &["option", name]) {
            Some((l, true))
        } else if starts(l, &["no", "option", name]) {
            Some((l, false))
        } else {
            None
        }
    })
}

/// A backend-side timeout and the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    pub value: String,
    pub line: usize,
    pub text: String,
}

/// `timeout NAME VALUE` as a Halo duration (a malformed one is noted and dropped).
pub fn timeout(lines: &[&Line], name: &str, notes: &mut Notes) -> Option<Timed> {
    let line = last(lines, &["timeout", name])?;
    match line.word(2).map(duration) {
        Some(Ok(value)) => Some(Timed {
            value,
            line: line.number,
            text: line.text(),
        }),
        Some(Err(e)) => {
            notes.unsupported(line.number, &line.text(), e);
            None
        }
        None => {
            notes.unsupported(line.number, &line.text(), "no value");
            None
        }
    }
}

/// Backend timeouts that Halo sets per listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideTimeouts {
    pub connect: Option<Timed>,
    pub server: Option<Timed>,
    pub queue: Option<Timed>,
    pub tunnel: Option<Timed>,
}

#[derive(Debug, Clone, Default)]
pub struct Mapped {
    pub upstream: Upstream,
    pub timeouts: SideTimeouts,
}

/// Maps one backend (its effective lines, defaults first) with fields under `at`.
pub fn map(lines: &[&Line], at: &str, notes: &mut Notes) -> Mapped {
    let mut up = Upstream {
        algorithm: balance(lines, at, notes),
        ..Upstream::default()
    };
    up.session_persistence = cookie(lines, at, notes);
    if let Some(l) = last(lines, &["mode"]) {
        // A backend speaks its frontend's protocol, which the listener already has.
        notes.mapped(l.number, &l.text(), at.to_string());
    }
    if let Some(l) = last(lines, &["retries"]) {
        match l.word(1).and_then(|v| v.parse::<u32>().ok()) {
            Some(n) if n <= 16 => {
                up.retries = Some(n);
                notes.mapped(l.number, &l.text(), format!("{at}.retries"));
            }
            _ => notes.unsupported(l.number, &l.text(), "Halo retries 0 to 16 times"),
        }
    }
    if let Some((l, on)) = option(lines, "redispatch") {
        let field = format!("{at}.retries");
        match on {
            true => notes.mapped(l.number, &l.text(), field),
            false => notes.approximated(l.number, &l.text(), field, "Halo always retries a failed connect on another backend and re-pins a client whose backend is down"),
        }
    }
    for name in ["http-server-close", "httpclose"] {
        if let Some((l, _)) = option(lines, name) {
            notes.approximated(
                l.number,
                &l.text(),
                format!("{at}.backends"),
                "Halo keeps backend connections open and reuses them",
            );
        }
    }
    servers(lines, at, &mut up, notes);
    up.health_check = health_check(lines, at, &up, notes);
    let timeouts = SideTimeouts {
        connect: timeout(lines, "connect", notes),
        server: timeout(lines, "server", notes),
        queue: timeout(lines, "queue", notes),
        tunnel: timeout(lines, "tunnel", notes),
    };
    Mapped {
        upstream: up,
        timeouts,
    }
}

fn balance(lines: &[&Line], at: &str, notes: &mut Notes) -> Algorithm {
    let Some(l) = last(lines, &["balance"]) else {
        return Algorithm::RoundRobin;
    };
    let field = format!("{at}.algorithm");
    let (text, n) = (l.text(), l.number);
    match l.word(1).unwrap_or("") {
        "roundrobin" => notes.mapped(n, &text, field),
        "static-rr" => notes.approximated(n, &text, field, "round robin whose weights also ramp during slowStart"),
        "leastconn" => {
            notes.mapped(n, &text, field);
            return Algorithm::LeastConnections;
        }
        "source" => {
            notes.mapped(n, &text, field);
            return Algorithm::SourceHash;
        }
        "random" | "random(2)" => {
            notes.mapped(n, &text, field);
            return Algorithm::Random2;
        }
        r if r.starts_with("random(") => {
            notes.approximated(n, &text, field, "Halo draws two backends (random(2))");
            return Algorithm::Random2;
        }
        other => notes.unsupported(n, &text, format!("balance {other}: Halo balances by round robin, leastconn, source or random; sessionPersistence keeps a client on its backend")),
    }
    Algorithm::RoundRobin
}

fn cookie(lines: &[&Line], at: &str, notes: &mut Notes) -> Option<SessionPersistence> {
    let l = last(lines, &["cookie"])?;
    let (text, n) = (l.text(), l.number);
    let field = format!("{at}.sessionPersistence.cookie");
    let Some(name) = l.word(1) else {
        notes.unsupported(n, &text, "cookie needs a name");
        return None;
    };
    let mut c = CookiePersistence {
        name: Some(name.to_string()),
        indirect: Some(false),
        nocache: Some(false),
        max_age: None,
    };
    let mut mode = None;
    let mut words = l.words[2..].iter();
    while let Some(w) = words.next() {
        match w.as_str() {
            "insert" => mode = Some("insert"),
            m @ ("rewrite" | "prefix") => {
                mode = Some("insert");
                notes.approximated(
                    n,
                    &text,
                    field.clone(),
                    format!(
                        "{m}: Halo inserts its own cookie instead of changing the application's"
                    ),
                );
            }
            "indirect" => c.indirect = Some(true),
            "nocache" => c.nocache = Some(true),
            "httponly" => {}
            "preserve" | "secure" | "postonly" | "dynamic" => {
                notes.approximated(
                    n,
                    &text,
                    field.clone(),
                    format!(
                        "{w} is not available; Halo sets an HttpOnly session cookie for the path /"
                    ),
                );
            }
            "domain" | "maxidle" | "maxlife" | "attr" => {
                let value = words.next().cloned().unwrap_or_default();
                notes.approximated(
                    n,
                    &text,
                    field.clone(),
                    format!(
                        "{w} {value} is not available (maxAge sets a client-side lifetime instead)"
                    ),
                );
            }
            other => notes.unsupported(n, &text, format!("cookie option {other}")),
        }
    }
    if mode.is_none() {
        notes.unsupported(
            n,
            &text,
            "without insert HAProxy only reads the application's cookie; Halo inserts its own",
        );
        return None;
    }
    notes.mapped(n, &text, field);
    Some(SessionPersistence {
        kind: PersistenceType::Cookie,
        cookie: Some(c),
    })
}

/// The health check: its kind from `option httpchk`/`tcp-check`/... (the last wins),
/// its timing from the first checked server; none when no server has `check`.
fn health_check(
    lines: &[&Line],
    at: &str,
    up: &Upstream,
    notes: &mut Notes,
) -> Option<HealthCheck> {
    let kinds = [
        "httpchk",
        "tcp-check",
        "mysql-check",
        "pgsql-check",
        "redis-check",
        "smtpchk",
        "ldap-check",
        "ssl-hello-chk",
    ];
    let chosen = lines
        .iter()
        .rev()
        .find(|l| l.word(0) == Some("option") && l.word(1).is_some_and(|k| kinds.contains(&k)));
    let field = format!("{at}.healthCheck");
    let Some(mut hc) = up.health_check.clone() else {
        if let Some(l) = chosen {
            let why = "none: no server has check, so HAProxy does not check either";
            notes.mapped(l.number, &l.text(), format!("{field} ({why})"));
        }
        return None;
    };
    if let Some(l) = chosen {
        let (text, n) = (l.text(), l.number);
        match l.word(1) {
            Some("httpchk") => {
                hc.kind = HealthCheckType::Http;
                let (method, uri) = match (l.word(2), l.word(3)) {
                    (Some(m), Some(u)) => (m, Some(u)),
                    (Some(u), None) if u.starts_with('/') => ("OPTIONS", Some(u)),
                    (Some(m), None) => (m, None),
                    _ => ("OPTIONS", None),
                };
                hc.path = uri.map(|u| u.to_string()).filter(|u| u.starts_with('/'));
                if method.eq_ignore_ascii_case("GET") {
                    notes.mapped(n, &text, format!("{field}.path"));
                } else {
                    notes.approximated(n, &text, format!("{field}.path"), format!("Halo checks with GET, not {method}"));
                }
            }
            Some(kind) => notes.approximated(n, &text, format!("{field}.type"), format!("{kind}: Halo only opens a TCP connection; a server that accepts it but fails the protocol exchange counts as up")),
            None => {}
        }
    }
    http_check_lines(lines, &field, &mut hc, notes);
    match timeout(lines, "check", notes) {
        Some(t) => {
            hc.timeout = Some(t.value);
            notes.mapped(t.line, &t.text, format!("{field}.timeout"));
        }
        // Without `timeout check` HAProxy gives a check until the next one is due
        // (`inter`, 2 s by default) to connect and answer; Halo's own default is 1 s,
        // which would fail servers HAProxy keeps up.
        None => hc.timeout = Some(hc.interval.clone().unwrap_or_else(|| "2s".into())),
    }
    Some(hc)
}

fn http_check_lines(lines: &[&Line], field: &str, hc: &mut HealthCheck, notes: &mut Notes) {
    for l in lines.iter().filter(|l| l.word(0) == Some("http-check")) {
        let (text, n) = (l.text(), l.number);
        match (l.word(1), l.word(2), l.word(3)) {
            (Some("expect"), Some("status"), Some(code)) if hc.kind == HealthCheckType::Http => {
                match code.parse::<u16>() {
                    Ok(c) if (100..600).contains(&c) => {
                        hc.expect_status = Some(c);
                        notes.mapped(n, &text, format!("{field}.expectStatus"));
                    }
                    _ => {
                        notes.unsupported(n, &text, "Halo expects one status code (or any 2xx/3xx)")
                    }
                }
            }
            (Some("send"), _, _) if hc.kind == HealthCheckType::Http => {
                let uri = l.words.iter().skip_while(|w| *w != "uri").nth(1);
                if let Some(u) = uri.filter(|u| u.starts_with('/')) {
                    hc.path = Some(u.clone());
                }
                notes.approximated(
                    n,
                    &text,
                    format!("{field}.path"),
                    "Halo sends GET to the path; other methods, headers and bodies are not sent",
                );
            }
            _ => notes.unsupported(n, &text, "Halo's HTTP check tests one status on one path"),
        }
    }
}

/// Options of one `server` or `default-server` line, with the line they came from.
#[derive(Debug, Clone, Default)]
struct Opts {
    pairs: Vec<(String, Option<String>, usize, String)>,
}

const WITH_VALUE: &[&str] = &[
    "port",
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "weight",
    "maxconn",
    "maxqueue",
    "slowstart",
    "cookie",
    "verify",
    "ca-file",
    "sni",
    "addr",
    "resolvers",
    "init-addr",
    "on-marked-down",
    "on-marked-up",
    "on-error",
    "error-limit",
    "observe",
    "track",
    "id",
    "minconn",
    "alpn",
    "proto",
    "check-sni",
    "crt",
    "pool-max-conn",
    "pool-purge-delay",
    "ws",
    "redir",
    "source",
    "namespace",
    "agent-port",
    "agent-inter",
    "agent-send",
    "check-proto",
    "check-alpn",
    "resolve-prefer",
    "resolve-net",
    "max-reuse",
    "crl-file",
    "ciphers",
    "ciphersuites",
    "ssl-min-ver",
    "ssl-max-ver",
    "usesrc",
];

fn opts_of(l: &Line, from: usize, opts: &mut Opts) {
    let mut words = l.words[from..].iter();
    while let Some(w) = words.next() {
        let value = WITH_VALUE
            .contains(&w.as_str())
            .then(|| words.next().cloned())
            .flatten();
        opts.pairs.push((w.clone(), value, l.number, l.text()));
    }
}

fn servers(lines: &[&Line], at: &str, up: &mut Upstream, notes: &mut Notes) {
    let mut defaults = Opts::default();
    for l in lines.iter().filter(|l| l.word(0) == Some("default-server")) {
        opts_of(l, 1, &mut defaults);
    }
    let mut unchecked = Vec::new();
    for l in lines.iter().filter(|l| l.word(0) == Some("server")) {
        let (text, n) = (l.text(), l.number);
        let (Some(name), Some(addr)) = (l.word(1), l.word(2)) else {
            notes.unsupported(n, &text, "server needs a name and an address");
            continue;
        };
        let (ip, port) = match server_addr(addr) {
            Ok(a) => a,
            Err(e) => {
                notes.unsupported(
                    n,
                    &text,
                    format!("{e}; give Halo an IP:port or a Service backend"),
                );
                continue;
            }
        };
        let index = up.backends.len();
        let field = format!("{at}.backends[{index}]");
        notes.mapped(n, &text, field.clone());
        let mut opts = defaults.clone();
        opts_of(l, 3, &mut opts);
        let mut backend = Backend {
            name: Some(name.to_string()),
            address: Some(ip.to_string()),
            port: Some(port),
            service: None,
            weight: None,
            backup: false,
            max_connections: None,
        };
        let checked = server_options(&opts, at, &field, &mut backend, up, notes);
        up.backends.push(backend);
        if !checked {
            unchecked.push((n, text.clone()));
        }
        if checked && up.health_check.is_none() {
            up.health_check = Some(HealthCheck {
                kind: HealthCheckType::Tcp,
                path: None,
                expect_status: None,
                port: None,
                interval: None,
                down_interval: None,
                timeout: None,
                rise: None,
                fall: None,
            });
            check_timing(&opts, at, up, notes);
        } else if checked {
            same_timing(&opts, name, at, up, notes);
        }
    }
    if up.health_check.is_some() {
        for (n, text) in unchecked {
            let how = "Halo checks every backend of a group, this one too";
            notes.approximated(n, &text, format!("{at}.healthCheck"), how);
        }
    }
}

/// Applies one server's traffic options; returns whether it is health checked.
fn server_options(
    opts: &Opts,
    at: &str,
    field: &str,
    b: &mut Backend,
    up: &mut Upstream,
    notes: &mut Notes,
) -> bool {
    let mut checked = false;
    let number = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<u32>().ok());
    for (key, value, n, text) in &opts.pairs {
        let (n, text) = (*n, text.as_str());
        match key.as_str() {
            "check" => checked = true,
            "no-check" => checked = false,
            "port" | "inter" | "fastinter" | "downinter" | "rise" | "fall" => {}
            "weight" => match number(value).filter(|w| *w <= 256) {
                Some(w) => {
                    b.weight = Some(w);
                    notes.mapped(n, text, format!("{field}.weight"));
                }
                None => notes.unsupported(n, text, "weight is 0 to 256"),
            },
            "backup" => {
                b.backup = true;
                notes.mapped(n, text, format!("{field}.backup"));
            }
            "maxconn" => match number(value).filter(|m| *m > 0) {
                Some(m) => {
                    b.max_connections = Some(m);
                    notes.mapped(n, text, format!("{field}.maxConnections"));
                }
                None => notes.unsupported(n, text, "maxconn 0 means no limit in HAProxy; Halo leaves maxConnections unset"),
            },
            "maxqueue" => {
                up.max_queue = number(value);
                notes.approximated(n, text, format!("{at}.maxQueue"), "Halo queues per group, not per server");
            }
            "slowstart" => match value.as_deref().map(duration) {
                Some(Ok(d)) => {
                    up.slow_start = Some(d);
                    notes.mapped(n, text, format!("{at}.slowStart"));
                }
                _ => notes.unsupported(n, text, "slowstart needs a time"),
            },
            "cookie" => notes.approximated(n, text, format!("{at}.sessionPersistence"), "Halo chooses its own opaque cookie value per backend, so cookies clients hold from HAProxy are not recognised once"),
            "send-proxy" | "send-proxy-v2" => {
                let v = if key == "send-proxy" { ProxyProtocolVersion::V1 } else { ProxyProtocolVersion::V2 };
                up.send_proxy_protocol = Some(v);
                notes.mapped(n, text, format!("{at}.sendProxyProtocol"));
            }
            "ssl" | "verify" | "ca-file" | "sni" => backend_tls(key, value.as_deref(), at, up, notes, n, text),
            "disabled" => {
                b.weight = Some(0);
                notes.approximated(n, text, format!("{field}.weight"), "weight 0: no new clients, but clients pinned to it by a cookie still reach it");
            }
            "enabled" => notes.mapped(n, text, field.to_string()),
            other => notes.unsupported(n, text, format!("server option {other}")),
        }
    }
    checked
}

fn backend_tls(
    key: &str,
    value: Option<&str>,
    at: &str,
    up: &mut Upstream,
    notes: &mut Notes,
    n: usize,
    text: &str,
) {
    let tls = up.backend_tls.get_or_insert_with(BackendTls::default);
    let field = format!("{at}.backendTLS");
    match (key, value) {
        ("ssl", _) => notes.mapped(n, text, field),
        ("verify", Some("none")) => {
            tls.insecure_skip_verify = true;
            notes.mapped(n, text, format!("{field}.insecureSkipVerify"));
        }
        ("verify", Some("required")) => notes.mapped(n, text, field),
        ("ca-file", Some(f)) => {
            tls.ca_file = Some(f.to_string());
            notes.mapped(n, text, format!("{field}.caFile"));
        }
        ("sni", Some(expr)) => match expr.strip_prefix("str(").and_then(|e| e.strip_suffix(')')) {
            Some(name) => {
                tls.server_name = Some(name.to_string());
                notes.mapped(n, text, format!("{field}.serverName"));
            }
            None => notes.unsupported(
                n,
                text,
                format!("sni {expr}: Halo takes a fixed serverName"),
            ),
        },
        _ => notes.unsupported(n, text, format!("{key} needs a value")),
    }
}

/// Timing of the group's check from the first checked server.
fn check_timing(opts: &Opts, at: &str, up: &mut Upstream, notes: &mut Notes) {
    let Some(hc) = up.health_check.as_mut() else {
        return;
    };
    let field = format!("{at}.healthCheck");
    for (key, value, n, text) in &opts.pairs {
        let (n, text) = (*n, text.as_str());
        let time = || value.as_deref().and_then(|v| duration(v).ok());
        let count = || {
            value
                .as_deref()
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|c| (1..=100).contains(c))
        };
        let slot = match key.as_str() {
            "check" => Some(()).map(|_| notes.mapped(n, text, field.clone())),
            "port" => value
                .as_deref()
                .and_then(|v| v.parse::<u16>().ok())
                .map(|p| hc.port = Some(p))
                .map(|_| notes.mapped(n, text, format!("{field}.port"))),
            "inter" => time()
                .map(|t| hc.interval = Some(t))
                .map(|_| notes.mapped(n, text, format!("{field}.interval"))),
            "downinter" => time()
                .map(|t| hc.down_interval = Some(t))
                .map(|_| notes.mapped(n, text, format!("{field}.downInterval"))),
            "fastinter" => {
                notes.approximated(n, text, format!("{field}.interval"), "no fastinter: a backend changing state is checked at interval (downInterval while down)");
                Some(())
            }
            "rise" => count()
                .map(|c| hc.rise = Some(c))
                .map(|_| notes.mapped(n, text, format!("{field}.rise"))),
            "fall" => count()
                .map(|c| hc.fall = Some(c))
                .map(|_| notes.mapped(n, text, format!("{field}.fall"))),
            _ => Some(()),
        };
        if slot.is_none() {
            notes.unsupported(n, text, format!("{key}: bad value"));
        }
    }
}

/// Later checked servers must agree with the group's timing; say so when one does not.
fn same_timing(opts: &Opts, name: &str, at: &str, up: &Upstream, notes: &mut Notes) {
    let mut probe = up.clone();
    if let Some(hc) = probe.health_check.as_mut() {
        *hc = HealthCheck {
            port: None,
            interval: None,
            down_interval: None,
            rise: None,
            fall: None,
            ..hc.clone()
        };
    }
    let mut scratch = Notes::default();
    check_timing(opts, at, &mut probe, &mut scratch);
    let (mine, group) = (probe.health_check, up.health_check.as_ref());
    let differs = mine.as_ref().zip(group).is_some_and(|(m, g)| {
        (m.port, &m.interval, &m.down_interval, m.rise, m.fall)
            != (g.port, &g.interval, &g.down_interval, g.rise, g.fall)
    });
    let field = format!("{at}.healthCheck");
    for (key, _, n, text) in &opts.pairs {
        match key.as_str() {
            "check" | "port" | "inter" | "downinter" | "rise" | "fall" if differs => notes.approximated(*n, text, field.clone(), format!("Halo has one check setting per group; server {name} gets the first checked server's")),
            "check" | "port" | "inter" | "downinter" | "rise" | "fall" => notes.mapped(*n, text, field.clone()),
            "fastinter" => notes.approximated(*n, text, format!("{field}.interval"), "no fastinter: a backend changing state is checked at interval (downInterval while down)"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::Outcome;
    use crate::import::haproxy::lex::lex;

    fn mapped(text: &str) -> (Mapped, crate::import::Report) {
        let lines = lex(text, &|_| None).expect("lexes");
        let refs: Vec<&Line> = lines.iter().collect();
        let mut notes = Notes::default();
        let m = map(&refs, "g", &mut notes);
        (m, notes.into_report("h.cfg"))
    }

    fn kind(r: &crate::import::Report, line: usize) -> &'static str {
        match r
            .entries
            .iter()
            .find(|e| e.source.line == line)
            .map(|e| &e.outcome)
        {
            Some(Outcome::Mapped { .. }) => "mapped",
            Some(Outcome::Approximated { .. }) => "approximated",
            Some(Outcome::Unsupported { .. }) => "unsupported",
            None => "none",
        }
    }

    #[test]
    fn balance_algorithms_map_or_say_why_not() {
        for (line, algorithm, outcome) in [
            ("balance roundrobin", Algorithm::RoundRobin, "mapped"),
            ("balance static-rr", Algorithm::RoundRobin, "approximated"),
            ("balance leastconn", Algorithm::LeastConnections, "mapped"),
            ("balance source", Algorithm::SourceHash, "mapped"),
            ("balance random", Algorithm::Random2, "mapped"),
            ("balance random(3)", Algorithm::Random2, "approximated"),
            ("balance uri", Algorithm::RoundRobin, "unsupported"),
        ] {
            let (m, r) = mapped(line);
            assert_eq!(
                (m.upstream.algorithm, kind(&r, 1)),
                (algorithm, outcome),
                "{line}"
            );
        }
    }

    #[test]
    fn cookie_options_become_persistence_settings() {
        let (m, r) = mapped("cookie SRV insert indirect nocache");
        let c = m
            .upstream
            .session_persistence
            .and_then(|p| p.cookie)
            .expect("cookie");
        assert_eq!(
            (c.name.as_deref(), c.indirect, c.nocache),
            (Some("SRV"), Some(true), Some(true))
        );
        assert_eq!(kind(&r, 1), "mapped");
        // HAProxy's defaults differ from Halo's: written out explicitly.
        let (m, _) = mapped("cookie SRV insert");
        let c = m
            .upstream
            .session_persistence
            .and_then(|p| p.cookie)
            .expect("cookie");
        assert_eq!((c.indirect, c.nocache), (Some(false), Some(false)));
        assert_eq!(
            kind(&mapped("cookie JSESSIONID prefix").1, 1),
            "approximated"
        );
        let (m, r) = mapped("cookie JSESSIONID");
        assert!(m.upstream.session_persistence.is_none());
        assert_eq!(kind(&r, 1), "unsupported");
    }

    #[test]
    fn server_checks_become_the_group_health_check() {
        let (m, r) = mapped(
            "option mysql-check\ntimeout check 3s\n\
             server db1 10.0.0.1:3306 check port 9200 inter 2s downinter 10s rise 3 fall 2 slowstart 30s\n\
             server db2 10.0.0.2:3306 check port 9200 inter 2s downinter 10s rise 3 fall 2 backup maxconn 50\n\
             server db3 10.0.0.3:3306 check port 9201\nserver db4 10.0.0.4:3306\n",
        );
        let up = m.upstream;
        let hc = up.health_check.expect("check");
        assert_eq!(hc.kind, HealthCheckType::Tcp);
        assert_eq!(
            (hc.port, hc.interval.as_deref(), hc.down_interval.as_deref()),
            (Some(9200), Some("2s"), Some("10s"))
        );
        assert_eq!(
            (hc.rise, hc.fall, hc.timeout.as_deref()),
            (Some(3), Some(2), Some("3s"))
        );
        assert_eq!(up.slow_start.as_deref(), Some("30s"));
        assert!(up.backends[1].backup && up.backends[1].max_connections == Some(50));
        let kinds: Vec<&str> = (1..=6).map(|n| kind(&r, n)).collect();
        // mysql-check is only a connect; db3 checks another port; db4 is checked anyway.
        assert_eq!(
            kinds,
            [
                "approximated",
                "mapped",
                "mapped",
                "mapped",
                "approximated",
                "approximated"
            ]
        );
    }

    #[test]
    fn check_timeout_defaults_to_the_interval_as_in_haproxy() {
        let timeout = |text: &str| {
            let (m, _) = mapped(text);
            m.upstream.health_check.and_then(|hc| hc.timeout)
        };
        assert_eq!(
            timeout("server a 10.0.0.1:80 check inter 400ms\n").as_deref(),
            Some("400ms")
        );
        assert_eq!(
            timeout("option httpchk GET /\nserver a 10.0.0.1:80 check\n").as_deref(),
            Some("2s")
        );
        assert_eq!(
            timeout("timeout check 3s\nserver a 10.0.0.1:80 check inter 5s\n").as_deref(),
            Some("3s")
        );
        assert_eq!(timeout("server a 10.0.0.1:80\n"), None);
    }

    #[test]
    fn http_checks_take_path_method_and_status() {
        let (m, r) = mapped(
            "option httpchk GET /health\nhttp-check expect status 204\nserver a 10.0.0.1:80 check\n",
        );
        let hc = m.upstream.health_check.expect("check");
        assert_eq!(
            (hc.kind, hc.path.as_deref(), hc.expect_status),
            (HealthCheckType::Http, Some("/health"), Some(204))
        );
        assert_eq!([kind(&r, 1), kind(&r, 2)], ["mapped", "mapped"]);
        let (m, r) = mapped("option httpchk HEAD /ping\nserver a 10.0.0.1:80 check\n");
        assert_eq!(
            m.upstream.health_check.and_then(|h| h.path).as_deref(),
            Some("/ping")
        );
        assert_eq!(kind(&r, 1), "approximated");
        // No server has `check`: HAProxy does not check either.
        let (m, r) = mapped("option httpchk GET /\nserver a 10.0.0.1:80\n");
        assert!(m.upstream.health_check.is_none());
        assert_eq!(kind(&r, 1), "mapped");
    }
}
