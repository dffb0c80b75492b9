//! The HTTP/2 engine: client connections served by hyper's HTTP/2 server (over TLS with
//! ALPN `h2`, or in the clear with prior knowledge), each request forwarded to an
//! HTTP/1.1 or HTTP/2 backend with bodies and trailers streamed both ways; WebSockets
//! over extended CONNECT become HTTP/1.1 upgrades.

mod activity;
mod body;
mod direct;
mod forward;
mod headers;
pub mod preface;
mod server;
mod tunnel;
mod upstream;

pub(crate) use server::Stream;
pub use server::{serve, serve_h2c, serve_http1, serve_tls};
