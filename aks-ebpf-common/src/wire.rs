//! Numbers and offsets of the headers the datapath reads and rewrites, written once for
//! the kernel programs, userspace and the tests. Offsets count bytes from the start of
//! the header they belong to; `ETH_HLEN + IPV4_*` is an offset in an Ethernet frame.

/// IANA protocol numbers.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// TCP flag bits as in the header's flags byte.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// EtherTypes.
pub const ETH_P_IPV4: u16 = 0x0800;
/// 802.1Q and 802.1ad (QinQ) VLAN tags.
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// Ethernet header: destination MAC, source MAC, EtherType.
pub const ETH_HLEN: usize = 14;
pub const ETH_DST: usize = 0;
pub const ETH_SRC: usize = 6;

/// IPv4 header (RFC 791).
pub const IPV4_HLEN: usize = 20;
/// Options make the header at most 60 bytes.
pub const IPV4_MAX_OPTIONS: usize = 40;
pub const IPV4_TOTAL_LEN: usize = 2;
pub const IPV4_TTL: usize = 8;
pub const IPV4_CHECKSUM: usize = 10;
pub const IPV4_SRC: usize = 12;
pub const IPV4_DST: usize = 16;
/// The fragment offset: the low 13 bits of the flags/offset word.
pub const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// The more-fragments bit of the IPv4 flags/offset field (host order).
pub const IPV4_MORE_FRAGMENTS: u16 = 0x2000;

/// TCP header (RFC 9293).
pub const TCP_HLEN: usize = 20;
pub const TCP_SEQ: usize = 4;
pub const TCP_ACK_SEQ: usize = 8;
/// The data offset byte and the flags byte, one 16-bit word.
pub const TCP_OFFSET_FLAGS: usize = 12;
pub const TCP_FLAGS: usize = 13;
pub const TCP_CHECKSUM: usize = 16;

/// UDP header (RFC 768). A checksum of 0 means "none".
pub const UDP_HLEN: usize = 8;
pub const UDP_CHECKSUM: usize = 6;

/// Source and destination ports: the first four bytes of TCP and UDP alike.
pub const L4_SRC_PORT: usize = 0;
pub const L4_DST_PORT: usize = 2;

/// ICMP header (RFC 792): type, code, checksum, then 4 bytes that depend on the type
/// (identifier and sequence for echo); an error message then quotes the offending
/// packet's IPv4 header and at least its first 8 bytes of payload.
pub const ICMP_HLEN: usize = 8;
pub const ICMP_CHECKSUM: usize = 2;
pub const ICMP_ECHO_ID: usize = 4;

/// ICMP types.
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// `ICMP_DEST_UNREACH` code: fragmentation needed and DF set (path-MTU discovery).
pub const ICMP_FRAG_NEEDED: u8 = 4;

/// Whether an ICMP message of this type is an error quoting a packet (so NAT must
/// translate the quoted header too).
pub const fn icmp_is_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    )
}
