//! WebSockets over HTTP/2 (RFC 8441): an extended CONNECT from the client becomes an
//! HTTP/1.1 Upgrade to the backend; once the backend switches protocols the client gets
//! `200` and the two streams are joined until either side ends or both go quiet.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use halo_crds::node_config::UpstreamProtocol;
use http::{Request, Response, StatusCode, request};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::Stream;
use super::activity::{Activity, Watched};
use super::body::{self, Body};
use super::forward::{self, gateway_error, ms};
use super::headers;
use super::upstream;
use crate::proxy::backend::ActiveGuard;
use crate::proxy::{Group, Service};

pub async fn websocket(
    service: &Service,
    group: Option<&Group>,
    stream: Stream,
    mut parts: request::Parts,
    client: OnUpgrade,
) -> Response<Body> {
    let peer = stream.conn.peer;
    let Some(group) = group else {
        return gateway_error(service, peer, 503, &service.no_backend().to_string());
    };
    if group.config.protocol != UpstreamProtocol::Http1 {
        let message = "WebSockets over HTTP/2 need an HTTP/1.1 backend group";
        return gateway_error(service, peer, 502, message);
    }
    headers::websocket_to_http1(&mut parts, &headers::websocket_key(nonce()));
    let t = service.config.timeouts;
    let mut req = Request::from_parts(parts, body::empty());
    let mut excluded = vec![false; group.backends.len()];
    for _ in 0..=group.config.retries {
        let acquired = group.acquire(peer.ip(), None, &excluded, service.queue_timeout());
        let Ok(guard) = acquired.await else {
            break;
        };
        let backend = &guard.backend().clone();
        if let Some(i) = group.index_of(backend) {
            excluded[i] = true;
        }
        // Never pooled: the connection becomes the tunnel.
        let mut sender = match upstream::open_http1(backend, ms(t.connect_ms)).await {
            Ok(s) => s,
            Err(e) => {
                backend.count_error("connect");
                tracing::warn!(listener = %service.config.name, backend = backend.name(), error = %e, "backend connect failed, trying another");
                continue;
            }
        };
        let sent = tokio::time::timeout(ms(t.server_ms), sender.try_send_request(req)).await;
        let mut response = match sent {
            Err(_) => {
                backend.count_error("timeout");
                let message = format!("backend {} did not answer the upgrade", backend.name());
                return gateway_error(service, peer, 504, &message);
            }
            Ok(Err(mut e)) => match e.take_message() {
                Some(back) => {
                    req = back;
                    continue;
                }
                None => {
                    backend.count_error("response");
                    let message = format!("backend {}: {}", backend.name(), e.error());
                    return gateway_error(service, peer, 502, &message);
                }
            },
            Ok(Ok(r)) => r,
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            // A refusal (401, 404, ...) is the backend's answer to pass on.
            return forward::relay(service, peer, guard, response, None, stream);
        }
        let upgraded = hyper::upgrade::on(&mut response);
        let (mut head, _) = response.into_parts();
        headers::websocket_accepted(&mut head.headers);
        head.status = StatusCode::OK;
        let idle = ms(t.client_ms.max(t.server_ms));
        tokio::spawn(join(client, upgraded, idle, guard, stream));
        return Response::from_parts(head, body::empty());
    }
    gateway_error(service, peer, 503, &service.no_backend().to_string())
}

fn nonce() -> u128 {
    let state = RandomState::new();
    (u128::from(state.hash_one(1u8)) << 64) | u128::from(state.hash_one(2u8))
}

/// Copies both ways once both sides have switched, until one ends or nothing moves for
/// `idle`.
async fn join(
    client: OnUpgrade,
    backend: OnUpgrade,
    idle: Duration,
    _guard: ActiveGuard,
    _stream: Stream,
) {
    let (Ok(client), Ok(backend)) = tokio::join!(client, backend) else {
        return;
    };
    let activity = Activity::new();
    let mut client = Watched::new(TokioIo::new(client), activity.clone());
    let mut backend = TokioIo::new(backend);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
    tokio::pin!(copy);
    let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    // Bounded: each turn either ends the tunnel or waits one tick of a finite idle limit.
    loop {
        tokio::select! {
            _ = &mut copy => return,
            () = tokio::time::sleep(tick) => {
                if activity.quiet_for() >= idle {
                    return;
                }
            }
        }
    }
}
