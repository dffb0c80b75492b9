//! Import of haproxy.cfg (HAProxy 2.x syntax) into LoadBalancer objects: `lex` splits
//! lines as HAProxy does, `sections` resolves defaults, `frontend`/`backend`/`acl` read
//! directives, `listeners` builds the objects, `notes` folds the report per line.

pub mod acl;
pub mod backend;
pub mod certs;
pub mod frontend;
pub mod lex;
pub mod listeners;
pub mod notes;
pub mod sections;
pub mod values;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use halo_crds::LoadBalancer;
use halo_crds::load_balancer::LoadBalancerSpec;

use self::frontend::{BindTls, Frontend};
use self::lex::Line;
use self::listeners::{Bound, Site};
use self::notes::Notes;
use self::sections::{Kind, Section};
use self::values::{ciphers, dns_label};
use super::{Certificate, ParseError, Report, read_source};

#[derive(Debug, Clone, Default)]
pub struct HaproxyImport {
    pub load_balancers: Vec<LoadBalancer>,
    pub certificates: Vec<Certificate>,
    pub report: Report,
}

/// Reads, parses and maps `path`; certificates named by `crt` are read relative to
/// `crt-base` or, without it, to the file's directory.
pub fn import(path: &Path) -> Result<HaproxyImport, ParseError> {
    let file = path.display().to_string();
    let text = read_source(path)?;
    let env = |name: &str| std::env::var(name).ok();
    let lines = lex::lex(&text, &env).map_err(|e| ParseError::new(&file, e.line, e.message))?;
    let sections = sections::split(lines).map_err(|e| ParseError::new(&file, e.line, e.message))?;
    let mut out = map(&sections);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let crt_base = out
        .crt_base
        .as_deref()
        .map(|b| base.join(b))
        .unwrap_or(base);
    let mut certificates: Vec<Certificate> = Vec::new();
    for (lb, site) in out.load_balancers.iter_mut().zip(&out.sites) {
        for (index, crts) in &site.crts {
            let mut names = Vec::new();
            for crt in crts {
                let loaded = certs::load(&crt_base.join(crt)).map_err(|e| {
                    let line = out.crt_lines.get(crt).copied().unwrap_or(0);
                    ParseError::new(&file, line, format!("crt {crt}: {e}"))
                })?;
                for c in loaded {
                    names.push(c.name.clone());
                    if !certificates.iter().any(|k| k.name == c.name) {
                        certificates.push(c);
                    }
                }
            }
            if let Some(tls) = lb
                .spec
                .listeners
                .get_mut(*index)
                .and_then(|l| l.tls.as_mut())
            {
                tls.certificates = listeners::certificate_refs(&names);
            }
        }
    }
    Ok(HaproxyImport {
        load_balancers: out.load_balancers,
        certificates,
        report: out.notes.into_report(&file),
    })
}

/// The pure part: sections in, objects and notes out (certificates still as paths).
pub struct Mapping {
    pub load_balancers: Vec<LoadBalancer>,
    pub sites: Vec<Site>,
    pub notes: Notes,
    pub crt_base: Option<String>,
    /// The line of the first `bind` naming each `crt` path, for errors.
    pub crt_lines: BTreeMap<String, usize>,
}

pub fn map(sections: &[Section]) -> Mapping {
    let mut notes = Notes::default();
    let (global_tls, crt_base) = global(sections, &mut notes);
    let by_name: BTreeMap<&str, usize> = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.kind, Kind::Backend | Kind::Listen))
        .filter_map(|(i, s)| Some((s.name.as_deref()?, i)))
        .collect();
    let mut sites: Vec<(Option<IpAddr>, Site)> = Vec::new();
    let mut crt_lines = BTreeMap::new();
    for (i, s) in sections.iter().enumerate() {
        if !matches!(s.kind, Kind::Frontend | Kind::Listen) {
            continue;
        }
        let lines = sections::effective(sections, i);
        if is_stats(&lines) {
            stats(s, &mut notes);
            continue;
        }
        let fe = frontend::read(&lines, &global_tls, &mut notes);
        for b in &fe.binds {
            for crt in b.tls.iter().flat_map(|t| t.crt.iter()) {
                crt_lines.entry(crt.clone()).or_insert(b.line);
            }
        }
        let name = s.name.clone().unwrap_or_default();
        let own = (s.kind == Kind::Listen).then_some(lines.as_slice());
        bind_all(&mut sites, &name, &fe, own, sections, &by_name, &mut notes);
    }
    leftovers(sections, &mut notes);
    let load_balancers = sites.iter().map(|(ip, site)| object(*ip, site)).collect();
    Mapping {
        load_balancers,
        sites: sites.into_iter().map(|(_, s)| s).collect(),
        notes,
        crt_base,
        crt_lines,
    }
}

/// One listener per bound address, in the site (LoadBalancer) of that address.
fn bind_all(
    sites: &mut Vec<(Option<IpAddr>, Site)>,
    name: &str,
    fe: &Frontend,
    own: Option<&[&Line]>,
    sections: &[Section],
    by_name: &BTreeMap<&str, usize>,
    notes: &mut Notes,
) {
    let ports: usize = fe.binds.iter().map(|b| b.addrs.len()).sum();
    for b in &fe.binds {
        for addr in &b.addrs {
            let k = match sites.iter().position(|(ip, _)| *ip == addr.ip) {
                Some(k) => k,
                None => {
                    let site = Site {
                        name: site_name(sites, name, addr.ip),
                        ..Site::default()
                    };
                    sites.push((addr.ip, site));
                    sites.len() - 1
                }
            };
            let site = &mut sites[k].1;
            if site.listeners.iter().any(|l| l.port == addr.port) {
                notes.unsupported(
                    b.line,
                    &b.text,
                    format!("port {} is bound twice on this address", addr.port),
                );
                continue;
            }
            if addr.ip.is_none() {
                let how = "bound on every IPv4 address (0.0.0.0) of the node; to follow a VirtualIP set spec.virtualIP instead";
                notes.approximated(
                    b.line,
                    &b.text,
                    format!("LoadBalancer/{} spec.addresses", site.name),
                    how,
                );
            }
            let listener_name = if ports > 1 {
                dns_label(&format!("{name}-{}", addr.port))
            } else {
                dns_label(name)
            };
            let own_mapped = own.map(|lines| {
                let at = format!(
                    "LoadBalancer/{} spec.listeners[{}]",
                    site.name,
                    site.listeners.len()
                );
                backend::map(lines, &at, notes)
            });
            let bound = Bound {
                fe,
                name: listener_name,
                port: addr.port,
                tls: b.tls.as_ref(),
                bind_line: (b.line, b.text.clone()),
                accept_proxy: b.accept_proxy,
                own: own_mapped,
            };
            let mut lookup = |backend: &str, at: &str, notes: &mut Notes| {
                let i = *by_name.get(backend)?;
                let lines = sections::effective(sections, i);
                Some(backend::map(&lines, at, notes))
            };
            listeners::add(site, bound, &mut lookup, notes);
        }
    }
}

/// The first frontend's name for a new site, with its address added when another site
/// (another address of the same frontend) has it already.
fn site_name(sites: &[(Option<IpAddr>, Site)], frontend: &str, ip: Option<IpAddr>) -> String {
    let name = dns_label(frontend);
    if !sites.iter().any(|(_, s)| s.name == name) {
        return name;
    }
    let address = ip.map(|ip| ip.to_string()).unwrap_or_else(|| "any".into());
    dns_label(&format!("{frontend}-{address}"))
}

fn object(ip: Option<IpAddr>, site: &Site) -> LoadBalancer {
    let address = ip
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "0.0.0.0".into());
    let spec = LoadBalancerSpec {
        virtual_ip: None,
        addresses: Some(vec![address]),
        listeners: site.listeners.clone(),
        backend_groups: site.groups.clone(),
    };
    LoadBalancer::new(&site.name, spec)
}

/// `global`: TLS defaults for binds, `crt-base`, and a note for every line.
fn global(sections: &[Section], notes: &mut Notes) -> (BindTls, Option<String>) {
    let mut tls = BindTls::default();
    let mut crt_base = None;
    let all = "spec.listeners[*].tls";
    for l in sections
        .iter()
        .filter(|s| s.kind == Kind::Global)
        .flat_map(|s| &s.lines)
    {
        let (n, text) = (l.number, l.text());
        match (l.word(0).unwrap_or(""), l.word(1)) {
            ("ssl-default-bind-ciphers" | "ssl-default-bind-ciphersuites", Some(list)) => {
                let (kept, dropped) = ciphers(list);
                tls.cipher_suites.extend(kept);
                match dropped.is_empty() {
                    true => notes.mapped(n, &text, format!("{all}.cipherSuites")),
                    false => notes.approximated(n, &text, format!("{all}.cipherSuites"), format!("Halo does not offer {}", dropped.join(":"))),
                }
            }
            ("ssl-default-bind-options", _) => bind_options(l, &mut tls, notes),
            ("crt-base", Some(b)) => {
                crt_base = Some(b.to_string());
                notes.mapped(n, &text, "certificate paths (read at import)");
            }
            ("maxconn", _) => notes.unsupported(n, &text, "Halo has no process-wide connection limit; set maxConnections on listeners"),
            ("nbthread" | "nbproc" | "cpu-map", _) => notes.unsupported(n, &text, "a hint only: Halo runs one worker per CPU"),
            ("daemon" | "user" | "group" | "chroot" | "pidfile" | "master-worker" | "uid" | "gid", _) => notes.unsupported(n, &text, "process management: run halo-dataplane under systemd or as a pod"),
            ("log", _) => notes.unsupported(n, &text, "Halo logs to stdout or a file (listener accessLog), not syslog"),
            ("stats", _) => notes.unsupported(n, &text, "Halo's admin listener (halo-dataplane run --admin) serves /status and /metrics; there is no runtime API socket"),
            _ => notes.unsupported(n, &text, "no Halo equivalent"),
        }
    }
    (tls, crt_base)
}

fn bind_options(l: &Line, tls: &mut BindTls, notes: &mut Notes) {
    let (n, text) = (l.number, l.text());
    let field = "spec.listeners[*].tls.minVersion";
    let mut words = l.words[1..].iter();
    while let Some(w) = words.next() {
        match w.as_str() {
            "ssl-min-ver" => match words.next().map(String::as_str) {
                Some("TLSv1.2") => {
                    tls.min_version = Some(halo_crds::load_balancer::TlsVersion::Tls12)
                }
                Some("TLSv1.3") => {
                    tls.min_version = Some(halo_crds::load_balancer::TlsVersion::Tls13)
                }
                other => notes.approximated(
                    n,
                    &text,
                    field,
                    format!("{other:?}: Halo accepts TLS 1.2 or 1.3 only"),
                ),
            },
            "no-sslv3" | "no-tlsv10" | "no-tlsv11" => {}
            "no-tls-tickets" => notes.approximated(n, &text, field, "Halo issues session tickets"),
            other => notes.unsupported(n, &text, format!("{other}: no Halo equivalent")),
        }
    }
    notes.mapped(n, &text, field);
}

fn is_stats(lines: &[&Line]) -> bool {
    let own = |l: &&&Line| l.word(0) == Some("stats");
    lines
        .iter()
        .any(|l| own(&l) && matches!(l.word(1), Some("enable" | "uri")))
        && !lines.iter().any(|l| l.word(0) == Some("server"))
}

/// A stats page: Halo's admin listener serves the same information differently.
fn stats(s: &Section, notes: &mut Notes) {
    for l in &s.lines {
        let how = "Halo's admin listener (halo-dataplane run --admin ADDR) serves /status (JSON) and /metrics (Prometheus); no HTML page, no admin actions, no auth";
        notes.approximated(l.number, &l.text(), "halo-dataplane run --admin", how);
    }
}

/// Every line nothing took gets its reason, so no directive is silently dropped.
fn leftovers(sections: &[Section], notes: &mut Notes) {
    for s in sections {
        if s.kind == Kind::Other {
            let why = format!("{} sections have no Halo equivalent", s.header.words[0]);
            notes.unsupported(s.header.number, &s.header.text(), why.clone());
            for l in &s.lines {
                notes.unsupported(l.number, &l.text(), why.clone());
            }
            continue;
        }
        let unseen: Vec<&Line> = s.lines.iter().filter(|l| !notes.seen(l.number)).collect();
        for l in unseen {
            let why = match (s.kind, known(l)) {
                _ if l.words[0] == "acl" => "used only by conditions that could not be carried over, or by none".to_string(),
                _ if l.words[0] == "errorfile" => "Halo's own error responses cannot be replaced; a route's fixedResponse answers with a fixed status and body instead".to_string(),
                (Kind::Backend, _) => format!("no imported frontend uses backend {}", s.name.as_deref().unwrap_or("")),
                (Kind::Defaults, true) => "overridden, or used by no imported proxy".to_string(),
                (_, true) => "has no effect here in Halo's model (overridden, or used by no imported listener)".to_string(),
                (_, false) => format!("no Halo equivalent for {}", l.words[0]),
            };
            notes.unsupported(l.number, &l.text(), why);
        }
    }
}

/// Keywords this importer maps somewhere (so leftover ones were overridden or unused).
fn known(l: &Line) -> bool {
    let w = l
        .words
        .iter()
        .position(|w| w != "no")
        .and_then(|i| l.word(i))
        .unwrap_or("");
    matches!(
        w,
        "mode"
            | "timeout"
            | "retries"
            | "option"
            | "maxconn"
            | "balance"
            | "cookie"
            | "default-server"
            | "server"
            | "default_backend"
            | "use_backend"
            | "acl"
            | "http-check"
            | "bind"
            | "http-request"
            | "http-response"
            | "redirect"
    )
}

#[cfg(test)]
mod tests {
    use halo_crds::load_balancer::{Protocol, RouteFilterType};

    use super::*;
    use crate::import::Outcome;

    fn mapping(text: &str) -> (Vec<LoadBalancer>, Report) {
        let lines = lex::lex(text, &|_| None).expect("lexes");
        let m = map(&sections::split(lines).expect("splits"));
        (m.load_balancers, m.notes.into_report("h.cfg"))
    }

    fn outcome_at(r: &Report, line: usize) -> &Outcome {
        &r.entries
            .iter()
            .find(|e| e.source.line == line)
            .expect("entry")
            .outcome
    }

    const SITE: &str = "defaults\n mode http\n\
        frontend web\n bind 10.0.0.1:80\n bind 10.0.0.1:443 ssl crt a.pem\n\
        \x20acl api path_beg /api\n acl shop hdr(host) shop.example.com\n\
        \x20http-request redirect scheme https unless { ssl_fc }\n\
        \x20use_backend be_api if api || shop\n default_backend be_web\n\
        frontend admin\n bind 10.0.0.1:8080\n bind 10.0.0.2:80\n default_backend be_web\n\
        backend be_api\n server a1 10.1.0.1:80\n\
        backend be_web\n server w1 10.1.0.2:80\n\
        backend be_old\n server o1 10.1.0.3:80\n";

    /// A LoadBalancer's addresses and its listeners' names and ports.
    type Shape = (Vec<String>, Vec<(String, u16)>);

    #[test]
    fn frontends_on_one_address_share_a_load_balancer_with_a_listener_per_port() {
        let (lbs, _) = mapping(SITE);
        let shape: Vec<Shape> = lbs
            .iter()
            .map(|lb| {
                let ls = lb
                    .spec
                    .listeners
                    .iter()
                    .map(|l| (l.name.clone(), l.port))
                    .collect();
                (lb.spec.addresses.clone().unwrap_or_default(), ls)
            })
            .collect();
        assert_eq!(
            shape,
            [
                (
                    vec!["10.0.0.1".to_string()],
                    vec![
                        ("web-80".into(), 80),
                        ("web-443".into(), 443),
                        ("admin-8080".into(), 8080)
                    ]
                ),
                (vec!["10.0.0.2".to_string()], vec![("admin-80".into(), 80)]),
            ]
        );
        assert_eq!(lbs[0].spec.listeners[1].protocol, Protocol::Https);
        assert_eq!(lbs[0].spec.backend_groups.len(), 1);
    }

    #[test]
    fn ssl_fc_decides_per_listener_and_a_catch_all_redirect_shadows_the_rest() {
        let (lbs, report) = mapping(SITE);
        let (http, https) = (&lbs[0].spec.listeners[0], &lbs[0].spec.listeners[1]);
        assert_eq!(http.routes.len(), 1);
        assert_eq!(
            http.routes[0].filters[0].kind,
            RouteFilterType::RequestRedirect
        );
        assert!(
            http.upstream.backends.is_empty(),
            "plain HTTP only redirects"
        );
        // `api || shop`: one route per alternative, to the group; the default stays.
        let names: Vec<&str> = https.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["be-api-0", "be-api-1"]);
        assert_eq!(https.routes[1].hostnames, ["shop.example.com"]);
        assert_eq!(https.upstream.backends.len(), 1);
        // Alternatives of one rule share a backend: their order does not matter.
        assert!(matches!(outcome_at(&report, 9), Outcome::Mapped { .. }));
    }

    #[test]
    fn every_directive_line_gets_exactly_one_entry() {
        let text = format!("{SITE}userlist u\n user a password x\nglobal\n daemon\n nbthread 2\n");
        let (_, report) = mapping(&text);
        let mut lines: Vec<usize> = report.entries.iter().map(|e| e.source.line).collect();
        lines.dedup();
        assert_eq!(lines.len(), report.entries.len(), "one entry per line");
        // Section headers are structure, except an unsupported section's.
        let expected = [
            2, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 16, 18, 20, 21, 22, 24, 25,
        ];
        assert_eq!(lines, expected);
        assert!(
            matches!(outcome_at(&report, 20), Outcome::Unsupported { why } if why.contains("be_old"))
        );
        assert!(matches!(
            outcome_at(&report, 21),
            Outcome::Unsupported { .. }
        ));
    }

    #[test]
    fn a_later_rule_halo_ranks_first_is_reported() {
        let (lbs, report) = mapping(
            "defaults\n mode http\nfrontend f\n bind 10.0.0.1:80\n use_backend a if { path_beg /api }\n\
             \x20use_backend b if { hdr(host) shop.example.com }\nbackend a\n server s 10.1.0.1:80\n\
             backend b\n server s 10.1.0.2:80\n",
        );
        assert_eq!(lbs[0].spec.listeners[0].routes.len(), 2);
        assert!(matches!(outcome_at(&report, 5), Outcome::Mapped { .. }));
        let later = outcome_at(&report, 6);
        assert!(
            matches!(later, Outcome::Approximated { how, .. } if how.contains("ranks this route above")),
            "{later:?}"
        );
    }

    #[test]
    fn one_frontend_on_two_addresses_gives_two_uniquely_named_load_balancers() {
        let (lbs, report) = mapping(
            "defaults\n mode http\n timeout server 9s\nfrontend web\n bind 10.0.0.1:80,10.0.0.2:80\n bind 10.0.0.1:443 ssl\n\
             \x20use_backend b if { path /x }\nbackend b\n server s 10.1.0.1:80\n",
        );
        let names: Vec<Option<String>> = lbs.iter().map(|lb| lb.metadata.name.clone()).collect();
        assert_eq!(
            names,
            [Some("web".to_string()), Some("web-10-0-0-2".to_string())]
        );
        // Without a default backend the listener still gets the defaults' server timeout.
        let timeouts = lbs[0].spec.listeners[0]
            .timeouts
            .clone()
            .unwrap_or_default();
        assert_eq!(timeouts.server.as_deref(), Some("9s"));
        assert!(matches!(outcome_at(&report, 3), Outcome::Mapped { .. }));
        assert!(
            matches!(outcome_at(&report, 6), Outcome::Unsupported { why } if why.contains("without crt"))
        );
    }

    #[test]
    fn header_rules_put_the_default_backend_behind_a_filtered_catch_all_route() {
        let (lbs, report) = mapping(
            "defaults\n mode http\nfrontend f\n bind 10.0.0.1:80\n http-request set-header X-Via halo\n default_backend b\nbackend b\n server s 10.1.0.1:80\n",
        );
        let l = &lbs[0].spec.listeners[0];
        assert!(l.upstream.backends.is_empty());
        assert_eq!(l.routes.len(), 1);
        assert!(l.routes[0].hostnames.is_empty() && l.routes[0].matches.is_empty());
        let filter = l.routes[0].filters[0]
            .request_header_modifier
            .as_ref()
            .expect("filter");
        assert_eq!(filter.set[0].name, "X-Via");
        assert_eq!(lbs[0].spec.backend_groups[0].upstream.backends.len(), 1);
        assert_eq!(report.exit_code(), 0, "{report}");
    }
}
