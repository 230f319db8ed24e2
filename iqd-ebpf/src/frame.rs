//! The one abstraction over the hooks: what the policy code needs of a frame, whether it came
//! to an XDP program (`XdpContext`) or to a tc program (`TcContext`). Parsing, policy,
//! conntrack and forwarding are written once over [`Frame`]; only the entry points in main.rs
//! know the hook.
use aya_ebpf::{
    helpers::{bpf_clone_redirect, bpf_skb_change_tail, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    programs::{TcContext, XdpContext},
};

pub trait Frame {
    /// Start and end of the linear part, where all headers are.
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Length of the whole frame; for a GSO packet, of all its segments together.
    fn len(&self) -> u64;
    /// The port the frame arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// The payload size of each segment of a GSO packet, 0 for a single frame.
    fn gso_size(&self) -> u32;
    /// The frames this stands for on the wire: 1, or a GSO packet's segments.
    fn segments(&self) -> u32;
    /// Makes the frame `len` bytes long (cutting or growing its tail, new bytes zeroed or
    /// undefined); whether it could. Every pointer into the frame is invalid afterwards.
    fn resize(&self, len: u32) -> bool;
    /// Whether the kernel holds a VLAN tag of the frame in its metadata rather than inline
    /// (an skb's `vlan_tci`, as at tc ingress).
    fn vlan_tag_in_metadata(&self) -> bool;
    /// Sends a copy of the frame, marked `mark`, out of fabric-side port `ifindex` (to the LPAR
    /// behind it, or into a bandwidth shaper); whether it went. Every pointer into the frame is
    /// invalid afterwards. Only tc can copy a frame: XDP hands one-to-many frames up to the
    /// port's tc hook and never gets here.
    fn replicate(&self, ifindex: u32, mark: u32) -> bool;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn len(&self) -> u64 {
        // SAFETY: the helper only reads the context it is given. Counts every fragment of a
        // multi-buffer frame.
        unsafe { bpf_xdp_get_buff_len(self.ctx) }
    }

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        XdpContext::ingress_ifindex(self) as u32
    }

    #[inline(always)]
    fn gso_size(&self) -> u32 {
        0
    }

    #[inline(always)]
    fn segments(&self) -> u32 {
        1
    }

    #[inline(always)]
    fn resize(&self, len: u32) -> bool {
        let delta = len as i64 - Frame::len(self) as i64;
        // SAFETY: the helper checks the new length against the buffer.
        delta == 0 || unsafe { bpf_xdp_adjust_tail(self.ctx, delta as i32) } == 0
    }

    #[inline(always)]
    fn vlan_tag_in_metadata(&self) -> bool {
        // A veth's XDP program sees the frame as the LPAR wrote it: any tag is inline.
        false
    }

    #[inline(always)]
    fn replicate(&self, _ifindex: u32, _mark: u32) -> bool {
        false
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn len(&self) -> u64 {
        TcContext::len(self) as u64
    }

    #[inline(always)]
    // `ifindex`, not `ingress_ifindex`, on purpose: at tc ingress the skb's device is the
    // port it arrived on, which is what the name means here.
    #[allow(clippy::misnamed_getters)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: the context pointer is valid for the program's run.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn gso_size(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.skb.skb).gso_size }
    }

    #[inline(always)]
    fn segments(&self) -> u32 {
        // SAFETY: as above.
        let segs = unsafe { (*self.skb.skb).gso_segs };
        if segs == 0 {
            1
        } else {
            segs
        }
    }

    #[inline(always)]
    fn resize(&self, len: u32) -> bool {
        // SAFETY: the helper checks the new length against the packet.
        len == TcContext::len(self) || unsafe { bpf_skb_change_tail(self.skb.skb, len, 0) } == 0
    }

    #[inline(always)]
    fn vlan_tag_in_metadata(&self) -> bool {
        // SAFETY: the context pointer is valid for the program's run.
        unsafe { (*self.skb.skb).vlan_present != 0 }
    }

    #[inline(always)]
    fn replicate(&self, ifindex: u32, mark: u32) -> bool {
        // The clone takes the mark the packet has when it is made (a shaper's `iqd_shaped`
        // reads it; an LPAR's namespace never sees it: crossing into it scrubs the mark).
        self.set_mark(mark);
        // SAFETY: the helper clones the packet and transmits the clone out of `ifindex`
        // (egress of the port: the LPAR behind it receives it).
        unsafe { bpf_clone_redirect(self.skb.skb, ifindex, 0) == 0 }
    }
}
