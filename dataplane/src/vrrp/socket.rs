//! Raw IP protocol 112 sockets for VRRP over IPv4: multicast to 224.0.0.18 on one
//! interface, or unicast to configured peers.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{IPPROTO_VRRP, VRRP_TTL};

pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

pub struct VrrpSocket {
    socket: AsyncFd<Socket>,
}

/// One received IPv4 datagram carrying protocol 112.
pub struct Received {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

impl VrrpSocket {
    /// Opens the socket on `ifname`, joins the VRRP group there and sends with TTL 255.
    pub fn open_v4(ifname: &str, ifindex: u32, source: Ipv4Addr) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )?;
        socket.bind_device(Some(ifname.as_bytes()))?;
        socket.set_ttl_v4(u32::from(VRRP_TTL))?;
        socket.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
        socket.set_multicast_loop_v4(false)?;
        socket.set_multicast_if_v4(&source)?;
        socket.join_multicast_v4_n(&MULTICAST_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
        socket.set_nonblocking(true)?;
        // SAFETY: the Socket owns its descriptor and moves into the AsyncFd, which keeps
        // it open and unchanged until the AsyncFd is dropped.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { socket })
    }

    pub async fn send(&self, payload: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let addr = SockAddr::from(SocketAddrV4::new(dst, 0));
        loop {
            let mut guard = self.socket.writable().await?;
            match guard.try_io(|s| s.get_ref().send_to(payload, &addr)) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// The next datagram; malformed IP headers come back as `Ok(None)`.
    pub async fn recv(&self) -> io::Result<Option<Received>> {
        let mut buf = [0u8; 2048];
        loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|s| (&mut s.get_ref()).read(&mut buf)) {
                Ok(Ok(n)) => return Ok(parse_ipv4(&buf[..n])),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Splits an IPv4 datagram into header fields and payload.
pub fn parse_ipv4(bytes: &[u8]) -> Option<Received> {
    let first = *bytes.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]));
    if ihl < 20 || total < ihl || bytes.len() < total {
        return None;
    }
    if *bytes.get(9)? != IPPROTO_VRRP {
        return None;
    }
    let src = Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15]);
    let dst = Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]);
    Some(Received {
        src,
        dst,
        ttl: bytes[8],
        payload: bytes[ihl..total].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_header_and_refuses_short_or_foreign_packets() {
        let mut pkt = vec![
            0x45, 0, 0, 24, 0, 0, 0, 0, 255, 112, 0, 0, 10, 0, 0, 1, 224, 0, 0, 18, 1, 2, 3, 4,
        ];
        let r = parse_ipv4(&pkt).expect("valid");
        assert_eq!(
            (r.src, r.dst, r.ttl, r.payload.as_slice()),
            (
                Ipv4Addr::new(10, 0, 0, 1),
                MULTICAST_V4,
                255,
                &[1u8, 2, 3, 4][..]
            )
        );
        assert!(parse_ipv4(&pkt[..10]).is_none());
        pkt[9] = 6;
        assert!(parse_ipv4(&pkt).is_none());
        pkt[9] = 112;
        pkt[3] = 200;
        assert!(parse_ipv4(&pkt).is_none());
    }
}
