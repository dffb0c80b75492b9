//! Listening sockets. Bound with IP_FREEBIND so every node can listen on a VIP it does
//! not hold (no `net.ipv4.ip_nonlocal_bind` needed).

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use halo_crds::load_balancer::Protocol;
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;

use super::{Service, http, tcp};

pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Accepts until the task is aborted; each connection uses the service current at accept
/// time and keeps it to the end (HTTP re-reads it per request).
pub async fn accept_loop(listener: TcpListener, slot: Arc<ArcSwap<Service>>) {
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
        match service.config.protocol {
            Protocol::Tcp => {
                let Some(admitted) = service.admit() else {
                    drop(stream);
                    continue;
                };
                tokio::spawn(tcp::serve(stream, peer, service, admitted));
            }
            Protocol::Http => {
                tokio::spawn(http::serve(stream, peer, slot.clone()));
            }
        }
    }
}
