//! Stops new connections on the listening sockets of an address while its VIP is handed
//! over, without refusing them.
//!
//! A VIP moves by ARP: once the successor announces it, every later segment of a client
//! goes there, and a connection this node accepted just before gets a reset from the
//! successor. So a master that hands over first stops taking new connections (those
//! under way get the successor's skew time to finish), then lets go. A socket filter
//! that drops bare SYNs does it: the client is never refused, its kernel resends the
//! SYN a second later, and by then the address has moved. Closing the socket instead
//! would answer RST (connection refused) while this node still holds the address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};

use socket2::{SockFilter, SockRef};

/// Classic BPF run on each segment that reaches a listening socket (the kernel's data
/// pointer is at the TCP header): drop when SYN is set and ACK is not, keep the rest
/// (the handshake's last ACK and everything on connections already made).
fn drop_bare_syns() -> [SockFilter; 5] {
    // BPF_LD|BPF_B|BPF_ABS, BPF_ALU|BPF_AND|BPF_K, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K.
    const LD_B_ABS: u16 = 0x30;
    const AND_K: u16 = 0x54;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const TCP_FLAGS: u32 = 13;
    const SYN: u32 = 0x02;
    const ACK: u32 = 0x10;
    [
        SockFilter::new(LD_B_ABS, 0, 0, TCP_FLAGS),
        SockFilter::new(AND_K, 0, 0, SYN | ACK),
        // A bare SYN goes on to "drop"; anything else skips to "keep".
        SockFilter::new(JEQ_K, 0, 1, SYN),
        SockFilter::new(RET_K, 0, 0, 0),
        SockFilter::new(RET_K, 0, 0, u32::MAX),
    ]
}

/// Stops or restarts new connections on one socket.
pub fn set_closed(socket: &std::net::TcpListener, closed: bool) -> std::io::Result<()> {
    let socket = SockRef::from(socket);
    if closed {
        socket.attach_filter(&drop_bare_syns())
    } else {
        match socket.detach_filter() {
            // ENOENT: no filter was attached.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// The listening sockets by address (duplicates of those the accept loops own), and
/// which addresses are closed to new connections.
#[derive(Default)]
pub struct Gate {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sockets: BTreeMap<SocketAddr, Vec<std::net::TcpListener>>,
    closed: BTreeSet<IpAddr>,
    all_closed: bool,
}

impl Inner {
    fn is_closed(&self, ip: IpAddr) -> bool {
        self.all_closed || self.closed.contains(&ip)
    }

    fn apply(&self, addr: &SocketAddr) {
        let closed = self.is_closed(addr.ip());
        for socket in self.sockets.get(addr).into_iter().flatten() {
            if let Err(e) = set_closed(socket, closed) {
                tracing::warn!(%addr, closed, error = %e, "cannot change the listening socket's filter");
            }
        }
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every step leaves the maps whole: a panic elsewhere leaves them usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds the sockets of `addr` (closed at once if their address is).
    pub fn register(&self, addr: SocketAddr, sockets: Vec<std::net::TcpListener>) {
        let mut inner = self.lock();
        inner.sockets.insert(addr, sockets);
        inner.apply(&addr);
    }

    /// Forgets the sockets of `addr` (the runtime closes them).
    pub fn unregister(&self, addr: &SocketAddr) {
        self.lock().sockets.remove(addr);
    }

    /// New connections to `ips` are no longer taken (until `open`).
    pub fn close(&self, ips: &[IpAddr]) {
        self.set(ips, true);
    }

    /// New connections to `ips` are taken again (unless the whole node is stopping).
    pub fn open(&self, ips: &[IpAddr]) {
        self.set(ips, false);
    }

    fn set(&self, ips: &[IpAddr], closed: bool) {
        let mut inner = self.lock();
        for ip in ips {
            if closed {
                inner.closed.insert(*ip);
            } else {
                inner.closed.remove(ip);
            }
        }
        let touched: Vec<SocketAddr> = inner
            .sockets
            .keys()
            .filter(|a| ips.contains(&a.ip()))
            .copied()
            .collect();
        for addr in &touched {
            inner.apply(addr);
        }
    }

    /// The node is stopping: nothing new is taken on any address, for good.
    pub fn close_all(&self) {
        let mut inner = self.lock();
        inner.all_closed = true;
        let all: Vec<SocketAddr> = inner.sockets.keys().copied().collect();
        for addr in &all {
            inner.apply(addr);
        }
    }

    #[cfg(test)]
    fn is_closed(&self, ip: IpAddr) -> bool {
        self.lock().is_closed(ip)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
        TcpStream::connect_timeout(&addr, Duration::from_millis(300))
    }

    #[test]
    fn a_closed_socket_drops_new_connections_and_keeps_the_ones_it_has() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut before = connect(addr).expect("open before");
        let (mut accepted, _) = listener.accept().expect("accept");

        set_closed(&listener, true).expect("close");
        // Not refused: the SYN is dropped, so the attempt times out (the client's
        // kernel would resend it a second later).
        let attempt = connect(addr).expect_err("a new connection must not be made");
        assert_eq!(attempt.kind(), std::io::ErrorKind::TimedOut, "{attempt}");
        // The connection made before still carries data both ways.
        before.write_all(b"ping").expect("write");
        let mut got = [0u8; 4];
        accepted.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"ping");
        accepted.write_all(b"pong").expect("write back");
        before.read_exact(&mut got).expect("read back");
        assert_eq!(&got, b"pong");

        set_closed(&listener, false).expect("open");
        connect(addr).expect("open again");
        // Opening what was never closed is no error.
        set_closed(&listener, false).expect("open twice");
    }

    #[test]
    fn the_gate_closes_by_address_and_for_good_when_the_node_stops() {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = TcpListener::bind("127.0.0.2:0").expect("bind");
        let (addr_a, addr_b) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        let gate = Gate::default();
        gate.register(addr_a, vec![a.try_clone().expect("dup")]);
        gate.register(addr_b, vec![b.try_clone().expect("dup")]);

        gate.close(&[addr_a.ip()]);
        assert!(
            connect(addr_a).is_err(),
            "closed address still takes connections"
        );
        connect(addr_b).expect("the other address is open");

        gate.open(&[addr_a.ip()]);
        connect(addr_a).expect("open again");

        gate.close_all();
        gate.open(&[addr_a.ip()]);
        assert!(gate.is_closed(addr_a.ip()));
        assert!(
            connect(addr_a).is_err(),
            "a stopping node opened an address"
        );
        assert!(
            connect(addr_b).is_err(),
            "a stopping node took a connection"
        );
    }

    #[test]
    fn sockets_registered_while_closed_start_closed() {
        let gate = Gate::default();
        gate.close(&["127.0.0.1".parse().expect("ip")]);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        gate.register(addr, vec![listener.try_clone().expect("dup")]);
        assert!(connect(addr).is_err());
        gate.unregister(&addr);
        gate.open(&[addr.ip()]);
        // Unregistered: the gate no longer touches it, so it stays as it was.
        assert!(connect(addr).is_err());
    }
}
