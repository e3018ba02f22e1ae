//! Bounds-checked access to packet headers, in the shape the verifier accepts: every
//! header pointer is checked against the end of the packet before it is returned. Works
//! for TC and XDP alike (both give `data` and `data_end`).
//!
//! The one rule for headers, on every path: a header the packet claims to carry (IPv4,
//! and the TCP, UDP or ICMP header of a first or only fragment) must lie whole in the
//! frame, else the packet is `DropMalformed`. Only a later fragment has no L4 header.

use core::mem::size_of;

use aks_ebpf_common::{
    checksum,
    wire::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ICMP_CHECKSUM, ICMP_ECHO_ID,
        ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_HLEN, IPV4_FRAG_OFFSET_MASK, IPV4_HLEN,
        IPV4_MAX_OPTIONS, IPV4_MORE_FRAGMENTS, L4_DST_PORT, L4_SRC_PORT, PROTO_ICMP, PROTO_TCP,
        PROTO_UDP, TCP_CHECKSUM, TCP_FLAGS, TCP_HLEN, UDP_CHECKSUM, UDP_HLEN,
    },
    Reason,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

/// The linear packet data: `[start, end)`.
#[derive(Clone, Copy)]
pub struct Frame {
    pub start: usize,
    pub end: usize,
}

impl Frame {
    /// A pointer to a `T` at `offset` bytes into the frame, if the whole `T` is inside.
    #[inline(always)]
    pub fn header<T>(&self, offset: usize) -> Option<*mut T> {
        let at = self.start + offset;
        if at + size_of::<T>() > self.end {
            return None;
        }
        Some(at as *mut T)
    }

    #[inline(always)]
    pub fn len(&self) -> u32 {
        (self.end - self.start) as u32
    }
}

/// An Ethernet frame carrying IPv4, parsed far enough to route and filter it. Only
/// [`parse_ipv4`] builds one, so its pointers are always bounds-checked.
pub struct Ipv4Frame {
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    /// IPv4 header length in bytes (20..=60).
    ihl: usize,
}

impl Ipv4Frame {
    #[inline(always)]
    pub fn src(&self) -> u32 {
        // SAFETY: `ip` was bounds-checked by `parse_ipv4`.
        u32::from_ne_bytes(unsafe { (*self.ip).src_addr })
    }

    #[inline(always)]
    pub fn dst(&self) -> u32 {
        // SAFETY: as above.
        u32::from_ne_bytes(unsafe { (*self.ip).dst_addr })
    }

    #[inline(always)]
    pub fn protocol(&self) -> u8 {
        // SAFETY: as above.
        unsafe { (*self.ip).proto }
    }

    /// Offset of the transport header from the start of the frame.
    #[inline(always)]
    pub fn l4_offset(&self) -> usize {
        ETH_HLEN + self.ihl
    }

    /// Whether this is a fragment other than the first (no L4 header follows).
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        // SAFETY: as above.
        let frags = unsafe { (*self.ip).frags };
        u16::from_be_bytes(frags) & IPV4_FRAG_OFFSET_MASK != 0
    }

    /// Whether this is any fragment, the first included (more-fragments bit or an
    /// offset): the fabric forwarder leaves fragments to the stack.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        // SAFETY: as above.
        let frags = unsafe { (*self.ip).frags };
        u16::from_be_bytes(frags) & (IPV4_FRAG_OFFSET_MASK | IPV4_MORE_FRAGMENTS) != 0
    }

    /// Whether the header carries options (longer than 20 bytes).
    #[inline(always)]
    pub fn has_options(&self) -> bool {
        self.ihl != IPV4_HLEN
    }

    /// The IPv4 header, to rewrite in place (TTL, destination).
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn ip_mut(&self) -> &mut Ipv4Hdr {
        // SAFETY: bounds-checked by `parse_ipv4`; the packet is the program's to write.
        unsafe { &mut *self.ip }
    }

    /// The Ethernet header, to rewrite in place (MACs).
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn eth_mut(&self) -> &mut EthHdr {
        // SAFETY: as above.
        unsafe { &mut *self.eth }
    }

    /// Checks what a router checks before it forwards: the header checksum verifies,
    /// and the total length fits in the packet (`wire_len` bytes from the Ethernet
    /// header, the whole packet and not only its linear part) and covers the header.
    ///
    /// The fixed 20 bytes are read directly; options (rare, at most 40 bytes, a multiple
    /// of 4) are summed one 32-bit word at a time, each copied by `load_word(offset,
    /// word)`. One word on the stack, not a 40-byte buffer: `from_pod` with network
    /// policy sits at 6.1's 512-byte limit for the stack of a program and its calls,
    /// and no buffer is zeroed (a byte-by-byte `memset` call on every packet, ~45 ns per
    /// program run in the bench's profile, before options were summed this way).
    /// The loop has a constant bound, so it unrolls into straight-line code with one
    /// early exit per word.
    #[inline(always)]
    pub fn check(
        &self,
        wire_len: u32,
        load_word: impl Fn(usize, &mut [u8; 4]) -> bool,
    ) -> Result<(), Reason> {
        // SAFETY: bounds-checked by `parse_ipv4`.
        let total = u16::from_be_bytes(unsafe { (*self.ip).tot_len }) as usize;
        if total < self.ihl || ETH_HLEN + total > wire_len as usize {
            return Err(Reason::DropBadIpLength);
        }
        // SAFETY: the fixed header was bounds-checked by `parse_ipv4`.
        let fixed = unsafe { *(self.ip as *const [u8; IPV4_HLEN]) };
        let mut sum = 0u32;
        for word in 0..IPV4_HLEN / 2 {
            sum = checksum::add_word(
                sum,
                u16::from_be_bytes([fixed[2 * word], fixed[2 * word + 1]]),
            );
        }
        let options_len = self.ihl - IPV4_HLEN;
        let mut at = 0;
        while at < IPV4_MAX_OPTIONS {
            if at >= options_len {
                break;
            }
            let mut word = [0u8; 4];
            if !load_word(ETH_HLEN + IPV4_HLEN + at, &mut word) {
                return Err(Reason::DropMalformed);
            }
            sum = checksum::add_word(sum, u16::from_be_bytes([word[0], word[1]]));
            sum = checksum::add_word(sum, u16::from_be_bytes([word[2], word[3]]));
            at += 4;
        }
        if checksum::fold(sum) != 0xffff {
            return Err(Reason::DropBadIpChecksum);
        }
        Ok(())
    }
}

/// The IPv4 header of an Ethernet frame.
///
/// `Ok(None)` for frames that are not IPv4 (ARP, IPv6, …); `Err(DropVlanTagged)` for a
/// VLAN tag; `Err(DropMalformed)` for frames too short to hold their headers or with an
/// invalid IPv4 version or header length.
#[inline(always)]
pub fn parse_ipv4(frame: &Frame) -> Result<Option<Ipv4Frame>, Reason> {
    let eth: *mut EthHdr = frame.header(0).ok_or(Reason::DropMalformed)?;
    // SAFETY: `header` checked that the Ethernet header lies inside the frame.
    let ether_type = u16::from_be(unsafe { (*eth).ether_type });
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        return Err(Reason::DropVlanTagged);
    }
    if ether_type != ETH_P_IPV4 {
        return Ok(None);
    }
    let ip: *mut Ipv4Hdr = frame.header(ETH_HLEN).ok_or(Reason::DropMalformed)?;
    // SAFETY: `header` checked that the fixed IPv4 header lies inside the frame.
    let vihl = unsafe { (*ip).vihl };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < IPV4_HLEN || ETH_HLEN + ihl > frame.end - frame.start {
        return Err(Reason::DropMalformed);
    }
    Ok(Some(Ipv4Frame { eth, ip, ihl }))
}

/// Where the transport header is and what of it NAT needs.
pub struct Transport {
    /// Ports in host order; for ICMP echo the identifier (see `FlowKey`).
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP flags (FIN, SYN, RST, …), 0 for other protocols.
    pub tcp_flags: u8,
    /// ICMP type, 0 for other protocols.
    pub icmp_type: u8,
    /// Offset of the checksum field from the start of the frame.
    pub checksum_offset: usize,
    /// Offset of the 16-bit field NAT rewrites on the source side (source port, or the
    /// ICMP identifier) and on the destination side (destination port, or the same
    /// identifier).
    pub src_port_offset: usize,
    pub dst_port_offset: usize,
}

impl Transport {
    /// No transport header: every field zero.
    pub const NONE: Transport = Transport {
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        icmp_type: 0,
        checksum_offset: 0,
        src_port_offset: 0,
        dst_port_offset: 0,
    };

    /// Whether NAT can translate this header: TCP, UDP, ICMP echo.
    #[inline(always)]
    pub fn translatable(&self, protocol: u8) -> bool {
        protocol != PROTO_ICMP || matches!(self.icmp_type, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY)
    }
}

/// The source and destination ports of a TCP or UDP header at `offset` (the first four
/// bytes of both): the one place ports are read. `None` if the frame ends first.
#[inline(always)]
pub fn ports_at(frame: &Frame, offset: usize) -> Option<(u16, u16)> {
    let ports: *const [u8; 4] = frame.header(offset)?;
    // SAFETY: bounds-checked by `header`.
    let ports = unsafe { *ports };
    Some((
        u16::from_be_bytes([ports[L4_SRC_PORT], ports[L4_SRC_PORT + 1]]),
        u16::from_be_bytes([ports[L4_DST_PORT], ports[L4_DST_PORT + 1]]),
    ))
}

/// The ports of a TCP or UDP packet (first or only fragment), as far as the frame holds
/// them: for filters and events, which need no more of the header.
#[inline(always)]
pub fn ports(frame: &Frame, ip: &Ipv4Frame) -> Result<Option<(u16, u16)>, Reason> {
    if !matches!(ip.protocol(), PROTO_TCP | PROTO_UDP) || ip.is_later_fragment() {
        return Ok(None);
    }
    ports_at(frame, ip.l4_offset())
        .map(Some)
        .ok_or(Reason::DropMalformed)
}

/// The transport header of a TCP, UDP or ICMP packet: `Ok(None)` for other protocols
/// and later fragments; `Err(DropMalformed)` if the header is cut short. The one parser
/// of L4 headers: NAT, services and events all read ports from here.
#[inline(always)]
pub fn transport(frame: &Frame, ip: &Ipv4Frame) -> Result<Option<Transport>, Reason> {
    if ip.is_later_fragment() {
        return Ok(None);
    }
    let offset = ip.l4_offset();
    match ip.protocol() {
        PROTO_TCP => {
            let tcp: *const [u8; TCP_HLEN] = frame.header(offset).ok_or(Reason::DropMalformed)?;
            // SAFETY: bounds-checked by `header`.
            let flags = unsafe { (*tcp)[TCP_FLAGS] };
            let (src_port, dst_port) = ports_at(frame, offset).ok_or(Reason::DropMalformed)?;
            Ok(Some(Transport {
                src_port,
                dst_port,
                tcp_flags: flags,
                icmp_type: 0,
                checksum_offset: offset + TCP_CHECKSUM,
                src_port_offset: offset + L4_SRC_PORT,
                dst_port_offset: offset + L4_DST_PORT,
            }))
        }
        PROTO_UDP => {
            let _: *const [u8; UDP_HLEN] = frame.header(offset).ok_or(Reason::DropMalformed)?;
            let (src_port, dst_port) = ports_at(frame, offset).ok_or(Reason::DropMalformed)?;
            Ok(Some(Transport {
                src_port,
                dst_port,
                tcp_flags: 0,
                icmp_type: 0,
                checksum_offset: offset + UDP_CHECKSUM,
                src_port_offset: offset + L4_SRC_PORT,
                dst_port_offset: offset + L4_DST_PORT,
            }))
        }
        PROTO_ICMP => {
            let icmp: *const [u8; ICMP_HLEN] = frame.header(offset).ok_or(Reason::DropMalformed)?;
            // SAFETY: bounds-checked by `header`.
            let icmp = unsafe { *icmp };
            let id = u16::from_be_bytes([icmp[ICMP_ECHO_ID], icmp[ICMP_ECHO_ID + 1]]);
            let (src_port, dst_port) = match icmp[0] {
                ICMP_ECHO_REQUEST => (id, 0),
                ICMP_ECHO_REPLY => (0, id),
                _ => (0, 0),
            };
            Ok(Some(Transport {
                src_port,
                dst_port,
                tcp_flags: 0,
                icmp_type: icmp[0],
                checksum_offset: offset + ICMP_CHECKSUM,
                src_port_offset: offset + ICMP_ECHO_ID,
                dst_port_offset: offset + ICMP_ECHO_ID,
            }))
        }
        _ => Ok(None),
    }
}
