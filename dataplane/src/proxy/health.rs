//! Active health checks: TCP connect or an HTTP GET (over TLS for groups that speak
//! TLS to their servers), with rise/fall hysteresis.

use std::sync::{Arc, Weak};
use std::time::Duration;

use halo_crds::node_config::{HealthCheckConfig, Probe, ProxyProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::backend::Backend;
use super::proxy_protocol;
use super::tls::client::UpstreamTls;

/// Starts the check loop; it ends by itself when the backend is dropped.
pub fn spawn(backend: &Arc<Backend>) {
    let Some(check) = backend.health_check.clone() else {
        return;
    };
    let weak = Arc::downgrade(backend);
    let task = tokio::spawn(run(weak, check));
    backend.set_health_task(task.abort_handle());
}

/// Consecutive results decide; a single failure or success changes nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    successes: u32,
    failures: u32,
}

impl Hysteresis {
    /// Returns the new up/down state after one check result.
    pub fn record(&mut self, up: bool, passed: bool, rise: u32, fall: u32) -> bool {
        if passed {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            up || self.successes >= rise
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            up && self.failures < fall
        }
    }
}

async fn run(backend: Weak<Backend>, check: HealthCheckConfig) {
    let mut hysteresis = Hysteresis::default();
    loop {
        let Some(b) = backend.upgrade() else { return };
        let mut target = b.addr();
        if let Some(port) = check.port {
            target.set_port(port);
        }
        let timeout = Duration::from_millis(check.timeout_ms);
        let tls = b.tls.clone();
        let result = tokio::time::timeout(
            timeout,
            probe(target, &check.probe, b.proxy_protocol, tls.as_deref()),
        )
        .await;
        let outcome = match result {
            Err(_) => Err(format!("no answer within {timeout:?}")),
            Ok(r) => r,
        };
        let was_up = b.is_up();
        let now_up = hysteresis.record(was_up, outcome.is_ok(), check.rise, check.fall);
        b.count_check(if outcome.is_ok() { "pass" } else { "fail" });
        b.stats
            .checked(outcome.as_ref().map(|_| ()).map_err(String::as_str));
        if was_up != now_up {
            match &outcome {
                Ok(()) => {
                    tracing::info!(listener = %b.listener, backend = b.name(), %target, "backend is up")
                }
                Err(why) => {
                    tracing::warn!(listener = %b.listener, backend = b.name(), %target, reason = %why, "backend is down")
                }
            }
            b.set_up(now_up);
        }
        let pause = if now_up {
            check.interval_ms
        } else {
            check.down_interval_ms
        };
        drop(b);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

async fn probe(
    target: std::net::SocketAddr,
    probe: &Probe,
    proxy_protocol: Option<ProxyProtocolVersion>,
    tls: Option<&UpstreamTls>,
) -> Result<(), String> {
    let mut stream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if let Some(version) = proxy_protocol {
        // A backend that expects the header for every connection gets one naming no
        // client, so the check is not refused for lacking it.
        stream
            .write_all(&proxy_protocol::encode_local(version))
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    // A group that speaks TLS to its servers is checked over TLS too (a TCP check
    // completes the handshake), so a server whose certificate fails verification is not
    // marked up.
    let http = match probe {
        Probe::Http {
            path,
            expect_status,
        } => Some((path.as_str(), *expect_status)),
        _ => None,
    };
    match (tls, http) {
        (None, None) => Ok(()),
        (None, Some((path, expect))) => http_probe(stream, target, path, expect).await,
        (Some(tls), http) => {
            let stream = tls
                .connect(stream, target.ip())
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            match http {
                Some((path, expect)) => http_probe(stream, target, path, expect).await,
                None => Ok(()),
            }
        }
    }
}

async fn http_probe<S>(
    mut stream: S,
    target: std::net::SocketAddr,
    path: &str,
    expect_status: Option<u16>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: halo-health-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status = parse_status_line(&head).ok_or_else(|| "no HTTP status line".to_string())?;
    let ok = match expect_status {
        Some(want) => status == want,
        None => (200..400).contains(&status),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_after_fall_failures_and_up_after_rise_successes() {
        let (rise, fall) = (2, 3);
        let mut h = Hysteresis::default();
        let mut up = true;
        let mut trace = Vec::new();
        for passed in [
            false, false, true, false, false, false, true, true, false, true,
        ] {
            up = h.record(up, passed, rise, fall);
            trace.push(up);
        }
        assert_eq!(
            trace,
            [true, true, true, true, true, false, false, true, true, true]
        );
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }
}
