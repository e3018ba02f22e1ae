//! Bounds-checked access to packet headers, in the shape the verifier accepts: every
//! header pointer is checked against the end of the packet before it is returned. Works
//! for TC and XDP alike (both give `data` and `data_end`).

use core::mem::size_of;

use aks_ebpf_common::Reason;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

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

/// An Ethernet frame carrying IPv4, parsed far enough to route and filter it.
pub struct Ipv4Frame {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    /// IPv4 header length in bytes (20..=60).
    pub ihl: usize,
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

    /// Whether this is a fragment other than the first (no L4 header follows).
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        // SAFETY: as above. The low 13 bits of `frags` are the fragment offset.
        let frags = unsafe { (*self.ip).frags };
        u16::from_be_bytes(frags) & 0x1fff != 0
    }
}

/// The IPv4 header of an Ethernet frame.
///
/// `Ok(None)` for frames that are not IPv4 (ARP, IPv6, …); `Err(DropMalformed)` for
/// frames too short to hold their headers or with an invalid IPv4 header length.
#[inline(always)]
pub fn parse_ipv4(frame: &Frame) -> Result<Option<Ipv4Frame>, Reason> {
    let eth: *mut EthHdr = frame.header(0).ok_or(Reason::DropMalformed)?;
    // SAFETY: `header` checked that the Ethernet header lies inside the frame.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return Ok(None);
    }
    let ip: *mut Ipv4Hdr = frame.header(EthHdr::LEN).ok_or(Reason::DropMalformed)?;
    // SAFETY: `header` checked that the fixed IPv4 header lies inside the frame.
    let vihl = unsafe { (*ip).vihl };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || EthHdr::LEN + ihl > frame.end - frame.start {
        return Err(Reason::DropMalformed);
    }
    Ok(Some(Ipv4Frame { eth, ip, ihl }))
}

/// The destination port of a TCP or UDP packet (host order), if the packet has one:
/// not for other protocols or later fragments. `Err` if the L4 header is cut short.
#[inline(always)]
pub fn destination_port(frame: &Frame, ip: &Ipv4Frame) -> Result<Option<u16>, Reason> {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    if !matches!(ip.protocol(), TCP | UDP) || ip.is_later_fragment() {
        return Ok(None);
    }
    // Source and destination ports are the first four bytes of both headers.
    let ports: *const [u8; 4] = frame
        .header(EthHdr::LEN + ip.ihl)
        .ok_or(Reason::DropMalformed)?;
    // SAFETY: `header` checked the four bytes lie inside the frame.
    let ports = unsafe { *ports };
    Ok(Some(u16::from_be_bytes([ports[2], ports[3]])))
}

/// Where the transport header is and what of it NAT needs.
pub struct Transport {
    /// Ports in host order; for ICMP echo the identifier (see `FlowKey`).
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP flags (FIN, SYN, RST, …), 0 for other protocols.
    pub tcp_flags: u8,
    /// Offset of the checksum field from the start of the frame.
    pub checksum_offset: usize,
    /// Offset of the 16-bit field NAT rewrites on the source side (source port, or the
    /// ICMP identifier) and on the destination side (destination port, or the same
    /// identifier).
    pub src_port_offset: usize,
    pub dst_port_offset: usize,
}

/// The transport header of a TCP, UDP or ICMP echo packet, if NAT can translate it:
/// `Ok(None)` for other protocols, other ICMP types and later fragments; `Err` if the
/// header is cut short.
#[inline(always)]
pub fn transport(frame: &Frame, ip: &Ipv4Frame) -> Result<Option<Transport>, Reason> {
    use aks_ebpf_common::conntrack::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
    if ip.is_later_fragment() {
        return Ok(None);
    }
    let offset = EthHdr::LEN + ip.ihl;
    match ip.protocol() {
        PROTO_TCP => {
            // Ports (0..4), flags (13), checksum (16..18): the fixed 20-byte header.
            let tcp: *const [u8; 20] = frame.header(offset).ok_or(Reason::DropMalformed)?;
            // SAFETY: bounds-checked by `header`.
            let tcp = unsafe { *tcp };
            Ok(Some(Transport {
                src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
                dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
                tcp_flags: tcp[13],
                checksum_offset: offset + 16,
                src_port_offset: offset,
                dst_port_offset: offset + 2,
            }))
        }
        PROTO_UDP => {
            let udp: *const [u8; 8] = frame.header(offset).ok_or(Reason::DropMalformed)?;
            // SAFETY: bounds-checked by `header`.
            let udp = unsafe { *udp };
            Ok(Some(Transport {
                src_port: u16::from_be_bytes([udp[0], udp[1]]),
                dst_port: u16::from_be_bytes([udp[2], udp[3]]),
                tcp_flags: 0,
                checksum_offset: offset + 6,
                src_port_offset: offset,
                dst_port_offset: offset + 2,
            }))
        }
        PROTO_ICMP => {
            const ECHO_REPLY: u8 = 0;
            const ECHO_REQUEST: u8 = 8;
            let icmp: *const [u8; 8] = frame.header(offset).ok_or(Reason::DropMalformed)?;
            // SAFETY: bounds-checked by `header`.
            let icmp = unsafe { *icmp };
            let id = u16::from_be_bytes([icmp[4], icmp[5]]);
            let (src_port, dst_port) = match icmp[0] {
                ECHO_REQUEST => (id, 0),
                ECHO_REPLY => (0, id),
                _ => return Ok(None),
            };
            Ok(Some(Transport {
                src_port,
                dst_port,
                tcp_flags: 0,
                checksum_offset: offset + 2,
                src_port_offset: offset + 4,
                dst_port_offset: offset + 4,
            }))
        }
        _ => Ok(None),
    }
}
