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
    }
    if !lines.is_empty() {
        let _ = writeln!(out, "VirtualIPs:\n{}", lines.join("\n"));
    }
}

fn render_listeners(out: &mut String, status: &Value) {
    let listeners: Vec<&Value> = items(status, "listeners").collect();
    if listeners.is_empty() {
        return;
    }
    let _ = writeln!(out, "listeners:");
    for l in listeners {
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
        for b in items(l, "backends") {
            let up = if b["up"].as_bool() == Some(true) {
                "up"
            } else {
                "DOWN"
            };
            let backup = if b["backup"].as_bool() == Some(true) {
                " backup"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "      {:<20} {:<22} {up:<4} active {}{backup}",
                b["name"].as_str().unwrap_or("-"),
                b["address"].as_str().unwrap_or("-"),
                b["active"]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_is_rendered_for_a_person() {
        let status = json!({
            "node": "node-a", "version": 3, "hash": "abc",
            "vips": [{"name": "local", "addresses": ["127.0.0.77/8"], "state": "Held"}],
            "vrrp": [{"name": "web", "vrid": 7, "state": "Master", "priority": 150, "sinceMsAgo": 12000}],
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
            text.contains("test/site/main") && text.contains("backends 1/2 up"),
            "{text}"
        );
        assert!(text.contains("DOWN") && text.contains("backup"), "{text}");
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
