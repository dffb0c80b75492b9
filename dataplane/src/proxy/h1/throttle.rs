//! Log lines about misbehaving peers, at most one per peer per minute, so a hostile
//! client cannot flood the log (the metrics count every case).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::proxy::backend::Backend;

const QUIET: Duration = Duration::from_secs(60);
/// Peers remembered per worker; past this the memory is reset rather than grown.
const REMEMBER: usize = 4096;

thread_local! {
    static LAST: RefCell<HashMap<IpAddr, Instant>> = RefCell::new(HashMap::new());
}

/// True when `peer` has not been logged about within the quiet period.
fn due(peer: IpAddr, now: Instant) -> bool {
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last
            .get(&peer)
            .is_some_and(|t| now.duration_since(*t) < QUIET)
        {
            return false;
        }
        if last.len() >= REMEMBER {
            last.clear();
        }
        last.insert(peer, now);
        true
    })
}

pub fn info_client(peer: SocketAddr, listener: &str, status: u16, reason: &str) {
    if due(peer.ip(), Instant::now()) {
        tracing::info!(%peer, listener, status, reason, "request refused (further ones from this peer are counted, not logged, for a minute)");
    }
}

pub fn info_proxy_header(peer: SocketAddr, listener: &str, error: &dyn std::fmt::Display) {
    if due(peer.ip(), Instant::now()) {
        tracing::info!(%peer, listener, %error, "connection closed: bad PROXY protocol header (further ones from this peer are counted, not logged, for a minute)");
    }
}

pub fn info_tls(peer: SocketAddr, listener: &str, reason: &str, error: &dyn std::fmt::Display) {
    if due(peer.ip(), Instant::now()) {
        tracing::info!(%peer, listener, reason, %error, "TLS connection refused (further ones from this peer are counted, not logged, for a minute)");
    }
}

pub fn warn_backend(backend: &Backend, error: &dyn std::fmt::Display) {
    if due(backend.config.address, Instant::now()) {
        tracing::warn!(listener = %backend.listener, backend = backend.name(), %error, "bad response from backend (further ones are counted, not logged, for a minute)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_peer_per_quiet_period() {
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let t0 = Instant::now();
        assert!(due(a, t0));
        assert!(!due(a, t0 + Duration::from_secs(1)));
        assert!(due(b, t0 + Duration::from_secs(1)));
        assert!(due(a, t0 + QUIET + Duration::from_secs(1)));
    }
}
