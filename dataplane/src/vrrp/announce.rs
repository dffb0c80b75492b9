//! Gratuitous ARP after taking an IPv4 VIP, so switches and neighbours learn at once
//! which port and MAC now answer for it.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Socket, Type};

const ETH_P_ARP: u16 = 0x0806;

pub fn mac_address(ifname: &str) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .ok_or_else(|| io::Error::other("short MAC address"))?;
        *byte = u8::from_str_radix(part, 16).map_err(io::Error::other)?;
    }
    Ok(mac)
}

/// A broadcast ARP request whose sender and target are both the VIP (RFC 5227 §3).
pub fn gratuitous_arp_frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&[0; 6]);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

pub struct ArpSender {
    socket: Socket,
    ifindex: u32,
    mac: [u8; 6],
}

impl ArpSender {
    pub fn open(ifname: &str, ifindex: u32) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(i32::from(ETH_P_ARP.to_be()).into()),
        )?;
        Ok(Self {
            socket,
            ifindex,
            mac: mac_address(ifname)?,
        })
    }

    pub fn send(&self, vip: Ipv4Addr) -> io::Result<()> {
        let frame = gratuitous_arp_frame(self.mac, vip);
        // SAFETY: sockaddr_ll is plain data; every field we rely on is set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = i32::try_from(self.ifindex).map_err(io::Error::other)?;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: frame and addr outlive the call; lengths match their buffers.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// An unsolicited neighbour advertisement for `target` (RFC 4861 §7.2.6): Override set,
/// with our link-layer address, so neighbours update their caches at once. The kernel
/// fills in the ICMPv6 checksum.
pub fn unsolicited_na(mac: [u8; 6], target: std::net::Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = 136; // Neighbor Advertisement
    p[4] = 0x20; // Override
    p[8..24].copy_from_slice(&target.octets());
    p[24] = 2; // Target Link-Layer Address option
    p[25] = 1; // in units of 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

pub struct NaSender {
    socket: Socket,
    mac: [u8; 6],
}

impl NaSender {
    pub fn open(ifname: &str, ifindex: u32) -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(socket2::Protocol::ICMPV6))?;
        socket.bind_device(Some(ifname.as_bytes()))?;
        socket.set_multicast_hops_v6(255)?;
        socket.set_multicast_if_v6(ifindex)?;
        Ok(Self {
            socket,
            mac: mac_address(ifname)?,
        })
    }

    pub fn send(&self, target: std::net::Ipv6Addr) -> io::Result<()> {
        let all_nodes = std::net::SocketAddr::new(
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
            0,
        );
        self.socket
            .send_to(&unsolicited_na(self.mac, target), &all_nodes.into())?;
        Ok(())
    }
}

/// Announces VIPs of either family after a takeover.
pub enum Announcer {
    Arp(ArpSender),
    Na(NaSender),
}

impl Announcer {
    pub fn open(ifname: &str, ifindex: u32, v6: bool) -> io::Result<Self> {
        if v6 {
            NaSender::open(ifname, ifindex).map(Self::Na)
        } else {
            ArpSender::open(ifname, ifindex).map(Self::Arp)
        }
    }

    pub fn send(&self, addr: std::net::IpAddr) -> io::Result<()> {
        match (self, addr) {
            (Self::Arp(a), std::net::IpAddr::V4(v4)) => a.send(v4),
            (Self::Na(n), std::net::IpAddr::V6(v6)) => n.send(v6),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsolicited_na_layout() {
        let target = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x64);
        let p = unsolicited_na([2, 0, 0, 0, 0, 1], target);
        assert_eq!((p[0], p[4]), (136, 0x20));
        assert_eq!(&p[8..24], &target.octets());
        assert_eq!((p[24], p[25]), (2, 1));
        assert_eq!(&p[26..32], &[2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn frame_layout() {
        let f = gratuitous_arp_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[28..32], &[192, 0, 2, 10]);
        assert_eq!(&f[38..42], &[192, 0, 2, 10]);
    }
}
