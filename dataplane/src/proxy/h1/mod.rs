//! The HTTP/1.1 engine: strict RFC 9112 framing on byte ranges of what arrived (no
//! header maps rebuilt per request), pooled backend connections per worker, upgrades
//! passed through as tunnels.

pub mod body;
pub mod chunked;
pub mod conn;
pub mod head;
pub mod rewrite;
pub mod routed;
pub(crate) mod throttle;

pub use conn::serve;
