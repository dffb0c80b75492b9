//! The admin listener: `/metrics` (Prometheus), `/healthz`, `/status` (JSON) and
//! `POST /vrrp/<vip>/takeover`. Requests pass the policy in `policy` (Host check, bearer
//! token and no cross-site requests for mutations); connections are capped and timed out
//! (`conn`), so idle or slow clients never hold it, nor the proxy's file descriptors.

pub mod client;
pub mod conn;
pub mod health;
pub mod policy;
pub mod token;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::runtime::Runtime;
use crate::vrrp::TakeoverError;
use conn::{Activity, Tracked};
use halo_crds::throttle::Throttle;
use health::Health;
use policy::{Facts, Policy, Verdict};

/// How the admin listener guards itself.
#[derive(Clone, Debug)]
pub struct Options {
    /// The bearer token for mutating endpoints; `None` disables them.
    pub token: Option<String>,
    /// Host names accepted besides `localhost` and the listener's own address.
    pub allowed_hosts: Vec<String>,
    /// Open connections at most (further ones are answered 503 and closed).
    pub max_connections: usize,
    /// Reading a request head, and a connection's idle time between requests.
    pub timeout: Duration,
}

/// The token from `path` (made there if absent); `None`, with the reason logged, when it
/// cannot be read or made: mutating endpoints then stay disabled.
pub fn load_token(path: &Path) -> Option<String> {
    match token::load_or_create(path) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!("{e}; POST endpoints (takeover) are disabled");
            None
        }
    }
}

/// The warning due for an admin listener on `addr` (pure).
pub fn exposure_warning(addr: SocketAddr, authenticated: bool) -> Option<&'static str> {
    match (addr.ip().is_loopback(), authenticated) {
        (true, _) => None,
        (false, false) => Some(
            "the admin listener is reachable from the network and has NO admin token: /status and /metrics are open to anyone who can reach it",
        ),
        (false, true) => Some(
            "the admin listener is reachable from the network: /status and /metrics are readable by anyone who can reach it (takeover needs the admin token)",
        ),
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, runtime: Arc<Runtime>, options: Options) {
    let cap = conn::connection_cap(options.max_connections, conn::nofile_limit());
    tracing::info!(max_connections = cap, timeout = ?options.timeout, "admin listener limits");
    let slots = Arc::new(Semaphore::new(cap));
    let options = Arc::new(options);
    let mut accept_warnings = Throttle::new(Duration::from_secs(10));
    let mut full_warnings = Throttle::new(Duration::from_secs(10));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if let Some(held) = accept_warnings.allow(Instant::now()) {
                    tracing::warn!(error = %e, repeated = held, "admin listener cannot accept");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if let Some(held) = full_warnings.allow(Instant::now()) {
                tracing::warn!(
                    max_connections = cap,
                    refused_since_last = held,
                    "admin listener full: connection refused"
                );
            }
            refuse(stream);
            continue;
        };
        tokio::spawn(connection(stream, runtime.clone(), options.clone(), permit));
    }
}

/// Answers 503 if the socket takes it right away, and closes.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 21\r\nconnection: close\r\n\r\ntoo many connections\n",
    );
}

async fn connection(
    stream: TcpStream,
    runtime: Arc<Runtime>,
    options: Arc<Options>,
    _permit: OwnedSemaphorePermit,
) {
    let local = stream.local_addr().ok();
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let timeout = options.timeout;
    let tracker = activity.clone();
    let svc = service_fn(move |req| {
        let (runtime, options) = (runtime.clone(), options.clone());
        let busy = tracker.busy();
        async move {
            let response = answer(&req, &runtime, &options, local).await;
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(io, svc);
    tokio::select! {
        _ = served => {}
        () = conn::idle_watchdog(&activity, timeout) => {}
    }
}

async fn answer(
    req: &Request<Incoming>,
    runtime: &Runtime,
    options: &Options,
    local: Option<SocketAddr>,
) -> Response<Full<Bytes>> {
    let text = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let facts = Facts {
        method: Some(req.method()),
        host: text(header::HOST),
        origin: text(header::ORIGIN),
        sec_fetch_site: req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok()),
        content_type: text(header::CONTENT_TYPE),
        authorization: text(header::AUTHORIZATION),
        local,
    };
    let policy = Policy {
        token: options.token.as_deref(),
        allowed_hosts: &options.allowed_hosts,
    };
    match policy::judge(&facts, &policy) {
        Verdict::Allow => route(req, runtime).await,
        Verdict::Reject(status, reason) => {
            let mut response = reply(status, "text/plain", format!("{reason}\n"));
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            response
        }
    }
}

async fn route(req: &Request<Incoming>, runtime: &Runtime) -> Response<Full<Bytes>> {
    if req.method() == Method::POST {
        // POST /vrrp/<vip>/takeover: planned handover of that VIP to this node.
        let parts: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
        return match parts.as_slice() {
            ["vrrp", vip, "takeover"] => match runtime.takeover(vip).await {
                Ok(()) => reply(StatusCode::OK, "text/plain", format!("{vip}: taken over\n")),
                Err(e @ TakeoverError::Unknown(_)) => {
                    reply(StatusCode::NOT_FOUND, "text/plain", format!("{e}\n"))
                }
                Err(e) => reply(StatusCode::CONFLICT, "text/plain", format!("{e}\n")),
            },
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "POST /vrrp/<vip>/takeover\n".into(),
            ),
        };
    }
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or POST only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            runtime.metrics().encode(),
        ),
        "/healthz" => match health::health(&runtime.status()) {
            Health::Ready => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Health::NoConfig => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "no config applied yet\n".into(),
            ),
            Health::NotReady(problems) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready:\n{}\n", problems.join("\n")),
            ),
        },
        "/status" => match serde_json::to_string_pretty(&runtime.status()) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /healthz or /status\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_exposure_warnings() {
        let at = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(exposure_warning(at("127.0.0.1:9100"), false), None);
        assert_eq!(exposure_warning(at("[::1]:9100"), true), None);
        assert!(
            exposure_warning(at("0.0.0.0:9100"), false)
                .is_some_and(|w| w.contains("NO admin token"))
        );
        assert!(exposure_warning(at("[::]:9100"), true).is_some_and(|w| w.contains("readable")));
    }
}
