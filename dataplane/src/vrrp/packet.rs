//! VRRP advertisement wire format: v2 (RFC 3768, IPv4 only) and v3
//! (RFC 5798, IPv4 and IPv6).
//!
//! Only the VRRP payload is handled here; the IP header (TTL, protocol,
//! addresses) belongs to the caller, which passes the source and
//! destination addresses in because the v3 checksum covers a pseudo-header.

use std::fmt;
use std::net::IpAddr;

/// IP protocol number assigned to VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// Required IPv4 TTL / IPv6 hop limit on received adverts.
pub const VRRP_TTL: u8 = 255;
/// Largest v3 Max Adver Int (12-bit field, centiseconds).
pub const MAX_V3_INTERVAL_CS: u16 = 0x0fff;

const HEADER_LEN: usize = 8;
const AUTH_LEN: usize = 8;
const TYPE_ADVERTISEMENT: u8 = 1;
const AUTH_NONE: u8 = 0;
const AUTH_SIMPLE: u8 = 1;
const V4_LEN: usize = 4;
const V6_LEN: usize = 16;

/// VRRP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// A decoded (or to-be-encoded) VRRP advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// v3: Max Adver Int in centiseconds (12 bits). v2: Adver Int seconds * 100.
    pub max_advert_interval_cs: u16,
    pub addresses: Vec<IpAddr>,
    /// v2 simple text password (auth type 1); `None` means auth type 0.
    pub auth: Option<[u8; 8]>,
}

/// Reasons `encode` refuses an advert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("VRRPv2 is defined for IPv4 only")]
    V2RequiresIpv4,
    #[error("addresses mix IPv4 and IPv6 or differ from the source/destination family")]
    MixedFamilies,
    #[error("{0} addresses exceed the 255 a count byte can hold")]
    TooManyAddresses(usize),
    #[error("advertisement interval of {0} cs cannot be encoded for this version")]
    BadInterval(u16),
    #[error("VRID 0 is reserved")]
    BadVrid,
    #[error("authentication data exists only in VRRPv2")]
    AuthRequiresV2,
}

/// Why a received advert was dropped. `as_str` gives the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    BadTtl,
    BadVersion,
    BadType,
    BadLength,
    BadChecksum,
    WrongVrid,
    AddressMismatch,
    BadAuth,
    BadInterval,
}

impl DropReason {
    /// Every variant, so metrics can be pre-registered with zero counts.
    pub const ALL: [DropReason; 9] = [
        DropReason::BadTtl,
        DropReason::BadVersion,
        DropReason::BadType,
        DropReason::BadLength,
        DropReason::BadChecksum,
        DropReason::WrongVrid,
        DropReason::AddressMismatch,
        DropReason::BadAuth,
        DropReason::BadInterval,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::BadTtl => "bad_ttl",
            DropReason::BadVersion => "bad_version",
            DropReason::BadType => "bad_type",
            DropReason::BadLength => "bad_length",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::WrongVrid => "wrong_vrid",
            DropReason::AddressMismatch => "address_mismatch",
            DropReason::BadAuth => "bad_auth",
            DropReason::BadInterval => "bad_interval",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DropReason {}

/// Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

// Sums big-endian 16-bit words; an odd trailing byte is padded with zero.
// u64 cannot overflow for any slice that fits in memory at 16 bits per word.
fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // Loop exit guarantees the value fits.
    acc as u16
}

// RFC 5798 §5.2.8: the v3 checksum includes the IPv4/IPv6 pseudo-header.
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, len: usize) -> u64 {
    let mut acc = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum_words(&s.octets(), acc);
            acc = sum_words(&d.octets(), acc);
            acc += u64::from(IPPROTO_VRRP);
            acc += len as u64 & 0xffff;
        }
        _ => {
            // Only reached with two IPv6 addresses; families are checked first.
            acc = sum_words(&ip_bytes(src), acc);
            acc = sum_words(&ip_bytes(dst), acc);
            acc += (len as u64 >> 16) & 0xffff;
            acc += len as u64 & 0xffff;
            acc += u64::from(IPPROTO_VRRP);
        }
    }
    acc
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn put_checksum(msg: &mut [u8], sum: u16) {
    let [hi, lo] = sum.to_be_bytes();
    msg[6] = hi;
    msg[7] = lo;
}

/// Builds the VRRP payload (no IP header) with its checksum filled in.
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr) -> Result<Vec<u8>, PacketError> {
    let v6 = src.is_ipv6();
    if advert.version == Version::V2
        && (v6 || dst.is_ipv6() || advert.addresses.iter().any(IpAddr::is_ipv6))
    {
        return Err(PacketError::V2RequiresIpv4);
    }
    if dst.is_ipv6() != v6 || advert.addresses.iter().any(|a| a.is_ipv6() != v6) {
        return Err(PacketError::MixedFamilies);
    }
    let count = u8::try_from(advert.addresses.len())
        .map_err(|_| PacketError::TooManyAddresses(advert.addresses.len()))?;
    if advert.vrid == 0 {
        return Err(PacketError::BadVrid);
    }
    let cs = advert.max_advert_interval_cs;
    let addr_len = if v6 { V6_LEN } else { V4_LEN };
    let mut out = Vec::with_capacity(HEADER_LEN + usize::from(count) * addr_len + AUTH_LEN);
    out.extend_from_slice(&[
        (advert.version.number() << 4) | TYPE_ADVERTISEMENT,
        advert.vrid,
        advert.priority,
        count,
    ]);
    match advert.version {
        Version::V2 => {
            // v2 carries whole seconds in one byte.
            let secs = u8::try_from(cs / 100).map_err(|_| PacketError::BadInterval(cs))?;
            if !cs.is_multiple_of(100) || secs == 0 {
                return Err(PacketError::BadInterval(cs));
            }
            let auth_type = if advert.auth.is_some() {
                AUTH_SIMPLE
            } else {
                AUTH_NONE
            };
            out.extend_from_slice(&[auth_type, secs, 0, 0]);
        }
        Version::V3 => {
            if advert.auth.is_some() {
                return Err(PacketError::AuthRequiresV2);
            }
            if cs == 0 || cs > MAX_V3_INTERVAL_CS {
                return Err(PacketError::BadInterval(cs));
            }
            let [hi, lo] = cs.to_be_bytes();
            out.extend_from_slice(&[hi, lo, 0, 0]);
        }
    }
    for a in &advert.addresses {
        out.extend_from_slice(&ip_bytes(*a));
    }
    let sum = match advert.version {
        Version::V2 => {
            // RFC 3768 always lays out the 8 auth bytes, and keepalived
            // expects them, so they are sent (zeroed) even without auth.
            out.extend_from_slice(&advert.auth.unwrap_or([0; AUTH_LEN]));
            internet_checksum(&out)
        }
        Version::V3 => !fold(sum_words(&out, pseudo_header_sum(src, dst, out.len()))),
    };
    put_checksum(&mut out, sum);
    Ok(out)
}

/// Parses and validates a received VRRP payload. TTL, VRID, address list
/// and auth comparisons are left to the caller (see the `check_*` helpers).
pub fn decode(payload: &[u8], src: IpAddr, dst: IpAddr) -> Result<Advert, DropReason> {
    if src.is_ipv6() != dst.is_ipv6() {
        return Err(DropReason::AddressMismatch);
    }
    if payload.len() < HEADER_LEN {
        return Err(DropReason::BadLength);
    }
    let version = match payload[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        _ => return Err(DropReason::BadVersion),
    };
    if payload[0] & 0x0f != TYPE_ADVERTISEMENT {
        return Err(DropReason::BadType);
    }
    let vrid = payload[1];
    let priority = payload[2];
    let count = usize::from(payload[3]);
    let v6 = src.is_ipv6();
    let addr_len = if v6 { V6_LEN } else { V4_LEN };
    let addr_end = HEADER_LEN + count * addr_len;

    let (max_advert_interval_cs, auth) = match version {
        Version::V2 => {
            if v6 {
                return Err(DropReason::BadVersion);
            }
            let auth_type = payload[4];
            // Auth type 0 may or may not carry the (ignored) auth bytes:
            // keepalived always sends them.
            let len_ok = match auth_type {
                AUTH_NONE => payload.len() == addr_end || payload.len() == addr_end + AUTH_LEN,
                AUTH_SIMPLE => payload.len() == addr_end + AUTH_LEN,
                _ => return Err(DropReason::BadAuth),
            };
            if !len_ok {
                return Err(DropReason::BadLength);
            }
            if internet_checksum(payload) != 0 {
                return Err(DropReason::BadChecksum);
            }
            let secs = payload[5];
            if secs == 0 {
                return Err(DropReason::BadInterval);
            }
            let auth = if auth_type == AUTH_SIMPLE {
                let mut a = [0; AUTH_LEN];
                a.copy_from_slice(&payload[addr_end..addr_end + AUTH_LEN]);
                Some(a)
            } else {
                None
            };
            (u16::from(secs) * 100, auth)
        }
        Version::V3 => {
            if payload.len() != addr_end {
                // A length that fits the other family's layout means the
                // packet's addresses do not match the source family.
                let other = HEADER_LEN + count * (V4_LEN + V6_LEN - addr_len);
                return Err(if count > 0 && payload.len() == other {
                    DropReason::AddressMismatch
                } else {
                    DropReason::BadLength
                });
            }
            let sum = fold(sum_words(
                payload,
                pseudo_header_sum(src, dst, payload.len()),
            ));
            if sum != 0xffff {
                return Err(DropReason::BadChecksum);
            }
            // The 4 reserved bits are ignored on receipt (RFC 5798 §5.2.6).
            let cs = u16::from_be_bytes([payload[4] & 0x0f, payload[5]]);
            if cs == 0 {
                return Err(DropReason::BadInterval);
            }
            (cs, None)
        }
    };

    let addresses = payload[HEADER_LEN..addr_end]
        .chunks_exact(addr_len)
        .map(|c| parse_addr(c, v6))
        .collect();
    Ok(Advert {
        version,
        vrid,
        priority,
        max_advert_interval_cs,
        addresses,
        auth,
    })
}

fn parse_addr(c: &[u8], v6: bool) -> IpAddr {
    if v6 {
        let mut b = [0; V6_LEN];
        b.copy_from_slice(c);
        IpAddr::from(b)
    } else {
        let mut b = [0; V4_LEN];
        b.copy_from_slice(c);
        IpAddr::from(b)
    }
}

/// RFC 5798 §7.1 / RFC 3768 §7.1: TTL / hop limit must be 255, proving the
/// sender is on-link.
pub fn check_ttl(ttl: u8) -> Result<(), DropReason> {
    if ttl == VRRP_TTL {
        Ok(())
    } else {
        Err(DropReason::BadTtl)
    }
}

/// Adverts for another virtual router are not ours to process.
pub fn check_vrid(expected: u8, got: u8) -> Result<(), DropReason> {
    if expected == got {
        Ok(())
    } else {
        Err(DropReason::WrongVrid)
    }
}

/// Compares the advertised address list with the configured one as
/// multisets: peers may list the VIPs in any order.
pub fn check_addresses(expected: &[IpAddr], got: &[IpAddr]) -> Result<(), DropReason> {
    if expected.len() != got.len() {
        return Err(DropReason::AddressMismatch);
    }
    let mut a = expected.to_vec();
    let mut b = got.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    if a == b {
        Ok(())
    } else {
        Err(DropReason::AddressMismatch)
    }
}

/// v2 auth: the method (none vs. password) and the password must both match.
pub fn check_auth(expected: Option<&[u8; 8]>, got: Option<&[u8; 8]>) -> Result<(), DropReason> {
    if expected == got {
        Ok(())
    } else {
        Err(DropReason::BadAuth)
    }
}

/// RFC 3768 §7.1: a v2 advert's interval must equal ours. v3 lets it differ
/// (the backup learns it), so it always passes.
pub fn check_interval(version: Version, configured_cs: u16, got_cs: u16) -> Result<(), DropReason> {
    match version {
        Version::V2 if configured_cs != got_cs => Err(DropReason::BadInterval),
        _ => Ok(()),
    }
}

/// Turns a 1-8 byte password into the zero-padded v2 auth field.
pub fn password_bytes(s: &str) -> Option<[u8; 8]> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > AUTH_LEN {
        return None;
    }
    let mut out = [0; AUTH_LEN];
    out[..b.len()].copy_from_slice(b);
    Some(out)
}
