//! Interface addresses over rtnetlink: what `ip addr add/del/show` does, without a shell.

use std::net::IpAddr;

use futures::TryStreamExt;
use halo_crds::net::IpPrefix;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::LinkAttribute;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("interface {0} not found")]
    NoSuchInterface(String),
    #[error("no interface holds an address in the subnet of {0}; set spec.interface")]
    NoInterfaceForSubnet(IpPrefix),
    #[error("netlink: {0}")]
    Request(#[from] rtnetlink::Error),
}

#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

/// One address configured on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub index: u32,
    pub prefix: IpPrefix,
}

impl Netlink {
    pub fn connect() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    pub async fn link_index(&self, name: &str) -> Result<u32, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => {
                Err(NetlinkError::NoSuchInterface(name.into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn link_name(&self, index: u32) -> Result<String, NetlinkError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let link = links
            .try_next()
            .await?
            .ok_or_else(|| NetlinkError::NoSuchInterface(index.to_string()))?;
        Ok(link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
            .unwrap_or_else(|| index.to_string()))
    }

    pub async fn addresses(&self) -> Result<Vec<InterfaceAddress>, NetlinkError> {
        let mut out = Vec::new();
        let mut stream = self.handle.address().get().execute();
        while let Some(msg) = stream.try_next().await? {
            if let Some(addr) = address_of(&msg) {
                out.push(InterfaceAddress {
                    index: msg.header.index,
                    prefix: IpPrefix {
                        addr,
                        prefix_len: msg.header.prefix_len,
                    },
                });
            }
        }
        Ok(out)
    }

    /// The interface named, or the one holding an address in `vip`'s subnet.
    pub async fn resolve_interface(
        &self,
        name: Option<&str>,
        vip: IpPrefix,
    ) -> Result<u32, NetlinkError> {
        if let Some(name) = name {
            return self.link_index(name).await;
        }
        self.addresses()
            .await?
            .into_iter()
            .find(|a| a.prefix.addr != vip.addr && a.prefix.contains(vip.addr))
            .map(|a| a.index)
            .ok_or(NetlinkError::NoInterfaceForSubnet(vip))
    }

    pub async fn add(&self, index: u32, prefix: IpPrefix) -> Result<(), NetlinkError> {
        let mut request = self
            .handle
            .address()
            .add(index, prefix.addr, prefix.prefix_len);
        if prefix.addr.is_ipv6() {
            // The VIP moves between nodes: duplicate address detection would hold it
            // tentative (unusable) for a second after every takeover.
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request.replace().execute().await?;
        Ok(())
    }

    pub async fn delete(&self, index: u32, prefix: IpPrefix) -> Result<(), NetlinkError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = stream.try_next().await? {
            if address_of(&msg) == Some(prefix.addr) {
                self.handle.address().del(msg).execute().await?;
            }
        }
        Ok(())
    }
}

fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address on point-to-point links; prefer it.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}
