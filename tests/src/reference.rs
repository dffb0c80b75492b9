//! A reference HTTP/1.1 parser for differential tests: hyper's server on a loopback port,
//! recording what it parsed out of each request it accepted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::server::{self, Server};

/// One request as hyper understood it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub method: String,
    /// The request target as hyper parsed it (origin-form path and query here).
    pub target: String,
    /// Header fields in order, names lowercased, values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// The running reference server; stops when dropped.
pub struct Reference {
    pub addr: SocketAddr,
    parsed: Arc<Mutex<Vec<Parsed>>>,
    _server: Server,
}

impl Reference {
    /// Requests accepted so far (head and body read without error), in order.
    pub fn parsed(&self) -> Vec<Parsed> {
        self.parsed.lock().expect("lock").clone()
    }
}

/// Starts hyper's HTTP/1 server with default settings on 127.0.0.1. A request whose
/// head or body hyper rejects gets hyper's own 400 or a closed connection and is not
/// recorded; an accepted one is answered `200 ok`.
pub async fn start() -> std::io::Result<Reference> {
    let parsed = Arc::new(Mutex::new(Vec::new()));
    let log = parsed.clone();
    let server = server::serve("127.0.0.1:0", move |stream| {
        let log = log.clone();
        async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let log = log.clone();
                async move { Ok::<_, Infallible>(record(req, &log).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
    .await?;
    Ok(Reference {
        addr: server.addr(),
        parsed,
        _server: server,
    })
}

async fn record(req: Request<Incoming>, log: &Mutex<Vec<Parsed>>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().to_string());
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"bad body\n")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    log.lock().expect("lock").push(Parsed {
        method,
        target,
        headers,
        body,
    });
    Response::new(Full::new(Bytes::from_static(b"ok")))
}
