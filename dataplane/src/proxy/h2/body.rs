//! Bodies the HTTP/2 driver streams: one boxed type for both directions, an inactivity
//! limit between frames, and a wrapper that holds something (a backend's load count, a
//! pooled connection) until the body is done with.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::proxy::Service;
use crate::proxy::accesslog::{By, Phase};
use crate::proxy::trace::Trace;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the driver sends, to clients and to backends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

#[derive(Debug, thiserror::Error)]
#[error("no body data for {0:?}")]
pub struct Stalled(pub Duration);

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

pub fn text(message: &str) -> Body {
    Full::new(Bytes::from(format!("{message}\n")))
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A body of exactly these bytes (a route's fixed response).
pub fn exact(bytes: &[u8]) -> Body {
    Full::new(Bytes::copy_from_slice(bytes))
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A received body, boxed, failing when no frame arrives for `limit` while it is read.
pub fn timed<B>(inner: B, limit: Duration) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    timed_counting(inner, limit, None)
}

/// [`timed`], adding the bytes of its data frames to `counter` as they pass.
pub fn timed_counting<B>(inner: B, limit: Duration, counter: Option<Arc<AtomicU64>>) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    // A body that has already ended (a GET's) has nothing to wait for: no timer.
    if inner.is_end_stream() {
        return inner.map_err(Into::into).boxed_unsync();
    }
    Idle {
        inner,
        limit,
        timer: Box::pin(tokio::time::sleep(limit)),
        counter,
    }
    .boxed_unsync()
}

struct Idle<B> {
    inner: B,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    counter: Option<Arc<AtomicU64>>,
}

impl<B> HttpBody for Idle<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = Instant::now() + this.limit;
                this.timer.as_mut().reset(deadline);
                if let (Some(counter), Some(Ok(f))) = (&this.counter, &frame)
                    && let Some(data) = f.data_ref()
                {
                    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Stalled(this.limit).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a response body finishes when it is done with: the exchange's trace, with the
/// bytes it sent, those of the request body, and how it ended.
pub struct Ending {
    pub trace: Trace,
    pub service: Arc<Service>,
    pub client: SocketAddr,
    pub received: Option<Arc<AtomicU64>>,
}

/// `body`, counting what it sends and finishing `ending` once it has ended or is dropped
/// (a client that resets the stream, a backend that fails mid-body).
pub fn traced(body: Body, ending: Ending) -> Body {
    Traced {
        inner: body,
        sent: 0,
        end: None,
        ending: Some(ending),
    }
    .boxed_unsync()
}

struct Traced {
    inner: Body,
    sent: u64,
    /// How the body ended, once it has: None for complete, else who broke it off.
    end: Option<Option<By>>,
    ending: Option<Ending>,
}

impl HttpBody for Traced {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(Some(Err(e))) => {
                let by = if e.is::<Stalled>() {
                    By::ServerTimeout
                } else {
                    By::Server
                };
                self.end = Some(Some(by));
            }
            Poll::Ready(None) => self.end = Some(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let Some(mut e) = self.ending.take() else {
            return;
        };
        let received = e.received.as_ref().map_or(0, |r| r.load(Ordering::Relaxed));
        e.trace.bytes(received, self.sent);
        // Dropped before its end (and not empty): the client went away mid-body.
        let end = match self.end {
            Some(end) => end,
            None if self.inner.is_end_stream() => None,
            None => Some(By::Client),
        };
        if let Some(by) = end {
            e.trace.end(by, Phase::Data);
        }
        e.trace.finish(&e.service, e.client);
    }
}

/// `body`, keeping `held` alive until the body is dropped.
pub fn holding<T: Send + 'static>(body: Body, held: T) -> Body {
    Holding {
        inner: body,
        _held: held,
    }
    .boxed_unsync()
}

struct Holding<T> {
    inner: Body,
    _held: T,
}

impl<T> HttpBody for Holding<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<T> Unpin for Holding<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_its_limit() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = http_body_util::StreamBody::new(rx);
        let mut body = timed(stream, Duration::from_secs(5));
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .expect("send");
        let first = body.frame().await.expect("frame").expect("data");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"a")));
        let started = Instant::now();
        let err = body.frame().await.expect("an error").expect_err("stalled");
        assert!(err.is::<Stalled>(), "{err}");
        assert!(started.elapsed() >= Duration::from_secs(5));
        drop(tx);
    }

    #[tokio::test]
    async fn held_values_live_as_long_as_the_body() {
        let held = std::sync::Arc::new(());
        let body = holding(text("x"), held.clone());
        assert_eq!(std::sync::Arc::strong_count(&held), 2);
        let bytes = body.collect().await.expect("collect").to_bytes();
        assert_eq!(&bytes[..], b"x\n");
        assert_eq!(std::sync::Arc::strong_count(&held), 1);
    }
}
