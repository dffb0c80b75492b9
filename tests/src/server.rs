//! The accept loop and stop-on-drop handle that every loopback test server here shares.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::{JoinHandle, JoinSet};

/// A running server; dropping it stops the accept loop and every connection it holds.
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// The address it listens on (the kernel-picked port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds `addr` and serves each accepted connection with `handler`. The handler runs in
/// the accept loop (so per-connection counting happens in accept order) and returns the
/// future that serves the connection. Those futures live in a `JoinSet` owned by the loop,
/// so stopping the server also cuts kept-alive connections instead of leaving them open.
pub async fn serve<H, F>(addr: impl ToSocketAddrs, mut handler: H) -> std::io::Result<Server>
where
    H: FnMut(TcpStream) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            // A failed accept (say, out of descriptors) is transient: keep listening.
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // Reap finished connections so the set does not grow with every one served.
            while connections.try_join_next().is_some() {}
            connections.spawn(handler(stream));
        }
    });
    Ok(Server { addr, task })
}
