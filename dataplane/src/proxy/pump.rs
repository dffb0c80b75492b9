//! Bytes both ways between two sockets (L4 sessions, upgraded HTTP tunnels): a buffer
//! is borrowed only while data is moving, half-closes are passed on, and one idle
//! clock covers both directions.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::bufpool;

/// Bytes moved in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Last time either direction moved a byte, in ms since `base`.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`; a timer that fires early is re-armed
    /// for the rest, so busy sessions do not touch the timer wheel per read.
    async fn expired(&self, idle: Duration) {
        loop {
            let last = self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Relays until both sides have closed, an error, or `idle` without traffic.
pub async fn relay(a: &TcpStream, b: &TcpStream, idle: Duration) -> io::Result<Totals> {
    let activity = Activity {
        base: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let both = async { tokio::try_join!(pump(a, b, &activity), pump(b, a, &activity)) };
    tokio::select! {
        r = both => r.map(|(a_to_b, b_to_a)| Totals { a_to_b, b_to_a }),
        () = activity.expired(idle) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
    }
}

/// One direction: waits for data without holding a buffer, then drains what is there.
async fn pump(src: &TcpStream, dst: &TcpStream, activity: &Activity) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let mut buf = bufpool::take(bufpool::LARGE);
        let drained = drain(src, dst, &mut buf, activity, &mut total).await;
        bufpool::give(buf);
        if drained? {
            // The source finished sending: pass the half-close on.
            let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
            return Ok(total);
        }
    }
}

/// Moves bytes until the source has none ready (false) or has closed (true).
async fn drain(
    src: &TcpStream,
    dst: &TcpStream,
    buf: &mut Vec<u8>,
    activity: &Activity,
    total: &mut u64,
) -> io::Result<bool> {
    loop {
        buf.clear();
        match src.try_read_buf(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                write_all(dst, &buf[..n]).await?;
                *total += n as u64;
                activity.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Writes everything, waiting for room: the reader is paused meanwhile (backpressure).
pub async fn write_all(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match dst.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.expect("connect"), s.expect("accept").0)
    }

    #[tokio::test]
    async fn relays_both_ways_with_half_close() {
        let (mut client, proxy_a) = pair().await;
        let (proxy_b, mut server) = pair().await;
        let task =
            tokio::spawn(async move { relay(&proxy_a, &proxy_b, Duration::from_secs(5)).await });
        let big = vec![7u8; 300_000];
        client.write_all(&big).await.expect("write");
        client.shutdown().await.expect("half close");
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), big.len());
        server.write_all(b"reply").await.expect("reply");
        drop(server);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.expect("read back");
        assert_eq!(back, b"reply");
        let totals = task.await.expect("join").expect("relay");
        assert_eq!(
            totals,
            Totals {
                a_to_b: 300_000,
                b_to_a: 5
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_end() {
        let (_client, proxy_a) = pair().await;
        let (proxy_b, _server) = pair().await;
        let err = relay(&proxy_a, &proxy_b, Duration::from_millis(200))
            .await
            .expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
