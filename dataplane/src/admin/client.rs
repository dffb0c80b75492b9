//! The client side of the admin API, for `halo-dataplane status` and `halo-dataplane
//! takeover`: one request over HTTP/1.1, and the status JSON turned into lines for a person.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin listener at {addr}: {message}")]
    Unreachable { addr: SocketAddr, message: String },
    #[error("the admin listener at {addr} did not answer within {limit:?}")]
    Timeout { addr: SocketAddr, limit: Duration },
    #[error("bad request: {0}")]
    Request(String),
}

const LIMIT: Duration = Duration::from_secs(30);

/// Sends one request; returns the status and the body.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<(StatusCode, String), ClientError> {
    tokio::time::timeout(LIMIT, exchange(addr, method, path, token))
        .await
        .map_err(|_| ClientError::Timeout { addr, limit: LIMIT })?
}

async fn exchange(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<(StatusCode, String), ClientError> {
    let unreachable = |e: &dyn std::fmt::Display| ClientError::Unreachable {
        addr,
        message: e.to_string(),
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    if let Some(t) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Request(e.to_string()))?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `/status` JSON (and the `/healthz` verdict) as a few lines for a person (pure).
pub fn render_status(status: &Value, healthz: (StatusCode, &str)) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let readiness = if healthz.0 == StatusCode::OK {
        "ready".to_string()
    } else {
        format!("NOT READY ({})", healthz.0.as_u16())
    };
    let _ = writeln!(
        out,
        "node {}  config version {} (hash {})  {readiness}",
        s(&status["node"]),
        status["version"],
        s(&status["hash"])
    );
    render_vips(&mut out, status);
    render_listeners(&mut out, status);
    if healthz.0 != StatusCode::OK {
        let _ = writeln!(out, "problems:");
        for line in healthz.1.lines().filter(|l| !l.ends_with(':')) {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

fn items<'a>(status: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    status[key].as_array().into_iter().flatten()
}

fn render_vips(out: &mut String, status: &Value) {
    let mut lines = Vec::new();
    for v in items(status, "vips") {
        let addrs: Vec<&str> = items(v, "addresses").filter_map(Value::as_str).collect();
        lines.push(format!(
            "  {:<20} {:<12} {}",
            v["name"].as_str().unwrap_or("-"),
            v["state"].as_str().unwrap_or("-"),
            addrs.join(", ")
        ));
    }
    for v in items(status, "vrrp") {
        let error = v["error"]
            .as_str()
            .map(|e| format!("  error: {e}"))
            .unwrap_or_default();
        lines.push(format!(
            "  {:<20} {:<12} VRRP vrid {} priority {} for {}s{error}",
            v["name"].as_str().unwrap_or("-"),
            v["state"].as_str().unwrap_or("-"),
            v["vrid"],
            v["priority"],
            v["sinceMsAgo"].as_u64().unwrap_or(0) / 1000
        ));
        track_lines(&mut lines, v);
    }
    if !lines.is_empty() {
        let _ = writeln!(out, "VirtualIPs:\n{}", lines.join("\n"));
    }
}

/// A VRRP instance's track checks and tracked interfaces, one line each.
fn track_lines(lines: &mut Vec<String>, vrrp: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    for c in items(vrrp, "checks") {
        let error = match (c["state"].as_str(), c["lastError"].as_str()) {
            (Some("Passing"), _) | (_, None) => String::new(),
            (_, Some(e)) => format!("  last error: {e}"),
        };
        lines.push(format!(
            "    check {:<16} {:<5} {:<8} ({}) for {}s, {} runs{error}",
            s(&c["name"]),
            s(&c["kind"]),
            s(&c["state"]),
            s(&c["effect"]),
            c["sinceMsAgo"].as_u64().unwrap_or(0) / 1000,
            c["runs"].as_u64().unwrap_or(0)
        ));
    }
    for i in items(vrrp, "interfaces") {
        let state = if i["down"].as_bool().unwrap_or(false) {
            "DOWN"
        } else {
            "up"
        };
        lines.push(format!(
            "    interface {:<12} {state:<5} ({})",
            s(&i["name"]),
            s(&i["effect"])
        ));
    }
}

fn render_listeners(out: &mut String, status: &Value) {
    let listeners: Vec<&Value> = items(status, "listeners").collect();
    if listeners.is_empty() {
        return;
    }
    let _ = writeln!(out, "listeners:");
    for l in &listeners {
        let binds: Vec<&str> = items(l, "bind").filter_map(Value::as_str).collect();
        let total = items(l, "backends").count();
        let _ = writeln!(
            out,
            "  {:<30} {:<5} {:<24} backends {}/{} up",
            l["name"].as_str().unwrap_or("-"),
            l["protocol"].as_str().unwrap_or("-"),
            if binds.is_empty() {
                "(not bound)".to_string()
            } else {
                binds.join(", ")
            },
            l["readyBackends"],
            total
        );
    }
    let mut rows = vec![
        [
            "LISTENER",
            "GROUP",
            "BACKEND",
            "ADDRESS",
            "STATE",
            "WEIGHT",
            "CUR",
            "TOTAL",
            "1xx",
            "2xx",
            "3xx",
            "4xx",
            "5xx",
            "CHECK",
            "LAST CHANGE",
            "DOWNTIME",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for l in listeners {
        for b in items(l, "backends") {
            rows.push(backend_row(l["name"].as_str().unwrap_or("-"), b));
        }
    }
    if rows.len() > 1 {
        let _ = writeln!(out, "backends:");
        out.push_str(&table(&rows, "  "));
    }
}

/// One backend's line of the backends table.
fn backend_row(listener: &str, b: &Value) -> Vec<String> {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let num = |v: &Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
    let group = text(&b["group"]);
    let name = text(&b["name"]);
    // Names of a named group's backends carry the group: shown once, in its column.
    let short = name
        .strip_prefix(&format!("{group}/"))
        .unwrap_or(&name)
        .to_string();
    let mut state = if b["up"].as_bool() == Some(true) {
        "up".to_string()
    } else {
        "DOWN".to_string()
    };
    if b["backup"].as_bool() == Some(true) {
        state.push_str(" backup");
    }
    let responses = &b["responses"];
    let check = match (b["check"]["result"].as_str(), b["check"]["reason"].as_str()) {
        (Some("failed"), Some(why)) => format!("FAIL {why}"),
        (Some("passed"), _) => "ok".to_string(),
        (Some("pending"), _) => "pending".to_string(),
        _ => "-".to_string(),
    };
    vec![
        listener.to_string(),
        group,
        short,
        text(&b["address"]),
        state,
        num(&b["weight"]),
        num(&b["active"]),
        num(&b["sessionsTotal"]),
        num(&responses["1xx"]),
        num(&responses["2xx"]),
        num(&responses["3xx"]),
        num(&responses["4xx"]),
        num(&responses["5xx"]),
        check,
        b["lastChangeSecsAgo"].as_u64().map_or("-".into(), ago),
        b["downtimeSecs"].as_u64().map_or("-".into(), duration),
    ]
}

/// `rows` as aligned columns, each line starting with `indent` (pure).
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_string();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A span of seconds for a person: `42s`, `3m05s`, `2h10m`, `4d03h`.
fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

fn ago(secs: u64) -> String {
    format!("{} ago", duration(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backends_are_a_table_with_their_counts() {
        let status = json!({
            "node": "n", "version": 1, "hash": "h", "vips": [], "vrrp": [],
            "listeners": [{"name": "l/main", "protocol": "HTTP", "bind": ["127.0.0.1:80"],
                           "readyBackends": 1, "backends": [
                {"name": "api/one", "group": "api", "address": "127.0.0.1:9001", "up": true,
                 "backup": false, "weight": 3, "active": 2, "sessionsTotal": 120,
                 "responses": {"1xx": 0, "2xx": 100, "3xx": 4, "4xx": 9, "5xx": 7},
                 "check": {"result": "passed"}, "lastChangeSecsAgo": 185, "downtimeSecs": 0},
                {"name": "web-2", "group": "default", "address": "127.0.0.1:9002", "up": false,
                 "backup": true, "weight": 1, "active": 0, "sessionsTotal": 5,
                 "responses": {"1xx": 0, "2xx": 5, "3xx": 0, "4xx": 0, "5xx": 0},
                 "check": {"result": "failed", "reason": "status 500"},
                 "lastChangeSecsAgo": 7300, "downtimeSecs": 7300}]}]
        });
        let text = render_status(&status, (StatusCode::OK, "ok\n"));
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "backends:")
            .skip(1)
            .collect();
        assert_eq!(
            table,
            [
                "  LISTENER  GROUP    BACKEND  ADDRESS         STATE        WEIGHT  CUR  TOTAL  1xx  2xx  3xx  4xx  5xx  CHECK            LAST CHANGE  DOWNTIME",
                "  l/main    api      one      127.0.0.1:9001  up           3       2    120    0    100  4    9    7    ok               3m05s ago    0s",
                "  l/main    default  web-2    127.0.0.1:9002  DOWN backup  1       0    5      0    5    0    0    0    FAIL status 500  2h01m ago    2h01m",
            ],
            "{text}"
        );
    }

    #[test]
    fn table_of_durations() {
        for (secs, text) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m00s"),
            (3599, "59m59s"),
            (3600, "1h00m"),
            (86_399, "23h59m"),
            (90_000, "1d01h"),
        ] {
            assert_eq!(duration(secs), text);
        }
        assert_eq!(ago(5), "5s ago");
    }

    #[test]
    fn status_is_rendered_for_a_person() {
        let status = json!({
            "node": "node-a", "version": 3, "hash": "abc",
            "vips": [{"name": "local", "addresses": ["127.0.0.77/8"], "state": "Held"}],
            "vrrp": [{"name": "web", "vrid": 7, "state": "Master", "priority": 150, "sinceMsAgo": 12000,
                      "checks": [{"name": "app", "kind": "http", "state": "Failing", "effect": "weight 30",
                                  "runs": 9, "streak": 0, "lastError": "status 503", "sinceMsAgo": 4000}],
                      "interfaces": [{"name": "eth1", "effect": "fault", "down": true}]}],
            "bindErrors": [],
            "listeners": [{"name": "test/site/main", "protocol": "HTTP", "bind": ["127.0.0.1:8080"],
                           "readyBackends": 1, "backends": [
                {"name": "web-1", "address": "127.0.0.1:9001", "up": true, "backup": false, "weight": 1, "active": 0},
                {"name": "web-2", "address": "127.0.0.1:9002", "up": false, "backup": true, "weight": 1, "active": 0}]}]
        });
        let text = render_status(&status, (StatusCode::OK, "ok\n"));
        assert!(
            text.starts_with("node node-a  config version 3 (hash abc)  ready\n"),
            "{text}"
        );
        assert!(
            text.contains("local") && text.contains("Held") && text.contains("127.0.0.77/8"),
            "{text}"
        );
        assert!(text.contains("VRRP vrid 7 priority 150 for 12s"), "{text}");
        assert!(
            text.contains(
                "    check app              http  Failing  (weight 30) for 4s, 9 runs  last error: status 503\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("    interface eth1         DOWN  (fault)\n"),
            "{text}"
        );
        assert!(
            text.contains("test/site/main") && text.contains("backends 1/2 up"),
            "{text}"
        );
        assert!(text.contains("DOWN backup"), "{text}");
        let sick = render_status(
            &status,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready:\nlistener x cannot bind y\n",
            ),
        );
        assert!(
            sick.contains("NOT READY (503)")
                && sick.contains("problems:\n  listener x cannot bind y\n"),
            "{sick}"
        );
    }
}
