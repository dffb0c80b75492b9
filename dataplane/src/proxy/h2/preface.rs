//! Telling an HTTP/2 prior-knowledge connection (h2c) from HTTP/1.1 by its first bytes,
//! and handing the bytes read for that decision back to whoever parses the connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::proxy::bufpool;

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Http2,
    Http1,
    /// Everything so far agrees with the preface: read more.
    Undecided,
}

/// Decides from the first bytes of a connection. No HTTP/1.1 method starts with `PRI `
/// followed by `* HTTP/2.0`, so the first differing byte settles it.
pub fn classify(start: &[u8]) -> Verdict {
    let n = start.len().min(PREFACE.len());
    if start[..n] != PREFACE[..n] {
        Verdict::Http1
    } else if n == PREFACE.len() {
        Verdict::Http2
    } else {
        Verdict::Undecided
    }
}

/// How a connection of an h2c-enabled listener starts.
pub enum Start {
    /// The preface; the bytes read so far go to the HTTP/2 server.
    Http2(Vec<u8>),
    /// Anything else; the bytes read so far are the start of an HTTP/1.1 request.
    Http1(Vec<u8>),
    /// Closed, failed or silent for `wait` before it could be told.
    Gone,
}

/// Reads until the first bytes tell HTTP/2 from HTTP/1.1 (at most the preface's 24).
pub async fn read_start(stream: &mut TcpStream, wait: Duration) -> Start {
    let deadline = Instant::now() + wait;
    let mut buf = bufpool::take(bufpool::HEAD);
    // Bounded: every turn reads at least one byte, and 24 decide.
    loop {
        match classify(&buf) {
            Verdict::Http2 => return Start::Http2(buf),
            Verdict::Http1 => return Start::Http1(buf),
            Verdict::Undecided => {}
        }
        match timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                bufpool::give(buf);
                return Start::Gone;
            }
        }
    }
}

/// A stream whose first bytes were already read: they are returned again before
/// anything new is read from the socket.
pub struct Prefixed<T> {
    head: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(head: Vec<u8>, inner: T) -> Self {
        Self { head, at: 0, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.head.len() {
            let rest = &this.head[this.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.head.len() {
                // Replayed in full: give the memory back.
                this.head = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn verdicts() {
        let cases: [(&[u8], Verdict); 8] = [
            (b"", Verdict::Undecided),
            (b"P", Verdict::Undecided),
            (b"PRI * HTTP/2.0\r\n", Verdict::Undecided),
            (PREFACE, Verdict::Http2),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04",
                Verdict::Http2,
            ),
            (b"GET / HTTP/1.1\r\n", Verdict::Http1),
            (b"POST", Verdict::Http1),
            (b"PRI * HTTP/1.1\r\n", Verdict::Http1),
        ];
        for (input, want) in cases {
            assert_eq!(classify(input), want, "{input:?}");
        }
    }

    #[tokio::test]
    async fn replays_the_head_then_reads_on() {
        let rest: &[u8] = b" world";
        let mut io = Prefixed::new(b"hello".to_vec(), rest);
        let mut small = [0u8; 3];
        io.read_exact(&mut small).await.expect("read");
        assert_eq!(&small, b"hel");
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"lo world");
    }
}
