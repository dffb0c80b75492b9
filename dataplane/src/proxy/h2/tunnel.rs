//! Protocol switches on the hyper engine: a WebSocket over HTTP/2 (RFC 8441 extended
//! CONNECT) becomes an HTTP/1.1 Upgrade to the backend and the client gets `200`; an
//! HTTP/1.1 client's Upgrade is passed on and the backend's `101` back. The two
//! streams are then joined until either side ends or both go quiet.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use halo_crds::node_config::UpstreamProtocol;
use http::{Request, Response, StatusCode, request};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::Stream;
use super::activity::{Activity, Watched};
use super::body::{self, Body};
use super::forward::{self, Upgrade, gateway_error, ms};
use super::headers;
use super::upstream;
use crate::proxy::backend::ActiveGuard;
use crate::proxy::filter::HeaderEdits;
use crate::proxy::{Group, Service};

/// Joins a client that asked to switch protocols (`kind`) to a backend that agrees.
pub async fn upgrade(
    service: &Service,
    group: Option<&Group>,
    stream: Stream,
    mut parts: request::Parts,
    client: OnUpgrade,
    kind: Upgrade,
    edits: &HeaderEdits,
) -> Response<Body> {
    let peer = stream.conn.peer;
    let Some(group) = group else {
        return gateway_error(service, peer, 503, &service.no_backend().to_string());
    };
    if group.config.protocol != UpstreamProtocol::Http1 {
        let message = "protocol upgrades (WebSockets) need an HTTP/1.1 backend group";
        return gateway_error(service, peer, 502, message);
    }
    if matches!(kind, Upgrade::Websocket) {
        headers::websocket_to_http1(&mut parts, &headers::websocket_key(nonce()));
    }
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
        let mut sender = match upstream::open_http1(backend, ms(t.connect_ms), stream.conn.origin())
            .await
        {
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
            return forward::relay(service, peer, guard, response, None, stream, edits);
        }
        let upgraded = hyper::upgrade::on(&mut response);
        let (mut head, _) = response.into_parts();
        match &kind {
            Upgrade::Websocket => {
                headers::websocket_accepted(&mut head.headers);
                head.status = StatusCode::OK;
            }
            Upgrade::Http1(_) => {
                // The switch passes on as the backend made it (Upgrade, Accept fields).
                let to = head.headers.get(http::header::UPGRADE).cloned();
                headers::strip_hop_by_hop(&mut head.headers);
                if let Some(to) = to {
                    head.headers.insert(http::header::UPGRADE, to);
                }
                head.headers.insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("upgrade"),
                );
            }
        }
        headers::edit(&mut head.headers, edits);
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
