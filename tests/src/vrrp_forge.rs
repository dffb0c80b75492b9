//! Hostile VRRP on the lab bridge: IPv4 VRRP packets built byte by byte (independently of
//! the data plane's codec), well-formed or with one defect, and a raw-socket sender that
//! puts them on a namespace's link with any TTL.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};

pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
const PROTO_VRRP: u8 = 112;

/// What is wrong with a forged advert (`Valid`: nothing, the control).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Defect {
    Valid,
    WrongVrid,
    BadChecksum,
    BadTtl,
    Truncated,
    /// A VRRPv2 advert sent to a VRRPv3 router.
    OldVersion,
    /// Well-formed, top priority, but for addresses that are not the router's.
    WrongAddresses,
}

impl Defect {
    /// The drop reason the data plane should count (`halo_vrrp_dropped_packets_total`).
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Defect::Valid => None,
            Defect::WrongVrid => Some("wrong_vrid"),
            Defect::BadChecksum => Some("bad_checksum"),
            Defect::BadTtl => Some("bad_ttl"),
            Defect::Truncated => Some("bad_length"),
            Defect::OldVersion => Some("bad_version"),
            Defect::WrongAddresses => Some("address_mismatch"),
        }
    }

    pub const HOSTILE: [Defect; 6] = [
        Defect::WrongVrid,
        Defect::BadChecksum,
        Defect::BadTtl,
        Defect::Truncated,
        Defect::OldVersion,
        Defect::WrongAddresses,
    ];
}

/// The advert a router of `vrid` would send for `addresses`, with `defect`.
#[derive(Debug, Clone)]
pub struct Forge {
    pub src: Ipv4Addr,
    pub vrid: u8,
    pub priority: u8,
    pub interval_cs: u16,
    pub addresses: Vec<Ipv4Addr>,
}

impl Forge {
    /// The whole IPv4 packet (header included) and the TTL it goes out with.
    pub fn packet(&self, defect: Defect) -> Vec<u8> {
        let payload = match defect {
            Defect::OldVersion => self.v2_payload(),
            _ => self.v3_payload(defect),
        };
        let ttl = if defect == Defect::BadTtl { 64 } else { 255 };
        let mut ip = ipv4_header(self.src, VRRP_GROUP, ttl, payload.len());
        ip.extend_from_slice(&payload);
        ip
    }

    fn v3_payload(&self, defect: Defect) -> Vec<u8> {
        let vrid = match defect {
            Defect::WrongVrid => self.vrid.wrapping_add(1).max(1),
            _ => self.vrid,
        };
        let (priority, addresses) = match defect {
            Defect::WrongAddresses => (255, vec![Ipv4Addr::new(198, 51, 100, 1)]),
            _ => (self.priority, self.addresses.clone()),
        };
        let count = u8::try_from(addresses.len()).unwrap_or(u8::MAX);
        let mut p = vec![0x31, vrid, priority, count];
        p.extend_from_slice(&(self.interval_cs & 0x0fff).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        for a in &addresses {
            p.extend_from_slice(&a.octets());
        }
        if defect == Defect::Truncated {
            // The count says one address more than the packet carries.
            p[3] = count.saturating_add(1);
        }
        // RFC 5798 §5.2.8: the checksum covers an IPv4 pseudo-header too.
        let mut pseudo = Vec::with_capacity(12 + p.len());
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&VRRP_GROUP.octets());
        pseudo.extend_from_slice(&[0, PROTO_VRRP]);
        pseudo.extend_from_slice(&u16::try_from(p.len()).unwrap_or(u16::MAX).to_be_bytes());
        pseudo.extend_from_slice(&p);
        let mut sum = checksum(&pseudo);
        if defect == Defect::BadChecksum {
            sum ^= 0x5a5a;
        }
        p[6..8].copy_from_slice(&sum.to_be_bytes());
        p
    }

    /// RFC 3768: no authentication, interval in seconds, checksum over the message only.
    fn v2_payload(&self) -> Vec<u8> {
        let count = u8::try_from(self.addresses.len()).unwrap_or(u8::MAX);
        let mut p = vec![0x21, self.vrid, self.priority, count, 0, 1, 0, 0];
        for a in &self.addresses {
            p.extend_from_slice(&a.octets());
        }
        p.extend_from_slice(&[0; 8]);
        let sum = checksum(&p);
        p[6..8].copy_from_slice(&sum.to_be_bytes());
        p
    }
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: usize) -> Vec<u8> {
    let total = u16::try_from(20 + payload).unwrap_or(u16::MAX);
    let mut h = vec![0x45, 0xc0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, ttl, PROTO_VRRP, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

/// RFC 1071 internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// Sends `packet` (a whole IPv4 packet) out of `ifname` with a raw socket; the current
/// network namespace's, so run it inside the one whose link should carry it.
pub fn send(ifname: &str, packet: &[u8]) -> Result<()> {
    if packet.len() < 20 {
        bail!("not an IPv4 packet");
    }
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    // SAFETY: plain libc socket calls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("raw socket (root needed)");
        }
        let result = send_on(fd, ifname, dst, packet);
        libc::close(fd);
        result
    }
}

unsafe fn send_on(fd: libc::c_int, ifname: &str, dst: Ipv4Addr, packet: &[u8]) -> Result<()> {
    let name = std::ffi::CString::new(ifname)?;
    let len = libc::socklen_t::try_from(name.as_bytes_with_nul().len())?;
    // SAFETY: `name` outlives the call; the length is that of its bytes.
    if unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            len,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error()).context("SO_BINDTODEVICE");
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET)?,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    let addr_len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>())?;
    // SAFETY: `packet` and `addr` are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::addr_of!(addr).cast(),
            addr_len,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error()).context("sendto");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forge() -> Forge {
        Forge {
            src: Ipv4Addr::new(192, 0, 2, 9),
            vrid: 42,
            priority: 1,
            interval_cs: 10,
            addresses: vec![Ipv4Addr::new(192, 0, 2, 100)],
        }
    }

    /// The checksum of a correct packet verifies (sums to 0xffff with it included).
    fn verifies(data: &[u8]) -> bool {
        checksum(data) == 0
    }

    #[test]
    fn valid_v3_advert_has_the_rfc_layout_and_checksums() {
        let p = forge().packet(Defect::Valid);
        assert_eq!(p.len(), 20 + 8 + 4);
        assert!(verifies(&p[..20]), "IP header checksum");
        assert_eq!((p[8], p[9]), (255, PROTO_VRRP), "TTL and protocol");
        assert_eq!(&p[20..24], &[0x31, 42, 1, 1]);
        assert_eq!(&p[24..26], &[0, 10]);
        assert_eq!(&p[28..32], &[192, 0, 2, 100]);
        let mut pseudo = vec![192, 0, 2, 9, 224, 0, 0, 18, 0, PROTO_VRRP, 0, 12];
        pseudo.extend_from_slice(&p[20..]);
        assert!(verifies(&pseudo), "VRRP checksum over the pseudo-header");
    }

    #[test]
    fn each_defect_changes_only_its_own_field() {
        let f = forge();
        let valid = f.packet(Defect::Valid);
        // Bytes that differ, checksums (IP 10-11, VRRP 26-27) left out.
        let diff = |d: Defect| -> Vec<usize> {
            let p = f.packet(d);
            (0..p.len().max(valid.len()))
                .filter(|i| ![10, 11, 26, 27].contains(i) && p.get(*i) != valid.get(*i))
                .collect()
        };
        let vrrp_sum_ok = |d: Defect| {
            let p = f.packet(d);
            let mut pseudo = vec![192, 0, 2, 9, 224, 0, 0, 18, 0, PROTO_VRRP, 0, 12];
            pseudo.extend_from_slice(&p[20..]);
            verifies(&pseudo)
        };
        assert_eq!(diff(Defect::WrongVrid), [21]);
        assert_eq!(diff(Defect::BadChecksum), Vec::<usize>::new());
        assert!(!vrrp_sum_ok(Defect::BadChecksum));
        assert_eq!(diff(Defect::BadTtl), [8]);
        assert_eq!(diff(Defect::Truncated), [23]);
        for d in [Defect::WrongVrid, Defect::BadTtl, Defect::Truncated] {
            assert!(vrrp_sum_ok(d), "{d:?} keeps a correct checksum");
        }
        let v2 = f.packet(Defect::OldVersion);
        assert_eq!(v2[20] >> 4, 2);
        assert!(verifies(&v2[20..]), "v2 checksum over the message");
        let wrong = f.packet(Defect::WrongAddresses);
        assert_eq!((wrong[22], &wrong[28..32]), (255, &[198, 51, 100, 1][..]));
        assert!(Defect::HOSTILE.iter().all(|d| d.reason().is_some()));
    }
}
