//! TLS passthrough (`protocol: TLS`): the ClientHello is read (bounded in bytes and
//! time) only to learn its SNI name, which picks the route; the bytes read and the rest
//! of the connection then go unchanged to a backend of that route's group.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use halo_crds::node_config::RouteConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::rustls::server::Acceptor;

use super::names::{route_host_matches, route_host_rank};
use crate::metrics::with;
use crate::proxy::h1::throttle;
use crate::proxy::{Admitted, Service, pump};

/// A ClientHello longer than this is refused (real ones are well under 2 KiB; a
/// post-quantum key share makes them a few KiB).
const MAX_HELLO: usize = 32 * 1024;

/// Why a connection got no backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Timeout,
    Closed,
    NotTls,
    TooLarge,
    NoRoute,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Timeout => "no whole ClientHello in time",
            Self::Closed => "closed before its ClientHello",
            Self::NotTls => "did not start with a TLS ClientHello",
            Self::TooLarge => "ClientHello too large",
            Self::NoRoute => "no route for its SNI name",
        })
    }
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::NotTls => "not_tls",
            Self::TooLarge => "too_large",
            Self::NoRoute => "no_route",
        }
    }
}

/// The route for SNI `name`: the most specific hostname that covers it (exact, then the
/// longest wildcard; config order breaks ties), else the first route without hostnames.
pub fn choose(routes: &[RouteConfig], name: Option<&str>) -> Option<usize> {
    let by_name = name.and_then(|name| {
        routes
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.hostnames.iter().map(move |h| (i, h)))
            .filter(|(_, h)| route_host_matches(h, name))
            .min_by_key(|(i, h)| (route_host_rank(h), *i))
            .map(|(i, _)| i)
    });
    by_name.or_else(|| routes.iter().position(|r| r.hostnames.is_empty()))
}

/// Reads until the ClientHello is whole; its SNI name (None without one) and the
/// bytes read.
async fn read_hello(
    stream: &mut TcpStream,
    wait: Duration,
) -> Result<(Option<String>, Vec<u8>), Refusal> {
    let deadline = Instant::now() + wait;
    let mut acceptor = Acceptor::default();
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    // Bounded: every turn adds at least one byte, up to MAX_HELLO.
    while buf.len() < MAX_HELLO {
        let n = match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(Refusal::Timeout),
            Ok(Ok(0) | Err(_)) => return Err(Refusal::Closed),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut fresh = &chunk[..n];
        // Bounded: each turn consumes bytes, or ends the read.
        while !fresh.is_empty() {
            match acceptor.read_tls(&mut fresh) {
                Ok(0) => return Err(Refusal::TooLarge),
                Ok(_) => {}
                Err(_) => return Err(Refusal::NotTls),
            }
        }
        match acceptor.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => {
                let name = accepted.client_hello().server_name().map(str::to_string);
                return Ok((name, buf));
            }
            Err(_) => return Err(Refusal::NotTls),
        }
    }
    Err(Refusal::TooLarge)
}

/// Serves one passthrough connection.
pub async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    service: Arc<Service>,
    admitted: Admitted,
) {
    let _admitted = admitted;
    let wait = Duration::from_millis(service.config.timeouts.http_request_ms);
    let chosen = read_hello(&mut client, wait)
        .await
        .and_then(|(name, hello)| {
            let group = choose(&service.config.routes, name.as_deref())
                .and_then(|i| service.routes.plans.get(i))
                .and_then(|plan| service.route_group(plan));
            match group {
                Some(g) => Ok((g, hello)),
                None => Err(Refusal::NoRoute),
            }
        });
    let (group, hello) = match chosen {
        Ok(pair) => pair,
        Err(refusal) => {
            refused(&service, peer, refusal);
            return;
        }
    };
    let (guard, mut upstream) = match service.connect(group, peer, &client).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "closing client connection");
            return;
        }
    };
    let t = service.config.timeouts;
    let server = Duration::from_millis(t.server_ms);
    if !matches!(
        tokio::time::timeout(server, upstream.write_all(&hello)).await,
        Ok(Ok(()))
    ) {
        guard.backend().count_error("stream");
        return;
    }
    let idle = Duration::from_millis(t.client_ms.max(t.server_ms));
    if let Err(e) = pump::relay(&client, &upstream, idle).await {
        tracing::debug!(%peer, backend = guard.backend().name(), error = %e, "passthrough session ended");
    }
}

fn refused(service: &Service, peer: SocketAddr, refusal: Refusal) {
    service
        .metrics
        .tls_handshake_errors
        .get_or_create(&with(service.labels.clone(), "reason", refusal.reason()))
        .inc();
    throttle::info_tls(peer, &service.config.name, refusal.reason(), &refusal);
}

#[cfg(test)]
mod tests {
    use halo_crds::node_config::RouteAction;

    use super::*;

    fn route(name: &str, hosts: &[&str]) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            matches: Vec::new(),
            filters: Vec::new(),
            action: RouteAction::Forward { groups: Vec::new() },
            timeout_ms: None,
        }
    }

    #[test]
    fn routes_by_sni() {
        let routes = [
            route("wild", &["*.example.com"]),
            route("api", &["api.example.com", "*.api.example.com"]),
            route("default", &[]),
        ];
        let cases = [
            (Some("api.example.com"), Some(1)),
            (Some("API.example.com"), Some(1)),
            (Some("x.api.example.com"), Some(1)),
            (Some("www.example.com"), Some(0)),
            (Some("example.com"), Some(2)),
            (Some("other.test"), Some(2)),
            (None, Some(2)),
        ];
        for (sni, want) in cases {
            assert_eq!(choose(&routes, sni), want, "{sni:?}");
        }
        let no_default = &routes[..2];
        assert_eq!(choose(no_default, Some("other.test")), None);
        assert_eq!(choose(no_default, None), None);
    }
}
