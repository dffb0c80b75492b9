//! Listening sockets. Bound with IP_FREEBIND so every node can listen on a VIP it does
//! not hold (no `net.ipv4.ip_nonlocal_bind` needed); one socket per worker with
//! SO_REUSEPORT, so the kernel spreads connections over the event loops.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use halo_crds::load_balancer::Protocol;
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use super::{Service, h1, h2, proxy_protocol, tcp, tls};

fn bind_one(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// `count` sockets on `addr`, one per worker. With one worker no SO_REUSEPORT is set,
/// so nothing else can share the port.
pub fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let reuse_port = count > 1;
    (0..count.max(1))
        .map(|_| bind_one(addr, reuse_port))
        .collect()
}

/// Accepts until the task is aborted; each connection uses the service current at accept
/// time and keeps it to the end (HTTP re-reads it per request). Runs on a worker.
pub async fn accept_loop(socket: std::net::TcpListener, slot: Arc<ArcSwap<Service>>) {
    let listener = match TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register a listening socket");
            return;
        }
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = slot.load_full();
        if proxy_protocol::expected(&service.config, peer.ip()) {
            // Read in the connection's own task: a slow sender must not hold up accepts.
            let slot = slot.clone();
            tokio::spawn(async move {
                if let Some(client) = proxy_protocol::accept(&stream, peer, &service).await {
                    dispatch(stream, client, service, &slot);
                }
            });
            continue;
        }
        dispatch(stream, peer, service, &slot);
    }
}

/// Hands an accepted connection from `client` to its protocol's driver.
fn dispatch(
    stream: TcpStream,
    client: SocketAddr,
    service: Arc<Service>,
    slot: &Arc<ArcSwap<Service>>,
) {
    match service.config.protocol {
        Protocol::Tcp => {
            let Some(admitted) = service.admit() else {
                return;
            };
            tokio::spawn(tcp::serve(stream, client, service, admitted));
        }
        Protocol::Tls => {
            let Some(admitted) = service.admit() else {
                return;
            };
            tokio::spawn(tls::passthrough::serve(stream, client, service, admitted));
        }
        Protocol::Https => {
            // Admitted before the handshake: a full listener spends no crypto on a client
            // (its requests are answered 503).
            let admitted = service.admit();
            tokio::spawn(h2::serve_tls(stream, client, slot.clone(), admitted));
        }
        Protocol::Http if service.needs_hyper() => {
            tokio::spawn(h2::serve_http1(stream, client, slot.clone()));
        }
        Protocol::Http => {
            tokio::spawn(h1::serve(stream, client, slot.clone()));
        }
    }
}
