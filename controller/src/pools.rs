//! A VirtualIPPool's address space as allocation sees it: its CIDRs and ranges as numeric
//! blocks, what is reserved, and which Services may draw from it (pure).

use std::collections::BTreeMap;
use std::net::IpAddr;

use halo_crds::VirtualIPPool;
use halo_crds::net::IpPrefix;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

/// Addresses looked at per block before giving up (pools can be huge IPv6 ranges).
pub const SCAN_LIMIT: u128 = 1 << 16;

/// Consecutive addresses of one family, handed out with `prefix_len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub first: u128,
    pub last: u128,
    pub v4: bool,
    pub prefix_len: u8,
}

fn number(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), true),
        IpAddr::V6(a) => (u128::from(a), false),
    }
}

pub fn address(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::from(u32::try_from(n).unwrap_or(0).to_be_bytes())
    } else {
        IpAddr::from(n.to_be_bytes())
    }
}

impl Block {
    /// The usable hosts of a subnet: network and broadcast addresses left out where the
    /// subnet has them.
    pub fn hosts_of(net: IpPrefix) -> Option<Self> {
        let whole = Self::whole(net);
        let (first, last) = match (whole.v4, net.prefix_len) {
            (true, len) if len <= 30 => (whole.first + 1, whole.last - 1),
            (true, _) => (whole.first, whole.last),
            (false, 128) => (whole.first, whole.last),
            // The subnet-router anycast address (all zeros) is not a host.
            (false, _) => (whole.first + 1, whole.last),
        };
        (first <= last).then_some(Self {
            first,
            last,
            ..whole
        })
    }

    /// Every address of a subnet (for reserved entries).
    fn whole(net: IpPrefix) -> Self {
        let (n, v4) = number(net.addr);
        let bits = if v4 { 32 } else { 128 };
        let host_bits = bits - u32::from(net.prefix_len.min(bits as u8));
        let span = 1u128.checked_shl(host_bits).map_or(u128::MAX, |s| s - 1);
        let first = n & !span;
        Self {
            first,
            last: first.saturating_add(span),
            v4,
            prefix_len: net.prefix_len,
        }
    }

    /// `FIRST-LAST`, one family, in order; each address a host route.
    pub fn range(text: &str) -> Option<Self> {
        let (a, b) = text.split_once('-')?;
        let (first, v4) = number(a.trim().parse().ok()?);
        let (last, v4b) = number(b.trim().parse().ok()?);
        (v4 == v4b && first <= last).then_some(Self {
            first,
            last,
            v4,
            prefix_len: if v4 { 32 } else { 128 },
        })
    }

    /// A reserved entry: an address, a CIDR or a range.
    pub fn reserved(text: &str) -> Option<Self> {
        if text.contains('-') {
            return Self::range(text);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            let (n, v4) = number(ip);
            return Some(Self {
                first: n,
                last: n,
                v4,
                prefix_len: if v4 { 32 } else { 128 },
            });
        }
        text.parse::<IpPrefix>().ok().map(Self::whole)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (n, v4) = number(ip);
        v4 == self.v4 && self.first <= n && n <= self.last
    }

    /// How many addresses the scan may look at.
    pub fn scanned(&self) -> u128 {
        (self.last - self.first).saturating_add(1).min(SCAN_LIMIT)
    }

    /// Addresses of `self` inside `other`, within the scanned part.
    fn overlap(&self, other: &Block) -> u128 {
        if self.v4 != other.v4 {
            return 0;
        }
        let end = self.first + (self.scanned() - 1);
        let (lo, hi) = (self.first.max(other.first), end.min(other.last));
        if lo > hi { 0 } else { hi - lo + 1 }
    }
}

/// A pool, parsed once per allocation.
pub struct Pool<'a> {
    pub name: String,
    pub blocks: Vec<Block>,
    reserved: Vec<Block>,
    pub auto_assign: bool,
    namespaces: &'a [String],
    selector: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Pool<'a> {
    /// Entries that do not parse are skipped: the API server's rules refuse them, except a
    /// range written backwards, which serves nothing.
    pub fn of(pool: &'a VirtualIPPool) -> Self {
        let spec = &pool.spec;
        let cidrs = spec
            .cidrs
            .iter()
            .filter_map(|c| c.parse::<IpPrefix>().ok())
            .filter_map(Block::hosts_of);
        let ranges = spec.ranges.iter().filter_map(|r| Block::range(r));
        Self {
            name: pool.name_any(),
            blocks: cidrs.chain(ranges).collect(),
            reserved: spec
                .reserved
                .iter()
                .filter_map(|r| Block::reserved(r))
                .collect(),
            auto_assign: spec.auto_assign,
            namespaces: &spec.namespaces,
            selector: spec.service_selector.as_ref(),
        }
    }

    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        self.reserved.iter().any(|r| r.contains(ip))
    }

    /// The block that may hand out `ip`, unless it is reserved.
    pub fn block_of(&self, ip: IpAddr) -> Option<&Block> {
        if self.is_reserved(ip) {
            return None;
        }
        self.blocks.iter().find(|b| b.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// Whether `svc` may draw from this pool (namespaces and label selector).
    pub fn admits(&self, svc: &Service) -> bool {
        let ns = svc.namespace().unwrap_or_default();
        let labels = svc.labels();
        (self.namespaces.is_empty() || self.namespaces.contains(&ns))
            && self
                .selector
                .is_none_or(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    /// Addresses the pool can hand out: scanned addresses minus the reserved ones.
    pub fn usable(&self) -> u128 {
        self.blocks
            .iter()
            .map(|b| {
                let reserved: u128 = self.reserved.iter().map(|r| b.overlap(r)).sum();
                b.scanned().saturating_sub(reserved)
            })
            .sum()
    }

    /// Free addresses in order, lowest first, bounded by the scan limit.
    pub fn candidates(&self) -> impl Iterator<Item = IpPrefix> + '_ {
        self.blocks.iter().flat_map(move |b| {
            (0..b.scanned())
                .map(move |i| IpPrefix {
                    addr: address(b.first + i, b.v4),
                    prefix_len: b.prefix_len,
                })
                .filter(move |p| !self.is_reserved(p.addr))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpPrefix {
        s.parse().expect("prefix")
    }

    #[test]
    fn blocks_from_subnets_ranges_and_reserved_entries() {
        let ip = |s: &str| number(s.parse().expect("ip")).0;
        type Span = Option<(u128, u128, u8)>;
        let cases: &[(Option<Block>, Span)] = &[
            (
                Block::hosts_of(net("192.0.2.0/24")),
                Some((ip("192.0.2.1"), ip("192.0.2.254"), 24)),
            ),
            (
                Block::hosts_of(net("192.0.2.8/31")),
                Some((ip("192.0.2.8"), ip("192.0.2.9"), 31)),
            ),
            (
                Block::hosts_of(net("192.0.2.7/32")),
                Some((ip("192.0.2.7"), ip("192.0.2.7"), 32)),
            ),
            (
                Block::hosts_of(net("2001:db8::/126")),
                Some((ip("2001:db8::1"), ip("2001:db8::3"), 126)),
            ),
            (
                Block::range("192.0.2.10-192.0.2.20"),
                Some((ip("192.0.2.10"), ip("192.0.2.20"), 32)),
            ),
            (Block::range("192.0.2.20-192.0.2.10"), None),
            (Block::range("192.0.2.1-2001:db8::1"), None),
            (
                Block::range("2001:db8::a-2001:db8::f"),
                Some((ip("2001:db8::a"), ip("2001:db8::f"), 128)),
            ),
            (
                Block::reserved("192.0.2.1"),
                Some((ip("192.0.2.1"), ip("192.0.2.1"), 32)),
            ),
            (
                Block::reserved("192.0.2.0/30"),
                Some((ip("192.0.2.0"), ip("192.0.2.3"), 30)),
            ),
            (Block::reserved("nonsense"), None),
        ];
        for (i, (got, want)) in cases.iter().enumerate() {
            assert_eq!(
                got.map(|b| (b.first, b.last, b.prefix_len)),
                *want,
                "case {i}"
            );
        }
    }

    #[test]
    fn usable_addresses_leave_reserved_ones_out() {
        let pool: VirtualIPPool = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "cidrs": ["192.0.2.0/29"],
                "ranges": ["198.51.100.10-198.51.100.19"],
                "reserved": ["192.0.2.1", "198.51.100.15-198.51.100.30", "203.0.113.0/24"]
            }
        }))
        .expect("pool");
        let p = Pool::of(&pool);
        // 6 hosts - 1, 10 addresses - 5.
        assert_eq!(p.usable(), 5 + 5);
        let first: Vec<String> = p.candidates().take(3).map(|c| c.to_string()).collect();
        assert_eq!(first, ["192.0.2.2/29", "192.0.2.3/29", "192.0.2.4/29"]);
        assert!(p.block_of("192.0.2.1".parse().expect("ip")).is_none());
        assert!(p.contains("192.0.2.1".parse().expect("ip")));
        assert_eq!(
            p.block_of("198.51.100.12".parse().expect("ip"))
                .map(|b| b.prefix_len),
            Some(32)
        );
    }
}
