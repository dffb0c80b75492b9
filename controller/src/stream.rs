//! The config stream server (HTTPS): each data plane holds
//! `GET /v1/nodes/{node}/config` open and gets a full versioned NodeConfig whenever its
//! rendered config changes, with heartbeats in between; it reports back with
//! `POST /v1/nodes/{node}/status`. Callers must present a ServiceAccount token of the
//! data plane's account, bound to a pod on that very node (checked with TokenReview).

use halo_crds::throttle::Throttle;
use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use futures::channel::mpsc;
use halo_crds::NodeConfig;
use halo_crds::protocol::{NodeReport, StreamMessage, parse_node_path};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::lease::Leader;
use crate::metrics::Metrics;
use crate::observed::{CLOSED_STREAM_GRACE, Observed};

/// The token extra that names the node of the pod a token is bound to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
const MAX_REPORT_BYTES: usize = 1 << 20;
const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Published {
    pub config: Arc<NodeConfig>,
    pub at: Instant,
}

/// The latest rendered config of every node.
#[derive(Default)]
pub struct Hub {
    slots: Mutex<HashMap<String, watch::Sender<Published>>>,
}

impl Hub {
    /// Stores a node's config; streams see it only if its content changed.
    pub fn publish(&self, node: &str, config: NodeConfig) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let published = Published {
            config: Arc::new(config),
            at: Instant::now(),
        };
        match slots.get(node) {
            Some(tx) if tx.borrow().config.hash == published.config.hash => {}
            Some(tx) => {
                tx.send_replace(published);
            }
            None => {
                slots.insert(node.to_string(), watch::channel(published).0);
            }
        }
    }

    pub fn subscribe(&self, node: &str) -> Option<watch::Receiver<Published>> {
        self.slots
            .lock()
            .ok()?
            .get(node)
            .map(watch::Sender::subscribe)
    }

    /// Forgets nodes that no longer exist (their streams end).
    pub fn retain(&self, nodes: &BTreeSet<String>) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.retain(|n, _| nodes.contains(n));
        }
    }
}

pub struct Auth {
    pub client: Client,
    pub audience: String,
    /// `system:serviceaccount:<namespace>:<name>` of the data plane.
    pub username: String,
    cache: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

impl Auth {
    pub fn new(client: Client, audience: String, username: String) -> Self {
        Self {
            client,
            audience,
            username,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Allows the request only for the data plane's ServiceAccount, from `node`.
    pub async fn authorize(&self, headers: &http::HeaderMap, node: &str) -> Result<(), Refusal> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "missing bearer token"))?;
        let bound_node = match self.cached(token) {
            Some(n) => n,
            None => {
                let n = self.review(token).await?;
                if let Ok(mut c) = self.cache.lock() {
                    c.retain(|_, (_, at)| at.elapsed() < AUTH_CACHE_TTL);
                    c.insert(token.to_string(), (n.clone(), Instant::now()));
                }
                n
            }
        };
        match bound_node {
            Some(n) if n == node => Ok(()),
            Some(n) => Err(refuse(
                StatusCode::FORBIDDEN,
                format!("token is bound to node {n}, not {node}"),
            )),
            None => Err(refuse(
                StatusCode::FORBIDDEN,
                "token is not bound to a pod on a node",
            )),
        }
    }

    fn cached(&self, token: &str) -> Option<Option<String>> {
        let c = self.cache.lock().ok()?;
        c.get(token)
            .filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL)
            .map(|(n, _)| n.clone())
    }

    /// Returns the node the token is bound to, once the API server vouches for it.
    async fn review(&self, token: &str) -> Result<Option<String>, Refusal> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let result = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("TokenReview failed: {e}"),
                )
            })?;
        let status = result.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                status
                    .error
                    .unwrap_or_else(|| "token not authenticated".into()),
            ));
        }
        let user = status.user.unwrap_or_default();
        if user.username.as_deref() != Some(self.username.as_str()) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "{} is not the data plane's ServiceAccount",
                    user.username.unwrap_or_default()
                ),
            ));
        }
        Ok(user
            .extra
            .and_then(|e| e.get(NODE_NAME_EXTRA).and_then(|v| v.first().cloned())))
    }
}

pub struct StreamServer {
    pub hub: Arc<Hub>,
    pub observed: Arc<Observed>,
    pub auth: Auth,
    pub leader: Arc<Leader>,
    pub metrics: Arc<Metrics>,
    pub heartbeat: Duration,
    /// Refusals are logged at most once per period (a scanner must not flood the log);
    /// the metric counts every one.
    pub refusal_log: std::sync::Mutex<Throttle>,
}

/// How often a refused request may be logged.
pub const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())).boxed());
    *r.status_mut() = status;
    r
}

pub async fn serve(listener: TcpListener, tls: TlsAcceptor, server: Arc<StreamServer>) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let tls = tls.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.route(req, peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

impl StreamServer {
    async fn route(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_string();
        let Some((node, what)) = parse_node_path(&path) else {
            return text(
                StatusCode::NOT_FOUND,
                "expected /v1/nodes/{node}/config or /status\n",
            );
        };
        let node = node.to_string();
        if let Err(r) = self.auth.authorize(req.headers(), &node).await {
            self.metrics
                .auth_refused
                .get_or_create(&vec![("status", r.status.as_u16().to_string())])
                .inc();
            let allowed = self
                .refusal_log
                .lock()
                .map(|mut t| t.allow(std::time::Instant::now()))
                .unwrap_or(None);
            if let Some(held) = allowed {
                tracing::warn!(%peer, %node, reason = %r.reason, held_back = held, "refused (held_back: refusals not logged since the last line)");
            }
            return text(r.status, format!("{}\n", r.reason));
        }
        if !self.leader.is_leader() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "not the leader; retry\n");
        }
        match (req.method().clone(), what) {
            (Method::GET, "config") => self.stream(&node, req.uri().query().unwrap_or("")),
            (Method::POST, "status") => {
                let body = match Limited::new(req.into_body(), MAX_REPORT_BYTES)
                    .collect()
                    .await
                {
                    Ok(b) => b.to_bytes(),
                    Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")),
                };
                match serde_json::from_slice::<NodeReport>(&body) {
                    Ok(report) => {
                        if let Some(r) = &report.rejected {
                            tracing::warn!(%node, version = r.version, reason = %r.reason, "data plane rejected a config");
                        }
                        self.observed.record_report(&node, report, Instant::now());
                        text(StatusCode::NO_CONTENT, "")
                    }
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("invalid report: {e}\n")),
                }
            }
            _ => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "GET config or POST status\n",
            ),
        }
    }

    fn stream(self: &Arc<Self>, node: &str, query: &str) -> Response<Body> {
        let Some(mut updates) = self.hub.subscribe(node) else {
            return text(StatusCode::NOT_FOUND, format!("no Node named {node}\n"));
        };
        let mut version: u64 = 0;
        let mut sent_hash = String::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("version", v)) => version = v.parse().unwrap_or(0),
                Some(("hash", h)) => sent_hash = h.to_string(),
                _ => {}
            }
        }
        let (mut tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let server = self.clone();
        let node = node.to_string();
        tokio::spawn(async move {
            server.metrics.connected.inc();
            server.observed.stream_opened(&node);
            tracing::info!(%node, version, "data plane connected");
            let mut first = true;
            let mut last_beat = Instant::now();
            // Whether the data plane went away (rather than this replica ending it).
            let gone = loop {
                let published = updates.borrow_and_update().clone();
                // Same content as the data plane runs: send it under the version it
                // already has, so a controller restart causes no churn.
                let changed = published.config.hash != sent_hash;
                if changed || first {
                    if changed {
                        version += 1;
                    }
                    // The hash ignores the version, so render's hash stands; no re-hashing
                    // of a large config on every push.
                    let mut config = (*published.config).clone();
                    config.version = version;
                    sent_hash = config.hash.clone();
                    if send(&mut tx, &StreamMessage::Config { config })
                        .await
                        .is_err()
                    {
                        break true;
                    }
                    server.metrics.pushes.inc();
                    server
                        .metrics
                        .push_seconds
                        .observe(published.at.elapsed().as_secs_f64());
                    first = false;
                }
                tokio::select! {
                    r = updates.changed() => if r.is_err() { break false },
                    // Often enough to notice a data plane that is gone (its report stops
                    // counting) well before the next heartbeat would fail.
                    () = tokio::time::sleep(CLOSE_CHECK.min(server.heartbeat)) => {
                        if tx.is_closed() {
                            break true;
                        }
                        if !server.leader.is_leader() {
                            break false;
                        }
                        if last_beat.elapsed() >= server.heartbeat {
                            if send(&mut tx, &StreamMessage::Heartbeat).await.is_err() {
                                break true;
                            }
                            last_beat = Instant::now();
                        }
                    }
                }
            };
            server.metrics.connected.dec();
            server.observed.stream_closed(&node, gone, Instant::now());
            tracing::info!(%node, gone, "data plane stream closed");
            if gone {
                // Once the grace has passed, status no longer counts the node's report.
                tokio::time::sleep(CLOSED_STREAM_GRACE).await;
                server.observed.trigger();
            }
        });
        let mut response = Response::new(StreamBody::new(rx).boxed());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-ndjson"),
        );
        response
    }
}

/// How often a config stream checks that its data plane is still there.
const CLOSE_CHECK: Duration = Duration::from_millis(200);

async fn send(
    tx: &mut mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    message: &StreamMessage,
) -> Result<(), ()> {
    let mut line = serde_json::to_vec(message).map_err(|_| ())?;
    line.push(b'\n');
    tx.send(Ok(Frame::data(Bytes::from(line))))
        .await
        .map_err(|_| ())
}
