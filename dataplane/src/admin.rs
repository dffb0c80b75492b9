//! The admin listener: `/metrics` (Prometheus), `/healthz`, `/status` (JSON).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::runtime::Runtime;
use crate::vrrp::TakeoverError;

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, runtime: Arc<Runtime>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let runtime = runtime.clone();
                async move { Ok::<_, Infallible>(route(&req, &runtime).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
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
        "/healthz" => match runtime.applied_version() {
            Some(_) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            None => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "no config applied yet\n".into(),
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
