//! The differential lab: the site of `tests/import/differential/` (a haproxy.cfg and a
//! keepalived.conf per node) run once by real HAProxy + keepalived and once by Halo on
//! what `halo-dataplane import` made of exactly those files, with the same backends in
//! their own namespaces and the same client requests, so each scenario's outcome can be
//! compared side by side.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::Host;
use crate::process::binary;
use crate::site::{Site, VIP, wait_until};

pub const NODES: [&str; 2] = ["node-a", "node-b"];
/// The keepalived instance name, which the import keeps as the VirtualIP's name.
pub const INSTANCE: &str = "site";
/// HTTP backends: name, last octet (each listens on :8000, as the haproxy.cfg says).
pub const WEB: [(&str, u8); 6] = [
    ("web1", 21),
    ("web2", 22),
    ("web3", 23),
    ("static1", 25),
    ("api1", 31),
    ("api2", 32),
];
/// Database servers: `:3306` is the service, `:9200` the clustercheck port,
/// [`MYSQL_PORT`] a server that greets with a MySQL handshake.
pub const DB: [(&str, u8); 2] = [("db1", 41), ("db2", 42)];
/// The port of `listen mariadb_direct`'s servers (checked with `option mysql-check`).
pub const MYSQL_PORT: u16 = 3307;
/// A MySQL server as far as a client's first read goes (argv: `ADDR:PORT NAME`): it
/// sends a protocol-10 handshake whose server version ends in `-NAME`, then reads until
/// the client closes.
const MYSQL_GREETER: &str = r#"
import socket, struct, sys, threading
host, port = sys.argv[1].rsplit(":", 1)
payload = (b"\x0a" + b"5.7.0-" + sys.argv[2].encode() + b"\0" + struct.pack("<I", 7)
    + b"abcdefgh\0" + struct.pack("<H", 0xF7FF) + b"\x21" + struct.pack("<H", 2)
    + struct.pack("<H", 0x0008) + b"\x15" + b"\0" * 10 + b"ijklmnopqrst\0"
    + b"mysql_native_password\0")
packet = struct.pack("<I", len(payload))[:3] + b"\0" + payload
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, int(port)))
s.listen(64)
print("listening", flush=True)
def serve(c):
    try:
        c.sendall(packet)
        c.settimeout(30)
        while c.recv(4096):
            pass
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
/// The names the site's certificate is issued for (its CN is the first).
pub const TLS_NAMES: [&str; 2] = ["shop.example.com", "api.example.com"];
/// `bind ... ssl crt certs/site.pem` in haproxy.cfg, relative to the directory both
/// stacks run from (the lab's).
const SITE_PEM: &str = "certs/site.pem";
/// The node-local health endpoint each node's `chk_in_service` asks
/// (`http://127.0.0.1:9300/`), served in the node's namespace under the node's name.
pub const IN_SERVICE_PORT: u16 = 9300;

/// `tests/import/differential/<name>` in the source tree.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("import/differential")
        .join(name)
}

/// Which software runs the site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// HAProxy + keepalived on the fixture files as written.
    Legacy,
    /// `halo-dataplane run` on the imported manifest.
    Halo,
}

/// One process of a backend host: what it listens on, and its PID while it runs.
#[derive(Debug)]
struct Listener {
    listen: String,
    pid: Option<u32>,
}

/// A backend host in its own namespace with one `halo-lab backend` per port.
#[derive(Debug)]
struct BackendHost {
    host: Host,
    listeners: Vec<Listener>,
}

/// What one HTTP request through the VIP gave.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    /// `x-backend` of the response (the server that answered).
    pub backend: String,
    pub set_cookie: Option<String>,
    pub cache_control: Option<String>,
    pub body: String,
}

impl Answer {
    /// Whether a shared cache may store this answer: its Cache-Control says neither
    /// `private`, `no-cache` nor `no-store`.
    pub fn shared_cacheable(&self) -> bool {
        let cc = self
            .cache_control
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        !["private", "no-cache", "no-store"]
            .iter()
            .any(|d| cc.contains(d))
    }
}

/// Parses `curl -s -D - -o -` output: status line, headers, blank line, body.
pub fn parse_answer(text: &str) -> Answer {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut a = Answer {
        status,
        body: body.to_string(),
        ..Answer::default()
    };
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "x-backend" => a.backend = v,
            "set-cookie" => a.set_cookie = Some(v),
            // Several Cache-Control fields mean their values joined.
            "cache-control" => {
                a.cache_control = Some(match a.cache_control.take() {
                    Some(before) => format!("{before}, {v}"),
                    None => v,
                });
            }
            _ => {}
        }
    }
    a
}

/// `name×count` per backend, sorted by name: the spread of a request sequence.
pub fn spread<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in names {
        *counts
            .entry(if n.is_empty() { "-" } else { n })
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(n, c)| format!("{n}×{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The outcome of each scenario in each stack, in the order the scenarios ran.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub rows: Vec<(String, String, String)>,
}

impl Outcomes {
    pub fn record(&mut self, stack: Stack, scenario: &str, outcome: String) {
        let row = match self.rows.iter_mut().find(|r| r.0 == scenario) {
            Some(r) => r,
            None => {
                self.rows
                    .push((scenario.to_string(), String::new(), String::new()));
                self.rows.last_mut().expect("just pushed")
            }
        };
        match stack {
            Stack::Legacy => row.1 = outcome,
            Stack::Halo => row.2 = outcome,
        }
    }

    /// Scenarios whose two outcomes differ.
    pub fn differences(&self) -> Vec<&(String, String, String)> {
        self.rows.iter().filter(|r| r.1 != r.2).collect()
    }

    /// The side-by-side table; rows named in `expected` may differ (marked so).
    pub fn table(&self, expected: &[&str]) -> String {
        let mut s = format!(
            "{:<46} {:<34} {:<34} same\n",
            "scenario", "HAProxy + keepalived", "Halo (imported)"
        );
        for (scenario, legacy, halo) in &self.rows {
            let _ = writeln!(
                s,
                "{scenario:<46} {legacy:<34} {halo:<34} {}",
                match (legacy == halo, expected.contains(&scenario.as_str())) {
                    (true, _) => "yes",
                    (false, true) => "no (expected)",
                    (false, false) => "NO",
                }
            );
        }
        s
    }
}

/// The lab: nodes node-a (.1) and node-b (.2), the client (.9) and the backend hosts.
pub struct Lab {
    pub site: Site,
    hosts: BTreeMap<String, BackendHost>,
    /// The imported manifest and the import report.
    pub manifest: String,
    pub report: String,
    /// The CA that issued the site's certificate, for the client's `--cacert`.
    ca: PathBuf,
}

impl Lab {
    pub fn new(label: &str) -> Result<Self> {
        let site = Site::new(label, &NODES)?;
        for i in 0..NODES.len() {
            // Both HAProxies bind the VIP whichever node holds it.
            site.allow_nonlocal_bind(i)?;
        }
        let ca = site_certificate(&site.dir)?;
        let mut lab = Self {
            site,
            hosts: BTreeMap::new(),
            manifest: String::new(),
            report: String::new(),
            ca,
        };
        for i in 0..NODES.len() {
            lab.add_in_service(i)?;
        }
        for (name, octet) in WEB {
            lab.add_host(name, octet, &[8000])?;
        }
        for (name, octet) in DB {
            lab.add_host(name, octet, &[3306, 9200, MYSQL_PORT])?;
        }
        lab.import()?;
        Ok(lab)
    }

    fn add_host(&mut self, name: &str, octet: u8, ports: &[u16]) -> Result<()> {
        let host = self.site.lab.add_host(name, octet)?;
        let listeners = ports
            .iter()
            .map(|p| Listener {
                listen: format!("{}:{p}", host.addr),
                pid: None,
            })
            .collect();
        self.hosts
            .insert(name.to_string(), BackendHost { host, listeners });
        for port in ports {
            self.start_backend(name, *port)?;
        }
        Ok(())
    }

    /// Node `i`'s health endpoint on its own loopback, started and then stopped or
    /// restarted with [`Self::kill_backend`]/[`Self::start_backend`] under the node's name.
    fn add_in_service(&mut self, i: usize) -> Result<()> {
        let host = self.site.nodes[i].clone();
        let listeners = vec![Listener {
            listen: format!("127.0.0.1:{IN_SERVICE_PORT}"),
            pid: None,
        }];
        self.hosts
            .insert(NODES[i].to_string(), BackendHost { host, listeners });
        self.start_backend(NODES[i], IN_SERVICE_PORT)
    }

    fn listener(&mut self, name: &str, port: u16) -> Result<(Host, &mut Listener)> {
        let h = self
            .hosts
            .get_mut(name)
            .with_context(|| format!("no backend host {name}"))?;
        let suffix = format!(":{port}");
        let l = h
            .listeners
            .iter_mut()
            .find(|l| l.listen.ends_with(&suffix))
            .with_context(|| format!("{name} has no port {port}"))?;
        Ok((h.host.clone(), l))
    }

    /// Starts `name`'s server on `port` (answering its name) and waits until it listens.
    pub fn start_backend(&mut self, name: &str, port: u16) -> Result<()> {
        let log = self
            .site
            .dir
            .join(crate::backends::unique(&format!("{name}-{port}-")));
        let (host, listener) = self.listener(name, port)?;
        let listen = listener.listen.clone();
        let (program, args) = if port == MYSQL_PORT {
            (
                PathBuf::from("python3"),
                vec!["-c", MYSQL_GREETER, &listen, name],
            )
        } else {
            (
                binary("halo-lab")?,
                vec!["backend", "--listen", &listen, "--name", name],
            )
        };
        let pid = self.site.lab.spawn(&host, &program, &args, &log)?;
        if let Ok((_, l)) = self.listener(name, port) {
            l.pid = Some(pid);
        }
        if !wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening"))
        }) {
            bail!("backend {name} on port {port} did not start");
        }
        Ok(())
    }

    /// SIGKILL on `name`'s server on `port`.
    pub fn kill_backend(&mut self, name: &str, port: u16) -> Result<()> {
        let (_, l) = self.listener(name, port)?;
        let pid = l.pid.take().context("backend not running")?;
        self.site.lab.signal(pid, "KILL")?;
        self.site.lab.wait_exit(pid, Duration::from_secs(5))
    }

    /// `halo-dataplane import --haproxy haproxy.cfg --keepalived node-a.conf --keepalived
    /// node-b.conf`: the manifest both Halo nodes run. The haproxy.cfg is read from a
    /// copy in the lab directory, where HAProxy runs, so that its `crt` path names the
    /// same file for both.
    fn import(&mut self) -> Result<()> {
        let out = self.site.dir.join("imported.yaml");
        let cfg = self.site.dir.join("haproxy.cfg");
        std::fs::copy(fixture("haproxy.cfg"), &cfg)?;
        let run = std::process::Command::new(binary("halo-dataplane")?)
            .arg("import")
            .arg("--haproxy")
            .arg(&cfg)
            .arg("--keepalived")
            .arg(fixture("node-a.conf"))
            .arg("--keepalived")
            .arg(fixture("node-b.conf"))
            .arg("-o")
            .arg(&out)
            .output()
            .context("run halo-dataplane import")?;
        self.report = String::from_utf8_lossy(&run.stderr).into_owned();
        // 0: everything mapped; 3: something approximated or unsupported (reported).
        if !matches!(run.status.code(), Some(0 | 3)) {
            bail!("import failed ({}):\n{}", run.status, self.report);
        }
        self.manifest = std::fs::read_to_string(&out)?;
        Ok(())
    }

    // --- the two stacks ----------------------------------------------------------------

    /// Starts `stack` on node `i` and waits until it runs (HAProxy listening, keepalived's
    /// VRRP child or Halo's admin API up).
    pub fn start(&mut self, stack: Stack, i: usize) -> Result<()> {
        match stack {
            Stack::Legacy => {
                let cfg = std::fs::read_to_string(fixture("haproxy.cfg"))?;
                let binds: Vec<SocketAddr> = vec![
                    format!("{VIP}:80").parse()?,
                    format!("{VIP}:443").parse()?,
                    format!("{VIP}:3306").parse()?,
                    format!("{VIP}:{MYSQL_PORT}").parse()?,
                ];
                self.site.start_haproxy(i, &cfg, &binds)?;
                let conf = fixture(&format!("{}.conf", NODES[i]));
                self.site.start_keepalived_file(i, &conf)
            }
            Stack::Halo => {
                let manifest = self.manifest.clone();
                self.site.start_healthy(i, &manifest).map(|_| ())
            }
        }
    }

    /// Node `i` dies: its processes are killed (no priority 0 advert, no cleanup) and
    /// its addresses go with it.
    pub fn kill_node(&mut self, stack: Stack, i: usize) -> Result<()> {
        match stack {
            Stack::Legacy => {
                self.site.crash_keepalived(i)?;
                self.site.stop_haproxy(i, "KILL")?;
            }
            Stack::Halo => self.site.stop(i, "KILL")?,
        }
        self.drop_vip(i)
    }

    /// Stops `stack` on every node and removes the VIP wherever it is left.
    pub fn stop_all(&mut self, stack: Stack) -> Result<()> {
        for i in 0..NODES.len() {
            match stack {
                Stack::Legacy => {
                    if self.site.keepalived(i).is_ok() {
                        self.site.stop_keepalived(i)?;
                    }
                    if self.site.haproxy(i).is_ok() {
                        self.site.stop_haproxy(i, "TERM")?;
                    }
                }
                Stack::Halo => {
                    if self.site.dataplanes[i].is_some() {
                        self.site.stop(i, "TERM")?;
                    }
                }
            }
            self.drop_vip(i)?;
        }
        Ok(())
    }

    fn drop_vip(&self, i: usize) -> Result<()> {
        if self.site.holds_vip(i) {
            let vip = format!("{VIP}/24");
            self.site.lab.exec_in(
                &self.site.nodes[i].ns,
                &["ip", "addr", "del", &vip, "dev", "eth0"],
            )?;
        }
        Ok(())
    }

    /// Whether the load balancer on node `i` considers server `name` up: HAProxy's last
    /// `Server BACKEND/NAME is UP|DOWN` line, Halo's `/status` backend entry.
    pub fn server_up(&self, stack: Stack, i: usize, name: &str) -> Option<bool> {
        match stack {
            Stack::Legacy => {
                let log = self.site.haproxy(i).ok()?.log_text();
                let needle = format!("/{name} is ");
                let last = log.rmatch_indices(&needle).next()?;
                let rest = &log[last.0 + needle.len()..];
                Some(rest.starts_with("UP"))
            }
            Stack::Halo => {
                let status = self.site.status(i).ok()?;
                status["listeners"]
                    .as_array()?
                    .iter()
                    .flat_map(|l| l["backends"].as_array().cloned().unwrap_or_default())
                    // Servers of a routed group are named `GROUP/NAME`.
                    .find(|b| {
                        b["name"].as_str().is_some_and(|n| {
                            n == name || n.rsplit_once('/').is_some_and(|(_, s)| s == name)
                        })
                    })
                    .and_then(|b| b["up"].as_bool())
            }
        }
    }

    /// How long until node `i` sees server `name` as `up` (polled every 20 ms), or
    /// `None` after `limit`. HAProxy starts with every server up and logs only
    /// changes, so "no line yet" counts as up.
    pub fn time_to(
        &self,
        stack: Stack,
        i: usize,
        name: &str,
        up: bool,
        limit: Duration,
    ) -> Option<Duration> {
        let start = Instant::now();
        wait_until(limit, Duration::from_millis(20), || {
            self.server_up(stack, i, name)
                .unwrap_or(stack == Stack::Legacy)
                == up
        })
        .then(|| start.elapsed())
    }

    // --- the client ----------------------------------------------------------------------

    /// `GET http://VIP{path}` with `Host: host` and an optional `Cookie` header, from the
    /// client namespace (a new connection per request).
    pub fn get(&self, host: &str, path: &str, cookie: Option<&str>) -> Result<Answer> {
        let url = format!("http://{VIP}{path}");
        let host_header = format!("Host: {host}");
        let mut args = vec!["-H", host_header.as_str()];
        let cookie_header;
        if let Some(c) = cookie {
            cookie_header = format!("Cookie: {c}");
            args.extend(["-H", &cookie_header]);
        }
        args.push(&url);
        Ok(self.curl(&args).0)
    }

    /// `GET https://host{path}` with `host` resolved to the VIP and the site's CA
    /// trusted: the answer and the subject of the certificate served (`-` when the
    /// handshake failed).
    pub fn get_https(&self, host: &str, path: &str) -> Result<(Answer, String)> {
        let url = format!("https://{host}{path}");
        let resolve = format!("{host}:443:{VIP}");
        let ca = self.ca.to_string_lossy().to_string();
        let (answer, log) = self.curl(&["-v", "--cacert", &ca, "--resolve", &resolve, &url]);
        Ok((answer, served_subject(&log).unwrap_or("-").to_string()))
    }

    /// curl from the client namespace with `args` after the common ones: the parsed
    /// answer (status 0 when curl failed) and curl's stderr.
    fn curl(&self, args: &[&str]) -> (Answer, String) {
        let mut full = vec!["curl", "-s", "-m", "3", "-D", "-", "-o", "-"];
        full.extend_from_slice(args);
        match self.site.lab.exec_in(&self.site.client.ns, &full) {
            Ok(o) => (
                parse_answer(&String::from_utf8_lossy(&o.stdout)),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ),
            Err(e) => (Answer::default(), format!("{e:#}")),
        }
    }

    /// `n` requests over HTTPS; the spread of who answered.
    pub fn spread_of_https(&self, n: usize, host: &str, path: &str) -> Result<String> {
        let mut names = Vec::new();
        for _ in 0..n {
            names.push(self.get_https(host, path)?.0.backend);
        }
        Ok(spread(names.iter().map(String::as_str)))
    }

    /// `n` requests; the spread of who answered.
    pub fn spread_of(
        &self,
        n: usize,
        host: &str,
        path: &str,
        cookie: Option<&str>,
    ) -> Result<String> {
        let mut names = Vec::new();
        for _ in 0..n {
            names.push(self.get(host, path, cookie)?.backend);
        }
        Ok(spread(names.iter().map(String::as_str)))
    }

    /// Two TCP connections to VIP:3306, the first held open while the second is made:
    /// who answered each (the servers greet with nothing, so each sends `GET /`).
    pub fn tcp_pair(&self) -> Result<(String, String)> {
        let script = format!(
            r#"
import socket
def ask(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: db\r\n\r\n")
    data = b""
    for _ in range(64):
        if b"\r\n\r\n" in data and data.endswith(b"\n"):
            break
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    for line in data.decode().split("\r\n"):
        if line.lower().startswith("x-backend:"):
            return line.split(":", 1)[1].strip()
    return "-"
a = socket.create_connection(("{VIP}", 3306), timeout=3)
first = ask(a)
b = socket.create_connection(("{VIP}", 3306), timeout=3)
second = ask(b)
print(first, second)
a.close()
b.close()
"#
        );
        let out = self
            .site
            .lab
            .exec_in(&self.site.client.ns, &["python3", "-c", &script])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace().map(str::to_string);
        Ok((
            words.next().unwrap_or_else(|| "-".into()),
            words.next().unwrap_or_else(|| "-".into()),
        ))
    }

    /// Two connections to VIP:[`MYSQL_PORT`], the first held open while the second is
    /// made: the server that greeted each (from its handshake's version, `-` for none).
    pub fn mysql_pair(&self) -> Result<(String, String)> {
        let script = format!(
            r#"
import socket
def greeted_by(s):
    data = b""
    for _ in range(16):
        if len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:3], "little"):
            break
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    version = data[5:].split(b"\0", 1)[0].decode(errors="replace")
    return version.rsplit("-", 1)[-1] if "-" in version else "-"
a = socket.create_connection(("{VIP}", {MYSQL_PORT}), timeout=3)
first = greeted_by(a)
b = socket.create_connection(("{VIP}", {MYSQL_PORT}), timeout=3)
second = greeted_by(b)
print(first, second)
a.close()
b.close()
"#
        );
        let out = self
            .site
            .lab
            .exec_in(&self.site.client.ns, &["python3", "-c", &script])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace().map(str::to_string);
        Ok((
            words.next().unwrap_or_else(|| "-".into()),
            words.next().unwrap_or_else(|| "-".into()),
        ))
    }

    /// The node that holds the VIP ("-" for none, "node-a+node-b" for both).
    pub fn owner(&self) -> String {
        let holders: Vec<&str> = self
            .site
            .holders(VIP)
            .into_iter()
            .map(|i| NODES[i])
            .collect();
        if holders.is_empty() {
            "-".into()
        } else {
            holders.join("+")
        }
    }

    /// Everything that helps when a scenario fails.
    pub fn debug(&self) -> String {
        format!("{}\n--- import report\n{}", self.site.debug(), self.report)
    }
}

/// Issues the site's certificate from a fresh CA and writes it with its key as one PEM
/// at [`SITE_PEM`] under `dir` (HAProxy's `crt` form); returns the CA's certificate.
fn site_certificate(dir: &Path) -> Result<PathBuf> {
    let ca = crate::certs::Ca::new(dir, "site-ca", "Differential CA");
    let (cert, key) = ca.issue("site", &TLS_NAMES);
    let pem = dir.join(SITE_PEM);
    if let Some(parent) = pem.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let bundle = std::fs::read_to_string(&cert)? + &std::fs::read_to_string(&key)?;
    std::fs::write(&pem, bundle)?;
    Ok(dir.join("site-ca.crt"))
}

/// The served certificate's subject in `curl -v` output (`CN=shop.example.com`).
pub fn served_subject(verbose: &str) -> Option<&str> {
    verbose
        .lines()
        .find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("subject:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_curl_answer() {
        let a = parse_answer(
            "HTTP/1.1 200 OK\r\nx-backend: web1\r\nSet-Cookie: SRV=web1; path=/\r\ncache-control: max-age=60\r\ncache-control: private\r\n\r\nweb1\n",
        );
        assert_eq!(a.status, 200);
        assert_eq!(a.backend, "web1");
        assert_eq!(a.set_cookie.as_deref(), Some("SRV=web1; path=/"));
        assert_eq!(a.cache_control.as_deref(), Some("max-age=60, private"));
        assert!(!a.shared_cacheable());
        let plain = parse_answer("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\n\r\n");
        assert!(plain.shared_cacheable());
        assert_eq!(a.body, "web1\n");
        assert_eq!(parse_answer("").status, 0);
    }

    #[test]
    fn finds_the_served_subject() {
        let log = "*  SSL connection using TLSv1.3\n* Server certificate:\n*  subject: CN=shop.example.com\n*  issuer: CN=Differential CA\n";
        assert_eq!(served_subject(log), Some("CN=shop.example.com"));
        assert_eq!(served_subject("* Connected"), None);
    }

    #[test]
    fn spread_counts_per_backend() {
        assert_eq!(spread(["web2", "web1", "web2", ""]), "-×1 web1×1 web2×2");
    }

    #[test]
    fn outcomes_pair_up_by_scenario() {
        let mut o = Outcomes::default();
        o.record(Stack::Legacy, "a", "x".into());
        o.record(Stack::Legacy, "b", "y".into());
        o.record(Stack::Halo, "a", "x".into());
        o.record(Stack::Halo, "b", "z".into());
        assert_eq!(o.rows.len(), 2);
        let d = o.differences();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, "b");
        assert!(o.table(&[]).contains("NO"), "{}", o.table(&[]));
        assert!(
            o.table(&["b"]).contains("no (expected)"),
            "{}",
            o.table(&["b"])
        );
    }
}
