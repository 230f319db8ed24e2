//! Links and addresses through rtnetlink, one connection per network namespace.
use std::{net::IpAddr, os::fd::AsRawFd};

use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::{
        address::AddressAttribute,
        link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage},
    },
    Handle, LinkUnspec, LinkVeth,
};

use crate::{
    error::{Error, Result},
    netns::{self, NetnsGuard},
};

/// A netlink connection bound to one named network namespace.
pub struct Netlink {
    handle: Handle,
    netns: String,
}

/// What iqd reads back of a link.
#[derive(Debug, Clone)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
    pub oper_up: bool,
    /// `IFF_NOARP`: the kernel resolves no neighbour on the link (ARP and ND off).
    pub noarp: bool,
}

impl Netlink {
    /// Opens a connection in `netns`; must be called inside a tokio runtime.
    pub fn open(netns: &str) -> Result<Self> {
        let _guard = NetnsGuard::enter(netns)?;
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::io("netlink socket in", netns::path(netns), e))?;
        tokio::spawn(connection);
        Ok(Self {
            handle,
            netns: netns.to_string(),
        })
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    fn err(&self, op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error + '_ {
        let op = op.into();
        move |source| Error::Netlink {
            netns: self.netns.clone(),
            op,
            source,
        }
    }

    /// The link called `name`, if any.
    pub async fn link(&self, name: &str) -> Result<Option<LinkState>> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_state(&msg))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(self.err(format!("get link {name}"))(e)),
        }
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<LinkState>> {
        let mut stream = self.handle.link().get().execute();
        let mut links = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(self.err("list links"))? {
            links.push(link_state(&msg));
        }
        Ok(links)
    }

    pub async fn require_link(&self, name: &str) -> Result<LinkState> {
        self.link(name).await?.ok_or_else(|| Error::NoSuchLink {
            netns: self.netns.clone(),
            ifname: name.to_string(),
        })
    }

    /// Creates a veth pair: `name` here, `peer_name` directly inside `peer_netns` with the
    /// given MAC and MTU. Both ends start down.
    pub async fn add_veth(
        &self,
        name: &str,
        mtu: u32,
        peer_name: &str,
        peer_netns: &str,
        peer_mac: [u8; 6],
        peer_mtu: u32,
    ) -> Result<()> {
        let peer_path = netns::path(peer_netns);
        let peer_ns =
            std::fs::File::open(&peer_path).map_err(|e| Error::io("open", &peer_path, e))?;
        let peer = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_string())
            .address(peer_mac.to_vec())
            .mtu(peer_mtu)
            .setns_by_fd(peer_ns.as_raw_fd())
            .build();
        let message = LinkVeth::new(name, peer_name)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(self.err(format!(
                "create veth {name} (peer {peer_name} in {peer_netns})"
            )))
    }

    /// Creates a veth pair with both ends here: `name` and `peer_name`, both of MTU `mtu`,
    /// down.
    pub async fn add_local_veth(&self, name: &str, peer_name: &str, mtu: u32) -> Result<()> {
        let peer = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_string())
            .mtu(mtu)
            .build();
        let message = LinkVeth::new(name, peer_name)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(self.err(format!("create veth {name} (peer {peer_name})")))
    }

    /// Makes the root qdisc of link `index` a token bucket filter (TBF): `rate` bytes per
    /// second, a bucket of `burst` bytes, a queue of at most `limit` bytes. Replaces whatever
    /// root qdisc the link had.
    pub async fn set_tbf(&self, index: u32, rate: u64, burst: u32, limit: u32) -> Result<()> {
        use futures::StreamExt as _;
        use rtnetlink::{
            packet_core::{
                DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
                NLM_F_REQUEST,
            },
            packet_route::{
                tc::{TcAttribute, TcHandle, TcMessage, TcOption},
                RouteNetlinkMessage,
            },
        };
        // linux/pkt_sched.h: TCA_TBF_PARMS (struct tc_tbf_qopt), TCA_TBF_RATE64, TCA_TBF_BURST.
        const TCA_TBF_PARMS: u16 = 1;
        const TCA_TBF_RATE64: u16 = 4;
        const TCA_TBF_BURST: u16 = 6;
        // struct tc_ratespec: cell_log u8, linklayer u8 (1 = Ethernet: no rate table needed),
        // overhead u16, cell_align i16, mpu u16, rate u32 (bytes/s; the full rate is RATE64).
        let mut rate_spec = vec![0u8, 1, 0, 0, 0, 0, 0, 0];
        rate_spec.extend_from_slice(&(rate.min(u32::MAX as u64) as u32).to_ne_bytes());
        // struct tc_tbf_qopt: rate, peakrate (none), limit, buffer (from BURST), mtu.
        let mut qopt = rate_spec;
        qopt.extend_from_slice(&[0u8; 12]);
        qopt.extend_from_slice(&limit.to_ne_bytes());
        qopt.extend_from_slice(&0u32.to_ne_bytes());
        qopt.extend_from_slice(&0u32.to_ne_bytes());
        let mut message = TcMessage::with_index(index as i32);
        message.header.parent = TcHandle::ROOT;
        message.header.handle = TcHandle { major: 1, minor: 0 };
        message
            .attributes
            .push(TcAttribute::Kind("tbf".to_string()));
        message.attributes.push(TcAttribute::Options(vec![
            TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, qopt)),
            TcOption::Other(DefaultNla::new(TCA_TBF_RATE64, rate.to_ne_bytes().to_vec())),
            TcOption::Other(DefaultNla::new(TCA_TBF_BURST, burst.to_ne_bytes().to_vec())),
        ]));
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(message));
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let op = format!("set tbf qdisc on link {index}");
        let mut response = self
            .handle
            .clone()
            .request(request)
            .map_err(self.err(op.clone()))?;
        while let Some(message) = response.next().await {
            if let NetlinkPayload::Error(e) = message.payload {
                if e.code.is_some() {
                    return Err(self.err(op)(rtnetlink::Error::NetlinkError(e)));
                }
            }
        }
        Ok(())
    }

    pub async fn delete_link(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
            Err(e) => Err(self.err(format!("delete link {index}"))(e)),
        }
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        let message = rtnetlink::LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(self.err(format!("set link {index} up")))
    }

    /// Takes a link down: a veth's peer then has no carrier.
    pub async fn set_down(&self, index: u32) -> Result<()> {
        let message = rtnetlink::LinkUnspec::new_with_index(index).down().build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(self.err(format!("set link {index} down")))
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let message = rtnetlink::LinkUnspec::new_with_index(index)
            .mtu(mtu)
            .build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(self.err(format!("set link {index} mtu {mtu}")))
    }

    /// Turns ARP (and IPv6 neighbour discovery) on or off on link `index` (`IFF_NOARP`), as
    /// `ip link set DEV arp on|off` does.
    pub async fn set_arp(&self, index: u32, enable: bool) -> Result<()> {
        let message = rtnetlink::LinkUnspec::new_with_index(index)
            .arp(enable)
            .build();
        let what = if enable { "on" } else { "off" };
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(self.err(format!("set link {index} arp {what}")))
    }

    /// Every address on link `index`, with its prefix length.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(self.err(format!("list addresses of link {index}")))?
        {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(addr) = attr {
                    out.push((*addr, msg.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Adds an address; one that is already there is fine.
    pub async fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        match self
            .handle
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(self
                .err(format!("add address {addr}/{prefix} to link {index}"))(
                e
            )),
        }
    }

    pub async fn delete_address(&self, index: u32, addr: IpAddr) -> Result<()> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(self.err(format!("find address {addr} on link {index}")))?
        {
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(self.err(format!("delete address {addr} from link {index}")))?;
        }
        Ok(())
    }
}

fn link_state(msg: &LinkMessage) -> LinkState {
    let mut state = LinkState {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        oper_up: msg.header.flags.contains(LinkFlags::LowerUp),
        noarp: msg.header.flags.contains(LinkFlags::Noarp),
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => state.name = name.clone(),
            LinkAttribute::Mtu(mtu) => state.mtu = *mtu,
            LinkAttribute::Address(mac) if mac.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(mac);
                state.mac = Some(m);
            }
            _ => {}
        }
    }
    state
}
