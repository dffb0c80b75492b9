//! TCP (L4) forwarding: a byte stream between the client and one backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::accesslog::{By, Phase};
use super::trace::Trace;
use super::{Admitted, Service, pump};

pub async fn serve(client: TcpStream, peer: SocketAddr, service: Arc<Service>, admitted: Admitted) {
    let _admitted = admitted;
    let mut trace = Trace::begin(&service);
    session(&client, peer, &service, &mut trace).await;
    trace.finish(&service, peer);
}

async fn session(client: &TcpStream, peer: SocketAddr, service: &Service, trace: &mut Trace) {
    let Some(group) = service.stream_group() else {
        tracing::warn!(%peer, listener = %service.config.name, "no backend group; closing client connection");
        trace.end(By::Server, Phase::Connect);
        return;
    };
    let began = Instant::now();
    let (guard, upstream) = match service.connect(group, peer, client).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "closing client connection");
            trace.end(By::Server, Phase::Connect);
            return;
        }
    };
    trace.picked(guard.backend());
    trace.connected(began.elapsed());
    let t = service.config.timeouts;
    // One idle clock over both directions: a quiet database session is cut only after
    // neither side has sent a byte for the longer of the client and server timeouts.
    let idle = Duration::from_millis(t.client_ms.max(t.server_ms));
    match pump::relay(client, &upstream, idle).await {
        Ok(totals) => {
            trace.bytes(totals.a_to_b, totals.b_to_a);
            tracing::debug!(%peer, backend = guard.backend().name(), up = totals.a_to_b, down = totals.b_to_a, "tcp session closed");
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            trace.end(By::ClientTimeout, Phase::Data);
            tracing::info!(%peer, backend = guard.backend().name(), "tcp session idle timeout");
        }
        Err(e) => {
            trace.end(By::Server, Phase::Data);
            guard.backend().count_error("stream");
            tracing::debug!(%peer, backend = guard.backend().name(), error = %e, "tcp session ended with error");
        }
    }
}
