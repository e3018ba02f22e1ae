//! Crafted frames and the checks on what comes out. Frames are built, and their
//! checksums computed and verified, with etherparse: an implementation independent of
//! the datapath's incremental updates. Malformed frames start from a well-formed one and
//! have bytes changed by hand, each change named.

use aks_ebpf_common::wire::{
    ETH_HLEN, ICMP_ECHO_ID, IPV4_DST, IPV4_SRC, IPV4_TTL, L4_DST_PORT, L4_SRC_PORT, PROTO_ICMP,
    PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, UDP_CHECKSUM,
};
use etherparse::{
    icmpv4::DestUnreachableHeader, IcmpEchoHeader, Icmpv4Header, Icmpv4Type, IpNumber, Ipv4Header,
    PacketBuilder, TcpHeader, UdpHeader,
};

pub const NODE: [u8; 4] = [10, 224, 0, 4];
/// The pod the test frames come from (its veth is the test run's device).
pub const LOCAL_POD: [u8; 4] = [10, 224, 0, 6];
/// Another pod of the node.
pub const PEER_POD: [u8; 4] = [10, 224, 0, 7];
pub const REMOTE_POD: [u8; 4] = [10, 224, 0, 36];
pub const ON_PREM: [u8; 4] = [192, 168, 100, 10];
pub const INTERNET: [u8; 4] = [203, 0, 113, 10];

pub const UPLINK_MAC: [u8; 6] = [0x02, 0x02, 0, 0, 0, 0];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0x01, 0, 0, 0, 0];
pub const POD_MAC: [u8; 6] = [0x02, 0x04, 0, 0, 0, 1];
pub const HOST_MAC: [u8; 6] = [0x02, 0x03, 0, 0, 0, 1];
pub const PEER_POD_MAC: [u8; 6] = [0x02, 0x04, 0, 0, 0, 2];
pub const PEER_HOST_MAC: [u8; 6] = [0x02, 0x03, 0, 0, 0, 2];
pub const SENDER_MAC: [u8; 6] = [0x02, 0x09, 0, 0, 0, 9];

const PAYLOAD: [u8; 16] = [0xab; 16];

/// A frame to craft.
#[derive(Clone)]
pub struct FrameSpec {
    pub ttl: u8,
    pub protocol: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// IPv4 options (a multiple of 4 bytes).
    pub options: Vec<u8>,
    /// More fragments, and the fragment offset in 8-byte units.
    pub more_fragments: bool,
    pub fragment_offset: u16,
    /// TCP/UDP ports; for ICMP echo `src_port` is the identifier.
    pub src_port: u16,
    pub dst_port: u16,
    /// ICMP type (8 echo request, 0 echo reply).
    pub icmp_type: u8,
    /// Leave the UDP checksum 0 ("none").
    pub no_udp_checksum: bool,
    /// TCP flags (`wire::TCP_*`); a SYN unless told.
    pub tcp_flags: u8,
}

impl FrameSpec {
    pub fn udp(src: [u8; 4], dst: [u8; 4]) -> Self {
        Self {
            ttl: 64,
            protocol: PROTO_UDP,
            src,
            dst,
            options: Vec::new(),
            more_fragments: false,
            fragment_offset: 0,
            src_port: 40000,
            dst_port: 8080,
            icmp_type: 0,
            no_udp_checksum: false,
            tcp_flags: TCP_SYN,
        }
    }

    pub fn icmp_echo(src: [u8; 4], dst: [u8; 4], icmp_type: u8, id: u16) -> Self {
        Self {
            protocol: PROTO_ICMP,
            icmp_type,
            src_port: id,
            dst_port: 0,
            ..Self::udp(src, dst)
        }
    }

    pub fn tcp(src: [u8; 4], dst: [u8; 4], dst_port: u16) -> Self {
        Self {
            protocol: PROTO_TCP,
            dst_port,
            ..Self::udp(src, dst)
        }
    }

    pub fn ports(self, src_port: u16, dst_port: u16) -> Self {
        Self {
            src_port,
            dst_port,
            ..self
        }
    }

    pub fn tcp_flags(self, tcp_flags: u8) -> Self {
        Self { tcp_flags, ..self }
    }

    pub fn ip_header(&self, payload_len: usize) -> Ipv4Header {
        let mut ip = Ipv4Header::new(
            payload_len as u16,
            self.ttl,
            IpNumber(self.protocol),
            self.src,
            self.dst,
        )
        .expect("an IPv4 header");
        ip.dont_fragment = !self.more_fragments && self.fragment_offset == 0;
        ip.more_fragments = self.more_fragments;
        ip.fragment_offset = self.fragment_offset.try_into().expect("a fragment offset");
        ip.options = self.options.as_slice().try_into().expect("IPv4 options");
        ip.total_len = (ip.header_len() + payload_len) as u16;
        ip
    }

    /// The L4 part: header and payload, checksummed over `ip`.
    fn segment(&self, ip: &Ipv4Header) -> Vec<u8> {
        let mut out = Vec::new();
        match self.protocol {
            PROTO_TCP => {
                let mut tcp = TcpHeader::new(self.src_port, self.dst_port, 0, 64240);
                tcp.syn = self.tcp_flags & TCP_SYN != 0;
                tcp.ack = self.tcp_flags & TCP_ACK != 0;
                tcp.fin = self.tcp_flags & TCP_FIN != 0;
                tcp.rst = self.tcp_flags & TCP_RST != 0;
                tcp.checksum = tcp.calc_checksum_ipv4(ip, &PAYLOAD).expect("TCP checksum");
                out.extend_from_slice(&tcp.to_bytes());
            }
            PROTO_UDP => {
                let mut udp =
                    UdpHeader::with_ipv4_checksum(self.src_port, self.dst_port, ip, &PAYLOAD)
                        .expect("UDP header");
                if self.no_udp_checksum {
                    udp.checksum = 0;
                }
                out.extend_from_slice(&udp.to_bytes());
            }
            _ => {
                let echo = IcmpEchoHeader {
                    id: self.src_port,
                    seq: 1,
                };
                let kind = match self.icmp_type {
                    8 => Icmpv4Type::EchoRequest(echo),
                    0 => Icmpv4Type::EchoReply(echo),
                    other => Icmpv4Type::Unknown {
                        type_u8: other,
                        code_u8: 0,
                        bytes5to8: echo.to_bytes(),
                    },
                };
                out.extend_from_slice(&Icmpv4Header::with_checksum(kind, &PAYLOAD).to_bytes());
            }
        }
        out.extend_from_slice(&PAYLOAD);
        out
    }

    /// The IPv4 packet alone (no Ethernet header).
    pub fn packet(&self) -> Vec<u8> {
        let l4_len = match self.protocol {
            PROTO_TCP => 20,
            _ => 8,
        } + PAYLOAD.len();
        let mut ip = self.ip_header(l4_len);
        ip.header_checksum = ip.calc_header_checksum();
        let mut out = ip.to_bytes().to_vec();
        out.extend_from_slice(&self.segment(&ip));
        out
    }

    pub fn bytes(&self) -> Vec<u8> {
        ethernet(UPLINK_MAC, SENDER_MAC, 0x0800, &self.packet())
    }
}

/// An Ethernet frame around `payload`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ICMP "fragmentation needed" from `router` to `to`, quoting `quoted` (an IPv4
/// packet) whole, with the next-hop MTU `mtu`.
pub fn frag_needed(router: [u8; 4], to: [u8; 4], mtu: u16, quoted: &[u8]) -> Vec<u8> {
    icmp_error(
        router,
        to,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: mtu,
        }),
        quoted,
    )
}

/// An ICMP error message of `kind` from `from` to `to`, quoting `quoted`.
pub fn icmp_error(from: [u8; 4], to: [u8; 4], kind: Icmpv4Type, quoted: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(SENDER_MAC, UPLINK_MAC)
        .ipv4(from, to, 64)
        .icmpv4(kind);
    let mut out = Vec::with_capacity(builder.size(quoted.len()));
    builder.write(&mut out, quoted).expect("an ICMP error");
    out
}

/// Where the IPv4 header and the L4 header of `frame` start.
fn offsets(frame: &[u8]) -> (usize, usize) {
    let ihl = usize::from(frame[ETH_HLEN] & 0x0f) * 4;
    (ETH_HLEN, ETH_HLEN + ihl)
}

/// Source (or destination) address and port of a frame; for ICMP echo the identifier.
pub fn endpoint_of(frame: &[u8], source: bool) -> ([u8; 4], u16) {
    let (ip, l4) = offsets(frame);
    let addr_at = ip + if source { IPV4_SRC } else { IPV4_DST };
    let port_at = if frame[ip + 9] == PROTO_ICMP {
        l4 + ICMP_ECHO_ID
    } else if source {
        l4 + L4_SRC_PORT
    } else {
        l4 + L4_DST_PORT
    };
    (
        frame[addr_at..addr_at + 4].try_into().expect("4 bytes"),
        u16::from_be_bytes([frame[port_at], frame[port_at + 1]]),
    )
}

/// Asserts every checksum of an IPv4 packet (no Ethernet header) verifies, as etherparse
/// computes them: the IPv4 header, and the TCP, UDP or ICMP checksum when the packet
/// holds the whole segment. An ICMP error's quoted packet is checked the same way, as
/// far as the quote reaches. Returns the parsed IPv4 header.
pub fn assert_packet_checksums(packet: &[u8], case: &str) -> Ipv4Header {
    let (ip, _) = Ipv4Header::from_slice(packet).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "{case}: IPv4 header checksum"
    );
    let start = ip.header_len();
    let end = usize::from(ip.total_len).min(packet.len());
    let whole = usize::from(ip.total_len) <= packet.len();
    let segment = &packet[start..end];
    if ip.fragment_offset.value() != 0 || ip.more_fragments {
        return ip;
    }
    match ip.protocol.0 {
        PROTO_TCP if whole => {
            let (tcp, payload) = TcpHeader::from_slice(segment).expect("a TCP header");
            let expected = tcp.calc_checksum_ipv4(&ip, payload).expect("TCP checksum");
            assert_eq!(tcp.checksum, expected, "{case}: TCP checksum");
        }
        PROTO_UDP if whole => {
            let (udp, payload) = UdpHeader::from_slice(segment).expect("a UDP header");
            if udp.checksum != 0 {
                let expected = udp.calc_checksum_ipv4(&ip, payload).expect("UDP checksum");
                assert_eq!(udp.checksum, expected, "{case}: UDP checksum");
            }
        }
        PROTO_ICMP => {
            let (icmp, payload) = Icmpv4Header::from_slice(segment).expect("an ICMP header");
            if whole {
                assert_eq!(
                    icmp.checksum,
                    icmp.icmp_type.calc_checksum(payload),
                    "{case}: ICMP checksum"
                );
            }
            if matches!(
                icmp.icmp_type,
                Icmpv4Type::DestinationUnreachable(_) | Icmpv4Type::TimeExceeded(_)
            ) {
                assert_packet_checksums(payload, &format!("{case}, quoted packet"));
            }
        }
        _ => {}
    }
    ip
}

/// Asserts every checksum of an Ethernet frame verifies (see `assert_packet_checksums`).
pub fn assert_checksums(frame: &[u8], case: &str) {
    assert_packet_checksums(&frame[ETH_HLEN..], case);
}

/// Checks a frame sent on one hop: MACs, TTL, and every checksum.
/// Asserts where `frame` comes from and goes to: address and port (ICMP echo: the
/// identifier) of its source and of its destination.
pub fn assert_endpoints(frame: &[u8], from: ([u8; 4], u16), to: ([u8; 4], u16), case: &str) {
    assert_eq!(endpoint_of(frame, true), from, "{case}: source");
    assert_eq!(endpoint_of(frame, false), to, "{case}: destination");
}

pub fn assert_routed(out: &[u8], dst_mac: [u8; 6], src_mac: [u8; 6], ttl: u8, case: &str) {
    assert_eq!(&out[0..6], &dst_mac, "{case}: destination MAC");
    assert_eq!(&out[6..12], &src_mac, "{case}: source MAC");
    assert_eq!(out[ETH_HLEN + IPV4_TTL], ttl, "{case}: TTL");
    assert_checksums(out, case);
}

/// The UDP checksum field of a frame without IPv4 options.
pub fn udp_checksum_field(frame: &[u8]) -> [u8; 2] {
    let at = ETH_HLEN + 20 + UDP_CHECKSUM;
    [frame[at], frame[at + 1]]
}

/// `frame` with its IPv4 header changed by `edit`, the header checksum recomputed: the
/// frame is wrong only in what `edit` changed.
pub fn with_ip_header(mut frame: Vec<u8>, edit: impl FnOnce(&mut Ipv4Header)) -> Vec<u8> {
    let (mut ip, _) = Ipv4Header::from_slice(&frame[ETH_HLEN..]).expect("an IPv4 header");
    edit(&mut ip);
    ip.header_checksum = ip.calc_header_checksum();
    let bytes = ip.to_bytes();
    frame[ETH_HLEN..ETH_HLEN + bytes.len()].copy_from_slice(&bytes);
    frame
}

/// `frame` cut to `len` bytes, its IPv4 total length (and header checksum) saying so:
/// a consistent packet whose L4 header ends early.
pub fn cut_to(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    with_ip_header(frame, |ip| ip.total_len = (len - ETH_HLEN) as u16)
}

/// `frame` with an 802.1Q tag (VLAN `vid`) in front of its EtherType.
pub fn vlan_tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&0x8100u16.to_be_bytes());
    out.extend_from_slice(&vid.to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}
