//! A small HTTP/1.1 client for tests: one keep-alive connection, or one request each.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Reply {
    pub status: StatusCode,
    pub backend: Option<String>,
    pub body: String,
}

/// One keep-alive connection.
pub struct Connection {
    addr: SocketAddr,
    sender: SendRequest<Empty<Bytes>>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connect {addr}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { addr, sender })
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply> {
        self.get_with(path, &[]).await
    }

    pub async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
        let mut builder = Request::get(path).header("host", self.addr.to_string());
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let req = builder.body(Empty::<Bytes>::new())?;
        self.sender.ready().await?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.sender.send_request(req))
            .await
            .map_err(|_| anyhow!("no response within 10s"))??;
        let status = response.status();
        let backend = response
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            backend,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A request on a connection of its own.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Reply> {
    Connection::open(addr).await?.get(path).await
}

/// Opens a WebSocket to `ws://{host}{path}` over a TCP connection to `addr` (tungstenite
/// client), sends each message as text and returns the echoes, then closes cleanly.
pub async fn ws_exchange(
    addr: SocketAddr,
    host: &str,
    path: &str,
    messages: &[&str],
) -> Result<Vec<String>> {
    let limit = Duration::from_secs(5);
    let stream = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    ws_exchange_over(stream, host, path, messages).await
}

/// `ws_exchange` over a connection already open (a TLS one, say).
pub async fn ws_exchange_over<S>(
    stream: S,
    host: &str,
    path: &str,
    messages: &[&str],
) -> Result<Vec<String>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let limit = Duration::from_secs(5);
    let (mut ws, response) = tokio::time::timeout(
        limit,
        tokio_tungstenite::client_async(format!("ws://{host}{path}"), stream),
    )
    .await
    .context("WebSocket handshake timed out")??;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        anyhow::bail!("handshake answered {}", response.status());
    }
    let mut echoes = Vec::new();
    for m in messages {
        tokio::time::timeout(limit, ws.send(Message::text(*m)))
            .await
            .context("send timed out")??;
        let reply = tokio::time::timeout(limit, ws.next())
            .await
            .context("no echo within 5s")?
            .context("stream ended")??;
        echoes.push(reply.into_text()?.to_string());
    }
    let _ = tokio::time::timeout(limit, ws.close(None)).await;
    Ok(echoes)
}
