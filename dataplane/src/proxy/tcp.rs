//! TCP (L4) forwarding: a byte stream between the client and one backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{Admitted, Service, pump};

pub async fn serve(client: TcpStream, peer: SocketAddr, service: Arc<Service>, admitted: Admitted) {
    let _admitted = admitted;
    let Some(group) = service.stream_group() else {
        tracing::warn!(%peer, listener = %service.config.name, "no backend group; closing client connection");
        return;
    };
    let (guard, upstream) = match service.connect(group, peer, &client).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "closing client connection");
            return;
        }
    };
    let t = service.config.timeouts;
    // One idle clock over both directions: a quiet database session is cut only after
    // neither side has sent a byte for the longer of the client and server timeouts.
    let idle = Duration::from_millis(t.client_ms.max(t.server_ms));
    match pump::relay(&client, &upstream, idle).await {
        Ok(totals) => {
            tracing::debug!(%peer, backend = guard.backend().name(), up = totals.a_to_b, down = totals.b_to_a, "tcp session closed");
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            tracing::info!(%peer, backend = guard.backend().name(), "tcp session idle timeout");
        }
        Err(e) => {
            guard.backend().count_error("stream");
            tracing::debug!(%peer, backend = guard.backend().name(), error = %e, "tcp session ended with error");
        }
    }
}
