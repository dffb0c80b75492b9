//! An address with its prefix length, as written in `VirtualIP.spec.addresses`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid address {input:?}: expected an IPv4 or IPv6 address with an optional /prefix (e.g. 192.0.2.10/24)"
)]
pub struct ParsePrefixError {
    pub input: String,
}

impl IpPrefix {
    /// A host prefix (/32 or /128) for an address written without one.
    pub fn host(addr: IpAddr) -> Self {
        let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, prefix_len }
    }
}

impl IpPrefix {
    /// Whether `addr` lies in this prefix's subnet (false across address families).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpPrefix {
    type Err = ParsePrefixError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || ParsePrefixError {
            input: input.to_string(),
        };
        let (addr_text, len_text) = match input.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (input, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len_text {
            Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(err)?,
            None => max,
        };
        Ok(Self { addr, prefix_len })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl serde::Serialize for IpPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IpPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_v6_with_and_without_prefix() {
        assert_eq!(
            "192.0.2.10/24".parse::<IpPrefix>().map(|p| p.to_string()),
            Ok("192.0.2.10/24".into())
        );
        assert_eq!(
            "192.0.2.10".parse::<IpPrefix>().map(|p| p.prefix_len),
            Ok(32)
        );
        assert_eq!(
            "fd00::1/64".parse::<IpPrefix>().map(|p| p.prefix_len),
            Ok(64)
        );
        assert_eq!("fd00::1".parse::<IpPrefix>().map(|p| p.prefix_len), Ok(128));
    }

    #[test]
    fn subnet_membership() {
        let p = |t: &str| {
            t.parse::<IpPrefix>()
                .unwrap_or(IpPrefix::host([0, 0, 0, 0].into()))
        };
        let ip = |t: &str| t.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(p("192.0.2.1/24").contains(ip("192.0.2.200")));
        assert!(!p("192.0.2.1/24").contains(ip("192.0.3.1")));
        assert!(p("fd00::1/64").contains(ip("fd00::abcd")));
        assert!(!p("fd00::1/64").contains(ip("192.0.2.1")));
        assert!(p("0.0.0.0/0").contains(ip("8.8.8.8")));
    }

    #[test]
    fn rejects_bad_prefixes() {
        for text in [
            "192.0.2.10/33",
            "fd00::1/129",
            "192.0.2/24",
            "host/24",
            "",
            "1.2.3.4/",
        ] {
            assert!(text.parse::<IpPrefix>().is_err(), "{text}");
        }
    }
}
