//! Raw IP protocol 112 sockets for VRRP: multicast to 224.0.0.18 / ff02::12 on one
//! interface, or unicast to configured peers. Hop limit 255 on send; the received
//! TTL / hop limit is reported so the caller can drop anything that crossed a router.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{IPPROTO_VRRP, VRRP_TTL};

pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

pub fn multicast_group(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(MULTICAST_V6)
    } else {
        IpAddr::V4(MULTICAST_V4)
    }
}

pub struct VrrpSocket {
    socket: AsyncFd<Socket>,
    v6: bool,
}

/// One received VRRP datagram.
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    pub payload: Vec<u8>,
}

impl VrrpSocket {
    /// Opens the socket on `ifname`, joins the VRRP group there and sends with hop limit
    /// 255 from `source` (the interface's own address; link-local for IPv6).
    pub fn open(ifname: &str, ifindex: u32, source: IpAddr) -> io::Result<Self> {
        let protocol = Some(Protocol::from(i32::from(IPPROTO_VRRP)));
        let socket = match source {
            IpAddr::V4(src) => {
                let s = Socket::new(Domain::IPV4, Type::RAW, protocol)?;
                s.bind_device(Some(ifname.as_bytes()))?;
                s.set_ttl_v4(u32::from(VRRP_TTL))?;
                s.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
                s.set_multicast_loop_v4(false)?;
                s.set_multicast_if_v4(&src)?;
                s.join_multicast_v4_n(&MULTICAST_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
                s
            }
            IpAddr::V6(src) => {
                let s = Socket::new(Domain::IPV6, Type::RAW, protocol)?;
                s.bind_device(Some(ifname.as_bytes()))?;
                s.set_unicast_hops_v6(u32::from(VRRP_TTL))?;
                s.set_multicast_hops_v6(u32::from(VRRP_TTL))?;
                s.set_multicast_loop_v6(false)?;
                s.set_multicast_if_v6(ifindex)?;
                s.join_multicast_v6(&MULTICAST_V6, ifindex)?;
                s.set_recv_hoplimit_v6(true)?;
                set_recv_pktinfo_v6(&s)?;
                // Send from the link-local address, as RFC 5798 §5.1.2.1 requires.
                s.bind(&SockAddr::from(SocketAddr::new(IpAddr::V6(src), 0)))?;
                s
            }
        };
        socket.set_nonblocking(true)?;
        // SAFETY: the Socket owns its descriptor and moves into the AsyncFd, which keeps
        // it open and unchanged until the AsyncFd is dropped.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        Ok(Self {
            socket,
            v6: source.is_ipv6(),
        })
    }

    pub async fn send(&self, payload: &[u8], dst: IpAddr) -> io::Result<()> {
        let addr = match dst {
            IpAddr::V4(v4) => SockAddr::from(SocketAddrV4::new(v4, 0)),
            IpAddr::V6(v6) => SockAddr::from(SocketAddr::new(IpAddr::V6(v6), 0)),
        };
        loop {
            let mut guard = self.socket.writable().await?;
            match guard.try_io(|s| s.get_ref().send_to(payload, &addr)) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// The next datagram; malformed ones come back as `Ok(None)`.
    pub async fn recv(&self) -> io::Result<Option<Received>> {
        loop {
            let mut guard = self.socket.readable().await?;
            let result = if self.v6 {
                guard.try_io(|s| recv_v6(s.get_ref()))
            } else {
                let mut buf = [0u8; 2048];
                guard.try_io(|s| {
                    (&mut s.get_ref())
                        .read(&mut buf)
                        .map(|n| parse_ipv4(&buf[..n]))
                })
            };
            match result {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

fn set_recv_pktinfo_v6(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a plain setsockopt with an int option value that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// IPv6 raw sockets deliver no IP header: the hop limit and destination come as
/// ancillary data, the source as the peer address.
fn recv_v6(socket: &Socket) -> io::Result<Option<Received>> {
    let mut buf = [0u8; 2048];
    // u64 elements give the cmsghdr alignment the CMSG macros expect.
    let mut control = [0u64; 32];
    // SAFETY: sockaddr_in6 is plain data.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives recvmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg describes valid buffers owned by this frame.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = usize::try_from(n).unwrap_or(0);
    let mut hop_limit = None;
    let mut dst = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel just filled, bounded
    // by msg_controllen; each data read matches the cmsg's type.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_HOPLIMIT {
                let v: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                hop_limit = u8::try_from(v).ok();
            } else if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    let (Some(ttl), Some(dst)) = (hop_limit, dst) else {
        return Ok(None);
    };
    Ok(Some(Received {
        src: IpAddr::V6(Ipv6Addr::from(from.sin6_addr.s6_addr)),
        dst: IpAddr::V6(dst),
        ttl,
        payload: buf[..n].to_vec(),
    }))
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
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
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
                IpAddr::from([10, 0, 0, 1]),
                IpAddr::V4(MULTICAST_V4),
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
