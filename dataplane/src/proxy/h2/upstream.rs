//! Connections to backends for the HTTP/2 driver, per worker thread (a connection
//! belongs to the event loop that opened it): idle HTTP/1.1 connections kept per
//! backend, and one shared HTTP/2 connection per backend that every request multiplexes
//! on and that is opened again once it closes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::body::Body;
use crate::proxy::backend::{Backend, ConnectError};
use crate::proxy::tls::client::UpstreamTls;

pub type Http1 = http1::SendRequest<Body>;

/// Whom a backend connection is opened for: the client and the address it connected
/// to, which a PROXY protocol header names.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    pub client: std::net::SocketAddr,
    pub local: Option<std::net::SocketAddr>,
}
pub type Http2 = http2::SendRequest<Body>;

/// Idle HTTP/1.1 connections kept per backend and worker.
const MAX_IDLE: usize = 256;
/// A pooled connection is ready again within a moment of its response ending; one that
/// is not (its request body still being sent, say) is not worth waiting for.
const READY_WAIT: Duration = Duration::from_millis(100);
/// Past this many backends in a worker's tables, entries of removed backends are swept.
const SWEEP_AT: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the new connection closed before taking the request")]
    Closed,
    #[error("TLS with {backend}: {source}")]
    Tls {
        backend: String,
        source: std::io::Error,
    },
    #[error("handshake with {backend}: {source}")]
    Handshake {
        backend: String,
        source: hyper::Error,
    },
}

/// An entry of a per-worker table, valid while its backend exists (reloads keep
/// unchanged backends, so their connections survive them).
struct Entry<T> {
    backend: Weak<Backend>,
    value: T,
}

type Table<T> = HashMap<usize, Entry<T>>;

fn key(backend: &Arc<Backend>) -> usize {
    Arc::as_ptr(backend) as usize
}

/// The entry of `backend` in `table`, replacing a stale one of a backend that is gone
/// (whose address may have been reused).
fn entry<'t, T: Default>(table: &'t mut Table<T>, backend: &Arc<Backend>) -> &'t mut T {
    if table.len() >= SWEEP_AT {
        table.retain(|_, e| e.backend.strong_count() > 0);
    }
    let e = table.entry(key(backend)).or_insert_with(|| Entry {
        backend: Arc::downgrade(backend),
        value: T::default(),
    });
    if !Weak::ptr_eq(&e.backend, &Arc::downgrade(backend)) || e.backend.strong_count() == 0 {
        *e = Entry {
            backend: Arc::downgrade(backend),
            value: T::default(),
        };
    }
    &mut e.value
}

thread_local! {
    static IDLE: RefCell<Table<Vec<Http1>>> = RefCell::new(HashMap::new());
    static SHARED: RefCell<Table<Arc<tokio::sync::Mutex<Option<Http2>>>>> =
        RefCell::new(HashMap::new());
}

/// A pooled HTTP/1.1 connection of this worker that is ready for a request.
pub async fn idle_http1(backend: &Arc<Backend>) -> Option<Http1> {
    // A connection that began with a PROXY protocol header belongs to its one client.
    if !backend.is_up() || backend.proxy_protocol.is_some() {
        return None;
    }
    for _ in 0..MAX_IDLE {
        let mut sender = IDLE.with(|t| entry(&mut t.borrow_mut(), backend).pop())?;
        if sender.is_closed() {
            continue;
        }
        if sender.is_ready() {
            return Some(sender);
        }
        if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
            return Some(sender);
        }
    }
    None
}

/// Keeps a connection whose exchange ended for the next request to `backend`.
pub fn put_http1(backend: &Arc<Backend>, sender: Http1) {
    if sender.is_closed() || !backend.is_up() || backend.proxy_protocol.is_some() {
        return;
    }
    IDLE.with(|t| {
        let mut t = t.borrow_mut();
        let idle = entry(&mut t, backend);
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    });
}

/// A new HTTP/1.1 connection (able to switch protocols, for WebSockets), over TLS when
/// the backend's group asks for it.
pub async fn open_http1(
    backend: &Backend,
    connect: Duration,
    origin: Origin,
) -> Result<Http1, OpenError> {
    let stream = backend
        .open_for(connect, origin.client, origin.local)
        .await?;
    match &backend.tls {
        None => http1_over(backend, stream).await,
        Some(tls) => {
            let stream = secure(backend, tls, stream, connect).await?;
            http1_over(backend, stream).await
        }
    }
}

async fn http1_over<IO>(backend: &Backend, io: IO) -> Result<Http1, OpenError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| OpenError::Handshake {
            backend: backend.name().to_string(),
            source,
        })?;
    tokio::spawn(async move {
        // Ends when the backend or the proxy closes the connection; nothing to report.
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

async fn http2_over<IO>(backend: &Backend, io: IO) -> Result<Http2, OpenError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| OpenError::Handshake {
            backend: backend.name().to_string(),
            source,
        })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The TLS handshake with a backend, within the connect timeout.
async fn secure(
    backend: &Backend,
    tls: &UpstreamTls,
    stream: TcpStream,
    connect: Duration,
) -> Result<TlsStream<TcpStream>, OpenError> {
    let tls_error = |e: std::io::Error| OpenError::Tls {
        backend: backend.name().to_string(),
        source: e,
    };
    match tokio::time::timeout(connect, tls.connect(stream, backend.config.address)).await {
        Err(_) => Err(tls_error(std::io::ErrorKind::TimedOut.into())),
        Ok(Err(e)) => Err(tls_error(e)),
        Ok(Ok(s)) => Ok(s),
    }
}

/// The shared HTTP/2 connection to `backend` on this worker, opened if there is none
/// (or it closed). Requests that find none at the same time wait for one opening. A
/// group that sends the PROXY protocol gets a connection of the request's own instead.
pub async fn shared_http2(
    backend: &Arc<Backend>,
    connect: Duration,
    origin: Origin,
) -> Result<Http2, OpenError> {
    // Opening is boxed: its large state would otherwise sit in every request's future.
    if backend.proxy_protocol.is_some() {
        return Box::pin(open_http2(backend, connect, origin)).await;
    }
    let cell = SHARED.with(|t| entry(&mut t.borrow_mut(), backend).clone());
    let mut slot = cell.lock().await;
    if let Some(sender) = slot.as_ref()
        && !sender.is_closed()
    {
        return Ok(sender.clone());
    }
    *slot = None;
    let sender = Box::pin(open_http2(backend, connect, origin)).await?;
    *slot = Some(sender.clone());
    Ok(sender)
}

/// A new HTTP/2 connection, over TLS when the backend's group asks for it; it closes
/// once the last sender is dropped and its streams end.
async fn open_http2(
    backend: &Backend,
    connect: Duration,
    origin: Origin,
) -> Result<Http2, OpenError> {
    let stream = backend
        .open_for(connect, origin.client, origin.local)
        .await?;
    match &backend.tls {
        None => http2_over(backend, stream).await,
        Some(tls) => {
            let stream = secure(backend, tls, stream, connect).await?;
            http2_over(backend, stream).await
        }
    }
}

/// Forgets the shared connection to `backend` (it closed under a request).
pub fn drop_http2(backend: &Arc<Backend>) {
    SHARED.with(|t| {
        let mut t = t.borrow_mut();
        let cell = entry(&mut t, backend);
        if let Ok(mut slot) = cell.try_lock() {
            *slot = None;
        }
    });
}
