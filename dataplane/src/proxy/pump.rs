//! Bytes both ways between two sockets (L4 sessions, upgraded HTTP tunnels): a buffer
//! is borrowed only while data is moving, half-closes are passed on, and one idle
//! clock covers both directions.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::bufpool;
use super::splice::{self, Pipe};

/// Bytes moved in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// One direction of a relay: at most one borrowed buffer, only while bytes are in it.
#[derive(Default)]
struct Direction {
    buf: Option<Vec<u8>>,
    /// How much of `buf` has been written on.
    written: usize,
    total: u64,
    done: bool,
    /// With splice: the pipe, kept while the direction carries bulk.
    pipe: Option<Pipe>,
    /// The last read filled at least `BULK_READ`.
    bulk: bool,
    /// When to forward with splice(2) instead of a buffer.
    mode: splice::Mode,
    /// Splicing now (from the start with `Always`, after the first bulk read with `Auto`).
    splicing: bool,
}

/// A read at least this large means bulk: the pipe is kept for the next one.
const BULK_READ: usize = 16 * 1024;

/// Rounds of read-and-write per wake-up before yielding, so a bulk direction cannot
/// starve the other one or other connections.
const BUDGET: usize = 16;

impl Direction {
    /// Moves bytes from `src` to `dst` until neither can make progress. Ready(Ok) once
    /// the source has closed and everything read was written on.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        for _ in 0..BUDGET {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            // Ready(Ok): one step made (or a spurious readiness cleared); go on.
            if self.splicing && self.buf.is_none() {
                ready!(self.splice_step(cx, src, dst, moved))?;
            } else {
                ready!(self.copy_step(cx, src, dst, moved))?;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The source finished sending: pass the half-close on.
    fn finish(&mut self, dst: &TcpStream) {
        let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
        self.done = true;
    }

    /// One write of the buffered bytes, or one read into a borrowed buffer.
    fn copy_step(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        if let Some(buf) = self.buf.as_ref() {
            ready!(dst.poll_write_ready(cx))?;
            match dst.try_write(&buf[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    *moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.written == buf.len()
                && let Some(done) = self.buf.take()
            {
                bufpool::give(done);
            }
            return Poll::Ready(Ok(()));
        }
        ready!(src.poll_read_ready(cx))?;
        let mut buf = bufpool::take(bufpool::LARGE);
        match src.try_read_buf(&mut buf) {
            Ok(0) => {
                bufpool::give(buf);
                self.finish(dst);
            }
            Ok(n) => {
                self.total += n as u64;
                self.written = 0;
                // A read that fills the whole buffer means bulk: splice from now on.
                if self.mode == splice::Mode::Auto && n == buf.capacity() {
                    self.splicing = true;
                    self.bulk = true;
                }
                self.buf = Some(buf);
                *moved = true;
            }
            Err(e) => {
                bufpool::give(buf);
                if e.kind() != io::ErrorKind::WouldBlock {
                    return Poll::Ready(Err(e));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The same step with a pipe instead of a buffer: the bytes stay in the kernel.
    fn splice_step(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        if let Some(pipe) = self.pipe.as_mut().filter(|p| p.held > 0) {
            ready!(dst.poll_write_ready(cx))?;
            match dst.try_io(Interest::WRITABLE, || pipe.drain_to(dst.as_raw_fd())) {
                Ok(_) => *moved = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Interactive traffic gives the pipe's two descriptors back once it is
            // empty, so idle sessions do not hold four extra descriptors each.
            if pipe.held == 0 && !self.bulk {
                self.pipe = None;
            }
            return Poll::Ready(Ok(()));
        }
        ready!(src.poll_read_ready(cx))?;
        let mut pipe = match self.pipe.take() {
            Some(p) => p,
            None => Pipe::new()?,
        };
        match src.try_io(Interest::READABLE, || pipe.fill_from(src.as_raw_fd())) {
            Ok(0) => self.finish(dst),
            Ok(n) => {
                self.total += n as u64;
                self.bulk = n >= BULK_READ;
                *moved = true;
                self.pipe = Some(pipe);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if pipe.held > 0 || self.bulk {
                    self.pipe = Some(pipe);
                }
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            bufpool::give(buf);
        }
    }
}

/// Relays until both sides have closed, an error, or `idle` without traffic. A hand-
/// written poll loop rather than two async tasks: an idle session's state is a few
/// hundred bytes.
pub async fn relay(a: &TcpStream, b: &TcpStream, idle: Duration) -> io::Result<Totals> {
    relay_with(a, b, idle, splice::mode()).await
}

/// `relay` with the forwarding mode chosen by the caller.
pub async fn relay_with(
    a: &TcpStream,
    b: &TcpStream,
    idle: Duration,
    mode: splice::Mode,
) -> io::Result<Totals> {
    let direction = || {
        let mut d = Direction::default();
        d.mode = mode;
        d.splicing = mode == splice::Mode::Always;
        d
    };
    let mut dirs = [direction(), direction()];
    let mut last = Instant::now();
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    std::future::poll_fn(|cx| {
        let mut moved = false;
        let mut finished = 0;
        for (dir, (src, dst)) in dirs.iter_mut().zip([(a, b), (b, a)]) {
            match dir.poll(cx, src, dst, &mut moved) {
                Poll::Ready(Ok(())) => finished += 1,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        if finished == 2 {
            return Poll::Ready(Ok(Totals {
                a_to_b: dirs[0].total,
                b_to_a: dirs[1].total,
            }));
        }
        if moved {
            last = Instant::now();
        }
        // The timer is re-armed only when it fires early, not on every read.
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= last + idle {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")));
            }
            timer.as_mut().reset(last + idle);
        }
        Poll::Pending
    })
    .await
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
        both_ways(splice::Mode::Never).await;
    }

    #[tokio::test]
    async fn relays_both_ways_with_half_close_through_splice() {
        both_ways(splice::Mode::Always).await;
    }

    /// 300 KB in one direction switches it to splice midway; 5 bytes back stay copied.
    #[tokio::test]
    async fn switches_to_splice_for_bulk() {
        both_ways(splice::Mode::Auto).await;
    }

    async fn both_ways(mode: splice::Mode) {
        let (mut client, proxy_a) = pair().await;
        let (proxy_b, mut server) = pair().await;
        let task = tokio::spawn(async move {
            relay_with(&proxy_a, &proxy_b, Duration::from_secs(5), mode).await
        });
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
